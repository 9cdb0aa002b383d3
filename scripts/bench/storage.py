"""Save and load latency of each storage backend, next to the raw cost of its medium.

For states of about 10 KB, 1 MB and 10 MB, each run times one ``save``/``load`` through
the synchronous adapter and, right after it, the raw medium with the same bytes:

- file:   ``json.dumps`` + write + fsync + ``os.replace`` (load: read + ``json.loads``)
- sqlite: stdlib ``sqlite3`` upsert + commit, WAL and ``synchronous=FULL`` like the store
          (load: SELECT + ``json.loads``)
- redis:  redis-py ``SET`` of the ``json.dumps`` text (load: GET + ``json.loads``)

Runs are interleaved (store, raw, store, raw...), so a noisy machine slows both sides.
Prints a markdown table of medians (min-max) and ratios. Target (issue 2): every save
within 1.5x its raw medium at 1 MB and 10 MB; ``--check`` exits 1 when one is not.

    python -m bench.storage                 # full sizes, private redis-server
    python -m bench.storage --quick         # tiny sizes (the test suite runs this)
    python -m bench.storage --redis-url redis://127.0.0.1:6390/0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kit.redis_server import RedisServer, RedisServerError, find_server_binary

from cascadeui.adapters import FileStore, RedisStore, SQLiteStore

FULL_SIZES = (10_000, 1_000_000, 10_000_000)
QUICK_SIZES = (2_000, 20_000)
TARGET = 1.5


def make_state(size: int) -> dict[str, Any]:
    """A bot-like state (members with scores, roles, flags) of about ``size`` JSON bytes."""
    def member(i: int) -> dict[str, Any]:
        return {"name": f"user{i}", "score": i * 3, "ratio": i / 7,
                "roles": ["a", "b", str(i)], "active": i % 2 == 0, "note": None}

    per = len(json.dumps({f"member:{10**17}": member(10**5)}))
    members = {f"member:{10**17 + i}": member(i) for i in range(max(1, size // per))}
    return {"application": {"members": members}, "persistent_views": {}}


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- the raw media -------------------------------------------------------------------------


def raw_file(path: Path) -> tuple[Callable[[dict[str, Any]], None], Callable[[], Any]]:
    def save(state: dict[str, Any]) -> None:
        data = json.dumps(state).encode("utf-8")
        tmp = f"{path}.raw.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def load() -> Any:
        with open(path, "rb") as fh:
            return json.loads(fh.read())

    return save, load


def raw_sqlite(path: Path) -> tuple[Callable[[dict[str, Any]], None], Callable[[], Any],
                                    sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, data TEXT)")

    def save(state: dict[str, Any]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO raw (id, data) VALUES (1, ?) ON CONFLICT(id) DO UPDATE "
                     "SET data = excluded.data", (json.dumps(state),))
        conn.execute("COMMIT")

    def load() -> Any:
        return json.loads(conn.execute("SELECT data FROM raw WHERE id = 1").fetchone()[0])

    return save, load, conn


def raw_redis(url: str, key: str) -> tuple[Callable[[dict[str, Any]], None],
                                           Callable[[], Any], Any]:
    import redis

    client = redis.Redis.from_url(url)

    def save(state: dict[str, Any]) -> None:
        client.set(key, json.dumps(state))

    def load() -> Any:
        return json.loads(client.get(key))

    return save, load, client


# -- a private redis-server ----------------------------------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """Start a throwaway redis-server on a free loopback port (no persistence)."""
    binary = find_server_binary()
    if binary is None:
        raise SystemExit("no redis-server found: pass --redis-url")
    server = RedisServer(binary)
    try:
        server.start()
    except RedisServerError as exc:
        server.close()
        raise SystemExit(str(exc)) from None
    try:
        yield server.url
    finally:
        server.close()


# -- the measurement -----------------------------------------------------------------------


def stats(samples: list[float]) -> str:
    return (f"{statistics.median(samples) * 1e3:.2f} "
            f"({min(samples) * 1e3:.2f}-{max(samples) * 1e3:.2f})")


def measure(name: str, store: Any, raw_save: Callable[[dict[str, Any]], None],
            raw_load: Callable[[], Any], state: dict[str, Any], runs: int
            ) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"save": [], "raw_save": [], "load": [], "raw_load": []}
    store.save(state)  # warm up: connections, caches, the first file
    raw_save(state)
    for _ in range(runs):
        out["save"].append(timed(lambda: store.save(state)))
        out["raw_save"].append(timed(lambda: raw_save(state)))
        out["load"].append(timed(store.load))
        out["raw_load"].append(timed(raw_load))
    assert store.load() == state, f"{name}: round trip differs"
    return out


def human(size: int) -> str:
    return f"{size / 1e6:g} MB" if size >= 1_000_000 else f"{size / 1e3:g} KB"


def run(sizes: tuple[int, ...], runs: int, redis_url: str, workdir: Path) -> list[str]:
    rows = ["| state | backend | save ms, median (min-max) | raw save ms | save ratio "
            "| load ms | raw load ms | load ratio |",
            "|---|---|---|---|---|---|---|---|"]
    misses: list[str] = []
    for size in sizes:
        state = make_state(size)
        actual = len(json.dumps(state))
        key = f"cascadeui-bench:{uuid.uuid4().hex}"
        fsave, fload = raw_file(workdir / f"raw-{size}.json")
        ssave, sload, sconn = raw_sqlite(workdir / f"raw-{size}.db")
        rsave, rload, rclient = raw_redis(redis_url, f"{key}:raw")
        stores = [("file", FileStore(workdir / f"s-{size}.json"), fsave, fload),
                  ("sqlite", SQLiteStore(workdir / f"s-{size}.db"), ssave, sload),
                  ("redis", RedisStore(redis_url, key=key), rsave, rload)]
        try:
            for name, store, raw_s, raw_l in stores:
                with store:
                    m = measure(name, store, raw_s, raw_l, state, runs)
                save_ratio = statistics.median(m["save"]) / statistics.median(m["raw_save"])
                load_ratio = statistics.median(m["load"]) / statistics.median(m["raw_load"])
                rows.append(f"| {human(actual)} | {name} | {stats(m['save'])} | "
                            f"{stats(m['raw_save'])} | {save_ratio:.2f}x | {stats(m['load'])} "
                            f"| {stats(m['raw_load'])} | {load_ratio:.2f}x |")
                if size >= 1_000_000 and save_ratio > TARGET:
                    misses.append(f"{name} at {human(actual)}: {save_ratio:.2f}x")
                print(rows[-1], file=sys.stderr, flush=True)
        finally:
            sconn.close()
            rclient.delete(key, f"{key}:version", f"{key}:raw")
            rclient.close()
    if misses:
        rows.append("")
        rows.append(f"Over the {TARGET}x save target: " + "; ".join(misses))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per size")
    parser.add_argument("--redis-url", default=None,
                        help="a Redis to use (default: start a private redis-server)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated state sizes in bytes (default: 10 KB, 1 MB, 10 MB)")
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 when a save is over {TARGET}x its raw medium at >= 1 MB")
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.sizes:
        sizes = tuple(int(float(x)) for x in args.sizes.split(","))
    runs = args.runs or (3 if args.quick else 9)
    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(private_redis())
        workdir = Path(args.dir) if args.dir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="cascadeui-bench-")))
        rows = run(sizes, runs, url, workdir)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {runs} runs per cell, "
          f"times in ms")
    print()
    print("\n".join(rows))
    missed = any(r.startswith("Over the") for r in rows)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
