"""Many processes, one state (issues 4, 13): real processes on real files, SQLite, Redis
and PostgreSQL.

- 8 processes x 250 ``transaction()`` increments, half through the async twin: 2,000.
- A running store and a script committing other keys: both kept, and the store hears of
  the script's commits (``STATE_RELOADED``) within the target delay.
- Two stores in two processes on one Redis: no update lost, each sees the other.
- A process SIGKILLed while it holds the lock: the others go on within the lock timeout.

Sizes: ``CASCADEUI_MP_PROCS`` (8) and ``CASCADEUI_MP_N`` (40 per process in the suite;
``CASCADEUI_MP_N=250`` is the issue's full size, also run by scripts/bench/multiprocess.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import open_adapter
from _registry import kinds
from _spawn import worker

from cascadeui.adapters import FileStore, RedisStore

PROCS = int(os.environ.get("CASCADEUI_MP_PROCS", "8"))
N = int(os.environ.get("CASCADEUI_MP_N", "40"))
TARGET_DELAY = 1.0  # seconds, from the issue


@pytest.fixture(params=kinds("multiprocess"))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(kind, where, key): a file, a database file, a Redis key, a PostgreSQL table."""
    kind = request.param
    if kind == "redis":
        return kind, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_key")
    if kind == "postgres":
        return kind, request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_table")
    return kind, str(tmp_path / ("state.json" if kind == "file" else "state.db")), ""


def run_worker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*worker("mp"), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@contextlib.contextmanager
def started(*args: str) -> Iterator[subprocess.Popen[str]]:
    """A worker that has printed its first line ("ready", "locked"); killed and reaped on exit."""
    with subprocess.Popen([*worker("mp"), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            if not proc.stdout.readline():  # bounded: the worker exits if it cannot start
                raise AssertionError(f"worker {args[0]} failed: {proc.stderr.read()}")
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def finished(proc: subprocess.Popen[str]) -> None:
    """Wait for a worker to exit cleanly."""
    code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read() if proc.stderr else code


def test_increments_from_many_processes_are_never_lost(target: tuple[str, str, str]) -> None:
    kind, where, key = target
    done = run_worker("increments", kind, where, key, str(N), str(PROCS))
    assert done.returncode == 0, done.stderr
    with open_adapter(kind, where, key) as store:
        assert store.load()["counter"] == N * PROCS


def test_running_store_and_script_keep_both_and_store_hears(
        target: tuple[str, str, str], tmp_path: Path) -> None:
    kind, where, key = target
    out, stop = tmp_path / "seen.json", tmp_path / "stop"
    committed: dict[str, float] = {}
    with started("store", kind, where, key, "bot", "3.0", str(out), str(stop)) as bot:
        with open_adapter(kind, where, key) as script:
            for i in range(8):
                time.sleep(0.25)
                with script.transaction() as st:
                    st.setdefault("application", {})[f"script.{i}"] = i
                committed[f"script.{i}"] = time.time()
        # The bot runs until the last commit had the longest delay allowed below to reach
        # it: a fixed 3 s ended before the script's last commits on a loaded machine.
        time.sleep(2 * TARGET_DELAY)
        stop.touch()
        finished(bot)
    report = json.loads(out.read_text())
    with open_adapter(kind, where, key) as store:
        app = store.load()["application"]
    assert {k for k in app if k.startswith("script.")} == set(committed)
    assert sum(k.startswith("bot.") for k in app) == report["written"]
    heard: dict[str, float] = {}
    for when, paths in report["seen"]:
        for path in paths:
            if path[0] == "application" and len(path) > 1 and path[1] in committed:
                heard.setdefault(path[1], when)
    assert set(heard) == set(committed), f"never heard of {set(committed) - set(heard)}"
    delays = [heard[k] - committed[k] for k in committed]
    print(f"{kind}: reload delays {sorted(round(d, 3) for d in delays)}")  # pytest -s
    # The target is 1 s; the median must meet it, single outliers get slack for a busy box.
    assert statistics.median(delays) < TARGET_DELAY, delays
    assert max(delays) < 2 * TARGET_DELAY, delays


def test_two_stores_on_one_redis_lose_nothing(redis_url: str, redis_key: str,
                                              tmp_path: Path) -> None:
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    # b starts only once a is ready, and a loaded machine takes seconds to start a process:
    # a writes for 8 s and b for 3 s, so b's whole run falls inside a's and each hears the other.
    with started("store", "redis", redis_url, redis_key, "a", "8.0", str(outs[0])) as a, \
            started("store", "redis", redis_url, redis_key, "b", "3.0", str(outs[1])) as b:
        finished(a)
        finished(b)
    reports = [json.loads(out.read_text()) for out in outs]
    with RedisStore(redis_url, key=redis_key) as store:
        app = store.load()["application"]
    total = sum(r["written"] for r in reports)
    assert total >= 200, total  # ~10 ms apart for 2.5 s in each process
    assert len(app) == total  # every key of both writers is there: no lost update
    for mine, other in (("a", "b"), ("b", "a")):
        report = reports["ab".index(mine)]
        heard = {p[1] for _, paths in report["seen"] for p in paths if len(p) > 1}
        assert any(k.startswith(f"{other}.") for k in heard), f"{mine} never heard {other}"


def test_sigkill_while_holding_the_lock(target: tuple[str, str, str]) -> None:
    kind, where, key = target
    with open_adapter(kind, where, key) as store:
        store.save({"application": {"kept": 1}})
    with started("hold", kind, where, key) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    # The holder's lock timeout (and Redis lease) is 1 s: the others go on within it.
    with open_adapter(kind, where, key) as store:
        start = time.monotonic()
        with store.transaction() as st:
            st["application"]["after"] = 2
        waited = time.monotonic() - start
        assert waited < 1.0 + 0.5, waited
        assert store.load() == {"application": {"kept": 1, "after": 2}}


def test_merge_keeps_other_writers_changes(tmp_path: Path) -> None:
    """Two stores in one process on one file: the merge is leaf by leaf, conflicts counted."""
    import asyncio

    from cascadeui._backends import FileStorageBackend
    from cascadeui.actions import APPLICATION_SET
    from cascadeui.store import StateStore

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        path = tmp_path / "s.json"
        a, b = StateStore(), StateStore()
        await a.enable_persistence(FileStorageBackend(path), poll_interval=None)
        await b.enable_persistence(FileStorageBackend(path), poll_interval=None)
        await a.dispatch(APPLICATION_SET, {"path": ["g", "a"], "value": 1})
        await a.dispatch(APPLICATION_SET, {"path": ["same"], "value": "a"})
        await b.dispatch(APPLICATION_SET, {"path": ["g", "b"], "value": 2})
        await b.dispatch(APPLICATION_SET, {"path": ["same"], "value": "b"})
        assert await a.flush()
        assert await b.flush()  # version moved: merge, b's "same" wins (later writer)
        conflicts = b.merge_conflicts
        await a.close()
        await b.close()
        stored = await asyncio.to_thread(FileStore(path).load)
        return stored["application"], b.state["application"], conflicts

    stored, in_b, conflicts = asyncio.run(scenario())
    assert stored == {"g": {"a": 1, "b": 2}, "same": "b"}
    assert in_b == stored  # b installed a's change in memory too
    assert conflicts == 1
