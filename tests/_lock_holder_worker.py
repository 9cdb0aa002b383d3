"""Holds a store's write lock until killed (tests/campaigns/test_faults.py).

Run by the test through ``_spawn.worker("lock_holder")``."""

import sys
import time

from cascadeui.adapters import FileStore, PostgresStore, RedisStore, SQLiteStore

kind, where, key = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "file":
    store = FileStore(where)
elif kind == "sqlite":
    store = SQLiteStore(where)
elif kind == "postgres":
    store = PostgresStore(where, table=key)
else:
    store = RedisStore(where, key=key, lock_timeout=float(sys.argv[4]))
with store.transaction() as state:
    state["holder"] = "uncommitted"
    print("locked", flush=True)
    time.sleep(120)
