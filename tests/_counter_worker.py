"""Increments a JSON file's counter N times in transactions (tests/readers/test_readers.py).

Run by the test through ``_spawn.worker("counter")``."""

import sys
import time

from cascadeui.adapters import FileStore
from cascadeui.errors import StorageUnavailableError

path, n = sys.argv[1], int(sys.argv[2])
refused = 0
with FileStore(path, lock_timeout=60) as store:
    done = 0
    while done < n:
        try:
            with store.transaction() as state:
                app = state.setdefault("application", {})
                value = app.get("n", 0)
                time.sleep(0.002)  # widen the window a second holder would need
                app["n"] = value + 1
        except StorageUnavailableError:  # the lock was pulled from under us: not committed
            refused += 1
            continue
        done += 1
print("done", refused, flush=True)
