"""Workload 4: read-modify-write increments from 1..N processes on one shared state.

``--impl raw``: the primitives with nothing of cascadeui in the path (stdlib sqlite3
``BEGIN IMMEDIATE`` + SELECT + UPDATE + COMMIT in WAL mode; redis-py WATCH/GET/MULTI/SET/
EXEC retried on ``WatchError``; ``fcntl.flock`` + read JSON + write temp + fsync +
``os.replace`` + directory fsync). ``--impl ours``: the adapters' ``transaction()``
(``FileStore``, ``SQLiteStore``, ``RedisStore`` from ``cascadeui.adapters``). When the
store-level multi-process transactions of issue 4 land they plug in as another impl.

``--procs`` processes each do ``--per-proc`` increments after a common start signal; the
rate is committed increments per second of wall time, and the final counter must equal
``procs * per_proc`` (a lost update fails the run).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any

PAD = "x" * 1000  # a small document (~1 KB): this workload measures locking, not bytes


# -- raw primitives ----------------------------------------------------------------------


def _raw_sqlite(path: str) -> Callable[[], None]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")

    def incr() -> None:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT data FROM s WHERE id = 1").fetchone()
        doc = json.loads(row[0])
        doc["n"] += 1
        conn.execute("UPDATE s SET data = ? WHERE id = 1", (json.dumps(doc),))
        conn.execute("COMMIT")

    return incr


def _raw_redis(url: str, key: str) -> Callable[[], None]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)

    def incr() -> None:
        while True:
            with client.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    doc = json.loads(pipe.get(key))  # type: ignore[arg-type]
                    doc["n"] += 1
                    pipe.multi()
                    pipe.set(key, json.dumps(doc))
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    return incr


def _raw_json(path: str) -> Callable[[], None]:
    import fcntl

    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    directory = os.path.dirname(path)
    tmp = f"{path}.{os.getpid()}.tmp"

    def incr() -> None:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            with open(path, "rb") as fh:
                doc = json.loads(fh.read())
            doc["n"] += 1
            with open(tmp, "wb") as fh:
                fh.write(json.dumps(doc).encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    return incr


# -- our adapters ------------------------------------------------------------------------


def _our_store(backend: str, path: str, url: str | None, key: str) -> Any:
    from cascadeui.adapters import FileStore, RedisStore, SQLiteStore

    if backend == "json":
        return FileStore(path, lock_timeout=60)
    if backend == "sqlite":
        return SQLiteStore(path, timeout=60)
    return RedisStore(url or "", key=key, lock_timeout=60)


def _ours(backend: str, path: str, url: str | None, key: str) -> Callable[[], None]:
    store = _our_store(backend, path, url, key)

    def incr() -> None:
        with store.transaction() as state:
            state["n"] = state.get("n", 0) + 1

    return incr


# -- the harness -------------------------------------------------------------------------


def _target(args: Any) -> tuple[str, str]:
    ext = {"json": "json", "sqlite": "db", "redis": ""}[args.backend]
    path = os.path.join(args.workdir, f"mp-{args.impl}.{ext}")
    key = f"{args.key_prefix}:mp:{args.impl}:{os.getpid()}"
    return path, key


def _seed(args: Any, path: str, key: str) -> None:
    doc = {"n": 0, "pad": PAD}
    if args.impl == "ours":
        with _our_store(args.backend, path, args.redis_url, key) as store:
            store.save(doc)
        return
    if args.backend == "json":
        with open(path, "w") as fh:
            json.dump(doc, fh)
    elif args.backend == "sqlite":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE s (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        conn.execute("INSERT INTO s VALUES (1, ?)", (json.dumps(doc),))
        conn.close()
    else:
        import redis

        client = redis.Redis.from_url(args.redis_url)
        client.set(key, json.dumps(doc))
        client.close()


def _final_count(args: Any, path: str, key: str) -> int:
    if args.impl == "ours":
        with _our_store(args.backend, path, args.redis_url, key) as store:
            return int(store.load()["n"])
    if args.backend == "json":
        with open(path) as fh:
            return int(json.load(fh)["n"])
    if args.backend == "sqlite":
        conn = sqlite3.connect(path)
        try:
            return int(json.loads(conn.execute("SELECT data FROM s").fetchone()[0])["n"])
        finally:
            conn.close()
    import redis

    client = redis.Redis.from_url(args.redis_url)
    try:
        return int(json.loads(client.get(key))["n"])  # type: ignore[arg-type]
    finally:
        keys = [key, *client.scan_iter(match=f"{key}:*", count=100)]
        client.delete(*keys)
        client.close()


def _child(args: Any, path: str, key: str, go: Any, ready: Any, done: Any) -> None:
    if args.impl == "ours":
        incr = _ours(args.backend, path, args.redis_url, key)
    elif args.backend == "json":
        incr = _raw_json(path)
    elif args.backend == "sqlite":
        incr = _raw_sqlite(path)
    else:
        incr = _raw_redis(args.redis_url, key)
    ready.put(os.getpid())
    go.wait(60)
    t0 = time.perf_counter()
    for _ in range(args.per_proc):
        incr()
    done.put(time.perf_counter() - t0)


def run(args: Any) -> dict[str, Any]:
    if args.backend == "redis" and not args.redis_url:
        raise RuntimeError("no Redis server for the redis backend")
    path, key = _target(args)
    _seed(args, path, key)
    ctx = mp.get_context("fork")
    go, ready, done = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(args, path, key, go, ready, done))
             for _ in range(args.procs)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        t0 = time.perf_counter()
        go.set()
        per_proc_s = [done.get(timeout=600) for _ in procs]
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    expected = args.procs * args.per_proc
    final = _final_count(args, path, key)
    return {"procs": args.procs, "per_proc": args.per_proc, "wall_s": wall,
            "tx_per_s": expected / wall, "final": final, "expected": expected,
            "lost_updates": expected - final, "slowest_proc_s": max(per_proc_s)}
