"""Change journals: small changes stored after a full snapshot, so a save costs what changed.

Every built-in adapter keeps the state as a *snapshot* (the whole document, exactly what
``save`` writes) plus a *journal*: records appended after that snapshot, each holding the
leaf changes of one commit. ``load`` applies the records in order; a full write (``save``,
``transaction``, a compaction) replaces the snapshot and empties the journal in the same
atomic step. Only the store's persistence engine appends (``save_changes``); scripts, the
CLI and migrations keep writing whole documents. See docs/backends.md, "Change journal".

A record is the serializer's JSON of ``{"v": 1, "ops": [[path], [path, value], ...]}``:
``v`` is the record format (:data:`RECORD_FORMAT`; a record without it, as every build
before the field wrote, is format 1), a path is a list of keys from the top of the
document (keys of any storable type), ``[path, value]`` sets it and ``[path]`` deletes
it. A record of a newer format is refused as corrupt, never half applied: a later format
change is this module's job alone. A record whose path runs through a value that is not
a dict does not belong to its snapshot: applying it raises StateCorruptedError. So does
a record that sets what no whole write could store (a path or value past the depth
limit, an integer past the digit limit, an unstorable key), whoever wrote it: whatever
loads can be saved again (issue 25 item 7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from cascadeui._merge import DELETED, Change
from cascadeui.errors import SerializationError, StateCorruptedError
from cascadeui.serializer import StateSerializer, check_depth, check_storable

__all__ = [
    "JOURNAL_MIN_BYTES",
    "JOURNAL_RATIO",
    "RECORD_FORMAT",
    "Budget",
    "JournaledStore",
    "apply_record",
    "apply_records",
    "apply_shared",
    "commit_changes",
    "corrupt",
    "decode_record",
    "decode_records",
    "encode_record",
    "nbytes",
    "should_compact",
]

#: A journal may grow to ``max(JOURNAL_MIN_BYTES, JOURNAL_RATIO * snapshot bytes)`` before
#: the next commit compacts it into a new snapshot. Proportional to the snapshot, so the
#: cost of compacting, spread over the appends it follows, stays constant per changed byte,
#: and a load reads at most 1.5x the snapshot.
JOURNAL_MIN_BYTES = 64 * 1024
JOURNAL_RATIO = 0.5

#: The journal record format this build writes (the ``v`` field of every record).
RECORD_FORMAT = 1
#: The formats :func:`decode_record` reads; a record without ``v`` is format 1.
_READABLE_FORMATS = frozenset({1})


@runtime_checkable
class JournaledStore(Protocol):
    """An adapter that can append one commit's changes instead of rewriting the document."""

    serializer: StateSerializer

    def save_changes(self, changes: Sequence[Change], expected: int, *,
                     full: Callable[[], str]) -> int | None:
        """Append ``changes`` as one journal record if the stored version is ``expected``.

        Under the write lock: if the version moved, write nothing and return None. If the
        record would take the journal past :func:`should_compact`'s budget, write
        ``full()`` (the whole new document, encoded) as a new snapshot instead, emptying
        the journal. The new document must equal the stored one with ``changes`` applied.

        :returns: the new version, or None when another writer committed since ``expected``.
        :raises SerializationError: a changed value cannot be stored (nothing written).
        """
        ...

    def load_changes(self, since: int) -> tuple[list[list[list[Any]]], int] | None:
        """The records committed after version ``since`` (decoded ops, oldest first) and
        the current version, read consistently; ``([], since)`` when nothing changed.

        Lets a process that holds the document at ``since`` catch up with another
        process's commits without loading the whole document. None when the journal no
        longer holds every commit since then (a full write or compaction happened, or
        ``since`` is a version this store cannot place): load the document instead.

        :raises StateCorruptedError: a record since ``since`` does not decode.
        """
        ...


#: How deep a record nests the value of an op (``{"ops": [[path, value]]}``): a value
#: below a longer path must also be checked at its depth in the document.
_RECORD_VALUE_DEPTH = 3


def encode_record(serializer: StateSerializer, changes: Sequence[Change]) -> str:
    """One journal record's text.

    Every value is held to the document's depth limit at its own path (the record alone
    would count from its own top), so whatever loads from snapshot + journal can always be
    written whole again.

    :raises SerializationError: a value or key cannot be stored, or would nest deeper than
        :data:`~cascadeui.serializer.MAX_DEPTH` levels in the document; nothing is returned.
    """
    for path, value in changes:
        if len(path) > _RECORD_VALUE_DEPTH and value is not DELETED:
            check_depth(value, len(path), path)
    ops = [[list(path)] if value is DELETED else [list(path), value]
           for path, value in changes]
    return serializer.serialize({"v": RECORD_FORMAT, "ops": ops})


