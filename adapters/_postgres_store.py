"""The PostgreSQL adapter: a snapshot row plus a change journal, one transaction per commit.

Layout, schema version 1 (documented in docs/backends.md)::

    cascadeui_state(id integer PRIMARY KEY,          -- always 1: one row, as in SQLite
                    data text NOT NULL,              -- the snapshot: a StateSerializer document
                    version bigint NOT NULL,         -- the version of the snapshot's commit
                    updated_at double precision NOT NULL)  -- unix time of that commit
    cascadeui_state_journal(seq bigint PRIMARY KEY,  -- the version its commit made
                            ops text NOT NULL)       -- one record (adapters/journal.py)

(``<table>_journal`` for another ``table``; the state table's comment names the schema
version.) The semantics are SQLite's (adapters/sqlite_store.py): the state is the snapshot
with every journal record applied in ``seq`` order, its version the last ``seq`` (the row's
``version`` when the journal is empty); an append inserts one journal row and never
rewrites the snapshot; every full write replaces ``data`` with the next version and
deletes the journal in the same transaction; a journal that is not the unbroken sequel of
its row is refused as corrupt.

Locking: every write transaction starts with ``LOCK TABLE <table> IN SHARE ROW EXCLUSIVE
MODE``, which writers take one at a time (the lock conflicts with itself) and which never
blocks a plain ``SELECT``; it also works while the table is empty, where a row lock would
lock nothing. The wait is bounded by ``lock_timeout`` (:class:`LockTimeoutError`). A
reader runs one statement (the row and the journal in one ``UNION ALL``), so it sees one
commit without a transaction. A commit costs two round trips: ``BEGIN; LOCK; SELECT``
as one simple query, then the writes, ``pg_notify`` and ``COMMIT`` in one pipeline.

Every commit announces its new version with ``pg_notify(channel, version)`` inside its
transaction (delivered only if it commits; see :attr:`PostgresStore.channel`), so running
stores can catch up at once instead of at their next poll.

A client killed mid-transaction leaves nothing: the server rolls the transaction back
when the connection drops, and releases its lock.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    PersistenceError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from ._journaled import Tail
from ._listeners import TICK, Listener, Notify, announced_version
from ._rows import RowStore, RowTx
from ._urls import redact_secret, redact_url, url_secrets
from .base import Check, StoreInfo

if TYPE_CHECKING:
    from ._journal import JournaledStore

__all__ = ["PostgresListener", "PostgresStore", "SCHEMA_VERSION"]

#: Milliseconds a session may sit idle inside a transaction before the server ends it
#: (releasing the table lock). Ours are two round trips with only the encoding of a
#: compacted document in between, far below this.
IDLE_IN_WRITE_MS = 2000

SCHEMA_VERSION = 1
#: Lower-case identifiers only, so the quoted and unquoted names are the same table, and
#: short enough that ``<table>_journal`` stays within PostgreSQL's 63 bytes.
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,54}")
_COLUMNS = {"id": "integer", "data": "text", "version": "bigint",
            "updated_at": "double precision"}
_JOURNAL_COLUMNS = {"seq": "bigint", "ops": "text"}
_COMMENT = re.compile(r"cascadeui state table, schema (\d+)")
#: The row ``id`` that holds the lineage id (in ``data``); the state is row 1. Readers
#: of every earlier build select row 1 only.
_LINEAGE_ROW = 0

T = TypeVar("T")




class PostgresStore(RowStore):
    """State in one row of a PostgreSQL table plus its change journal, safe across hosts.

    Implements :class:`~cascadeui.adapters.SyncStore`,
    :class:`~cascadeui.adapters.VersionedStore` and
    :class:`~cascadeui.adapters.JournaledStore` (structurally). Needs
    ``pip install 'cascadeui-persistence[postgres]'`` (psycopg 3).

    :param url: a libpq URL, ``postgresql://user[:password]@host[:port]/dbname[?...]``
        (``postgres://`` too); the password never appears in reprs, logs or errors.
    :param table: the state table's name (lower-case identifier); its journal is
        ``<table>_journal``.
    :param timeout: seconds to wait for the write lock before
        :class:`~cascadeui.errors.LockTimeoutError` (the session's ``lock_timeout``).
    :param statement_timeout: seconds a statement may run before the server cancels it
        (:class:`~cascadeui.errors.StorageUnavailableError`); None: the server's setting.
    :param connect_timeout: seconds to connect, and to wait for an unanswered send
        (``tcp_user_timeout``), so a dead server fails calls instead of hanging them.
    """

    kind = "postgres"

    def __init__(self, url: str = "postgresql://localhost/postgres", *,
                 table: str = "cascadeui_state", timeout: float = 10.0,
                 statement_timeout: float | None = 30.0, connect_timeout: float = 5.0,
                 serializer: StateSerializer | None = None) -> None:
        super().__init__(serializer=serializer)
        # psycopg is imported on first use, in the worker thread: constructors run on
        # the event loop and must not stall it.
        if "psycopg" not in sys.modules and importlib.util.find_spec("psycopg") is None:
            raise ImportError(  # pragma: no cover - exercised only without the extra
                "PostgresStore needs psycopg: pip install 'cascadeui-persistence[postgres]'")
        self.url: str = redact_url(url)
        self._secrets = url_secrets(url)
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"bad PostgreSQL URL {self.url}: use postgresql://user@host:port/dbname")
        try:
            urlsplit(url).port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise ConfigurationError(f"bad PostgreSQL URL {self.url}: {exc}") from None
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(
                f"table name must be a lower-case identifier of at most 55 characters "
                f"(letters, digits, _), not {table!r}")
        self.table = table
        self.journal_table: str = f"{table}_journal"
        self.location = f"{self.url} table={table!r}"
        #: The LISTEN/NOTIFY channel every commit announces its new version on.
        self.channel: str = f"cascadeui.{table}"
        self.timeout = timeout
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self._raw_url = url
        self._t = f'"{table}"'
        self._j = f'"{self.journal_table}"'
        # [connection, pid that opened it]: a finalizer closes it if the store is dropped
        # without close() (psycopg warns otherwise), never in a forked child.
        self._held: list[Any] = [None, 0]
        weakref.finalize(self, _close_held, self._held)
        self._mutex = threading.RLock()
        #: Statements the open write transaction sends with its COMMIT, in one pipeline.
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._committing = False  # the COMMIT was sent: a lost connection is not retried

    # -- connection --------------------------------------------------------------------

    def connect(self, **extra: Any) -> Any:
        """A new psycopg connection to this store's database (autocommit), with the
        store's timeouts; for listeners and tools. The caller closes it.

        :raises StorageUnavailableError: the server is unreachable, refused the login, or
            the database does not exist.
        """
        import psycopg
        import psycopg.conninfo

        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, round(self.connect_timeout)),
        }
        try:
            params = psycopg.conninfo.conninfo_to_dict(self._raw_url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"bad PostgreSQL URL {self.url}: "
                                     f"{self._redacted(exc)}", location=self.location) from None
        # What the URL says wins; a Unix socket has no TCP timeout to set.
        if "tcp_user_timeout" not in params and not str(params.get("host", "")).startswith("/"):
            kwargs["tcp_user_timeout"] = int(self.connect_timeout * 1000)
            # tcp_user_timeout covers data we sent and nobody acknowledged; a reply that
            # never comes (the link died after our request got through) needs keepalives,
            # or recv() waits for the server's TCP retransmissions, which back off to
            # tens of seconds (the partition campaign's hosts stalled past the heal).
            idle = max(1, round(self.connect_timeout / 2))
            keepalive = {"keepalives": 1, "keepalives_idle": idle, "keepalives_interval": 1,
                         "keepalives_count": 3}
            kwargs.update({k: v for k, v in keepalive.items() if k not in params})
        kwargs.update(extra)
        with self._mapped_errors():
            conn = psycopg.connect(self._raw_url, **kwargs)
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """The store's connection, held exclusively by this thread for the block."""
        self._check_open()
        if not self._mutex.acquire(timeout=self.timeout):
            raise LockTimeoutError(
                f"{self.location}: another thread held the store past {self.timeout:g}s",
                lock=self.location, timeout=self.timeout, location=self.location)
        try:
            conn, pid = self._held
            if conn is None or conn.closed or pid != os.getpid():
                # After fork() the parent's socket is shared: never use it, never close it
                # (psycopg closes a connection only in the process that opened it).
                self._held[:] = [None, 0]
                conn = self._open()
                self._held[:] = [conn, os.getpid()]
            yield conn
        finally:
            self._mutex.release()

    def _open(self) -> Any:
        conn = self.connect()
        try:
            # A writer that stops answering inside its write transaction (its host
            # partitioned away, a frozen process) would hold the table lock, and so block
            # every other writer, until the server noticed the dead link: minutes of TCP
            # retransmission (scripts/partition_campaign.py saw every host time out for
            # the whole 30 s partition). The server ends such a session after this long.
            settings = [f"SET lock_timeout = {max(1, int(self.timeout * 1000))}",
                        f"SET idle_in_transaction_session_timeout = {IDLE_IN_WRITE_MS}"]
            if self.statement_timeout is not None:
                settings.append(
                    f"SET statement_timeout = {max(1, int(self.statement_timeout * 1000))}")
            with self._mapped_errors():
                conn.execute("; ".join(settings))
                self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop_connection(self) -> None:
        """Forget a connection the server dropped (the next call reconnects)."""
        _close_held(self._held)

    def _run(self, unit: Callable[[Any], Any]) -> Any:
        """Run ``unit(conn)`` on the store's connection, mapping errors.

        A connection the server dropped while it sat idle (a restart, an idle timeout)
        fails its first statement; ``unit`` is then run once more on a new connection,
        unless its COMMIT was already sent (whether it committed is then unknown).
        """
        for attempt in (0, 1):
            with self._connection() as conn:
                self._committing = False
                try:
                    with self._mapped_errors():
                        return unit(conn)
                except StorageUnavailableError:
                    if conn.closed or conn.broken:
                        self._drop_connection()
                        if attempt == 0 and not self._committing:
                            continue
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema ------------------------------------------------------------------------

    def _ensure_schema(self, conn: Any) -> None:
        """Refuse a foreign or newer table; create ours (both tables) when missing.

        The checks run read-only first, so a refused table is never written, and a role
        with only SELECT/INSERT/UPDATE/DELETE works on tables created for it. Creation
        runs under a transaction-scoped advisory lock, checking again: another process may
        have created the tables in between.
        """
        if not self._schema_work(conn):
            return
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"cascadeui:{self.table}",))
            work = self._schema_work(conn)
            if "table" in work:
                conn.execute(
                    f"CREATE TABLE {self._t} (id integer PRIMARY KEY, data text NOT NULL, "
                    "version bigint NOT NULL, updated_at double precision NOT NULL)")
                conn.execute(f"COMMENT ON TABLE {self._t} IS "
                             f"'cascadeui state table, schema {SCHEMA_VERSION}'")
            if "journal" in work:
                conn.execute(f"CREATE TABLE {self._j} "
                             "(seq bigint PRIMARY KEY, ops text NOT NULL)")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def _schema_work(self, conn: Any) -> set[str]:
        """What ``_ensure_schema`` must create: ``table``, ``journal``.

        :raises StateCorruptedError: a table is foreign (other columns, not a table) or
            its comment names a newer schema than this cascadeui reads.
        """
        work: set[str] = set()
        for name, columns, what in ((self.table, _COLUMNS, "table"),
                                    (self.journal_table, _JOURNAL_COLUMNS, "journal")):
            row = conn.execute(
                "SELECT c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c "
                "WHERE c.oid = to_regclass(%s)", (f'"{name}"',)).fetchone()
            if row is None:
                work.add(what)
                continue
            kind, comment = row
            if kind not in ("r", "p"):
                raise self._corrupt(f"{name!r} is not a table (relkind {kind!r}), "
                                    "not a cascadeui table")
            found = dict(conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (f'"{name}"',)).fetchall())
            keys = [r[0] for r in conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) "
                "AND i.indisprimary", (f'"{name}"',)).fetchall()]
            key = "id" if what == "table" else "seq"
            if found != columns or keys != [key]:
                shown = sorted(found.items())
                listed = (f"columns {shown}" if len(shown) <= 8 else  # a system table: dozens
                          f"{len(shown)} columns ({', '.join(c for c, _ in shown[:6])}, ...)")
                raise self._corrupt(
                    f"table {name!r} has {listed}, expected "
                    f"{sorted(columns.items())} with {key} the primary key "
                    "(not a cascadeui table?)")
            if what == "table" and comment:
                match = _COMMENT.fullmatch(comment)
                if match and int(match.group(1)) > SCHEMA_VERSION:
                    raise self._corrupt(
                        f"schema version {match.group(1)}, this cascadeui reads version "
                        f"{SCHEMA_VERSION} (written by a newer pycascadeui?)")
        return work

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Translate psycopg errors into the cascadeui hierarchy, naming the database and
        never its password."""
        import psycopg
        import psycopg.errors as pge

        try:
            yield
        except PersistenceError:
            raise
        except pge.LockNotAvailable as exc:
            raise LockTimeoutError(
                f"{self.location}: could not get the write lock within {self.timeout:g}s "
                f"({self._redacted(exc)})", lock=f"{self.location} (LOCK TABLE)",
                timeout=self.timeout, location=self.location) from None
        except pge.QueryCanceled as exc:
            raise StorageUnavailableError(
                f"{self.location}: statement cancelled after statement_timeout="
                f"{self.statement_timeout}s ({self._redacted(exc)})",
                location=self.location) from None
        except pge.InsufficientPrivilege as exc:
            raise StorageUnavailableError(
                f"{self.location}: permission denied ({self._redacted(exc)}); see the "
                "GRANTs in docs/backends.md", location=self.location) from None
        except psycopg.OperationalError as exc:
            text = self._redacted(exc)
            if "authentication failed" in text or "no password supplied" in text:
                reason = "authentication failed"
            elif "does not exist" in text:
                reason = "no such database or role"
            elif "invalid" in text and ("value" in text or "option" in text):
                raise ConfigurationError(  # ?sslmode=bogus: the URL, not the network
                    f"{self.location}: invalid connection option in the URL: {text}",
                    location=self.location) from None
            else:
                reason = "server unreachable or connection lost"
            raise StorageUnavailableError(f"{self.location}: {reason}: {text}",
                                          location=self.location) from None
        except psycopg.Error as exc:
            raise StorageUnavailableError(
                f"{self.location}: {type(exc).__name__}: {self._redacted(exc)}",
                location=self.location) from None
        except UnicodeEncodeError as exc:  # a lone surrogate the serializer let through
            raise StorageUnavailableError(
                f"{self.location}: text PostgreSQL cannot store: {exc}",
                location=self.location) from None

    def _redacted(self, exc: BaseException) -> str:
        return redact_secret(str(exc).strip(), self._secrets)

    def exists(self) -> bool:
        """True when the state table exists, checked without creating anything (for
        read-only tools: a typo must not create tables).

        :raises StorageUnavailableError: the server cannot be reached or refused us.
        """
        self._check_open()
        conn = self.connect()
        try:
            with self._mapped_errors():
                row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                   (f'"{self.table}"',)).fetchone()
        finally:
            conn.close()
        return bool(row[0])

    def companion(self, tag: str) -> PostgresStore:
        """The table ``<table>_<tag>_backup`` in the same database."""
        return PostgresStore(self._raw_url, table=f"{self.table}_{tag}_backup",
                             timeout=self.timeout, statement_timeout=self.statement_timeout,
                             connect_timeout=self.connect_timeout, serializer=self.serializer)

    def listener(self, notify: Notify) -> Listener:
        """``LISTEN`` on :attr:`channel` in a thread (for the engine; not started)."""
        return PostgresListener(notify, self)

    def describe(self) -> StoreInfo:
        """Version, snapshot and journal bytes, last commit time; creates nothing."""
        if not self.exists():
            return StoreInfo(kind=self.kind, location=self.location, exists=False,
                             extra={"table": self.table})
        conn = self.connect()
        try:
            with self._mapped_errors():
                row = conn.execute(
                    f"SELECT (SELECT octet_length(data) FROM {self._t} WHERE id = 1), "
                    f"(SELECT updated_at FROM {self._t} WHERE id = 1), "
                    f"(SELECT count(*) FROM {self._j}), "
                    f"(SELECT coalesce(sum(octet_length(ops)), 0) FROM {self._j}), "
                    f"{self._head_sql()[len('SELECT '):]}").fetchone()
        finally:
            conn.close()
        snapshot, updated, count, journal = row[:4]
        version = self._head(row[4:])[0]
        return StoreInfo(
            kind=self.kind, location=self.location, exists=True, version=version,
            size=int(snapshot or 0) + int(journal), snapshot_size=int(snapshot or 0),
            journal_size=int(journal),
            modified=datetime.fromtimestamp(float(updated), timezone.utc)
            if updated is not None else None,
            extra={"table": self.table, "journal_records": int(count)})

    def check(self) -> tuple[list[Check], dict[str, Any] | None]:
        """The row is there and decodes, the journal follows it and applies; creates nothing."""
        if not self.exists():
            return [Check("state table exists", False, f"no table {self.table!r}")], None
        conn = self.connect()
        try:
            with self._mapped_errors():
                row, records, lineage = self._fetch(conn)
        finally:
            conn.close()
        if row is None:
            return [Check("state row present", False, "the table holds no state")], None
        try:
            state, version, _ = self._assemble(row, records, lineage)
        except StateCorruptedError as exc:
            return [Check("state row and change journal decode", False, str(exc))], None
        return [Check("state row and change journal decode", True,
                      f"{len(records)} record(s) after the snapshot; version {version}")], state

    # -- the row store's dialect ---------------------------------------------------------

    def _query(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(conn.execute(sql.replace("?", "%s"), tuple(params) or None).fetchall())

    def _exec(self, tx: RowTx, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue ``sql``: the open write transaction sends it with its COMMIT."""
        self._pending.append((sql.replace("?", "%s"), tuple(params)))

    def _announce(self, tx: RowTx, version: int) -> None:
        """Queue ``pg_notify(channel, version)``: delivered to listeners at COMMIT."""
        self._pending.append(("SELECT pg_notify(%s, %s)", (self.channel, str(version))))

    def _octets(self, expr: str) -> str:
        return f"octet_length({expr})"

    def _lineage_sql(self) -> str:
        return f"(SELECT data FROM {self._t} WHERE id = {_LINEAGE_ROW})"

    def _put_lineage(self, tx: RowTx, lineage: str) -> None:
        self._exec(tx, f"INSERT INTO {self._t} (id, data, version, updated_at) "
                       f"VALUES ({_LINEAGE_ROW}, ?, 0, ?) ON CONFLICT (id) DO UPDATE SET "
                       "data = excluded.data, updated_at = excluded.updated_at",
                       (lineage, time.time()))

    def _read_unit(self, fn: Callable[[Any], T]) -> T:
        result: T = self._run(fn)
        return result

    def _fetch(self, conn: Any) -> tuple[Any, list[Any], str]:
        """The row, the journal rows and the lineage, from one statement (one commit)."""
        return self._split(conn.execute(self._fetch_sql()).fetchall())

    def _fetch_sql(self) -> str:
        return (f"SELECT 0, version, data FROM {self._t} WHERE id = 1 "
                f"UNION ALL SELECT 1, seq, ops FROM {self._j} "
                f"UNION ALL SELECT 2, 0, data FROM {self._t} WHERE id = {_LINEAGE_ROW} "
                "ORDER BY 1, 2")

    @staticmethod
    def _split(rows: list[Any]) -> tuple[Any, list[Any], str]:
        row = None
        records = []
        lineage = ""
        for kind, number, text in rows:
            if kind == 0:
                row = (text, number)
            elif kind == 1:
                records.append((number, text))
            else:
                lineage = str(text)
        return row, records, lineage

    def _tail(self, since: int) -> Tail:
        """The journal's end after ``since``, from one statement (one commit)."""
        def unit(conn: Any) -> list[Any]:
            return list(conn.execute(
                f"SELECT 0, version, NULL::text FROM {self._t} WHERE id = 1 "
                f"UNION ALL SELECT 1, min(seq), NULL FROM {self._j} "
                f"UNION ALL SELECT 2, max(seq), NULL FROM {self._j} "
                f"UNION ALL (SELECT 3, seq, ops FROM {self._j} WHERE seq > %s) "
                f"UNION ALL SELECT 4, 0, data FROM {self._t} WHERE id = {_LINEAGE_ROW} "
                "ORDER BY 1, 2", (since,)).fetchall())

        found: dict[int, Any] = {}
        records = []
        for kind, number, text in self._run(unit):
            if kind == 3:
                records.append((number, text))
            else:
                found[kind] = text if kind == 4 else number
        return Tail(found.get(0), found.get(1), found.get(2), records,
                    str(found.get(4) or ""))

    # -- the write transaction -----------------------------------------------------------

    @contextlib.contextmanager
    def _write_tx(self, *, whole: bool = False) -> Iterator[RowTx]:
        """``BEGIN; LOCK TABLE; SELECT ...`` in one round trip, then the queued writes,
        the announcement and ``COMMIT`` in another (a pipeline); ROLLBACK if the body
        raises. A connection the server dropped while idle is replaced before the body
        runs (nothing was sent that could have committed)."""
        for attempt in (0, 1):
            with self._connection() as conn:
                self._committing = False
                try:
                    with self._mapped_errors():
                        tx = self._begin(conn, whole=whole)
                except StorageUnavailableError:
                    if conn.closed or conn.broken:
                        self._drop_connection()
                        if attempt == 0:
                            continue
                    raise
                try:
                    with self._mapped_errors():
                        yield tx
                        self._finish(conn)
                except BaseException:
                    self._abort(conn)
                    if conn.closed or conn.broken:
                        self._drop_connection()
                    raise
                return

    def _begin(self, conn: Any, *, whole: bool) -> RowTx:
        """The first round trip of a write transaction (rolled back if it fails)."""
        query = self._fetch_sql() if whole else self._head_sql()
        self._pending = []
        try:
            cur = conn.execute(
                f"BEGIN; LOCK TABLE {self._t} IN SHARE ROW EXCLUSIVE MODE; {query}")
            while cur.nextset():
                pass
            if whole:
                return self._open_tx(conn, fetched=self._split(cur.fetchall()))
            return self._open_tx(conn, head=cur.fetchone())
        except BaseException:
            self._abort(conn)
            raise

    def _finish(self, conn: Any) -> None:
        """Send the queued writes and COMMIT in one pipeline."""
        pending, self._pending = self._pending, []
        self._committing = True
        with conn.pipeline():
            for statement, params in pending:
                conn.execute(statement, params)
            conn.execute("COMMIT")

    def _abort(self, conn: Any) -> None:
        """Forget what the transaction queued; ROLLBACK while the connection is usable."""
        self._pending = []
        if not conn.closed and not conn.broken:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")

    def _release(self) -> None:
        with self._mutex:
            _close_held(self._held)


def _close_held(held: list[Any]) -> None:
    """Close the connection in ``held`` if this process opened it; empty ``held``."""
    conn, pid = held
    held[:] = [None, 0]
    if conn is not None and pid == os.getpid():
        with contextlib.suppress(Exception):
            conn.close()


if TYPE_CHECKING:
    def _implements(store: PostgresStore) -> JournaledStore:
        """mypy checks here that the class satisfies the JournaledStore protocol."""
        return store


class PostgresListener(Listener):
    """``LISTEN`` on the store's channel over a connection of its own."""

    def __init__(self, notify: Notify, store: Any) -> None:
        super().__init__(notify, store.location)
        self.store = store

    def _session(self) -> None:
        # Keepalives: a listener only reads, so a server that vanished without a reset
        # would otherwise never be noticed.
        conn = self.store.connect(application_name="cascadeui-listener", keepalives=1,
                                  keepalives_idle=5, keepalives_interval=2,
                                  keepalives_count=3)
        try:
            conn.execute(f'LISTEN "{self.store.channel}"')
            self._connected()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=TICK):
                    self.notify(announced_version(note.payload))
        finally:
            with contextlib.suppress(Exception):
                conn.close()
