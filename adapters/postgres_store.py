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
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cascadeui._merge import Change
from cascadeui._watch import TICK, Listener, Notify, announced_version
from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    PersistenceError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from ._urls import redact_secret, redact_url, url_secrets
from .base import BaseStore, Check, StoreInfo
from .journal import (
    Budget,
    apply_records,
    commit_changes,
    corrupt,
    decode_records,
    encode_record,
    nbytes,
)

if TYPE_CHECKING:
    from .journal import JournaledStore

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




class PostgresStore(BaseStore):
    """State in one row of a PostgreSQL table plus its change journal, safe across hosts.

    Implements :class:`~cascadeui.adapters.SyncStore`,
    :class:`~cascadeui.adapters.VersionedStore` and
    :class:`~cascadeui.adapters.JournaledStore` (structurally). Needs
    ``pip install 'pycascadeui[postgres]'`` (psycopg 3).

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
                "PostgresStore needs psycopg: pip install 'pycascadeui[postgres]'")
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
        # The compaction budget's inputs, for the last commit this store read or wrote.
        self._sizes: Budget | None = None
        self._staged: Budget | None = None  # what the open write transaction commits
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
                raise self._corrupt(
                    f"table {name!r} has columns {sorted(found.items())}, expected "
                    f"{sorted(columns.items())} with {key} the primary key "
                    "(not a cascadeui table?)")
            if what == "table" and comment:
                match = _COMMENT.fullmatch(comment)
                if match and int(match.group(1)) > SCHEMA_VERSION:
                    raise self._corrupt(
                        f"schema version {match.group(1)}, this cascadeui reads version "
                        f"{SCHEMA_VERSION} (written by a newer pycascadeui?)")
        return work

    def _corrupt(self, what: str) -> StateCorruptedError:
        return corrupt(self.location, what)

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
                f"{self.location}: write lock not had within {self.timeout:g}s "
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

    # -- the contract ------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Return the stored state (snapshot plus journal), ``{}`` when nothing is stored.

        :raises StateCorruptedError: a table is foreign, or the row or a journal record
            does not decode or does not fit.
        :raises StorageUnavailableError: the server cannot be reached or refused us.
        """
        return self.load_versioned()[0]

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state (a new snapshot, an empty journal) in one transaction.

        :raises SerializationError: ``state`` holds a value JSON cannot store (nothing written).
        :raises LockTimeoutError: the write lock was not had within ``timeout``.
        """
        text = self.serializer.serialize(state)

        def unit(conn: Any) -> None:
            with self._write_transaction(conn) as current:
                self._write(conn, text, current)

        self._run(unit)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, yield the state to change in place, commit it whole.

        If the body raises, the transaction is rolled back and nothing is written. A
        connection the server dropped while idle is replaced before the body runs.
        """
        for attempt in (0, 1):
            with self._connection() as conn:
                self._committing = False
                try:
                    with self._mapped_errors():
                        got = self._begin(conn, fetch=True)
                except StorageUnavailableError:
                    if conn.closed or conn.broken:
                        self._drop_connection()
                        if attempt == 0:
                            continue  # nothing was sent that could have committed
                    raise
                try:
                    with self._mapped_errors():
                        state, version = self._assemble(*got)
                    yield state
                    text = self.serializer.serialize(state)
                    with self._mapped_errors():
                        self._write(conn, text, version)
                        self._finish(conn)
                except BaseException:
                    self._abort(conn)
                    if conn.closed or conn.broken:
                        self._drop_connection()
                    raise
                return

    def version(self) -> int:
        """The commit counter (0 when empty): one statement, cheap to poll."""
        return int(self._run(self._version))

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """:meth:`load` and the :meth:`version` it was read at, from one statement."""
        rows = self._run(self._fetch)
        return self._assemble(*rows)

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save: see :meth:`~cascadeui.adapters.VersionedStore.save_if_version`."""
        text = self.serializer.serialize(state) if encoded is None else encoded

        def unit(conn: Any) -> int | None:
            with self._write_transaction(conn) as current:
                if current != expected:
                    return None
                return self._write(conn, text, current)

        result: int | None = self._run(unit)
        return result

    def save_changes(self, changes: Sequence[Change], expected: int, *,
                     full: Callable[[], str]) -> int | None:
        """Append ``changes`` as one journal row if the version is still ``expected``.

        See :meth:`~cascadeui.adapters.JournaledStore.save_changes`. The first commit of
        an empty table, and a record that would take the journal past its budget, write
        ``full()`` as a new snapshot instead.

        :raises SerializationError: a changed value cannot be stored (nothing written).
        :raises StateCorruptedError: a compaction would replace a stored state this store
            never read whole and that does not decode (nothing written).
        """
        if not changes:
            return expected if self.version() == expected else None
        record = encode_record(self.serializer, changes)  # before anything is written
        record_bytes = nbytes(record)

        def unit(conn: Any) -> int | None:
            with self._write_transaction(conn) as current:

                def append(budget: Budget) -> int:
                    version = int(current) + 1
                    self._queue(f"INSERT INTO {self._j} (seq, ops) VALUES (%s, %s)",
                                version, record)
                    self._announce(version)
                    self._staged = budget.appended(version, record_bytes)
                    return version

                return commit_changes(
                    current, expected, record_bytes,
                    budget=lambda at: self._sizes_at(conn, at),
                    verify=lambda: self._assemble(*self._fetch(conn)),
                    snapshot=lambda: self._write(conn, full(), current), append=append)

        result: int | None = self._run(unit)
        return result

    def load_changes(self, since: int) -> tuple[list[list[list[Any]]], int] | None:
        """The records after version ``since`` and the current version, from one statement.

        See :meth:`~cascadeui.adapters.JournaledStore.load_changes`. Reads the row's
        ``version``, never its ``data``. None when there is no row, a full write happened
        since ``since``, or ``since`` is past the current version.

        :raises StateCorruptedError: the journal is out of step with the row, or a record
            since ``since`` does not decode.
        """
        def unit(conn: Any) -> list[Any]:
            return list(conn.execute(
                f"SELECT 0, version, NULL::text FROM {self._t} WHERE id = 1 "
                f"UNION ALL SELECT 1, min(seq), NULL FROM {self._j} "
                f"UNION ALL SELECT 2, max(seq), NULL FROM {self._j} "
                f"UNION ALL (SELECT 3, seq, ops FROM {self._j} WHERE seq > %s) "
                "ORDER BY 1, 2", (since,)).fetchall())

        rows = self._run(unit)
        snapshot = first = last = None
        records = []
        for kind, number, ops in rows:
            if kind == 0:
                snapshot = number
            elif kind == 1:
                first = number
            elif kind == 2:
                last = number
            else:
                records.append((number, ops))
        if snapshot is None:
            return None
        current = snapshot if last is None else int(last)
        if since < snapshot or since > current:
            return None  # records before the full write are gone / not ours to place
        seqs = [seq for seq, _ in records]
        if (first is not None and first != snapshot + 1) or seqs != list(
                range(since + 1, current + 1)):
            raise self._corrupt(
                f"journal {self.journal_table!r} holds {len(seqs)} records after "
                f"version {since} and records {first!r}..{current!r} in all, but the "
                f"snapshot is at version {snapshot}: they are not its unbroken sequel "
                "(edited by hand?)")
        decoded, new_bytes = self._decode_records(records)
        sizes = self._sizes
        if sizes is not None and sizes.version == since:  # same snapshot, a longer journal
            self._sizes = sizes.caught_up(current, len(records), new_bytes)
        return decoded, current

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
                    f"({self._version_sql()})").fetchone()
        finally:
            conn.close()
        snapshot, updated, count, journal, version = row
        return StoreInfo(
            kind=self.kind, location=self.location, exists=True, version=int(version),
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
                row, records = self._fetch(conn)
        finally:
            conn.close()
        if row is None:
            return [Check("state row present", False, "the table holds no state")], None
        try:
            state, version = self._assemble(row, records)
        except StateCorruptedError as exc:
            return [Check("state row and change journal decode", False, str(exc))], None
        return [Check("state row and change journal decode", True,
                      f"{len(records)} record(s) after the snapshot; version {version}")], state

    # -- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _write_transaction(self, conn: Any, *, fetch: bool = False) -> Iterator[Any]:
        """``BEGIN; LOCK TABLE; SELECT ...`` in one round trip, then the queued writes,
        the announcement and ``COMMIT`` in another (a pipeline); ROLLBACK if the body raises.

        Yields the current version, or with ``fetch`` the row and journal rows (as
        :meth:`_fetch`).
        """
        got = self._begin(conn, fetch=fetch)
        try:
            yield got
        except BaseException:
            self._abort(conn)
            raise
        self._finish(conn)

    def _begin(self, conn: Any, *, fetch: bool) -> Any:
        """The first round trip of a write transaction (rolled back if it fails)."""
        query = self._fetch_sql() if fetch else self._version_sql()
        self._staged, self._pending = None, []
        try:
            cur = conn.execute(
                f"BEGIN; LOCK TABLE {self._t} IN SHARE ROW EXCLUSIVE MODE; {query}")
            while cur.nextset():
                pass
            if fetch:
                return self._split(cur.fetchall())
            return self._checked_version(cur.fetchone()[0])
        except BaseException:
            self._abort(conn)
            raise

    def _finish(self, conn: Any) -> None:
        """Send the queued writes and COMMIT in one pipeline; the size cache follows."""
        pending, self._pending = self._pending, []
        self._committing = True
        try:
            with conn.pipeline():
                for statement, params in pending:
                    conn.execute(statement, params)
                conn.execute("COMMIT")
        except BaseException:
            self._abort(conn)
            raise
        if self._staged is not None:
            self._sizes, self._staged = self._staged, None

    def _abort(self, conn: Any) -> None:
        """Forget what the transaction staged; ROLLBACK while the connection is usable."""
        self._staged, self._pending = None, []
        if not conn.closed and not conn.broken:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")

    def _queue(self, statement: str, *params: Any) -> None:
        """Send ``statement`` with the open write transaction's COMMIT."""
        self._pending.append((statement, params))

    def _announce(self, version: int) -> None:
        """Queue ``pg_notify(channel, version)``: delivered to listeners at COMMIT."""
        self._queue("SELECT pg_notify(%s, %s)", self.channel, str(version))

    def _version_sql(self) -> str:
        return (f"SELECT coalesce((SELECT max(seq) FROM {self._j}), "
                f"(SELECT version FROM {self._t} WHERE id = 1), 0)")

    def _fetch_sql(self) -> str:
        return (f"SELECT 0, version, data FROM {self._t} WHERE id = 1 "
                f"UNION ALL SELECT 1, seq, ops FROM {self._j} ORDER BY 1, 2")

    def _version(self, conn: Any) -> int:
        """The last journal record's ``seq``, else the row's version, else 0."""
        return self._checked_version(conn.execute(self._version_sql()).fetchone()[0])

    def _checked_version(self, value: Any) -> int:
        if type(value) is not int:  # pragma: no cover - a bigint column
            raise self._corrupt(f"table {self.table!r} holds version {value!r}, not a number")
        return value

    def _fetch(self, conn: Any) -> tuple[Any, list[Any]]:
        """The row (data, version) or None, and the journal rows in order, from one
        statement (so from one commit)."""
        return self._split(conn.execute(self._fetch_sql()).fetchall())

    @staticmethod
    def _split(rows: list[Any]) -> tuple[Any, list[Any]]:
        row = None
        records = []
        for kind, number, text in rows:
            if kind == 0:
                row = (text, number)
            else:
                records.append((number, text))
        return row, records

    def _assemble(self, row: Any, records: list[Any]) -> tuple[dict[str, Any], int]:
        """The state (snapshot plus journal) and its version, from :meth:`_fetch`'s rows.

        :raises StateCorruptedError: the row or a record does not decode, a record does
            not fit, or the journal does not follow the row's version.
        """
        self._sizes = None  # known again only once this commit decoded whole
        if row is None:
            if records:
                raise self._corrupt(f"{self.journal_table!r} holds {len(records)} records "
                                    f"but {self.table!r} holds no snapshot")
            return {}, 0
        data, version = row
        seqs = [seq for seq, _ in records]
        if seqs != list(range(version + 1, version + len(seqs) + 1)):
            raise self._corrupt(
                f"journal {self.journal_table!r} holds records {seqs[0]!r}..{seqs[-1]!r} "
                f"but the snapshot is at version {version}: they were not written against "
                "it (edited by hand?)")
        version += len(seqs)
        try:
            state = self.serializer.deserialize(data)
        except StateCorruptedError as exc:
            raise self._corrupt(str(exc)) from exc
        decoded, journal_bytes = self._decode_records(records)
        apply_records(state, zip(seqs, decoded, strict=True), location=self.location,
                      name=self._record_name)
        self._sizes = Budget(version, len(seqs), journal_bytes, nbytes(data))
        return state, version

    def _decode_records(self, records: list[Any]) -> tuple[list[list[list[Any]]], int]:
        """The decoded ops of ``(seq, ops)`` journal rows, and their bytes.

        :raises StateCorruptedError: a row that is not a record, naming its ``seq``.
        """
        return decode_records(self.serializer, records, location=self.location,
                              name=self._record_name)

    def _record_name(self, seq: Any) -> str:
        return f"journal record {seq} in {self.journal_table!r}"

    def _sizes_at(self, conn: Any, version: int) -> tuple[Budget, bool]:
        """Journal and snapshot bytes at ``version``, and whether this store read it whole."""
        if self._sizes is not None and self._sizes.version == version:
            return self._sizes, True
        row = conn.execute(
            f"SELECT coalesce((SELECT octet_length(data) FROM {self._t} WHERE id = 1), 0), "
            f"(SELECT coalesce(sum(octet_length(ops)), 0) FROM {self._j})").fetchone()
        return Budget(version, 0, int(row[1]), int(row[0])), False

    def _write(self, conn: Any, text: str, current: int) -> int:
        """Queue the new snapshot, the journal's deletion and the announcement (inside a
        write transaction at version ``current``); the new version."""
        version = current + 1
        self._queue(
            f"INSERT INTO {self._t} (id, data, version, updated_at) "
            "VALUES (1, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET data = excluded.data, "
            "version = excluded.version, updated_at = excluded.updated_at",
            text, version, time.time())
        self._queue(f"DELETE FROM {self._j}")
        self._announce(version)
        self._staged = Budget(version, 0, 0, nbytes(text))
        return version

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
