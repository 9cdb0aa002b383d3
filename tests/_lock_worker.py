"""Child process of tests/adapters/test_file_hostile.py: ``python _lock_worker.py MODE PATH ...``.

``count PATH N``: N ``sync.transaction()`` increments of ``application.n``, each retried
on the documented "lock was removed, nothing written" error; prints ``done <retries>``.
``save PATH SECONDS``: mutate a dict from a second thread while ``FileStore.save`` encodes
it, for SECONDS; prints the error types seen.
"""

from __future__ import annotations

import sys
import threading
import time

from cascadeui import sync
from cascadeui.adapters import FileStore
from cascadeui.errors import LockTimeoutError


def count(path: str, n: int) -> None:
    retries = done = 0
    while done < n:
        try:
            with sync.transaction(path) as state:
                app = state.setdefault("application", {})
                value = app.get("n", 0)
                time.sleep(0.001)  # widen the window a second holder would need
                app["n"] = value + 1
        except LockTimeoutError as exc:
            if "nothing was written" not in str(exc):
                raise
            retries += 1
            continue
        done += 1
    print("done", retries, flush=True)


def save_while_mutated(path: str, seconds: float) -> None:
    # Tagged values (sets) take the serializer's Python walk, which a thread can
    # interleave with; plain JSON is encoded in C under the GIL in one go.
    state: dict[str, object] = {"application": {f"k{i}": {i} for i in range(20000)}}
    app = state["application"]
    assert isinstance(app, dict)
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            app[f"x{i % 500}"] = i
            if i % 500 == 499:
                for j in range(500):
                    app.pop(f"x{j}", None)
            i += 1

    seen: set[str] = set()
    thread = threading.Thread(target=mutate, daemon=True)
    thread.start()
    with FileStore(path) as store:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                store.save(state)
            except Exception as exc:
                seen.add(f"{type(exc).__name__}: {exc}")
    stop.set()
    thread.join()
    print("\n".join(sorted(seen)) or "none", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "count":
        count(sys.argv[2], int(sys.argv[3]))
    else:
        save_while_mutated(sys.argv[2], float(sys.argv[3]))
