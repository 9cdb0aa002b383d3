#!/usr/bin/env python3
"""Redis outage campaign (issue 7, "Faults"): a store keeps dispatching while Redis is down.

Starts a private ``redis-server`` (appendonly, appendfsync always) on a free loopback port,
enables persistence of a :class:`~cascadeui.store.StateStore` on it, and dispatches one
``APPLICATION_SET`` every ``--interval`` seconds. After ``--before`` seconds the server is
SIGKILLed; it stays down for ``--outage`` seconds (the store keeps dispatching), then it is
restarted on the same port and directory. The campaign then checks:

- while down, ``flush()`` returns False quickly (no hang) and the state stays in memory;
- the writer backs off: attempts are counted, and the logged delays double up to the cap;
- once Redis is back, everything dispatched lands (read back by a fresh adapter), within
  ``retry_max`` plus a margin, and ``flush()`` is True again: nothing dispatched is lost.

Prints one JSON summary line; exit code 0 only when every check holds. Full size (the
issue's 30 s outage)::

    python -m campaigns.fault --outage 30 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kit.plant import planted
from kit.redis_server import RedisServer, durable_redis

from cascadeui._backends import RedisBackend
from cascadeui.adapters import RedisStore
from cascadeui.store import StateStore

_RETRY = re.compile(r"attempt (\d+), retrying in ([0-9.]+)s")


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.delays: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = _RETRY.search(record.getMessage())
        if m:
            self.delays.append(float(m.group(2)))


class CountingBackend(RedisBackend):
    """Counts save attempts (observation only; every save goes to the real server)."""

    attempts = 0
    failures = 0

    async def save_state(self, state: Any) -> bool:
        self.attempts += 1
        ok = await super().save_state(state)
        self.failures += not ok
        return ok


async def outage_round(redis: RedisServer, *, key: str, before: float, outage: float,
                       interval: float, retry_max: float) -> dict[str, Any]:
    retries = _Retries()
    logging.getLogger("cascadeui").addHandler(retries)
    backend = CountingBackend(redis.url, key=key, socket_timeout=0.5, lock_timeout=2.0)
    store = StateStore()
    problems: list[str] = []
    await store.enable_persistence(backend, debounce=0.02, max_delay=0.2, retry_initial=0.05,
                                   retry_max=retry_max)
    expected: dict[str, Any] = {}
    n = 0

    async def dispatch_for(seconds: float) -> None:
        nonlocal n
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n += 1
            expected[f"k{n}"] = {"n": n, "tags": {n, n + 1}}
            await store.dispatch("APPLICATION_SET", {"path": ["campaign", f"k{n}"],
                                                     "value": {"n": n, "tags": {n, n + 1}}})
            await asyncio.sleep(interval)

    await dispatch_for(before)
    if not await store.flush():
        problems.append("flush failed before the outage")
    redis.kill()
    killed_at = time.monotonic()
    attempts_before = backend.attempts
    await dispatch_for(outage / 2)
    t0 = time.monotonic()
    flushed_down = await asyncio.wait_for(store.flush(), timeout=10)
    flush_down_s = time.monotonic() - t0
    if flushed_down:
        problems.append("flush() returned True while Redis was down")
    await dispatch_for(outage - (time.monotonic() - killed_at))
    if store.state["application"]["campaign"] != expected:
        problems.append("in-memory state lost dispatches during the outage")
    attempts_down = backend.attempts - attempts_before
    redis.start()
    back_at = time.monotonic()
    await dispatch_for(min(0.2, before))
    # Everything must land without help: wait for the background writer, then verify.
    landed_s: float | None = None
    stored: Any = None
    reader = RedisStore(redis.url, key=key, socket_timeout=1.0)
    try:
        while time.monotonic() - back_at < retry_max + 10:
            try:
                stored = reader.load().get("application", {}).get("campaign")
            except Exception:  # Redis still loading its AOF: try again
                stored = None
            if stored == expected:
                landed_s = time.monotonic() - back_at
                break
            await asyncio.sleep(0.05)
    finally:
        reader.close()
    if landed_s is None:
        problems.append("the dispatched state did not land after Redis came back")
    if not await store.flush():
        problems.append("flush() still False after Redis came back")
    await store.close()
    logging.getLogger("cascadeui").removeHandler(retries)
    delays = retries.delays
    grows = all(b >= a for a, b in itertools.pairwise(delays))
    capped = all(d <= retry_max + 1e-9 for d in delays)
    if not (grows and capped):
        problems.append(f"retry delays not a capped doubling: {delays}")
    # Without backoff a hot loop would make hundreds of attempts; with it, about
    # log2(retry_max / 0.05) + outage / retry_max.
    bound = 8 + outage / retry_max * 1.5
    if attempts_down > bound:
        problems.append(f"{attempts_down} save attempts during a {outage}s outage (> {bound:.0f})")
    if attempts_down < 2:
        problems.append(f"only {attempts_down} save attempts during the outage: no retrying")
    held = stored if isinstance(stored, dict) else {}
    lost = sum(1 for k, v in expected.items() if held.get(k) != v)
    return {"dispatched": n, "lost": lost,
            "attempts_during_outage": attempts_down, "retry_delays": delays,
            "flush_while_down_s": round(flush_down_s, 3), "landed_after_restart_s":
            None if landed_s is None else round(landed_s, 3), "problems": problems}


async def campaign(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="cascadeui-fault-"))
    redis = durable_redis(workdir)
    rounds = []
    try:
        redis.start()
        for i in range(args.rounds):
            rounds.append(await outage_round(
                redis, key=f"cascadeui-fault:{os.getpid()}:{i}", before=args.before,
                outage=args.outage, interval=args.interval, retry_max=args.retry_max))
    finally:
        redis.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    problems = [p for r in rounds for p in r["problems"]]
    return {"campaign": "redis-outage", "rounds": len(rounds), "outage_s": args.outage,
            "dispatched": sum(r["dispatched"] for r in rounds),
            "lost": sum(r["lost"] for r in rounds) + planted("loss"), "problems": problems,
            "detail": rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds Redis is down")
    parser.add_argument("--before", type=float, default=0.5, help="seconds of traffic first")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between dispatches")
    parser.add_argument("--retry-max", type=float, default=2.0, help="the store's backoff cap")
    args = parser.parse_args(argv)
    # The store logs every failed write at ERROR; keep them off the terminal.
    logging.getLogger("cascadeui").setLevel(logging.ERROR)
    logging.getLogger("cascadeui").propagate = False
    result = asyncio.run(campaign(args))
    print(json.dumps(result))
    return 0 if not result["problems"] and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
