"""The journaled-store base: the journal protocol written once, over per-medium hooks.

:class:`JournaledBase` holds what every journaled adapter decides the same way: when a
commit appends a record and when it writes a whole snapshot (:func:`commit_changes`),
the compaction budget's cache, the lineage (a per-state id that tells a medium that lost
data from another writer's deletion), catching up from the journal (``load_changes``)
and telling loss (``load_checked``). A medium implements only the hooks below.
:class:`JournalReads` is its reading half (the caches, ``load_checked``), for a medium
whose writes check and commit atomically without the write lock (Redis's Lua scripts).

Hook contract (each a whole unit of work unless it takes ``tx``):

``_write_tx(whole=False)``
    A context manager: take the write lock, open one write transaction and yield its
    handle ``tx``; commit on a clean exit, roll back (nothing written) if the body raises.
    Wrap it in :meth:`JournaledBase._staging` (``_write_unit`` and ``transaction`` do):
    what a transaction staged becomes the caches only once it committed.
``_write_unit(body)``
    ``body(tx)`` in one write transaction (default: ``_write_tx`` + ``_staging``); a
    medium that can retry a unit on a dropped connection overrides it.
``_current(tx)``
    The stored version under the lock: 0 when nothing is stored, negative (minus the
    highest version anything holds) when a journal is left without its snapshot.
``_lineage_of(tx)``
    The stored lineage id ('' when none: a state of an earlier build), None when no
    snapshot is stored (a whole write then starts a new lineage).
``_put_record(tx, version, record)``
    Append one encoded record, committed as ``version``.
``_put_snapshot(tx, text, version, lineage)``
    Replace the snapshot by ``text`` at ``version`` and empty the journal; store
    ``lineage`` as the lineage id unless it is None (the stored one goes on).
``_measure(tx, version)``
    The compaction budget's inputs measured on the medium, and whether they are known
    (every byte was encoded by this store) rather than measured.
``_read_in(tx)``
    Decode the whole stored state inside ``tx`` (a compaction never replaces data this
    store could not read); raises StateCorruptedError.
``_read(lenient)``
    One consistent read of the whole state: ``(state, version, lost)``. It records what
    it read with :meth:`JournaledBase._seen`. With ``lenient`` a medium that lost part of
    the state (a journal without its snapshot, a journal that is not the snapshot's
    unbroken sequel) returns what is left and says what was lost, instead of raising.
``_tail(since)``
    One consistent read of the journal's end: a :class:`Tail`.
``version()``
    The medium's cheap version probe (the same number as ``_current``).
"""

from __future__ import annotations

import abc
import contextlib
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from cascadeui._merge import Change
from cascadeui.errors import LockTimeoutError, StateCorruptedError

from ._journal import Budget, commit_changes, corrupt, decode_records, encode_record, nbytes
from .base import BaseStore

if TYPE_CHECKING:
    from ._journal import JournaledStore

__all__ = ["JournalReads", "JournaledBase", "Tail"]

T = TypeVar("T")


class Tail(NamedTuple):
    """The journal's end as one read saw it (``_tail``)."""

    #: The version of the stored snapshot; None when no snapshot is stored.
    snapshot: int | None
    #: The first and last journal versions stored (None: the journal is empty).
    first: int | None
    last: int | None
    #: ``(version, text)`` of every record after the ``since`` asked for, in order.
    records: list[tuple[Any, Any]]
    #: The stored lineage id ('' when none).
    lineage: str


