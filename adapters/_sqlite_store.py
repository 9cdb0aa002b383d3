"""The SQLite adapter: a snapshot row plus a change journal, WAL mode, ``BEGIN IMMEDIATE``.

Layout, schema version 2 (documented in docs/backends.md)::

    cascadeui_state(id INTEGER PRIMARY KEY,   -- always 1: the seed's single-row layout
                    data TEXT NOT NULL,       -- the snapshot: a StateSerializer document
                    version INTEGER NOT NULL, -- the version of the snapshot's commit
                    updated_at REAL NOT NULL) -- unix time of the snapshot's commit
    cascadeui_state_journal(seq INTEGER PRIMARY KEY,  -- the version its commit made
                            ops TEXT NOT NULL)        -- one record (adapters/_journal.py)
    cascadeui_meta(key TEXT PRIMARY KEY, value TEXT)  -- schema_version = 2

(``<table>_journal`` for another ``table``; ``cascadeui_meta`` also holds the lineage id.)
The rows' semantics, shared with PostgreSQL, are in adapters/_rows.py: an append only
inserts one record and never touches the row, because SQLite rewrites a whole row (the
10 MB snapshot included) to change any of its columns; a journal that is not the row's
unbroken sequel (the row rewritten by an older pycascadeui that does not know the
journal, or a hand edit) is refused as corrupt, never applied.

A version-1 database (no journal table) is upgraded when first opened, in one
``BEGIN IMMEDIATE`` transaction, after the same checks that refuse a foreign database.
An older pycascadeui refuses schema version 2, so it never reads a snapshot without its
journal. Schema versions above 2 are refused.

Every write starts with ``BEGIN IMMEDIATE`` so a writer takes the write lock before it
reads: a deferred ``BEGIN`` can fail with "database is locked" when its read lock must
be upgraded. Every read takes the row and the journal in one read transaction, so it sees
one commit. ``load_changes`` selects the row's ``version`` (not its ``data``) and the
journal rows after a given version, so a process catches up with another's commits
without decoding the snapshot. The store owns its connection
(``check_same_thread=False``) behind a thread lock, because anyio may run consecutive
calls on different worker threads.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sqlite3
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cascadeui.errors import (
    LockTimeoutError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from ._rows import RowStore, RowTx
from .base import Check, StoreInfo

if TYPE_CHECKING:
    from ._journal import JournaledStore
    from ._listeners import Listener

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

log: logging.Logger = logging.getLogger("cascadeui.adapters.sqlite")

#: Connections to a database file deleted or replaced while they were open, whose WAL
#: file name now belongs to the new database: closing one would make SQLite delete that
#: WAL (it deletes by name), so they stay open until the process ends.
_ABANDONED: list[sqlite3.Connection] = []

SCHEMA_VERSION = 2
#: Layouts this adapter reads; version 1 (no journal table) is upgraded on open.
_UPGRADABLE = ("1",)
_COLUMNS = {"id": int, "data": str, "version": int, "updated_at": float}
_JOURNAL_COLUMNS = {"seq", "ops"}

T = TypeVar("T")




class SQLiteStore(RowStore):
    """State in one row of a SQLite table plus its change journal, safe across processes.

    Implements :class:`~cascadeui.adapters.SyncStore`,
    :class:`~cascadeui.adapters.VersionedStore` and
    :class:`~cascadeui.adapters.JournaledStore` (structurally).

    :param path: the database file (created on first use), or ``":memory:"``.
    :param timeout: seconds to wait for the write lock (``busy_timeout``) before
        :class:`~cascadeui.errors.LockTimeoutError`.
    :param table: the state table's name; its journal is ``<table>_journal``.
    """

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0,
                 table: str = "cascadeui_state",
                 serializer: StateSerializer | None = None) -> None:
        super().__init__(serializer=serializer)
        # sqlite-utils is imported (up to a second) on first use, in the worker thread:
        # constructors run on the event loop and must not stall it.
        if "sqlite_utils" not in sys.modules and not importlib.util.find_spec("sqlite_utils"):
            raise ImportError(  # pragma: no cover - exercised only without the extra
                "SQLiteStore needs sqlite-utils: pip install 'cascadeui-persistence[sqlite]'")
        if not table.isidentifier():
            raise ValueError(f"table name must be an identifier, not {table!r}")
        raw = os.fspath(path)
        self.path: str = raw if raw == ":memory:" else str(Path(raw).absolute())
        self.location: str = f"sqlite:///{self.path}"
        self.timeout = timeout
        self.table = table
        self.journal_table: str = f"{table}_journal"
        self._t, self._j = table, self.journal_table
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._mutex = threading.RLock()
        #: (st_dev, st_ino) of the database file and its WAL when the connection opened.
        self._identity: tuple[int, int] | None = None
        self._wal_identity: tuple[int, int] | None = None

    # -- connection --------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The store's connection, held exclusively by this thread for the block."""
        self._acquire(self._mutex, self.timeout, "another thread held the store")
        try:
            with self._mapped_errors():
                if (self._conn is not None and self._pid == os.getpid()
                        and self.path != ":memory:" and _identity(self.path) != self._identity):
                    self._drop_moved_connection()
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
                self._refuse_directory()
            except OSError as exc:
                self._refuse_directory()
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
        if self.path != ":memory:":
            self._identity = _identity(self.path)
            self._wal_identity = _identity(f"{self.path}-wal")
        return conn

    def _drop_moved_connection(self) -> None:
        """The database file was deleted or replaced while open: leave the old file.

        Every commit through the old connection would land in a file no later process
        can open, and ``flush()`` would report it durable. The next open creates (or
        opens) the file now at the path; a running store finds its state missing there
        and rewrites it whole (:meth:`load_checked`). The old connection is closed only
        when the WAL file at the path is still its own (SQLite deletes the WAL by name).
        """
        conn, self._conn = self._conn, None
        log.warning("%s: the database file was deleted or replaced while this store had it "
                    "open; reopening %s (commits since the change went to the old file, which "
                    "no later process can open: a running store writes its state again)",
                    self.location, self.path)
        wal = _identity(f"{self.path}-wal")
        if conn is None:
            return
        if wal is None or wal == self._wal_identity:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        else:
            _ABANDONED.append(conn)

    def _refuse_directory(self) -> None:
        """SQLite says only "disk I/O error" for a directory: say what is wrong."""
        try:
            is_dir = stat.S_ISDIR(os.stat(self.path).st_mode)
        except OSError:
            return
        if is_dir:
            raise StorageUnavailableError(
                    f"{self.location}: {self.path} is a directory, not a database file "
                    f"(name a file, e.g. {Path(self.path) / 'cascadeui.db'})",
                    location=self.location)

    def backup_to(self, dest: str | os.PathLike[str]) -> None:
        """Copy the whole database (state, journal, backup tables) to the new file ``dest``
        with SQLite's online backup API: consistent while others write, ``-wal`` included
        (a plain ``cp`` of the main file alone can read back as an empty state)."""
        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT, 0o600))  # private, as ours are
        target = sqlite3.connect(os.fspath(dest))
        try:
            with self._connection() as conn:
                conn.backup(target)
        finally:
            target.close()

    def companion(self, tag: str) -> SQLiteStore:
        """The table ``<table>_<tag>_backup`` in the same database."""
        other = SQLiteStore(self.path, timeout=self.timeout, serializer=self.serializer,
                            table=f"{self.table}_{tag}_backup")
        other.location = f"{other.location} table={other.table}"
        return other

    def listener(self, notify: Callable[[int | None], None]) -> Listener | None:
        """Watch the database and its ``-wal`` by ``stat`` (None for ``:memory:``)."""
        from ._listeners import StatListener

        if self.path == ":memory:":
            return None
        return StatListener(notify, self.location, [Path(self.path), Path(f"{self.path}-wal")])

    # -- what readers ask (inspect, the CLI): read-only, never creating anything ---------

    @contextlib.contextmanager
    def _readonly(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection to an existing database file (None: no file).

        Inspecting must never create a file, a table, or switch the journal mode.
        """
        self._check_open()
        if self.path == ":memory:":  # only this store's own connection sees it
            with self._connection() as conn:
                yield conn
            return
        try:
            os.stat(self.path)
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:
            raise StorageUnavailableError(f"{self.location}: {exc.strerror or exc}",
                                          location=self.location) from exc
        self._refuse_directory()
        with self._mapped_errors():
            conn = sqlite3.connect(Path(self.path).as_uri() + "?mode=ro", uri=True,
                                   timeout=self.timeout, isolation_level=None)
        try:
            with self._mapped_errors():
                tables = {str(r[0]) for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if self.table not in tables:
                others = sorted(t for t in tables if not t.startswith("sqlite_"))
                if others:
                    raise self._corrupt(
                        f"holds the tables {', '.join(others[:5])} but no {self.table!r}: "
                        "not a cascadeui database (refusing to add tables to it)")
                yield None
                return
            self._schema_work(conn)  # a foreign or newer layout is refused here
            yield conn
        finally:
            conn.close()

    def exists(self) -> bool:
        """True when the database holds the cascadeui table; read-only.

        :raises StateCorruptedError: the file is not SQLite, or holds other tables and not
            ours (a foreign database: nothing is ever added to it through this check).
        :raises StorageUnavailableError: the path is a directory, or cannot be read.
        """
        with self._readonly() as conn:
            return conn is not None

    def describe(self) -> StoreInfo:
        """Version, snapshot and journal bytes, last commit time; read-only."""
        with self._readonly() as conn:
            if conn is None:
                return StoreInfo(kind=self.kind, location=self.location, exists=False,
                                 extra={"table": self.table})
            with self._read_transaction(conn), self._mapped_errors():
                row = conn.execute(f"SELECT length(CAST(data AS BLOB)), updated_at, version "
                                   f"FROM {self.table} WHERE id = 1").fetchone()
                journal = conn.execute(
                    "SELECT count(*), coalesce(sum(length(CAST(ops AS BLOB))), 0), "
                    f"max(seq) FROM {self.journal_table}").fetchone()
                version = self._head((None if row is None else row[2], journal[2], ""))[0]
        snapshot = int(row[0] or 0) if row is not None else 0
        modified = None
        if row is not None and isinstance(row[1], (int, float)):
            modified = datetime.fromtimestamp(float(row[1]), timezone.utc)
        on_disk = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                on_disk += os.stat(self.path + suffix).st_size
        return StoreInfo(
            kind=self.kind, location=self.location, exists=True, version=version,
            size=snapshot + int(journal[1]), snapshot_size=snapshot,
            journal_size=int(journal[1]), modified=modified,
            extra={"table": self.table, "journal_records": int(journal[0]),
                   "file_bytes": on_disk or None})

    def check(self) -> tuple[list[Check], dict[str, Any] | None]:
        """``PRAGMA integrity_check``, the row is there and decodes, the journal applies."""
        checks: list[Check] = []
        with self._readonly() as conn:
            if conn is None:
                return [Check("database exists", False,
                              f"{self.path} holds no {self.table!r} table")], None
            try:
                with self._mapped_errors():
                    result = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
                checks.append(Check("sqlite integrity_check", result == "ok", result))
                with self._read_transaction(conn), self._mapped_errors():
                    row, records, lineage = self._fetch(conn)
            except StateCorruptedError as exc:
                return [*checks, Check("sqlite readable", False, str(exc))], None
        if row is None:
            return [*checks, Check("state row present", False, "the table holds no state")], \
                None
        try:
            self._decode_row(row[0])
            checks.append(Check("state row decodes", True, f"version {row[1]}"))
        except StateCorruptedError as exc:
            return [*checks, Check("state row decodes", False, str(exc))], None
        try:
            state, version, _ = self._assemble(row, records, lineage)
        except StateCorruptedError as exc:
            return [*checks, Check("change journal applies", False, str(exc))], None
        return [*checks, Check("change journal applies", True,
                               f"{len(records)} record(s) after the snapshot; version "
                               f"{version}")], state

    # -- schema ------------------------------------------------------------------------

    def _ensure_schema(self, conn: sqlite3.Connection, db: Any) -> None:
        """Refuse a foreign or newer database; create or upgrade ours to version 2.

        The checks run read-only first, so a refused database is never written. Changes
        are made under ``BEGIN IMMEDIATE`` after checking again: another process may have
        created or upgraded the database in between.
        """
        if not self._schema_work(conn):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            work = self._schema_work(conn)
            if "table" in work:
                db.table(self.table).create(_COLUMNS, pk="id",
                                            not_null={"data", "version", "updated_at"})
            if "journal" in work:
                conn.execute(f"CREATE TABLE {self.journal_table} "
                             "(seq INTEGER PRIMARY KEY, ops TEXT NOT NULL)")
            if "version" in work:
                meta = db.table("cascadeui_meta")
                meta.create({"key": str, "value": str}, pk="key", if_not_exists=True)
                meta.upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _schema_work(self, conn: sqlite3.Connection) -> set[str]:
        """What ``_ensure_schema`` must create: ``table``, ``journal``, ``version``.

        :raises StateCorruptedError: a table is foreign (other columns, not a table) or the
            schema version is newer than this cascadeui reads.
        """
        work: set[str] = set()
        kind = self._kind(conn, self.table)
        if kind is None:
            work.add("table")
        else:
            if kind != "table":  # sqlite-utils raises NoTable (issue 7)
                raise self._corrupt(f"{self.table!r} is a {kind}, not a cascadeui table")
            info = conn.execute(f"PRAGMA table_info({self.table})").fetchall()
            cols = sorted(str(c[1]) for c in info)
            # Every cascadeui table has id as its rowid (sqlite-utils' pk="id"): the upsert
            # in _write needs it, and a table without it is not ours to upgrade.
            keyed = [(str(c[1]), str(c[2]).upper()) for c in info if c[5]] == [("id", "INTEGER")]
            if set(cols) != set(_COLUMNS) or not keyed:
                raise self._corrupt(
                    f"table {self.table!r} has columns {cols}, expected {sorted(_COLUMNS)} "
                    "with id INTEGER PRIMARY KEY (not a cascadeui table?)")
        stored = self._stored_schema_version(conn)
        if stored is not None and stored != str(SCHEMA_VERSION) and stored not in _UPGRADABLE:
            raise self._corrupt(
                f"schema version {stored!r}, this cascadeui reads version {SCHEMA_VERSION} "
                "(written by a newer pycascadeui?)")
        if stored != str(SCHEMA_VERSION):
            work.add("version")
        kind = self._kind(conn, self.journal_table)
        if kind is None:
            work.add("journal")
        else:
            if kind != "table":
                raise self._corrupt(
                    f"{self.journal_table!r} is a {kind}, not a cascadeui journal table")
            cols = sorted(str(c[1]) for c in
                          conn.execute(f"PRAGMA table_info({self.journal_table})"))
            if set(cols) != _JOURNAL_COLUMNS:
                raise self._corrupt(
                    f"journal table {self.journal_table!r} has columns {cols}, expected "
                    f"{sorted(_JOURNAL_COLUMNS)} (not a cascadeui journal?)")
        return work

    @staticmethod
    def _kind(conn: sqlite3.Connection, name: str) -> str | None:
        """``table``, ``view``, ``index``... for a schema object, None when absent."""
        row = conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _stored_schema_version(self, conn: sqlite3.Connection) -> str | None:
        """The ``schema_version`` in ``cascadeui_meta``; None when there is none."""
        if self._kind(conn, "cascadeui_meta") is None:
            return None
        row = conn.execute(
            "SELECT value FROM cascadeui_meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Translate sqlite3 errors into the cascadeui hierarchy, naming the database."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            msg = str(exc)
            if "locked" in msg or "busy" in msg:
                raise LockTimeoutError(
                    f"{self.location}: could not get the write lock within "
                    f"{self.timeout:g}s ({msg})",
                    lock=self.location, timeout=self.timeout, location=self.location) from exc
            raise StorageUnavailableError(f"{self.location}: {msg}",
                                          location=self.location) from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", malformed image
            raise StateCorruptedError(f"{self.location}: {exc}", location=self.location,
                                      tried=(self.location,)) from exc

    # -- the row store's dialect ---------------------------------------------------------

    def _query(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return conn.execute(sql, params).fetchall()  # type: ignore[no-any-return]

    def _exec(self, tx: RowTx, sql: str, params: Sequence[Any] = ()) -> None:
        tx.conn.execute(sql, params)

    def _octets(self, expr: str) -> str:
        return f"length(CAST({expr} AS BLOB))"

    def _lineage_sql(self) -> str:
        return "(SELECT value FROM cascadeui_meta WHERE key = 'lineage')"

    def _read_lineage(self, conn: Any) -> str:
        """The lineage id in ``cascadeui_meta`` ('' when none: an earlier build's state)."""
        try:
            return super()._read_lineage(conn)
        except sqlite3.OperationalError:  # a schema-1 database read without upgrading it
            return ""

    def _put_lineage(self, tx: RowTx, lineage: str) -> None:
        tx.conn.execute("INSERT INTO cascadeui_meta (key, value) VALUES ('lineage', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (lineage,))

    def version(self) -> int:
        """The commit counter (negative while a journal is left without its snapshot
        row): one statement, no read transaction, cheap to poll."""
        with self._connection() as conn:
            return self._head(conn.execute(self._head_sql()).fetchone())[0]

    def _read_unit(self, fn: Callable[[Any], T]) -> T:
        with self._connection() as conn, self._read_transaction(conn):
            return fn(conn)

    @contextlib.contextmanager
    def _write_tx(self, *, whole: bool = False) -> Iterator[RowTx]:
        """``BEGIN IMMEDIATE`` (the write lock first: a deferred BEGIN can fail to upgrade
        its read lock), then the head; COMMIT on a clean exit, else ROLLBACK."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._open_tx(conn, fetched=self._fetch(conn) if whole else None)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read_transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """A deferred read transaction: the statements in it all see the same commit."""
        with self._mapped_errors():
            conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        with self._mapped_errors():
            conn.execute("COMMIT")

    def _release(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of ``path``, None when it does not exist (or cannot be seen)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


if TYPE_CHECKING:
    def _implements(store: SQLiteStore) -> JournaledStore:
        """mypy checks here that the class satisfies the JournaledStore protocol."""
        return store
