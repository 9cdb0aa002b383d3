"""Worker processes for tests/store/test_multiprocess.py (issue 4); run as a script.

    increments KIND WHERE KEY N PROCS      fork PROCS workers (half of them through the
                                           async twin) doing N transaction() increments
    store KIND WHERE KEY PREFIX SECONDS OUT  a running store dispatching PREFIX.i keys
                                           every 10 ms; writes what it saw reloaded to OUT
    hold KIND WHERE KEY                    enter transaction(), print "locked", sleep
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cascadeui._backends import (
    AsyncBackend,
    FileStorageBackend,
    PostgresBackend,
    RedisBackend,
    SQLiteBackend,
)
from cascadeui.actions import APPLICATION_SET, STATE_RELOADED
from cascadeui.store import StateStore


def backend(kind: str, where: str, key: str, lock_timeout: float = 60.0) -> AsyncBackend[Any]:
    if kind == "file":
        return FileStorageBackend(where, lock_timeout=lock_timeout)
    if kind == "sqlite":
        return SQLiteBackend(where, timeout=lock_timeout)
    if kind == "postgres":
        return PostgresBackend(where, table=key, timeout=lock_timeout)
    return RedisBackend(where, key=key, lock_timeout=lock_timeout)


def increments(kind: str, where: str, key: str, n: int, procs: int) -> int:
    def sync_job() -> None:
        store = backend(kind, where, key).store
        for _ in range(n):
            with store.transaction() as st:
                st["counter"] = st.get("counter", 0) + 1
        store.close()

    async def async_job() -> None:
        async with backend(kind, where, key) as b:
            for _ in range(n):
                async with b.transaction() as st:
                    st["counter"] = st.get("counter", 0) + 1

    pids = []
    for i in range(procs):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sync_job() if i % 2 == 0 else asyncio.run(async_job())
            except BaseException as exc:
                print(f"worker failed: {exc!r}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        pids.append(pid)
    return max(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids)


async def running_store(kind: str, where: str, key: str, prefix: str, seconds: float,
                        out: str, stop: str | None = None) -> None:
    """Write ``prefix.i`` keys for ``seconds``, and on until the file ``stop`` exists when
    given (a loaded machine's other process may take longer than planned); report to ``out``."""
    store = StateStore()
    seen: list[tuple[float, list[list[Any]]]] = []
    store.subscribe(lambda state, action: seen.append(
        (time.time(), [list(p) for p in action["payload"]["paths"]])),
        action_types=[STATE_RELOADED])
    await store.enable_persistence(backend(kind, where, key), debounce=0.02, max_delay=0.2,
                                   poll_interval=0.2)
    print("ready", flush=True)
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end or (
            stop is not None and not await asyncio.to_thread(os.path.exists, stop)):
        await store.dispatch(APPLICATION_SET, {"path": [f"{prefix}.{i}"], "value": i})
        i += 1
        await asyncio.sleep(0.01)
    await store.close()
    report = {"written": i, "seen": seen, "conflicts": store.merge_conflicts}
    await asyncio.to_thread(Path(out).write_text, json.dumps(report))


def hold(kind: str, where: str, key: str) -> None:
    store = backend(kind, where, key, lock_timeout=1.0).store
    with store.transaction() as st:
        st["held"] = True
        print("locked", flush=True)
        time.sleep(600)


def main() -> None:
    cmd, kind, where, key, *rest = sys.argv[1:]
    if cmd == "increments":
        sys.exit(increments(kind, where, key, int(rest[0]), int(rest[1])))
    elif cmd == "store":
        asyncio.run(running_store(kind, where, key, rest[0], float(rest[1]), *rest[2:4]))
    elif cmd == "hold":
        hold(kind, where, key)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