def decode_record(serializer: StateSerializer, text: str | bytes) -> list[list[Any]]:
    """The ops of one record's text.

    :raises StateCorruptedError: not a record this module wrote, or one of a newer format.
    """
    record = serializer.deserialize(text)
    form = record.get("v", 1)
    if type(form) is not int or form not in _READABLE_FORMATS:
        raise StateCorruptedError(
            f"journal record of format {form!r}; this cascadeui reads format "
            f"{RECORD_FORMAT} (written by a newer pycascadeui?)")
    ops = record.get("ops")
    if not isinstance(ops, list) or not all(
            isinstance(op, list) and len(op) in (1, 2) and isinstance(op[0], list) and op[0]
            for op in ops):
        raise StateCorruptedError("journal record is not a list of [path] / [path, value]")
    for op in ops:
        if len(op) == 2:
            _check_settable(op[0], op[1])
    return ops


def _check_settable(path: list[Any], value: Any) -> None:
    """Raise unless a whole write could store ``value`` at ``path``: the record was not
    written by :func:`encode_record` (a hand-made line, row or list item)."""
    node = value
    try:
        for key in reversed(path):
            node = {key: node}
        check_storable(node, ())
    except SerializationError as exc:  # (a TypeError: caught first)
        raise StateCorruptedError(
            f"journal record sets what no whole write could store: {exc}") from None
    except TypeError:  # an unhashable key: applying the record names the path
        return


def apply_record(state: dict[str, Any], ops: list[list[Any]]) -> None:
    """Apply one decoded record to ``state`` in place (a freshly loaded document).

    A missing parent dict is created and deleting a missing key does nothing (the store's
    view of a document lists every persisted slice, even one never stored).

    :raises StateCorruptedError: a parent on the path is not a dict: the record was not
        written against this snapshot.
    """
    _apply(state, ops, None)


def apply_shared(doc: Mapping[str, Any], ops: list[list[Any]]) -> dict[str, Any]:
    """``doc`` with one decoded record applied, as a new document; ``doc`` is unchanged.

    Copies only the dicts along the changed paths and shares every other subtree with
    ``doc`` (the store's snapshots are immutable), so it costs what the record changed.

    :raises StateCorruptedError: as :func:`apply_record`.
    """
    new = dict(doc)
    _apply(new, ops, {id(new)})
    return new


def _apply(state: dict[str, Any], ops: list[list[Any]], fresh: set[int] | None) -> None:
    """Apply ``ops`` to ``state``; with ``fresh`` (ids of dicts made here), copy on write."""
    for op in ops:
        path = op[0]
        node: Any = state
        try:
            for key in path[:-1]:
                child = node.get(key)
                if child is None and key not in node:
                    if len(op) == 1:
                        break  # deleting below a missing dict: nothing to delete
                    child = node[key] = {}
                    if fresh is not None:
                        fresh.add(id(child))
                elif type(child) is not dict:
                    raise TypeError
                elif fresh is not None and id(child) not in fresh:
                    child = node[key] = dict(child)
                    fresh.add(id(child))
                node = child
            else:
                if len(op) == 2:
                    node[path[-1]] = op[1]
                else:
                    node.pop(path[-1], None)
        except TypeError:  # a non-dict parent, or an unhashable key
            raise StateCorruptedError(
                f"journal record does not fit the snapshot at path {path!r}") from None


def should_compact(journal_bytes: int, record_bytes: int, snapshot_bytes: int) -> bool:
    """True when appending ``record_bytes`` would take the journal past its budget."""
    budget = max(JOURNAL_MIN_BYTES, int(snapshot_bytes * JOURNAL_RATIO))
    return journal_bytes + record_bytes > budget


# -- what every adapter's journal shares ------------------------------------------------


def nbytes(text: str | bytes) -> int:
    """UTF-8 size of ``text``; O(1) for ASCII text, which compact JSON usually is."""
    if isinstance(text, bytes):
        return len(text)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def corrupt(location: str, what: str) -> StateCorruptedError:
    """The one error of a journal (or snapshot) that does not decode or does not fit:
    ``<location>: <what>``, with the location in the error's attributes."""
    return StateCorruptedError(f"{location}: {what}", location=location, tried=(location,))


