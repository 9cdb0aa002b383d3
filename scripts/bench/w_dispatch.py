"""Workloads 1, 2 and 5: dispatch until durable, loop lateness, peak memory.

The ``application`` slice is filled with about ``--size`` bytes of JSON, persistence is
switched on and the initial state made durable (untimed). Then ``--actions`` actions each
change one small key (``application.counters.k<i % 64>``), and the clock stops when
everything dispatched is durable: ``await store.flush()`` for ours; for pycascadeui 2.1.0,
which has no flush, when every save task its dispatches started has finished.

A 1 ms ticker runs on the loop meanwhile (workload 2), and the process's peak RSS is
compared with the state's in-memory size (workload 5). Afterwards a fresh backend object
loads what is durable and it is compared with the store's in-memory persisted slices.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import (
    Ticker,
    build_application,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    size_bytes,
)

N_KEYS = 64


def _action(i: int) -> dict[str, Any]:
    return {"path": ["counters", f"k{i % N_KEYS}"], "value": i}


class _SaveCounter:
    """Counts save calls and failures by wrapping ``save_state`` (and an adapter's ``save``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.failed = 0
        self.adapter_calls = 0
        self.adapter_failed = 0

    def wrap_async(self, backend: Any) -> None:
        inner = backend.save_state

        async def save_state(state: Any) -> bool:
            self.calls += 1
            try:
                ok = await inner(state)
            except Exception:
                self.failed += 1
                raise
            if not ok:
                self.failed += 1
            return bool(ok)

        backend.save_state = save_state

    def wrap_adapter(self, adapter: Any) -> None:
        for name in ("save", "save_if_version", "save_changes", "apply"):
            inner = getattr(adapter, name, None)
            if inner is None:
                continue

            def wrapped(*a: Any, _inner: Any = inner, **kw: Any) -> Any:
                self.adapter_calls += 1
                try:
                    return _inner(*a, **kw)
                except Exception:
                    self.adapter_failed += 1
                    raise

            setattr(adapter, name, wrapped)


class _ErrorLogCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.errors = 0
        self.warnings = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage()[:300])


# -- our implementation ------------------------------------------------------------------


def _backend(kind: str, workdir: str, redis_url: str | None, key: str) -> Any:
    """A backend through the seed's public constructors, which both implementations share.

    Imports stay lazy: the peer's SQLite and Redis backends import their extras on import.
    """
    if kind == "json":
        from cascadeui.persistence import FileStorageBackend

        return FileStorageBackend(os.path.join(workdir, "state.json"))
    if kind == "sqlite":
        from cascadeui.persistence import SQLiteBackend

        return SQLiteBackend(os.path.join(workdir, "state.db"))
    if kind == "redis":
        from cascadeui.persistence import RedisBackend

        if not redis_url:
            raise RuntimeError("no Redis server for the redis backend")
        return RedisBackend(url=redis_url, key=key)
    raise ValueError(kind)


async def _ours(args: Any, app: dict[str, Any], ticker: Ticker,
                counter: _SaveCounter) -> dict[str, Any]:
    from cascadeui.store import get_store, reset_store

    key = f"{args.key_prefix}:dispatch:ours:{os.getpid()}"
    reset_store()
    store = get_store()
    backend = _backend(args.backend, args.workdir, args.redis_url, key)
    counter.wrap_async(backend)
    if hasattr(backend, "store"):
        counter.wrap_adapter(backend.store)
    await store.enable_persistence(backend, debounce=0.05, max_delay=1.0)
    await store.dispatch("APPLICATION_SET", {"path": ["records"], "value": app["records"]})
    await store.dispatch("APPLICATION_SET", {"path": ["counters"], "value": {}})
    initial_ok = await store.flush()
    del app
    calls0, adapter0 = counter.calls, counter.adapter_calls
    failed0, afailed0 = counter.failed, counter.adapter_failed
    timed, flushed, memory_state = await _timed_burst(store, args.actions, ticker, store.flush)
    await store.close()
    check = _backend(args.backend, args.workdir, args.redis_url, key)
    try:
        durable = await check.load_state()
    finally:
        await check.aclose()
        if args.backend == "redis":
            _redis_cleanup(args.redis_url, key)
    return {
        "initial_ok": initial_ok, "flush_ok": flushed, **timed,
        "saves": counter.calls - calls0, "adapter_writes": counter.adapter_calls - adapter0,
        "failed_saves": (counter.failed - failed0) + (counter.adapter_failed - afailed0),
        "durable_equals_memory": _same(durable, memory_state),
    }


