#!/usr/bin/env python3
"""PostgreSQL benchmarks: multi-process transactions against raw psycopg; durable dispatch.

Issue 13's target: 1, 2, 4 and 8 processes of read-modify-write increments on one ~1 KB
document (as ``scripts/bench/w_mp.py`` does for the other backends), our adapter at
least half as fast as raw psycopg 3 doing ``SELECT data FROM s WHERE id = 1 FOR UPDATE``
+ ``UPDATE`` + ``COMMIT`` in the same run, and not one update lost (the final counter is
checked). Each size runs ``--reps`` times, raw and ours alternating; medians reported.

    python -m bench.postgres                       # 1,2,4,8 x 200
    python -m bench.postgres --procs 1,2 --per-proc 20 --reps 1

``--durable``: issue 11's durable dispatch on PostgreSQL. A ``StateStore`` on
``PostgresBackend`` holding a ``--state`` sized document; 1, 10 and 100 concurrent users
each await ``dispatch(..., durable=True)`` of a small change, the store group-committing
them as journal appends; reported: dispatch-to-durable latency p50/p99, durable changes
per second, and the raw medium's small commit (a one-row ``INSERT`` in autocommit) timed
in the same run. Afterwards a fresh store must load exactly what memory holds::

    python -m bench.postgres --durable

The database is a scratch one (random name, dropped at the end) on
``CASCADEUI_TEST_POSTGRES_URL``, 127.0.0.1:5432, or a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

PAD = "x" * 1000  # a small document: this measures locking and round trips, not bytes


def _raw(url: str) -> Callable[[], None]:
    import psycopg

    conn = psycopg.connect(url)

    def incr() -> None:
        row = conn.execute("SELECT data FROM s WHERE id = 1 FOR UPDATE").fetchone()
        assert row is not None
        doc = json.loads(row[0])
        doc["n"] += 1
        conn.execute("UPDATE s SET data = %s WHERE id = 1", (json.dumps(doc),))
        conn.commit()

    return incr


def _ours(url: str) -> Callable[[], None]:
    from cascadeui.adapters import PostgresStore

    store = PostgresStore(url, table="ours", timeout=60)

    def incr() -> None:
        with store.transaction() as state:
            state["n"] = state.get("n", 0) + 1

    return incr


def _seed(url: str, impl: str) -> None:
    import psycopg

    doc = {"n": 0, "pad": PAD}
    if impl == "ours":
        from cascadeui.adapters import PostgresStore

        with PostgresStore(url, table="ours") as store:
            store.save(doc)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS s")
        conn.execute("CREATE TABLE s (id integer PRIMARY KEY, data text NOT NULL)")
        conn.execute("INSERT INTO s VALUES (1, %s)", (json.dumps(doc),))


def _final(url: str, impl: str) -> int:
    import psycopg

    if impl == "ours":
        from cascadeui.adapters import PostgresStore

        with PostgresStore(url, table="ours") as store:
            return int(store.load()["n"])
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT data FROM s").fetchone()
        assert row is not None
        return int(json.loads(row[0])["n"])


def _child(url: str, impl: str, per_proc: int, go: Any, ready: Any, done: Any) -> None:
    incr = _ours(url) if impl == "ours" else _raw(url)
    incr_warm = incr  # the first call connects (and, for ours, checks the tables)
    ready.put(os.getpid())
    go.wait(60)
    incr_warm()
    t0 = time.perf_counter()
    for _ in range(per_proc - 1):
        incr()
    done.put(time.perf_counter() - t0)


def one(url: str, impl: str, procs: int, per_proc: int) -> dict[str, Any]:
    """One timed run: ``procs`` processes x ``per_proc`` increments after a common start."""
    _seed(url, impl)
    ctx = mp.get_context("fork")
    go, ready, done = ctx.Event(), ctx.Queue(), ctx.Queue()
    children = [ctx.Process(target=_child, args=(url, impl, per_proc, go, ready, done))
                for _ in range(procs)]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=60)
    t0 = time.perf_counter()
    go.set()
    for child in children:
        child.join(300)
    wall = time.perf_counter() - t0
    final = _final(url, impl)
    expected = procs * per_proc
    return {"impl": impl, "procs": procs, "per_proc": per_proc,
            "rate": round(expected / wall, 1), "final": final,
            "lost": expected - final, "ok": all(c.exitcode == 0 for c in children)}


@contextlib.contextmanager
def database() -> Iterator[str]:
    from kit.postgres_server import any_database

    with any_database() as url:
        yield url


def raw_commit_ms(url: str, n: int) -> float:
    """Median milliseconds of the medium's small commit: one autocommit INSERT."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS raw_commit (v bigint)")
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO raw_commit VALUES (%s)", (i,))
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def durable_cell(url: str, table: str, state_bytes: int, users: int,
                       actions: int) -> dict[str, Any]:
    """One cell: ``users`` concurrent users awaiting durable changes until ``actions``."""
    from cascadeui._backends import PostgresBackend
    from cascadeui.adapters import PostgresStore
    from cascadeui.store import StateStore

    store = StateStore()
    await store.enable_persistence(PostgresBackend(url, table=table), poll_interval=None)
    records = {f"r{i}": "x" * 90 for i in range(max(1, state_bytes // 100))}
    await store.dispatch("APPLICATION_SET", {"path": ["records"], "value": records})
    assert await store.flush()
    latencies: list[float] = []
    per_user = max(1, -(-actions // users))

    async def user(u: int) -> None:
        for i in range(per_user):
            t0 = time.perf_counter()
            await store.dispatch("APPLICATION_SET", {"path": ["counters", f"u{u}"],
                                                     "value": i}, durable=True)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(user(u) for u in range(users)))
    elapsed = time.perf_counter() - t0
    memory = store.state["application"]
    await store.close(close_backend=True)

    def stored() -> Any:
        with PostgresStore(url, table=table) as s:
            return s.load()["application"]

    same = await asyncio.to_thread(stored) == memory
    ordered = sorted(latencies)
    return {"state": state_bytes, "users": users, "changes": len(latencies),
            "per_s": round(len(latencies) / elapsed),
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "stored_equals_memory": same}


def durable_main(url: str, args: argparse.Namespace) -> int:
    sizes = {"10KB": 10_000, "1MB": 1_000_000}
    rows = []
    for size in args.state.split(","):
        for users in (int(u) for u in args.users.split(",")):
            raw = raw_commit_ms(url, 100)
            cell = asyncio.run(durable_cell(url, f"durable_{size.lower()}_{users}",
                                            sizes[size], users, args.actions))
            cell["raw_commit_ms"] = round(raw, 2)
            print(json.dumps(cell), flush=True)
            rows.append((size, cell))
    print("\n| state | users | durable changes/s | p50 ms | p99 ms | raw commit ms |")
    print("|---|---|---|---|---|---|")
    for size, c in rows:
        print(f"| {size} | {c['users']} | {c['per_s']:,} | {c['p50_ms']} | {c['p99_ms']} | "
              f"{c['raw_commit_ms']} |")
    return 0 if all(c["stored_equals_memory"] for _, c in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", default="1,2,4,8")
    parser.add_argument("--per-proc", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--durable", action="store_true", help="the durable dispatch part")
    parser.add_argument("--state", default="10KB,1MB", help="--durable: state sizes")
    parser.add_argument("--users", default="1,10,100", help="--durable: concurrent users")
    parser.add_argument("--actions", type=int, default=2000,
                        help="--durable: durable changes per cell")
    args = parser.parse_args(argv)
    if args.durable:
        with database() as url:
            return durable_main(url, args)
    rows = []
    ok = True
    with database() as url:
        for procs in (int(p) for p in args.procs.split(",")):
            rates: dict[str, list[float]] = {"raw": [], "ours": []}
            lost = 0
            for rep in range(args.reps):
                order = ("raw", "ours") if rep % 2 == 0 else ("ours", "raw")
                for impl in order:
                    result = one(url, impl, procs, args.per_proc)
                    print(json.dumps(result), flush=True)
                    rates[impl].append(result["rate"])
                    lost += result["lost"]
                    ok = ok and result["ok"] and result["lost"] == 0
            raw, ours = statistics.median(rates["raw"]), statistics.median(rates["ours"])
            rows.append((procs, raw, ours, ours / raw, lost))
    print("\n| processes | raw psycopg tx/s | PostgresStore.transaction() tx/s | ours/raw | "
          "lost |")
    print("|---|---|---|---|---|")
    for procs, raw, ours, ratio, lost in rows:
        print(f"| {procs} | {raw:.0f} | {ours:.0f} | {ratio:.0%} | {lost} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
