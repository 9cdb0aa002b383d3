"""Holds the PostgreSQL write lock until killed (tests/adapters/test_postgres.py).

Run by the test through ``_spawn.worker("postgres_holder")``."""

import sys
import time

from cascadeui.adapters import PostgresStore

store = PostgresStore(sys.argv[1], table=sys.argv[2])
with store.transaction() as st:
    st["a"]["n"] = 999
    print("locked", flush=True)
    time.sleep(60)
