"""Durable dispatches (issue 11): dispatch-to-durable latency, durable throughput, loop stall.

One cell = one backend, one state size, ``--users`` concurrent users. The ``application``
slice is filled with about ``--size`` bytes of JSON and made durable (untimed), then every
user makes small changes (``application.counters.u<user>``), each awaited until durable,
one after the other, until ``--actions`` changes in all are durable. Per change the time
from the call to its durable return is recorded; throughput is the changes over the time
from the first call to the last return. A 1 ms ticker records the loop's worst lateness
meanwhile. Afterwards a fresh backend loads what is durable and it must equal memory.

In the same process the raw medium's own small commit is timed ``--reps`` times: a 4 KB
append + fsync for the JSON file; a one-row ``INSERT`` + ``COMMIT`` in WAL with
``synchronous=FULL`` for SQLite; one ``RPUSH`` for Redis. Blocks of raw commits and blocks
of durable changes alternate (``CHUNKS`` of each), so on a shared machine both meet the
same disk and CPU load.

"Awaited until durable" is :func:`durable_dispatch`: ``dispatch(..., durable=True)`` when
the store has it, else ``dispatch()`` then ``flush()`` (the same promise through the older
API); the result names which one ran.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import sqlite3
import statistics
import time
from collections.abc import Callable
from typing import Any

from common import Ticker, build_application, lateness_summary, size_bytes

#: Record bytes of the raw SQLite and Redis small commits: about one journal record.
RAW_RECORD = 100
#: Blocks of raw commits and of durable changes alternate this many times per cell.
CHUNKS = 5


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p99/max of ``samples`` (seconds) in milliseconds."""
    if not samples:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"n": len(ordered), "p50_ms": statistics.median(ordered) * 1e3,
            "p99_ms": p99 * 1e3, "max_ms": ordered[-1] * 1e3}


# -- the raw medium's small commit -------------------------------------------------------


