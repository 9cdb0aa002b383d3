"""The PostgreSQL adapter: a snapshot row plus a change journal, one transaction per commit.

Layout, schema version 1 (documented in docs/backends.md)::

    cascadeui_state(id integer PRIMARY KEY,          -- 1: the state (0: the lineage id)
                    data text NOT NULL,              -- the snapshot: a StateSerializer document
                    version bigint NOT NULL,         -- the version of the snapshot's commit
                    updated_at double precision NOT NULL)  -- unix time of that commit
    cascadeui_state_journal(seq bigint PRIMARY KEY,  -- the version its commit made
                            ops text NOT NULL)       -- one record (adapters/_journal.py)

(``<table>_journal`` for another ``table``; the state table's comment names the schema
version.) The semantics are the row-store base's (adapters/_rows.py), shared with SQLite;
row 0 holds the lineage id (``data``) and is read by no earlier build, so a truncated,
emptied, dropped or recreated table is told from another writer's deletion
(``load_checked``).

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
when the connection drops, and releases its lock. The connection, its settings, the
schema and the error mapping are in adapters/_postgres_session.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from cascadeui.errors import StateCorruptedError, StorageUnavailableError

from ._journaled import Tail
from ._listeners import TICK, Listener, Notify, announced_version
from ._postgres_session import (
    IDLE_IN_WRITE_MS,
    SCHEMA_VERSION,
    TABLE_MAX,
    PostgresSession,
    fit_name,
)
from ._rows import RowTx
from .base import Check, StoreInfo

if TYPE_CHECKING:
    from ._journal import JournaledStore

__all__ = ["SCHEMA_VERSION", "PostgresListener", "PostgresStore"]

#: The row ``id`` that holds the lineage id (in ``data``); the state is row 1. Readers
#: of every earlier build select row 1 only.
_LINEAGE_ROW = 0

T = TypeVar("T")


class PostgresStore(PostgresSession):
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

    def exists(self) -> bool:
        """True when the state table exists, checked without creating anything (for
        read-only tools: a typo must not create tables).

        :raises StorageUnavailableError: the server cannot be reached or refused us.
        """
        with self._reader() as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                               (f'"{self.table}"',)).fetchone()
        return bool(row[0])

    def companion(self, tag: str) -> PostgresStore:
        """The table ``<table>_<tag>_backup`` in the same database (its end replaced by a
        hash where the name would pass the table name limit)."""
        return PostgresStore(self._raw_url, table=fit_name(f"{self.table}_{tag}_backup",
                                                           TABLE_MAX),
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
        with self._reader() as conn:
            row = conn.execute(
                f"SELECT (SELECT octet_length(data) FROM {self._t} WHERE id = 1), "
                f"(SELECT updated_at FROM {self._t} WHERE id = 1), "
                f"(SELECT count(*) FROM {self._j}), "
                f"(SELECT coalesce(sum(octet_length(ops)), 0) FROM {self._j}), "
                f"{self._head_sql()[len('SELECT '):]}").fetchone()
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
        with self._reader() as conn:
            row, records, lineage = self._fetch(conn)
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
        raises. A connection that failed (or whose tables are gone) is replaced, before the
        body runs once more on the new one (nothing was sent that could have committed) or
        for the next call."""
        for attempt in (0, 1):
            with self._connection() as conn:
                self._committing = False
                try:
                    with self._mapped_errors():
                        tx = self._begin(conn, whole=whole)
                except StorageUnavailableError:
                    if self._recover(conn) and attempt == 0:
                        continue
                    raise
                try:
                    with self._mapped_errors():
                        yield tx
                        self._finish(conn)
                except BaseException:
                    self._abort(conn)
                    self._recover(conn)
                    raise
                return

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, yield the state to change in place, commit it whole.

        If the body raises, the transaction is rolled back and nothing is written. While
        the body runs (a migration step, a script), a heartbeat keeps the session from
        the server's idle-in-transaction timeout, which still ends the session of a host
        that stops answering (partitioned, frozen) and so frees the lock for others.
        """
        with self._staging(), self._write_tx(whole=True) as tx:
            state, version = self._transaction_state(tx)
            with _heartbeat(tx.conn):
                yield state
            self._write_whole(tx, self.serializer.serialize(state), version)

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


@contextlib.contextmanager
def _heartbeat(conn: Any) -> Iterator[None]:
    """``SELECT 1`` on ``conn`` from a thread, well within the idle-in-transaction
    timeout, while the block runs (the block must not use ``conn`` itself)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(IDLE_IN_WRITE_MS / 4000):
            try:
                conn.execute("SELECT 1")
            except Exception:  # the session is gone: the COMMIT will say so
                return

    thread = threading.Thread(target=beat, name="cascadeui-pg-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
