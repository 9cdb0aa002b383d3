"""Why SQLite's 10 MB writes cost more in the benchmark than in a running bot.

Eight consecutive ~10 MB saves into a new database, through ``SQLiteStore.save_if_version``
and through raw sqlite3 with WAL and ``synchronous=FULL``, in milliseconds::

    python -m bench.sqlite_wal_warmup
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time

from cascadeui.adapters import SQLiteStore

UPSERT = "INSERT INTO s VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET data = excluded.data"


def main() -> None:
    workdir = tempfile.mkdtemp()
    records = {f"r{i}": {"name": "x" * 40, "n": i} for i in range(140_000)}
    doc = {"application": {"records": records}}
    text = json.dumps(doc, separators=(",", ":"))
    versions = [text[:-2] + f'{i % 10}}}}}' for i in range(8)]  # a new document each time

    store = SQLiteStore(os.path.join(workdir, "store.db"))
    version, ours = store.version(), []
    for encoded in versions:
        start = time.perf_counter()
        version = store.save_if_version(doc, version, encoded=encoded) or version
        ours.append(round((time.perf_counter() - start) * 1000))
    store.close()

    conn = sqlite3.connect(os.path.join(workdir, "raw.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE s (id INTEGER PRIMARY KEY, data TEXT)")
    raw = []
    for encoded in versions:
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(UPSERT, (encoded,))
        conn.execute("COMMIT")
        raw.append(round((time.perf_counter() - start) * 1000))
    conn.close()
    print(f"document {len(text) / 1e6:.1f} MB")
    print(f"SQLiteStore.save_if_version ms: {ours}")
    print(f"raw sqlite3 upsert + commit ms: {raw}")


if __name__ == "__main__":
    main()
