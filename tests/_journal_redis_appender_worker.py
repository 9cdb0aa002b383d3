"""A RedisStore journal appender for tests/adapters/test_journal_redis.py (two run at once).

Run by the test through ``_spawn.worker("journal_redis_appender")``."""

import sys

import cascadeui.adapters._journal as journal

from cascadeui.adapters import RedisStore

journal.JOURNAL_MIN_BYTES = 300  # compactions race with appends too
url, key, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
retries = 0
with RedisStore(url, key=key, lock_timeout=10) as store:
    for i in range(count):
        while True:
            state, version = store.load_versioned()
            new = {**state, "n": state.get("n", 0) + 1, name: i + 1}
            changes = [(("n",), new["n"]), ((name,), i + 1)]
            if store.save_changes(changes, version,
                                  full=lambda new=new: store.serializer.serialize(new)):
                break
            retries += 1
print(retries)
