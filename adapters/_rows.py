"""The row-store base: a snapshot row plus a journal table, once for SQLite and PostgreSQL.

Both keep the state as one row ``id = 1`` of ``<table>(id, data, version, updated_at)``
(the snapshot) plus ``<table>_journal(seq, ops)`` (one record per commit after it, ``seq``
the version that commit made). The state is the snapshot with every record applied in
``seq`` order; its version is the last ``seq`` (the row's ``version`` when the journal is
empty). An append inserts one journal row and never rewrites the snapshot; a whole write
replaces the row and deletes the journal in the same transaction, so the journal always
holds exactly ``version + 1 .. version + n`` of the row's ``version``. Anything else is
refused as corrupt, or, for a running store (``load_checked``), reported as data the
medium lost (a journal left without its snapshot, records missing from its start).

:class:`RowStore` implements the hooks of
:class:`~cascadeui.adapters._journaled.JournaledBase` in SQL. A dialect provides:
``_query(conn, sql, params)`` (run now, rows back; ``?`` placeholders), ``_exec(tx,
sql, params)`` (a write of the open write transaction: run now, or queued to its
COMMIT), ``_octets(expr)`` (byte length in SQL), ``_lineage_sql()`` (a scalar subquery
for the stored lineage id), ``_put_lineage(tx, lineage)``, ``_read_unit(fn)`` (``fn(conn)``
as one consistent read) and ``_write_tx`` (the write lock and transaction, yielding
:meth:`RowStore._open_tx`'s handle).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cascadeui.errors import StateCorruptedError

from ._journal import Budget, apply_records, decode_records, nbytes
from ._journaled import JournaledBase, Tail

__all__ = ["RowStore", "RowTx"]

T = TypeVar("T")


@dataclass
class RowTx:
    """An open write transaction: its connection and what its first read saw."""

    conn: Any
    #: The stored version (negative: a journal without its snapshot row).
    current: int
    #: The stored lineage id, None when no snapshot row is stored.
    lineage: str | None
    #: ``(row, records, lineage)`` when the transaction read the whole state at once.
    fetched: tuple[Any, list[Any], str] | None = None


class RowStore(JournaledBase):
    """State in one row of a SQL table plus its journal table (the shared SQL)."""

    table: str
    journal_table: str
    #: The two tables' names as SQL spells them.
    _t: str
    _j: str

    # -- the dialect -------------------------------------------------------------------

    @abc.abstractmethod
    def _query(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run ``sql`` now (``?`` placeholders) and return its rows."""

    @abc.abstractmethod
    def _exec(self, tx: RowTx, sql: str, params: Sequence[Any] = ()) -> None:
        """A write of the open write transaction (run now or sent with its COMMIT)."""

    @abc.abstractmethod
    def _octets(self, expr: str) -> str:
        """SQL for the byte length of a text ``expr``."""

    @abc.abstractmethod
    def _lineage_sql(self) -> str:
        """A scalar subquery selecting the stored lineage id (NULL when none)."""

    @abc.abstractmethod
    def _put_lineage(self, tx: RowTx, lineage: str) -> None:
        """Store ``lineage`` as the lineage id, in the open write transaction."""

    @abc.abstractmethod
    def _read_unit(self, fn: Callable[[Any], T]) -> T:
        """``fn(conn)`` as one consistent read (every statement sees one commit)."""

    def _announce(self, tx: RowTx, version: int) -> None:
        """Tell listeners about ``version`` when the transaction commits (default: none)."""

    # -- reads -------------------------------------------------------------------------

    def _head_sql(self) -> str:
        return (f"SELECT (SELECT version FROM {self._t} WHERE id = 1), "
                f"(SELECT max(seq) FROM {self._j}), {self._lineage_sql()}")

    def _head(self, values: Sequence[Any]) -> tuple[int, str | None]:
        """The version and lineage (None: no snapshot) from ``_head_sql``'s row.

        Negative (minus the last ``seq``) while a journal is left without its snapshot
        row, so no commit appends to it and a polling store looks.
        """
        snapshot, top, lineage = values
        if snapshot is None:
            return (0 if top is None else -int(top)), None
        if type(snapshot) is not int:
            raise self._corrupt(f"table {self.table!r} holds version {snapshot!r}, "
                                "not a number")
        return (snapshot if top is None else int(top)), "" if lineage is None else str(lineage)

    def _open_tx(self, conn: Any, head: Sequence[Any] | None = None,
                 fetched: tuple[Any, list[Any], str] | None = None) -> RowTx:
        """The handle of a write transaction just begun, from its head or whole read."""
        if fetched is not None:
            row, records, lineage = fetched
            head = (None if row is None else row[1], records[-1][0] if records else None,
                    lineage)
        elif head is None:
            head = self._query(conn, self._head_sql())[0]
        assert head is not None  # one of the three branches above set it
        current, lineage_id = self._head(head)
        return RowTx(conn, current, lineage_id, fetched)

    def version(self) -> int:
        """The commit counter (0 when empty; negative while a journal is left without
        its snapshot row): one statement, cheap to poll."""
        return self._read_unit(lambda conn: self._head(self._query(conn, self._head_sql())[0]))[0]

    def _fetch(self, conn: Any) -> tuple[Any, list[Any], str]:
        """The row ``(data, version)`` or None, the journal rows ``(seq, ops)`` in order,
        and the lineage id, read in the caller's transaction."""
        row = self._query(conn, f"SELECT data, version FROM {self._t} WHERE id = 1")
        records = self._query(conn, f"SELECT seq, ops FROM {self._j} ORDER BY seq")
        return (row[0] if row else None), records, self._read_lineage(conn)

    def _read_lineage(self, conn: Any) -> str:
        """The stored lineage id ('' when none)."""
        rows = self._query(conn, f"SELECT {self._lineage_sql()}")
        return "" if not rows or rows[0][0] is None else str(rows[0][0])

    def _tail(self, since: int) -> Tail:
        def read(conn: Any) -> Tail:
            row = self._query(conn, f"SELECT version FROM {self._t} WHERE id = 1")
            # Two subqueries: SQLite answers each from the b-tree's ends, but scans the
            # whole table for min() and max() in one SELECT.
            first, last = self._query(conn, f"SELECT (SELECT min(seq) FROM {self._j}), "
                                            f"(SELECT max(seq) FROM {self._j})")[0]
            records = self._query(
                conn, f"SELECT seq, ops FROM {self._j} WHERE seq > ? ORDER BY seq",
                (since,)) if last is not None and last > since else []
            return Tail(self._checked(row[0][0]) if row else None, first, last,
                        [tuple(r) for r in records], self._read_lineage(conn))

        return self._read_unit(read)

    def _checked(self, version: Any) -> int:
        if type(version) is not int:
            raise self._corrupt(f"table {self.table!r} holds version {version!r}, "
                                "not a number")
        return version

    def _read(self, *, lenient: bool) -> tuple[dict[str, Any], int, str | None]:
        return self._assemble(*self._read_unit(self._fetch), lenient=lenient)

    def _read_in(self, tx: RowTx) -> tuple[dict[str, Any], int]:
        return self._assemble(*self._fetch(tx.conn))[:2]

    def _transaction_state(self, tx: RowTx) -> tuple[dict[str, Any], int]:
        if tx.fetched is not None:
            return self._assemble(*tx.fetched)[:2]
        return self._read_in(tx)

    def _assemble(self, row: Any, records: list[Any], lineage: str, *,
                  lenient: bool = False) -> tuple[dict[str, Any], int, str | None]:
        """The state (snapshot plus journal), its version and what the medium lost, from
        :meth:`_fetch`'s rows.

        :param lenient: report a journal without its snapshot, or one that does not
            start right after it, as lost (the snapshot alone is what is left).
        :raises StateCorruptedError: the row or a record does not decode, a record does
            not fit, or (unless ``lenient``) the journal does not follow the row.
        """
        self._seen(None, None)  # known again only once this commit decoded whole
        seqs = [seq for seq, _ in records]
        lost: str | None = None
        if row is None:
            if not records:
                self._lineage = (0, "")
                return {}, 0, None
            lost = (f"{self.journal_table!r} holds {len(records)} records but "
                    f"{self.table!r} holds no snapshot")
            if not lenient:
                raise self._corrupt(lost)
            return {}, -int(seqs[-1]), lost
        data, version = row
        version = self._checked(version)
        if seqs != list(range(version + 1, version + len(seqs) + 1)):
            lost = (f"journal {self.journal_table!r} holds records {seqs[0]!r}..{seqs[-1]!r} "
                    f"but the snapshot is at version {version}: they were not written "
                    "against it")
            if not lenient:
                raise self._corrupt(f"{lost} (the row rewritten by an older pycascadeui, "
                                    "or edited by hand?)")
        state = self._decode_row(data)
        if lost is not None:  # the version a compare-and-set sees
            return state, self._head((version, seqs[-1], lineage))[0], lost
        decoded, journal_bytes = decode_records(self.serializer, records,
                                                location=self.location,
                                                name=self._record_name)
        version += len(seqs)
        apply_records(state, zip(seqs, decoded, strict=True), location=self.location,
                      name=self._record_name)
        self._seen(Budget(version, len(seqs), journal_bytes, nbytes(data)), lineage)
        return state, version, None

    def _decode_row(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, (str, bytes)):
            raise self._corrupt(f"table {self.table!r} holds a {type(data).__name__}, "
                                "not a JSON document")
        try:
            return self.serializer.deserialize(data)
        except StateCorruptedError as exc:
            raise self._corrupt(str(exc)) from exc

    def _record_name(self, label: Any) -> str:
        return f"journal record {label} in {self.journal_table!r}"

    # -- writes (inside a write transaction) -------------------------------------------

    def _current(self, tx: RowTx) -> int:
        return tx.current

    def _lineage_of(self, tx: RowTx) -> str | None:
        return tx.lineage

    def _put_record(self, tx: RowTx, version: int, record: str) -> None:
        self._exec(tx, f"INSERT INTO {self._j} (seq, ops) VALUES (?, ?)", (version, record))
        self._announce(tx, version)

    def _put_snapshot(self, tx: RowTx, text: str, version: int, lineage: str | None) -> None:
        if lineage is not None:
            self._put_lineage(tx, lineage)
        self._exec(tx, f"INSERT INTO {self._t} (id, data, version, updated_at) "
                       "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET data = "
                       "excluded.data, version = excluded.version, "
                       "updated_at = excluded.updated_at", (text, version, time.time()))
        self._exec(tx, f"DELETE FROM {self._j}")
        self._announce(tx, version)

    def _measure(self, tx: RowTx, version: int) -> tuple[Budget, bool]:
        """Journal and snapshot bytes as the database counts them (the cache was stale)."""
        row = self._query(
            tx.conn, f"SELECT coalesce((SELECT {self._octets('data')} FROM {self._t} "
                     f"WHERE id = 1), 0), (SELECT coalesce(sum({self._octets('ops')}), 0) "
                     f"FROM {self._j})")[0]
        return Budget(version, 0, int(row[1] or 0), int(row[0] or 0)), False