# -- pycascadeui 2.1.0 -------------------------------------------------------------------


async def _peer_settle(store: Any) -> None:
    """Wait until every save task started by the peer's dispatches has finished."""
    tm = store.task_manager
    while True:
        pending = [t for t in tm._tasks.get("state_store", ()) if not t.done()]
        if not pending:
            return
        await asyncio.gather(*pending, return_exceptions=True)


async def _peer(args: Any, app: dict[str, Any], ticker: Ticker,
                counter: _SaveCounter) -> dict[str, Any]:
    # The way the peer documents custom reducers: @cascade_reducer hands the reducer a deep
    # copy of the state to change and return.
    from cascadeui import cascade_reducer, get_store

    @cascade_reducer("APPLICATION_SET")
    async def application_set(action: dict[str, Any], state: dict[str, Any]) -> Any:
        path = action["payload"]["path"]
        node = state.setdefault("application", {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = action["payload"]["value"]
        return state

    key = f"{args.key_prefix}:dispatch:peer:{os.getpid()}"
    store = get_store()
    backend = _backend(args.backend, args.workdir, args.redis_url, key)
    counter.wrap_async(backend)
    store.enable_persistence(backend)
    await store.dispatch("APPLICATION_SET", {"path": ["records"], "value": app["records"]})
    await store.dispatch("APPLICATION_SET", {"path": ["counters"], "value": {}})
    await _peer_settle(store)
    del app
    calls0, failed0 = counter.calls, counter.failed
    timed, _, memory_state = await _timed_burst(store, args.actions, ticker,
                                                lambda: _peer_settle(store))
    check = _backend(args.backend, args.workdir, args.redis_url, key)
    durable = await check.load_state() or {}
    if hasattr(check, "close"):
        await check.close()
    if hasattr(backend, "close"):
        await backend.close()
    if args.backend == "redis":
        _redis_cleanup(args.redis_url, key)
    return {
        "initial_ok": True, "flush_ok": None, **timed,
        "saves": counter.calls - calls0, "failed_saves": counter.failed - failed0,
        "durable_equals_memory": _same(durable, memory_state),
    }


# -- shared ------------------------------------------------------------------------------


async def _timed_burst(store: Any, actions: int, ticker: Ticker,
                       until_durable: Callable[[], Awaitable[Any]],
                       ) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """The timed part, the same code for both implementations: ``actions`` dispatches, then
    ``until_durable()``, under the ticker and a fresh peak-RSS mark.

    :returns: the timings, lateness and peak RSS; what ``until_durable`` returned; the
        persisted slices in memory at the end.
    """
    reset_peak_rss()
    ticker.start()
    t0 = time.perf_counter()
    for i in range(actions):
        await store.dispatch("APPLICATION_SET", _action(i))
    t_dispatched = time.perf_counter()
    outcome = await until_durable()
    t_durable = time.perf_counter()
    lateness = await ticker.stop()
    timed = {"dispatch_s": t_dispatched - t0, "durable_s": t_durable - t0,
             "lateness": lateness, "peak_rss": peak_rss_bytes()}
    memory = {k: store.state.get(k) for k in ("application", "persistent_views")}
    return timed, outcome, memory


def _same(durable: dict[str, Any], memory: dict[str, Any]) -> bool:
    for slice_name, value in memory.items():
        if (durable.get(slice_name) or {}) != (value or {}):
            return False
    return True


def _redis_cleanup(url: str | None, key: str) -> None:
    if not url:
        return
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [key, *client.scan_iter(match=f"{key}:*", count=100)]
        client.delete(*keys)
    finally:
        client.close()


def run(args: Any) -> dict[str, Any]:
    base_rss = rss_bytes()
    app = build_application(size_bytes(args.size))
    state_rss = rss_bytes() - base_rss
    errors = _ErrorLogCounter()
    logging.getLogger("cascadeui").addHandler(errors)
    counter = _SaveCounter()
    driver = _ours if args.impl == "ours" else _peer
    out = asyncio.run(driver(args, app, Ticker(), counter))
    del app
    n = args.actions
    out.update({
        "actions": n,
        "actions_per_s": n / out["durable_s"] if out["durable_s"] > 0 else None,
        "us_per_action": out["durable_s"] / n * 1e6,
        "error_logs": errors.errors, "first_errors": errors.first,
        "base_rss": base_rss, "state_rss": state_rss,
        "peak_over_state": ((out["peak_rss"] - base_rss) / state_rss) if state_rss > 0 else None,
    })
    return out