class JournalReads(BaseStore, abc.ABC):
    """The reading half of the protocol: the caches a whole read fills (the budget, the
    lineage), ``load``, ``load_versioned`` and ``load_checked``, over ``_read`` and
    ``version``. :class:`JournaledBase` adds the writes under a write lock; Redis builds
    on this half only, because its Lua scripts check and write atomically without one.
    """

    def __init__(self, *, serializer: Any = None) -> None:
        super().__init__(serializer=serializer)
        #: The compaction budget's inputs for the last commit this store read whole or wrote.
        self._sizes: Budget | None = None
        #: (version, lineage id) of the last commit this store read whole or wrote; the id
        #: is '' when none is stored.
        self._lineage: tuple[int, str] | None = None
        #: The version at which load_checked found the medium lost: the whole write over
        #: it starts a new lineage (docs/multiprocess.md).
        self._fork_at: int | None = None

    @abc.abstractmethod
    def _read(self, *, lenient: bool) -> tuple[dict[str, Any], int, str | None]:
        """The whole state, its version and what the medium lost (see the contract)."""

    @abc.abstractmethod
    def version(self) -> int:
        """The commit counter (0 when nothing is stored); cheap to poll."""

    def _seen(self, budget: Budget | None, lineage: str | None) -> None:
        """Record what a whole read found (None: nothing known about it)."""
        self._sizes = budget
        self._lineage = None if budget is None or lineage is None else (
            budget.version, lineage)

    def _corrupt(self, what: str) -> StateCorruptedError:
        return corrupt(self.location, what)

    def load(self) -> dict[str, Any]:
        """Return the stored state (snapshot plus journal), ``{}`` when nothing is stored.

        :raises StateCorruptedError: the snapshot or a record does not decode or fit.
        :raises StorageUnavailableError: the medium cannot be read.
        """
        return self.load_versioned()[0]

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """:meth:`load` and the :meth:`version` it was read at, consistently."""
        state, version, _ = self._read(lenient=False)
        return state, version

    def load_checked(self, since: int) -> tuple[dict[str, Any], int, str | None]:
        """:meth:`load_versioned`, plus why the stored state is not a descendant of the one
        this store read or wrote at version ``since``: the medium lost data.

        Loss is: part of the state gone (a journal without its snapshot, records missing
        from the journal), a state of another lineage (the medium deleted or emptied,
        then written by another process; another medium put in its place), or a version
        older than ``since`` (records removed from the journal's end, an older copy
        restored). Never raises for those: the state returned is what is left, and the
        next whole write over it starts a new lineage, so other processes see the loss
        too. None when nothing was lost, or when this store did not read or write
        version ``since`` itself (then nothing can be told).

        :raises StateCorruptedError: what is stored does not decode.
        :raises StorageUnavailableError: the medium cannot be read.
        """
        seen = self._lineage if self._lineage is not None and self._lineage[0] == since \
            else None
        state, version, problem = self._read(lenient=True)
        now = self._lineage
        if problem is None and seen is not None and version != 0:
            if version < since:
                problem = f"its version went back from {since} to {version}"
            elif seen[1] and now is not None and now[1] != seen[1]:
                problem = (f"it holds another lineage ({now[1] or 'none'}, this store saw "
                           f"{seen[1]}): the medium was deleted, emptied or replaced, "
                           "then written by another process")
        if problem is not None:
            self._fork_at = version
        return state, version, problem

    def _record_name(self, label: Any) -> str:
        """How an error names a journal record, from its version."""
        return f"journal record {label}"


