"""The SQLite adapter: one row holding the JSON document, WAL mode, ``BEGIN IMMEDIATE``.

Layout (documented in docs/backends.md)::

    cascadeui_state(id INTEGER PRIMARY KEY,   -- always 1: the seed's single-row layout
                    data TEXT NOT NULL,       -- the StateSerializer document
                    version INTEGER NOT NULL, -- +1 on every commit, for change detection
                    updated_at REAL NOT NULL) -- unix time of the last commit
    cascadeui_meta(key TEXT PRIMARY KEY, value TEXT)  -- schema_version = 1

Every write starts with ``BEGIN IMMEDIATE`` so a writer takes the write lock before it
reads: a deferred ``BEGIN`` can fail with "database is locked" when its read lock must
be upgraded. The store owns its connection (``check_same_thread=False``) behind a
thread lock, because anyio may run consecutive calls on different worker threads.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cascadeui.errors import (
    LockTimeoutError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from .base import BaseStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION = 1
_COLUMNS = {"id": int, "data": str, "version": int, "updated_at": float}


class SQLiteStore(BaseStore):
    """State in one row of a SQLite table, safe across threads and processes.

    :param path: the database file (created on first use), or ``":memory:"``.
    :param timeout: seconds to wait for the write lock (``busy_timeout``) before
        :class:`~cascadeui.errors.LockTimeoutError`.
    :param table: the state table's name.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0,
                 table: str = "cascadeui_state",
                 serializer: StateSerializer | None = None) -> None:
        super().__init__(serializer=serializer)
        # sqlite-utils is imported (up to a second) on first use, in the worker thread:
        # constructors run on the event loop and must not stall it.
        if "sqlite_utils" not in sys.modules and not importlib.util.find_spec("sqlite_utils"):
            raise ImportError(  # pragma: no cover - exercised only without the extra
                "SQLiteStore needs sqlite-utils: pip install 'pycascadeui[sqlite]'")
        if not table.isidentifier():
            raise ValueError(f"table name must be an identifier, not {table!r}")
        raw = os.fspath(path)
        self.path = raw if raw == ":memory:" else str(Path(raw).absolute())
        self.location = f"sqlite:///{self.path}"
        self.timeout = timeout
        self.table = table
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._mutex = threading.RLock()

    # -- connection --------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The store's connection, held exclusively by this thread for the block."""
        self._check_open()
        if not self._mutex.acquire(timeout=self.timeout):
            raise LockTimeoutError(
                f"{self.location}: another thread held the store past {self.timeout:g}s",
                lock=self.location, timeout=self.timeout, location=self.location)
        try:
            with self._mapped_errors():
                if self._conn is None or self._pid != os.getpid():
                    self._conn = self._open()  # after fork() the parent's handle is unusable
                    self._pid = os.getpid()
                yield self._conn
        finally:
            self._mutex.release()

    def _open(self) -> sqlite3.Connection:
        import sqlite_utils

        if self.path != ":memory:":
            # A new database file gets mode 0600 (SQLite gives its -wal/-shm the same);
            # an existing file keeps the mode its owner chose.
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise StorageUnavailableError(
                    f"{self.location}: cannot create the database: {exc.strerror or exc}",
                    location=self.location) from exc
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            db = sqlite_utils.Database(conn, execute_plugins=False)
            # Schema first: a foreign database is refused before anything about it changes
            # (switching to WAL is a persistent change to the file).
            self._ensure_schema(conn, db)
            conn.execute("PRAGMA journal_mode = WAL")  # only possible outside a transaction
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection, db: Any) -> None:
        kind = conn.execute("SELECT type FROM sqlite_master WHERE name = ?",
                            (self.table,)).fetchone()
        if kind is not None and kind[0] != "table":  # sqlite-utils raises NoTable (issue 7)
            raise StateCorruptedError(
                f"{self.location}: {self.table!r} is a {kind[0]}, not a cascadeui table",
                location=self.location, tried=(self.location,))
        table = db.table(self.table)
        if table.exists():
            cols = {c.name: c.type.upper() for c in table.columns}
            if set(cols) != set(_COLUMNS):
                raise StateCorruptedError(
                    f"{self.location}: table {self.table!r} has columns {sorted(cols)}, "
                    f"expected {sorted(_COLUMNS)} (not a cascadeui table?)",
                    location=self.location, tried=(self.location,))
            self._check_schema_version(db)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not table.exists():
                table.create(_COLUMNS, pk="id", not_null={"data", "version", "updated_at"})
                meta = db.table("cascadeui_meta")
                meta.create({"key": str, "value": str}, pk="key", if_not_exists=True)
                meta.upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _check_schema_version(self, db: Any) -> None:
        """Refuse a database written by a newer layout rather than misread it."""
        if not db.table("cascadeui_meta").exists():
            return
        row = db.conn.execute(
            "SELECT value FROM cascadeui_meta WHERE key = 'schema_version'").fetchone()
        if row is not None and row[0] != str(SCHEMA_VERSION):
            raise StateCorruptedError(
                f"{self.location}: schema version {row[0]!r}, this cascadeui reads version "
                f"{SCHEMA_VERSION} (written by a newer pycascadeui?)",
                location=self.location, tried=(self.location,))

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Translate sqlite3 errors into the cascadeui hierarchy, naming the database."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            msg = str(exc)
            if "locked" in msg or "busy" in msg:
                raise LockTimeoutError(
                    f"{self.location}: write lock not had within {self.timeout:g}s ({msg})",
                    lock=self.location, timeout=self.timeout, location=self.location) from exc
            raise StorageUnavailableError(f"{self.location}: {msg}",
                                          location=self.location) from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", malformed image
            raise StateCorruptedError(f"{self.location}: {exc}", location=self.location,
                                      tried=(self.location,)) from exc

    # -- the contract ------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Return the stored state, ``{}`` when the table holds no row yet.

        :raises StateCorruptedError: the file is not SQLite, the table is foreign or the
            row does not decode.
        :raises StorageUnavailableError: the database cannot be opened or read.
        """
        with self._connection() as conn:
            return self._read(conn)

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state in one ``BEGIN IMMEDIATE`` transaction.

        :raises SerializationError: ``state`` holds a value JSON cannot store (nothing written).
        :raises LockTimeoutError: the write lock was not had within ``timeout``.
        """
        text = self.serializer.serialize(state)
        with self._connection() as conn, self._immediate(conn):
            self._write(conn, text)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """``BEGIN IMMEDIATE``, load, yield the state to change in place, commit it.

        If the body raises, the transaction is rolled back and nothing is written.
        """
        with self._connection() as conn, self._immediate(conn):
            state = self._read(conn)
            yield state
            self._write(conn, self.serializer.serialize(state))

    def version(self) -> int:
        """The commit counter of the stored row (0 when empty); cheap to poll."""
        with self._connection() as conn:
            row = conn.execute(f"SELECT version FROM {self.table} WHERE id = 1").fetchone()
            return int(row[0]) if row else 0

    # -- internals ---------------------------------------------------------------------

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """:meth:`load` and the :meth:`version` of that row, read in one statement."""
        with self._connection() as conn:
            with self._mapped_errors():
                row = conn.execute(
                    f"SELECT data, version FROM {self.table} WHERE id = 1").fetchone()
            if row is None:
                return {}, 0
            return self._decode_row(row[0]), int(row[1])

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save: see :meth:`~cascadeui.adapters.VersionedStore.save_if_version`."""
        text = self.serializer.serialize(state) if encoded is None else encoded
        with self._connection() as conn, self._immediate(conn):
            with self._mapped_errors():
                row = conn.execute(f"SELECT version FROM {self.table} WHERE id = 1").fetchone()
            current = int(row[0]) if row else 0
            if current != expected:
                return None
            self._write(conn, text)
            return current + 1

    @contextlib.contextmanager
    def _immediate(self, conn: sqlite3.Connection) -> Iterator[None]:
        with self._mapped_errors():
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        with self._mapped_errors():
            conn.execute("COMMIT")

    def _read(self, conn: sqlite3.Connection) -> dict[str, Any]:
        with self._mapped_errors():
            row = conn.execute(f"SELECT data FROM {self.table} WHERE id = 1").fetchone()
        if row is None:
            return {}
        return self._decode_row(row[0])

    def _decode_row(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, (str, bytes)):
            raise StateCorruptedError(
                f"{self.location}: table {self.table!r} holds a {type(data).__name__}, "
                "not a JSON document", location=self.location, tried=(self.location,))
        try:
            return self.serializer.deserialize(data)
        except StateCorruptedError as exc:
            raise StateCorruptedError(f"{self.location}: {exc}", location=self.location,
                                      tried=(self.location,)) from exc

    def _write(self, conn: sqlite3.Connection, text: str) -> None:
        with self._mapped_errors():
            conn.execute(
                f"INSERT INTO {self.table} (id, data, version, updated_at) "
                "VALUES (1, ?, 1, ?) ON CONFLICT(id) DO UPDATE SET data = excluded.data, "
                "version = version + 1, updated_at = excluded.updated_at",
                (text, time.time()))

    def _release(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