class RawCommit:
    """The medium's own smallest durable commit, nothing of cascadeui in the path."""

    def __init__(self, kind: str, workdir: str, redis_url: str | None, key: str) -> None:
        self.kind = kind
        self._close: list[Callable[[], Any]] = []
        self.once: Callable[[], None]
        if kind == "json":
            self.what = "4 KB append + fsync"
            block = os.urandom(4096)
            fd = os.open(os.path.join(workdir, "raw-append.log"),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._close.append(lambda: os.close(fd))

            def append() -> None:
                os.write(fd, block)
                os.fsync(fd)
            self.once = append
        elif kind == "sqlite":
            self.what = "1-row INSERT + COMMIT (WAL, synchronous=FULL)"
            conn = sqlite3.connect(os.path.join(workdir, "raw.db"), isolation_level=None)
            self._close.append(conn.close)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("CREATE TABLE IF NOT EXISTS j (seq INTEGER PRIMARY KEY, rec BLOB)")
            row = os.urandom(RAW_RECORD)

            def insert() -> None:
                conn.execute("BEGIN")
                conn.execute("INSERT INTO j (rec) VALUES (?)", (row,))
                conn.execute("COMMIT")
            self.once = insert
        elif kind == "redis":
            import redis

            self.what = "1 RPUSH"
            client = redis.Redis.from_url(redis_url or "", socket_timeout=30)
            raw_key = f"{key}:raw"
            item = os.urandom(RAW_RECORD)
            self._close += [client.close, lambda: client.delete(raw_key)]
            self.once = lambda: client.rpush(raw_key, item) and None
        else:
            raise ValueError(kind)
        for _ in range(3):
            self.once()  # warm-up: file creation, connection, page cache

    def timed(self, reps: int) -> list[float]:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            self.once()
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        for fn in reversed(self._close):
            fn()


# -- durable dispatches ------------------------------------------------------------------


def has_durable_api(store: Any) -> bool:
    """Whether ``store.dispatch`` takes ``durable=`` (issue 11's API)."""
    return "durable" in inspect.signature(store.dispatch).parameters


async def durable_dispatch(store: Any, api: str, action_type: str, payload: Any) -> None:
    """One change, returned only once durable; raises when the store says it is not."""
    if api == "durable":
        await store.dispatch(action_type, payload, durable=True)
        return
    await store.dispatch(action_type, payload)
    if not await store.flush():
        raise RuntimeError(f"flush() returned False: {store.last_write_error!r}")


class _GCPauses:
    """Wall time of the cyclic garbage collector's runs (it stops every thread's Python)."""

    def __init__(self) -> None:
        self.gen2: list[float] = []
        self.worst = 0.0
        self._t0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._t0
        self.worst = max(self.worst, took)
        if info["generation"] == 2:
            self.gen2.append(took)

    def close(self) -> None:
        gc.callbacks.remove(self._cb)


class _WriteCounter:
    """Counts the adapter's commits (journal appends and whole writes)."""

    def __init__(self, adapter: Any) -> None:
        self.calls = 0
        for name in ("save", "save_if_version", "save_changes"):
            inner = getattr(adapter, name, None)
            if inner is None:
                continue

            def wrapped(*a: Any, _inner: Any = inner, **kw: Any) -> Any:
                self.calls += 1
                return _inner(*a, **kw)

            setattr(adapter, name, wrapped)


async def _cell(args: Any, app: dict[str, Any], raw: RawCommit) -> dict[str, Any]:
    from w_dispatch import _backend, _redis_cleanup, _same

    from cascadeui.store import StateStore

    key = f"{args.key_prefix}:durable:{os.getpid()}"
    store = StateStore()
    backend = _backend(args.backend, args.workdir, args.redis_url, key)
    counter = _WriteCounter(backend.store)
    api = args.api if args.api != "auto" else ("durable" if has_durable_api(store)
                                                else "flush")
    # poll_interval=None: nobody else writes; the watch would only add noise.
    await store.enable_persistence(backend, poll_interval=None)
    await store.dispatch("APPLICATION_SET", {"path": ["records"], "value": app["records"]})
    await store.dispatch("APPLICATION_SET", {"path": ["counters"], "value": {}})
    if not await store.flush():
        raise RuntimeError(f"the initial write failed: {store.last_write_error!r}")
    del app
    users = args.users
    per_user = max(1, -(-args.actions // users))
    for u in range(users):  # warm-up, untimed: one durable change per user key
        await durable_dispatch(store, api, "APPLICATION_SET",
                               {"path": ["counters", f"u{u}"], "value": 0})
    latencies: list[float] = []
    failures: list[str] = []

    async def user(u: int, first: int, count: int) -> None:
        path = ["counters", f"u{u}"]
        for i in range(first, first + count):
            t0 = time.perf_counter()
            try:
                await durable_dispatch(store, api, "APPLICATION_SET",
                                       {"path": path, "value": i})
            except Exception as exc:  # counted and shown, never hidden
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append(time.perf_counter() - t0)

    if args.gc_freeze:  # what a bot can do once its state is loaded: no GC scans of it
        gc.collect()
        gc.freeze()
    pauses = _GCPauses()
    # Side by side on a shared machine: blocks of raw commits and of durable changes
    # alternate, so both see the same disk and CPU weather. The ticker runs only while
    # the users do (a raw commit blocks the loop by design).
    writes0 = counter.calls
    elapsed, cpu_s, raw_times = 0.0, 0.0, []
    lateness, cpu = [], []
    chunks = max(1, min(CHUNKS, per_user))
    done_per_user = 0
    for c in range(chunks):
        raw_times += raw.timed(-(-args.reps // chunks))
        count = per_user * (c + 1) // chunks - done_per_user
        ticker = Ticker()
        ticker.start()
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(user(u, done_per_user + 1, count) for u in range(users)))
        elapsed += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        await ticker.stop()
        lateness += ticker.lateness
        cpu += ticker.cpu
        done_per_user += count
    pauses.close()
    stall = lateness_summary(lateness)
    stall["worst_cpu_bound_ms"] = max(
        (min(a, b) for a, b in zip(lateness, cpu, strict=True)), default=0.0) * 1000
    writes = counter.calls - writes0
    memory = {k: store.state.get(k) for k in ("application", "persistent_views")}
    await store.close(close_backend=True)
    check = _backend(args.backend, args.workdir, args.redis_url, key)
    try:
        durable = await check.load_state()
    finally:
        await check.aclose()
        if args.backend == "redis":
            _redis_cleanup(args.redis_url, key)
    done = len(latencies)
    return {
        "api": api, "users": users, "changes": done, "failures": len(failures),
        "first_failures": failures[:3], "seconds": elapsed,
        "durable_per_s": done / elapsed if elapsed > 0 else None,
        # CPU time of this process (all threads) per durable change: what the changes
        # cost whatever else the machine runs; 1 / it is the rate one free core allows.
        "cpu_us_per_change": cpu_s / done * 1e6 if done else None,
        "latency": percentiles(latencies), "stall": stall, "writes": writes,
        "changes_per_write": done / writes if writes else None,
        "durable_equals_memory": _same(durable, memory),
        "raw": {"what": raw.what, **percentiles(raw_times)},
        "gc": {"gen2_runs": len(pauses.gen2), "gen2_worst_ms": max(pauses.gen2, default=0) * 1e3,
               "worst_ms": pauses.worst * 1e3, "frozen": bool(args.gc_freeze)},
    }


def run(args: Any) -> dict[str, Any]:
    logging.getLogger("cascadeui").setLevel(logging.ERROR)
    key = f"{args.key_prefix}:durable-raw:{os.getpid()}"
    raw = RawCommit(args.backend, args.workdir, args.redis_url, key)
    try:
        app = build_application(size_bytes(args.size))
        return asyncio.run(_cell(args, app, raw))
    finally:
        raw.close()