class JournaledBase(JournalReads):
    """A snapshot plus a change journal, with a lineage: the protocol, once.

    Implements :class:`~cascadeui.adapters.VersionedStore` and
    :class:`~cascadeui.adapters.JournaledStore` over the hooks in the module docstring.
    """

    def __init__(self, *, serializer: Any = None) -> None:
        super().__init__(serializer=serializer)
        #: What the open write transaction commits (the budget, the (version, lineage)).
        self._staged: Budget | None = None
        self._staged_lineage: tuple[int, str] | None = None
        self._forked = False

    # -- hooks -------------------------------------------------------------------------

    @abc.abstractmethod
    def _write_tx(self, *, whole: bool = False) -> contextlib.AbstractContextManager[Any]:
        """The write lock and one write transaction; yields its handle (``whole``: the
        caller reads the whole state next, which a medium may fetch at once)."""

    @abc.abstractmethod
    def _current(self, tx: Any) -> int:
        """The stored version, read under the write lock (negative: no snapshot)."""

    @abc.abstractmethod
    def _lineage_of(self, tx: Any) -> str | None:
        """The stored lineage id ('' none stored), None when no snapshot is stored."""

    @abc.abstractmethod
    def _put_record(self, tx: Any, version: int, record: str) -> None:
        """Append one record committed as ``version``."""

    @abc.abstractmethod
    def _put_snapshot(self, tx: Any, text: str, version: int, lineage: str | None) -> None:
        """Replace the snapshot, empty the journal, store a new ``lineage`` if given."""

    @abc.abstractmethod
    def _measure(self, tx: Any, version: int) -> tuple[Budget, bool]:
        """The budget's inputs measured on the medium, and whether they are known."""

    @abc.abstractmethod
    def _read_in(self, tx: Any) -> tuple[dict[str, Any], int]:
        """Decode the whole stored state inside ``tx`` (raises StateCorruptedError)."""

    @abc.abstractmethod
    def _tail(self, since: int) -> Tail:
        """The journal's end after ``since``, from one consistent read."""

    def _acquire(self, lock: Any, timeout: float, holder: str) -> None:
        """Take ``lock`` (a thread lock) for this store's call, the store being open.

        :raises LockTimeoutError: ``holder`` (who else holds it) kept it past ``timeout``.
        """
        self._check_open()
        if not lock.acquire(timeout=timeout):
            raise LockTimeoutError(f"{self.location}: {holder} past {timeout:g}s",
                                   lock=self.location, timeout=timeout, location=self.location)

    def _write_unit(self, body: Callable[[Any], T]) -> T:
        """``body(tx)`` in one write transaction; its staged caches follow a commit."""
        with self._staging(), self._write_tx() as tx:
            return body(tx)

    # -- caches ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _staging(self) -> Iterator[None]:
        """Around a write transaction: what it staged becomes the caches once committed."""
        self._staged = self._staged_lineage = None
        self._forked = False
        try:
            yield
        except BaseException:
            self._staged = self._staged_lineage = None
            raise
        if self._staged is not None:
            self._sizes, self._staged = self._staged, None
        if self._staged_lineage is not None:
            self._lineage, self._staged_lineage = self._staged_lineage, None
            if self._forked:
                self._fork_at, self._forked = None, False

    def _budget_at(self, tx: Any, version: int) -> tuple[Budget, bool]:
        """The cached budget when it is for ``version``, else measured."""
        if self._sizes is not None and self._sizes.version == version:
            return self._sizes, True
        return self._measure(tx, version)

    # -- the protocol ------------------------------------------------------------------

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state (a new snapshot, an empty journal) in one transaction.

        :raises SerializationError: ``state`` holds a value JSON cannot store (nothing written).
        :raises LockTimeoutError: the write lock was not had in time.
        """
        text = self.serializer.serialize(state)
        self._write_unit(lambda tx: self._write_whole(tx, text, self._current(tx)))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, yield the state to change in place, commit it whole.

        If the body raises, the transaction is rolled back and nothing is written.
        """
        with self._staging(), self._write_tx(whole=True) as tx:
            state, version = self._transaction_state(tx)
            yield state
            self._write_whole(tx, self.serializer.serialize(state), version)

    def _transaction_state(self, tx: Any) -> tuple[dict[str, Any], int]:
        """The state a transaction starts from, read inside ``tx``, and its version."""
        return self._read_in(tx)

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save: see :meth:`~cascadeui.adapters.VersionedStore.save_if_version`."""
        text = self.serializer.serialize(state) if encoded is None else encoded

        def body(tx: Any) -> int | None:
            current = self._current(tx)
            if current != expected:
                return None
            return self._write_whole(tx, text, current, fork=self._fork_at == expected)

        return self._write_unit(body)

    def save_changes(self, changes: Sequence[Change], expected: int, *,
                     full: Callable[[], str]) -> int | None:
        """Append ``changes`` as one journal record if the version is still ``expected``.

        See :meth:`~cascadeui.adapters.JournaledStore.save_changes`. The first commit,
        a commit over a journal left without its snapshot, and a record that would take
        the journal past its budget write ``full()`` as a new snapshot instead. Nothing
        is appended over a state of another lineage than the one this store saw.

        :raises SerializationError: a changed value cannot be stored (nothing written).
        :raises StateCorruptedError: a compaction would replace a stored state this store
            never read whole and that does not decode (nothing written).
        """
        if not changes:
            return expected if self.version() == expected else None
        record = encode_record(self.serializer, changes)  # before anything is written
        record_bytes = nbytes(record)

        def body(tx: Any) -> int | None:
            current = self._current(tx)
            if current == expected and not self._same_lineage(tx, current):
                return None

            def append(budget: Budget) -> int:
                self._put_record(tx, current + 1, record)
                self._staged = budget.appended(current + 1, record_bytes)
                if self._lineage is not None and self._lineage[0] == current:
                    self._staged_lineage = (current + 1, self._lineage[1])
                return current + 1

            return commit_changes(
                current, expected, record_bytes,
                budget=lambda at: self._budget_at(tx, at),
                verify=lambda: self._read_in(tx),
                snapshot=lambda: self._write_whole(tx, full(), current,
                                                   fork=self._fork_at == current),
                append=append)

        return self._write_unit(body)

    def _same_lineage(self, tx: Any, version: int) -> bool:
        """False when this store knows the lineage at ``version`` and another is stored
        (the medium replaced by another holding the same version number)."""
        seen = self._lineage
        if seen is None or seen[0] != version or not seen[1]:
            return True
        return self._lineage_of(tx) == seen[1]

    def _write_whole(self, tx: Any, text: str, current: int, *, fork: bool = False) -> int:
        """Write ``text`` as the snapshot after ``current`` (inside ``tx``); the version.

        The stored lineage goes on, except over an empty medium or a journal left
        without its snapshot, or with ``fork`` (the caller found the medium lost): a new
        lineage then tells other processes this document is not their state's sequel.
        """
        version = abs(current) + 1
        stored = None if fork else self._lineage_of(tx)
        new = secrets.token_hex(8) if not stored or version == 1 else None
        self._put_snapshot(tx, text, version, new)
        self._forked = fork
        self._staged = Budget(version, 0, 0, nbytes(text))
        self._staged_lineage = (version, new if new is not None else stored or "")
        return version

    def load_changes(self, since: int) -> tuple[list[list[list[Any]]], int] | None:
        """The records after version ``since`` and the current version, from one read.

        See :meth:`~cascadeui.adapters.JournaledStore.load_changes`. None when no
        snapshot is stored, another lineage is, a full write happened since ``since``,
        or ``since`` is past the current version.

        :raises StateCorruptedError: the journal is out of step with the snapshot, or a
            record since ``since`` does not decode.
        """
        tail = self._tail(since)
        seen = self._lineage
        if tail.snapshot is None or (seen is not None and seen[0] == since and seen[1]
                                     and tail.lineage != seen[1]):
            return None
        snapshot = tail.snapshot
        current = snapshot if tail.last is None else tail.last
        if since < snapshot or since > current:
            return None  # records before the full write are gone / not ours to place
        seqs = [seq for seq, _ in tail.records]
        if (tail.first is not None and tail.first != snapshot + 1) or seqs != list(
                range(since + 1, current + 1)):
            raise self._corrupt(
                f"the journal holds {len(seqs)} records after version {since} and "
                f"records {tail.first!r}..{current!r} in all, but the snapshot is at "
                f"version {snapshot}: they are not its unbroken sequel (edited by hand?)")
        decoded, new_bytes = decode_records(self.serializer, tail.records,
                                            location=self.location, name=self._record_name)
        sizes = self._sizes
        if sizes is not None and sizes.version == since:  # same snapshot, a longer journal
            self._sizes = sizes.caught_up(current, len(seqs), new_bytes)
        if seen is not None and seen[0] == since:
            self._lineage = (current, seen[1])
        return decoded, current


if TYPE_CHECKING:
    def _implements(store: JournaledBase) -> JournaledStore:
        """mypy checks here that the base satisfies the JournaledStore protocol."""
        return store
