#!/usr/bin/env python3
"""How soon a running store holds another process's commit: pushed changes against polling.

Issue 13's benchmark, one run over all four backends. Per backend and mode, a receiver
process runs a :class:`~cascadeui.store.StateStore` with persistence enabled
(``poll_interval=0.5``, the default) and records when each key arrives through
``STATE_RELOADED``; this process commits one new key at a time with the synchronous
adapter's ``transaction()`` (what ``cascadeui.sync.transaction`` does), at random
intervals so commits do not line up with the poll. The delay is from the commit's return
to the receiver's ``STATE_RELOADED`` (one host, one clock). Modes: ``poll`` (``push=False``:
the version is polled every 0.5 s, as before) and ``push`` (announcements: PostgreSQL
NOTIFY, Redis PUBLISH, a stat watch of the JSON file / SQLite database; polling stays on).

    python -m bench.push                   # 200 commits per run
    python -m bench.push --commits 20 --backends redis,postgres

Redis: a private redis-server; PostgreSQL: a scratch database on
``CASCADEUI_TEST_POSTGRES_URL``, 127.0.0.1:5432 or a private server. Prints one JSON line
per run and a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kit.spawn import script_command, script_env

BACKENDS = ("file", "sqlite", "redis", "postgres")
MODES = ("poll", "push")


def adapter(kind: str, where: str, key: str) -> Any:
    from cascadeui.adapters import FileStore, PostgresStore, RedisStore, SQLiteStore

    if kind == "file":
        return FileStore(where)
    if kind == "sqlite":
        return SQLiteStore(where)
    if kind == "redis":
        return RedisStore(where, key=key)
    return PostgresStore(where, table=key)


async def receive(kind: str, where: str, key: str, mode: str) -> None:
    """The receiver: prints "ready", then on stdin EOF the arrival time of every key."""
    from cascadeui._backends import AsyncBackend
    from cascadeui.actions import STATE_RELOADED
    from cascadeui.store import StateStore

    store = StateStore()
    arrived: dict[str, float] = {}

    def seen(state: Any, action: Any) -> None:
        now = time.time()
        for path in action["payload"]["paths"]:
            if len(path) > 1 and path[0] == "application":
                arrived.setdefault(str(path[1]), now)

    store.subscribe(seen, action_types=[STATE_RELOADED])
    await store.enable_persistence(AsyncBackend(adapter(kind, where, key)),
                                   poll_interval=0.5, push=mode == "push")
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    await store.close(close_backend=True)
    print(json.dumps(arrived), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def one_run(kind: str, where: str, key: str, mode: str, commits: int,
            rnd: random.Random) -> dict[str, Any]:
    with adapter(kind, where, key) as store:
        store.save({"application": {}, "persistent_views": {}})
    receiver = subprocess.Popen(
        script_command("bench.push", "--receive", kind, where, key, mode), env=script_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert receiver.stdin is not None
    assert receiver.stdout is not None
    try:
        if receiver.stdout.readline() != "ready\n":
            raise RuntimeError(f"{kind}/{mode}: the receiver did not start")
        committed: dict[str, float] = {}
        with adapter(kind, where, key) as store:
            for i in range(commits):
                time.sleep(rnd.uniform(0.02, 0.08))
                with store.transaction() as st:
                    st.setdefault("application", {})[f"k{i}"] = i
                committed[f"k{i}"] = time.time()
        time.sleep(1.2)  # the last commit's poll, at the latest
        receiver.stdin.close()
        arrived = json.loads(receiver.stdout.readline())
        receiver.wait(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    delays = [(arrived[k] - t) * 1000 for k, t in committed.items() if k in arrived]
    return {"backend": kind, "mode": mode, "commits": commits,
            "missed": commits - len(delays),
            "p50_ms": round(percentile(delays, 50), 1),
            "p90_ms": round(percentile(delays, 90), 1),
            "p99_ms": round(percentile(delays, 99), 1),
            "max_ms": round(max(delays), 1),
            "mean_ms": round(statistics.fmean(delays), 1)}


@contextlib.contextmanager
def target(kind: str, workdir: Path) -> Iterator[tuple[str, str]]:
    """(where, key) for one backend; servers and scratch databases cleaned up after."""
    if kind == "file":
        yield str(workdir / "state.json"), ""
    elif kind == "sqlite":
        yield str(workdir / "state.db"), ""
    elif kind == "redis":
        from kit.redis_server import RedisServer

        with RedisServer() as server:
            yield server.url, "bench:push"
    else:
        from kit.postgres_server import any_database

        with any_database() as url:
            yield url, "bench_push"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=200, help="commits per run")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--receive", nargs=4, metavar=("KIND", "WHERE", "KEY", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receive:
        asyncio.run(receive(*args.receive))
        return 0
    rnd = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="cascadeui-push-") as tmp:
        for kind in args.backends.split(","):
            for mode in args.modes.split(","):
                workdir = Path(tmp) / f"{kind}-{mode}"
                workdir.mkdir()
                with target(kind, workdir) as (where, key):
                    result = one_run(kind, where, key, mode, args.commits, rnd)
                results.append(result)
                print(json.dumps(result), flush=True)
    print("\n| backend | mode | commits | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['mode']} | {r['commits']} | {r['p50_ms']} | "
              f"{r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    return 0 if all(r["missed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
