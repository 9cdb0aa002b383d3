"""Helpers shared by the orchestrator and the workers (stdlib only: both venvs import it).

A worker runs in either interpreter (ours or pycascadeui 2.1.0's), so nothing here may
import ``cascadeui`` at import time. Sizes, state builders, the loop-lateness ticker, memory
probes and the private Redis server (:func:`private_redis`, orchestrator only: it imports
``kit.redis_server`` when called) live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

#: Named sizes of the ``application`` slice, in bytes of compact JSON.
SIZES: dict[str, int] = {
    "2KB": 2_000,
    "10KB": 10_000,
    "100KB": 100_000,
    "1MB": 1_000_000,
    "10MB": 10_000_000,
}

BACKENDS = ("json", "sqlite", "redis")


def size_bytes(name: str) -> int:
    """``"1MB"`` -> 1_000_000; also accepts a plain integer string."""
    if name in SIZES:
        return SIZES[name]
    return int(name)


def build_application(target_bytes: int) -> dict[str, Any]:
    """A deterministic ``application`` slice of about ``target_bytes`` of compact JSON.

    Many small records (a realistic bot: per-guild or per-user entries) plus a ``counters``
    dict that the workload's actions change one key at a time.
    """
    def record(i: int) -> dict[str, Any]:
        return {"name": f"user-{i}", "score": i * 7 % 1000, "tags": ["a", "b"],
                "on": i % 2 == 0}

    # A record with its key is ~70 bytes of compact JSON: size from a sample.
    per = json_size({"u0000000": record(1_000_000)}) - 1
    n = max(1, target_bytes // per)
    records = {f"u{i:07d}": record(i) for i in range(n)}
    return {"records": records, "counters": {}}


def json_size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


def set_path(state: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """Return ``state`` with ``value`` at ``path``, copying only the dicts along the path."""
    if not path:
        return value  # type: ignore[no-any-return]
    head, rest = path[0], path[1:]
    new = dict(state)
    child = state.get(head)
    new[head] = set_path(child if isinstance(child, dict) else {}, rest, value)
    return new


# -- the loop-lateness ticker ----------------------------------------------------------


class Ticker:
    """A 1 ms ``asyncio.sleep`` loop recording how late each wake-up is (seconds).

    Also records the process's CPU time over each tick: on a shared machine a late
    wake-up may be the OS running someone else, and ``min(lateness, CPU)`` bounds the part
    this process's own work (any of its threads, which share the GIL) can explain.
    """

    def __init__(self, period: float = 0.001) -> None:
        self.period = period
        self.lateness: list[float] = []
        self.cpu: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop:
            due = loop.time() + self.period
            cpu0 = time.process_time()
            await asyncio.sleep(self.period)
            self.lateness.append(max(0.0, loop.time() - due))
            self.cpu.append(time.process_time() - cpu0)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, float]:
        self._stop = True
        if self._task is not None:
            await self._task
        summary = lateness_summary(self.lateness)
        bounded = [min(late, cpu) for late, cpu in zip(self.lateness, self.cpu, strict=True)]
        summary["worst_cpu_bound_ms"] = max(bounded, default=0.0) * 1000
        return summary


def lateness_summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"ticks": 0, "worst_ms": 0.0, "p99_ms": 0.0, "median_ms": 0.0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"ticks": len(ordered), "worst_ms": ordered[-1] * 1000, "p99_ms": p99 * 1000,
            "median_ms": statistics.median(ordered) * 1000}


# -- memory ------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_bytes() -> int:
    """Current resident set size (Linux)."""
    return _status_kb("VmRSS") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since start or the last :func:`reset_peak_rss`."""
    return _status_kb("VmHWM") * 1024


# -- a private Redis server --------------------------------------------------------------


@contextlib.contextmanager
def private_redis(given: str | None = None) -> Iterator[str | None]:
    """Yield a Redis URL: ``given``, or a private server on a free loopback port.

    Yields None when no server binary exists. The server runs without persistence in a
    temp dir and is stopped on exit; the machine's shared 6379 is never touched. Only the
    orchestrator (our venv) calls this, so ``cascadeui`` is imported here and not above.
    """
    if given:
        yield given
        return
    from kit.redis_server import RedisServer, find_server_binary

    binary = find_server_binary()
    if binary is None:
        yield None
        return
    with RedisServer(binary) as server:
        yield server.url


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
