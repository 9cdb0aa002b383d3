#!/usr/bin/env python3
"""PostgreSQL multi-process transactions: ``PostgresStore.transaction()`` against raw psycopg.

Issue 13's target: 1, 2, 4 and 8 processes of read-modify-write increments on one ~1 KB
document (as ``scripts/bench/w_mp.py`` does for the other backends), our adapter at
least half as fast as raw psycopg 3 doing ``SELECT data FROM s WHERE id = 1 FOR UPDATE``
+ ``UPDATE`` + ``COMMIT`` in the same run, and not one update lost (the final counter is
checked). Each size runs ``--reps`` times, raw and ours alternating; medians reported.

    .venv/bin/python scripts/bench_postgres.py                       # 1,2,4,8 x 200
    .venv/bin/python scripts/bench_postgres.py --procs 1,2 --per-proc 20 --reps 1

The database is a scratch one (random name, dropped at the end) on
``CASCADEUI_TEST_POSTGRES_URL``, 127.0.0.1:5432, or a private server.
"""

from __future__ import annotations

import argparse
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
    from cascadeui.testing.postgres_server import (
        DEFAULT_URL,
        PostgresServer,
        find_binaries,
        reachable,
        scratch_database,
    )

    admin = os.environ.get("CASCADEUI_TEST_POSTGRES_URL", DEFAULT_URL)
    with contextlib.ExitStack() as stack:
        if not reachable(admin) and find_binaries() is not None:
            admin = stack.enter_context(PostgresServer()).url
        yield stack.enter_context(scratch_database(admin))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", default="1,2,4,8")
    parser.add_argument("--per-proc", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
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
