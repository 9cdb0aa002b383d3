"""What a compaction costs the event loop: store writes at 10 MB, appending vs. compacting.

Workload 1 makes 1,000 small changes and one flush, so its one write is a journal append.
A bot that runs for long also compacts: about once per half a snapshot of changes, the
write is the whole document again. This measures both kinds of write side by side: per
backend, ``--writes`` rounds of (one small action, ``await store.flush()``) with the
default journal (appends), then with a zero budget (every write compacts), while a 1 ms
ticker records the loop's lateness. Prints a markdown table::

    python -m bench.compaction_stall --size 10MB --writes 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BACKENDS, Ticker, build_application, private_redis, size_bytes
from w_dispatch import _backend

from cascadeui.adapters import _journal as journal
from cascadeui.store import StateStore


async def _run(kind: str, mode: str, app: dict[str, Any], writes: int, workdir: str,
               redis_url: str | None) -> dict[str, float]:
    store = StateStore()
    workdir = os.path.join(workdir, f"{kind}-{mode}")
    os.makedirs(workdir)
    backend = _backend(kind, workdir, redis_url, f"cascadeui-bench:{mode}:{os.getpid()}")
    await store.enable_persistence(backend, debounce=0, poll_interval=None)
    await store.dispatch("APPLICATION_SET", {"path": ["records"], "value": app["records"]})
    assert await store.flush()
    for i in range(3):  # warm up: the first writes of a new file/database/key are slower
        await store.dispatch("APPLICATION_SET", {"path": ["warm"], "value": i})
        assert await store.flush()
    ticker = Ticker()
    ticker.start()
    times = []
    for i in range(writes):
        await store.dispatch("APPLICATION_SET", {"path": ["counters", f"k{i}"], "value": i})
        t0 = time.perf_counter()
        assert await store.flush()
        times.append(time.perf_counter() - t0)
    lateness = await ticker.stop()
    await store.close(close_backend=True)
    return {"write_ms": statistics.median(times) * 1e3, "worst_ms": lateness["worst_ms"],
            "p99_ms": lateness["p99_ms"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="10MB")
    parser.add_argument("--writes", type=int, default=10)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--redis-url", help="a Redis to use instead of a private server")
    args = parser.parse_args()
    app = build_application(size_bytes(args.size))
    budget = (journal.JOURNAL_MIN_BYTES, journal.JOURNAL_RATIO)
    print("| backend | write kind | median write ms (flush) | worst stall ms | p99 stall ms |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir, private_redis(args.redis_url) as redis_url:
        for kind in args.backends.split(","):
            for mode in ("append", "compact"):
                if mode == "compact":  # a zero budget: every write rewrites the snapshot
                    journal.JOURNAL_MIN_BYTES, journal.JOURNAL_RATIO = 0, 0.0
                try:
                    row = asyncio.run(_run(kind, mode, app, args.writes, workdir, redis_url))
                finally:
                    journal.JOURNAL_MIN_BYTES, journal.JOURNAL_RATIO = budget
                print(f"| {kind} | {mode} | {row['write_ms']:.1f} | {row['worst_ms']:.1f} "
                      f"| {row['p99_ms']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
