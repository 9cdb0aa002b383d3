"""The PostgreSQL session of a store: its connection, settings, schema and error mapping.

:class:`PostgresSession` is what :class:`~cascadeui.adapters.PostgresStore` stands on
besides the row-store base: the URL and names, one connection per store with the store's
timeouts, replaced whenever it is not idle after an error (killed, timed out, left in a
pipeline or a failed transaction), the tables checked and created (again, with a WARNING,
when they were dropped under a running store), and psycopg errors mapped to the cascadeui
hierarchy without the password.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    PersistenceError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from ._rows import RowStore
from ._urls import redact_secret, redact_url, url_secrets

__all__ = ["IDLE_IN_WRITE_MS", "SCHEMA_VERSION", "PostgresSession", "fit_name"]

log: logging.Logger = logging.getLogger("cascadeui.adapters.postgres")

#: Milliseconds a session may sit idle inside a transaction before the server ends it
#: (releasing the table lock). Ours are two round trips with only the encoding of a
#: compacted document in between, far below this; a ``transaction()`` body keeps its
#: session alive with a heartbeat instead (adapters/_postgres_store.py).
IDLE_IN_WRITE_MS = 2000

SCHEMA_VERSION = 1
#: Lower-case identifiers only, so the quoted and unquoted names are the same table, and
#: short enough that ``<table>_journal`` stays within PostgreSQL's 63 bytes.
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,54}")
#: The longest table name (``<table>_journal`` is then 63 bytes).
TABLE_MAX = 55
_COLUMNS = {"id": "integer", "data": "text", "version": "bigint",
            "updated_at": "double precision"}
_JOURNAL_COLUMNS = {"seq": "bigint", "ops": "text"}
_COMMENT = re.compile(r"cascadeui state table, schema (\d+)")


def fit_name(name: str, limit: int) -> str:
    """``name``, or when longer than ``limit`` bytes its start plus a hash of the whole,
    so derived names (channels, backup tables) always fit and stay the same everywhere."""
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:limit - len(digest) - 1]}_{digest}"


def _idle(conn: Any) -> bool:
    """True when ``conn`` is open, outside any transaction and pipeline: reusable."""
    from psycopg import pq

    if conn.closed or conn.broken:
        return False
    pgconn = conn.pgconn
    return bool(pgconn.status == pq.ConnStatus.OK
                and pgconn.transaction_status == pq.TransactionStatus.IDLE
                and pgconn.pipeline_status == pq.PipelineStatus.OFF)


def _close_held(held: list[Any]) -> None:
    """Close the connection in ``held`` if this process opened it; empty ``held``."""
    conn, pid = held
    held[:] = [None, 0]
    if conn is not None and pid == os.getpid():
        with contextlib.suppress(Exception):
            conn.close()


class PostgresSession(RowStore):
    """The connection, settings, schema and errors of a PostgreSQL store."""

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
                f"table name must be a lower-case identifier of at most {TABLE_MAX} "
                f"characters (letters, digits, _), not {table!r}")
        self.table = table
        self.journal_table: str = f"{table}_journal"
        self.location: str = f"{self.url} table={table!r}"
        #: The LISTEN/NOTIFY channel every commit announces its new version on (a hash
        #: stands for the table name's end where it would pass PostgreSQL's 63 bytes).
        self.channel: str = fit_name(f"cascadeui.{table}", 63)
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
        #: A statement found a table missing: the next connection creates it again.
        self._tables_gone = False
        #: The tables were there (or created) once: missing later means dropped.
        self._schema_seen = False

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
        self._acquire(self._mutex, self.timeout, "another thread held the store")
        try:
            conn, pid = self._held
            if conn is None or pid != os.getpid() or not _idle(conn):
                # After fork() the parent's socket is shared: never use it, never close it
                # (psycopg closes a connection only in the process that opened it). A
                # connection in any state but idle (killed, timed out, left in a pipeline
                # or a failed transaction) is closed and replaced.
                _close_held(self._held)
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
            with self._mapped_errors():
                conn.execute(self._settings_sql(
                    f"SET idle_in_transaction_session_timeout = {IDLE_IN_WRITE_MS}"))
                self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._tables_gone = False
        return conn

    def _settings_sql(self, *more: str) -> str:
        """The store's lock and statement timeouts (and ``more``) as one statement."""
        settings = [f"SET lock_timeout = {max(1, int(self.timeout * 1000))}", *more]
        if self.statement_timeout is not None:
            settings.append(
                f"SET statement_timeout = {max(1, int(self.statement_timeout * 1000))}")
        return "; ".join(settings)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Any]:
        """A connection of its own for read-only tools, bounded by the store's lock and
        statement timeouts (a table locked by VACUUM FULL or an ALTER never hangs them)."""
        self._check_open()
        conn = self.connect()
        try:
            with self._mapped_errors():
                conn.execute(self._settings_sql())
                yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _drop_connection(self) -> None:
        """Close and forget the store's connection (the next call opens a new one)."""
        _close_held(self._held)

    def _recover(self, conn: Any) -> bool:
        """After an error on ``conn``: replace it unless it is idle and its tables are
        there; True when it was replaced (a unit that sent no COMMIT may run again)."""
        if _idle(conn) and not self._tables_gone:
            return False
        self._drop_connection()
        return True

    def _run(self, unit: Callable[[Any], Any]) -> Any:
        """Run ``unit(conn)`` on the store's connection, mapping errors.

        A connection that failed (the server dropped or killed it, an idle timeout, a
        pipeline left busy) or whose tables are gone is replaced, and ``unit`` runs once
        more on the new one, unless its COMMIT was already sent (whether it committed is
        then unknown).
        """
        for attempt in (0, 1):
            with self._connection() as conn:
                self._committing = False
                try:
                    with self._mapped_errors():
                        return unit(conn)
                except StorageUnavailableError:
                    if self._recover(conn) and attempt == 0 and not self._committing:
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
            self._schema_seen = True
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
        if work and self._schema_seen:
            log.warning("%s: %s dropped while this store was running; created again "
                        "(a running store writes its state again)", self.location,
                        " and ".join(sorted(f"{w} table" for w in work)))
        self._schema_seen = True

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
        except pge.UndefinedTable as exc:
            self._tables_gone = True  # the next connection creates them again
            raise StorageUnavailableError(
                f"{self.location}: a table is gone (dropped under a running store?): "
                f"{self._redacted(exc)}", location=self.location) from None
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

    def _release(self) -> None:
        with self._mutex:
            _close_held(self._held)
