"""Workload 6: the raw limits of the media, measured on the same document as workload 1.

Per operation, with nothing of cascadeui in the path:

- ``json_replace``: ``json.dumps`` of the whole state + write to a temp file + fsync +
  ``os.replace`` + directory fsync (what a durable JSON save cannot avoid);
- ``json_write_only``: the same without the ``json.dumps`` (the I/O part alone);
- ``sqlite_upsert``: stdlib sqlite3, WAL, one-row ``INSERT .. ON CONFLICT DO UPDATE`` +
  ``COMMIT`` of the serialized bytes;
- ``redis_set``: one ``SET`` of the same bytes (redis-py, loopback);
- ``fsync_4k``: write 4 KB + fsync (the floor of any durable local write).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import time
from collections.abc import Callable
from typing import Any

from common import build_application, size_bytes


def _timed(fn: Callable[[], None], reps: int) -> dict[str, float]:
    fn()  # warm-up: file creation, connection, page cache
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
            "max_ms": max(times) * 1000, "reps": reps}


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(args: Any) -> dict[str, Any]:
    state = {"application": build_application(size_bytes(args.size)), "persistent_views": {}}
    data = json.dumps(state, separators=(",", ":"))
    blob = data.encode()
    workdir = args.workdir
    target = os.path.join(workdir, "raw.json")
    tmp = target + ".tmp"

    def write_replace(payload: bytes) -> None:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(workdir)

    def json_replace() -> None:
        write_replace(json.dumps(state, separators=(",", ":")).encode())

    def json_write_only() -> None:
        write_replace(blob)

    conn = sqlite3.connect(os.path.join(workdir, "raw.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS s (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")

    def sqlite_upsert() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO s (id, data) VALUES (1, ?) ON CONFLICT(id) DO UPDATE "
                     "SET data = excluded.data", (data,))
        conn.execute("COMMIT")

    four_k = os.urandom(4096)
    small = os.path.join(workdir, "fsync4k.bin")

    def fsync_4k() -> None:
        with open(small, "wb") as fh:
            fh.write(four_k)
            fh.flush()
            os.fsync(fh.fileno())

    reps = args.reps
    out: dict[str, Any] = {"doc_bytes": len(blob)}
    out["json_replace"] = _timed(json_replace, reps)
    out["json_write_only"] = _timed(json_write_only, reps)
    out["sqlite_upsert"] = _timed(sqlite_upsert, reps)
    conn.close()
    out["fsync_4k"] = _timed(fsync_4k, max(reps, 20))
    t0 = time.perf_counter()
    json.dumps(state, separators=(",", ":"))
    out["json_dumps_ms"] = (time.perf_counter() - t0) * 1000
    if args.redis_url:
        import redis

        client = redis.Redis.from_url(args.redis_url, socket_timeout=30)
        key = f"{args.key_prefix}:raw"
        try:
            out["redis_set"] = _timed(lambda: client.set(key, blob) and None, reps)
        finally:
            client.delete(key)
            client.close()
    return out
