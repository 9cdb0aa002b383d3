"""The one list of backends the suite runs (issue 20): name -> builders and traits.

A new backend is one entry here; every suite that asks :func:`kinds` for traits the
entry has then runs it (the conformance class, the store engine, several processes,
faults, migrations...). ``tests/readers/test_suite_layout.py`` fails on a hand-kept list
of backend names anywhere else in the suite.

Traits:

- ``files``: the medium is local files under ``tmp_path`` (power cuts, file modes, disks).
- ``server``: the medium is a server the session starts (Redis, PostgreSQL).
- ``multiprocess``: several processes share the medium (every one but memory).
- ``listener``: the adapter announces commits to a listener.
- ``rows``: a snapshot row plus a journal table in SQL (the row-store base), damaged by SQL.
- ``backups``: the adapter keeps backup generations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cascadeui.adapters import (
    BaseStore,
    FileStore,
    MemoryStore,
    PostgresStore,
    RedisStore,
    SQLiteStore,
)

#: Redis keys (suffixes of the state key) one state occupies.
REDIS_SUFFIXES = ("", ":journal", ":version", ":lock", ":lineage")


@dataclass(frozen=True)
class Backend:
    """One backend of the suite: how to open a medium ``name`` of a test, and its traits.

    Every call with the same request, ``tmp_path`` and ``name`` opens the same medium.
    """

    name: str
    traits: frozenset[str]
    #: (request, tmp_path, name) -> a new adapter on the medium.
    build: Callable[[pytest.FixtureRequest, Path, str], BaseStore]
    #: (request, tmp_path, name) -> the path or URL string every entry point accepts.
    target: Callable[[pytest.FixtureRequest, Path, str], str]
    #: (request, tmp_path, name) -> destroy everything the medium holds.
    lose: Callable[[pytest.FixtureRequest, Path, str], None]
    #: (request, tmp_path, name) -> everything the medium holds, to compare before/after.
    dump: Callable[[pytest.FixtureRequest, Path, str], Any]


def _redis_key(request: pytest.FixtureRequest, name: str) -> str:
    key = str(request.getfixturevalue("redis_key"))
    return key if name == "state" else f"{key}/{name}"


def _redis_target(request: pytest.FixtureRequest, tmp: Path, name: str) -> str:
    """The URL of the medium; its keys (companions included) are removed after the test."""
    import redis

    url, key = request.getfixturevalue("redis_url"), _redis_key(request, name)

    def remove() -> None:
        client = redis.Redis.from_url(url)
        try:
            for found in client.scan_iter(match=f"{key}*"):
                client.delete(found)
        finally:
            client.close()

    request.addfinalizer(remove)
    return _with_query(url, f"key={key}")


def _pg_table(request: pytest.FixtureRequest, name: str) -> str:
    table = str(request.getfixturevalue("pg_table"))
    return table if name == "state" else f"{table}_{name}"


def _memory_name(request: pytest.FixtureRequest, tmp: Path, name: str) -> str:
    full = f"test:{tmp}" if name == "state" else f"test:{tmp}:{name}"
    request.addfinalizer(lambda: MemoryStore.forget(full))
    return full


def _lose_files(tmp: Path, prefix: str) -> None:
    for path in tmp.iterdir():
        if path.name.startswith(prefix) and not path.name.endswith(".lock"):
            path.unlink()


def _dump_files(tmp: Path, prefix: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tmp.iterdir())
            if p.name.startswith(prefix) and p.is_file() and not p.name.endswith(".lock")}


def _dump_sqlite(tmp: Path, name: str) -> dict[str, list[Any]]:
    import sqlite3

    conn = sqlite3.connect(tmp / f"{name}.db")
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}
    finally:
        conn.close()


def _dump_redis(request: pytest.FixtureRequest, tmp: Path, name: str) -> dict[str, Any]:
    import redis

    key = _redis_key(request, name)
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        return {suffix: client.dump(f"{key}{suffix}") for suffix in REDIS_SUFFIXES}
    finally:
        client.close()


def _dump_postgres(request: pytest.FixtureRequest, tmp: Path, name: str) -> dict[str, Any]:
    import psycopg

    table = _pg_table(request, name)
    with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as conn:
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()
                for t in (table, f"{table}_journal")}


def _dump_memory(request: pytest.FixtureRequest, tmp: Path, name: str) -> Any:
    with MemoryStore(_memory_name(request, tmp, name)) as probe:
        return probe.load_versioned(), probe.describe().size


def _lose_redis(request: pytest.FixtureRequest, tmp: Path, name: str) -> None:
    import redis

    key = _redis_key(request, name)
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        client.delete(*(f"{key}{suffix}" for suffix in REDIS_SUFFIXES))
    finally:
        client.close()


def _lose_postgres(request: pytest.FixtureRequest, tmp: Path, name: str) -> None:
    import psycopg

    table = _pg_table(request, name)
    with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_journal"')


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


BACKENDS: dict[str, Backend] = {b.name: b for b in [
    Backend("file", frozenset({"files", "multiprocess", "listener", "backups"}),
            build=lambda request, tmp, name: FileStore(tmp / f"{name}.json"),
            target=lambda request, tmp, name: str(tmp / f"{name}.json"),
            lose=lambda request, tmp, name: _lose_files(tmp, f"{name}.json"),
            dump=lambda request, tmp, name: _dump_files(tmp, f"{name}.json")),
    Backend("sqlite", frozenset({"files", "multiprocess", "listener", "rows"}),
            build=lambda request, tmp, name: SQLiteStore(tmp / f"{name}.db"),
            target=lambda request, tmp, name: str(tmp / f"{name}.db"),
            lose=lambda request, tmp, name: _lose_files(tmp, f"{name}.db"),
            dump=lambda request, tmp, name: _dump_sqlite(tmp, name)),
    Backend("redis", frozenset({"server", "multiprocess", "listener"}),
            build=lambda request, tmp, name: RedisStore(request.getfixturevalue("redis_url"),
                                                        key=_redis_key(request, name)),
            target=_redis_target,
            lose=_lose_redis, dump=_dump_redis),
    Backend("postgres", frozenset({"server", "multiprocess", "listener", "rows"}),
            build=lambda request, tmp, name: PostgresStore(
                request.getfixturevalue("postgres_url"), table=_pg_table(request, name)),
            target=lambda request, tmp, name: _with_query(
                request.getfixturevalue("postgres_url"), f"table={_pg_table(request, name)}"),
            lose=_lose_postgres, dump=_dump_postgres),
    Backend("memory", frozenset(),
            build=lambda request, tmp, name: MemoryStore(_memory_name(request, tmp, name)),
            target=lambda request, tmp, name: f"memory://{_memory_name(request, tmp, name)}",
            lose=lambda request, tmp, name: MemoryStore.forget(
                _memory_name(request, tmp, name)),
            dump=_dump_memory),
]}


def kinds(*traits: str, without: tuple[str, ...] = ()) -> list[str]:
    """The backends having every trait in ``traits`` and none in ``without``, in order."""
    unknown = set(traits + without) - {t for b in BACKENDS.values() for t in b.traits}
    assert not unknown, f"no backend has the trait(s) {sorted(unknown)}"
    return [b.name for b in BACKENDS.values()
            if set(traits) <= b.traits and not set(without) & b.traits]


def build(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
          name: str = "state") -> Any:
    """A new adapter of backend ``kind`` on medium ``name`` of this test."""
    return BACKENDS[kind].build(request, tmp_path, name)


def target(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
           name: str = "state") -> str:
    """The path or URL string of backend ``kind``'s medium ``name`` of this test."""
    return BACKENDS[kind].target(request, tmp_path, name)


def dump(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
         name: str = "state") -> Any:
    """Everything backend ``kind``'s medium ``name`` holds (bytes, rows, keys), to compare."""
    return BACKENDS[kind].dump(request, tmp_path, name)