class Budget(NamedTuple):
    """What the compaction budget needs, as of one version this store read or wrote.

    The one cache type of every adapter: valid only while the stored version is still
    ``version`` (an adapter measures again otherwise). Bytes are a budget, not a count.
    """

    version: int
    #: Journal records after the snapshot (where the adapter counts them; else 0).
    records: int
    journal_bytes: int
    snapshot_bytes: int

    def due(self, record_bytes: int) -> bool:
        """True when appending ``record_bytes`` would take the journal past its budget."""
        return should_compact(self.journal_bytes, record_bytes, self.snapshot_bytes)

    def appended(self, version: int, record_bytes: int) -> Budget:
        """The budget after one more record, committed as ``version``."""
        return self._replace(version=version, records=self.records + 1,
                             journal_bytes=self.journal_bytes + record_bytes)

    def caught_up(self, version: int, records: int, new_bytes: int) -> Budget:
        """The budget after reading ``records`` records (``new_bytes``) committed by others."""
        return self._replace(version=version, records=self.records + records,
                             journal_bytes=self.journal_bytes + new_bytes)


def commit_changes(current: int, expected: int, record_bytes: int, *,
                   budget: Callable[[int], tuple[Budget, bool]],
                   verify: Callable[[], object], snapshot: Callable[[], int | None],
                   append: Callable[[Budget], int | None]) -> int | None:
    """The decision of ``save_changes``, once for every adapter; call it under the write
    lock with the medium's hooks.

    :param current: the stored version, read under the lock.
    :param budget: ``budget(current)``: the compaction budget's inputs and whether this
        store read or wrote that commit whole (a measured budget is not "known").
    :param verify: decode what is stored (raises StateCorruptedError): never replace by a
        compaction data this store could not read.
    :param snapshot: write ``full()`` as the new snapshot, emptying the journal; the new
        version.
    :param append: append the record; the new version.
    :returns: None when another writer committed since ``expected`` (nothing written);
        ``snapshot`` and ``append`` may say so too, where the medium checks the version
        atomically with the write instead of under a lock (Redis's scripts).
    """
    if current != expected:
        return None
    if current <= 0:  # nothing stored (or a journal without its snapshot): a snapshot
        return snapshot()
    now, known = budget(current)
    if now.due(record_bytes):
        if not known:
            verify()
        return snapshot()
    return append(now)


def decode_records(serializer: StateSerializer, rows: Iterable[tuple[Any, Any]], *,
                   location: str, name: Callable[[Any], str],
                   fail: Callable[[Any, str], StateCorruptedError] | None = None
                   ) -> tuple[list[list[list[Any]]], int]:
    """Decode ``(label, text)`` journal rows in order; the ops and the bytes read.

    :param name: how an error names a row, from its label (``journal record 7 in 't'``).
    :param fail: ``fail(label, why)``, the medium's own error for a bad row (the JSON
        file names the journal's line); default ``<location>: <name>: <why>``.
    :raises StateCorruptedError: a row that is not a record, named by ``name``.
    """
    error = fail or (lambda label, why: corrupt(location, f"{name(label)}: {why}"))
    decoded: list[list[list[Any]]] = []
    total = 0
    for label, text in rows:
        if not isinstance(text, (str, bytes)):
            what = f"holds a {type(text).__name__}, not a record"
            raise fail(label, what) if fail else corrupt(location, f"{name(label)} {what}")
        try:
            decoded.append(decode_record(serializer, text))
        except StateCorruptedError as exc:
            raise error(label, str(exc)) from exc
        total += nbytes(text)
    return decoded, total


def apply_records(state: dict[str, Any], labelled: Iterable[tuple[Any, list[list[Any]]]], *,
                  location: str, name: Callable[[Any], str],
                  fail: Callable[[Any, str], StateCorruptedError] | None = None) -> None:
    """Apply decoded records to a freshly loaded ``state`` in order.

    :param fail: as :func:`decode_records`.
    :raises StateCorruptedError: a record does not fit the snapshot, named by ``name``.
    """
    error = fail or (lambda label, why: corrupt(location, f"{name(label)}: {why}"))
    for label, ops in labelled:
        try:
            apply_record(state, ops)
        except StateCorruptedError as exc:
            raise error(label, str(exc)) from exc
