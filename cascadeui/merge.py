"""Three-way merge of persisted state at leaf granularity, for several writers on one state.

A store remembers the document it last loaded or wrote (``base``). When it writes and the
stored version has moved, it merges: the changes another process made since ``base``
(``theirs``) are kept, this store's changes since ``base`` (``ours``) are applied on top,
and only a path that both sides changed is a conflict, resolved for the later writer (us).

Paths are tuples of keys into the persisted document, e.g.
``("application", "scores", 1234)``. Dicts are merged key by key; any other value (a list,
a set, a number) is a leaf and replaced whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .actions import delete_in, set_in

__all__ = ["DELETED", "Change", "MergeResult", "apply_changes", "diff", "merge3"]


class _Deleted:
    """The value of a change that removed its key."""

    def __repr__(self) -> str:
        return "DELETED"


#: Marks a deletion in a :data:`Change`.
DELETED: Any = _Deleted()

#: ``(path, new value or DELETED)``
Change = tuple[tuple[Any, ...], Any]


def diff(old: Mapping[Any, Any], new: Mapping[Any, Any]) -> list[Change]:
    """The leaf changes that turn ``old`` into ``new``.

    Values that are the same object are skipped without a look inside, so between two
    structurally shared snapshots of one store this costs O(changed paths); between
    unrelated documents it compares everything.
    """
    return list(_diff(old, new, ()))


def _diff(old: Mapping[Any, Any], new: Mapping[Any, Any],
          path: tuple[Any, ...]) -> Iterator[Change]:
    for key, value in new.items():
        before = old.get(key, DELETED)
        if before is value:
            continue
        if isinstance(before, Mapping) and isinstance(value, Mapping):
            yield from _diff(before, value, (*path, key))
        elif before is DELETED or type(before) is not type(value) or before != value:
            yield (*path, key), value
    for key in old:
        if key not in new:
            yield (*path, key), DELETED


def apply_changes(doc: Mapping[Any, Any], changes: list[Change]) -> dict[Any, Any]:
    """Return ``doc`` with ``changes`` applied; only the changed paths are copied."""
    out: dict[Any, Any] = dict(doc)
    for path, value in changes:
        out = delete_in(out, path) if value is DELETED else _set_path(out, path, value)
    return out


def _set_path(doc: dict[Any, Any], path: tuple[Any, ...], value: Any) -> dict[Any, Any]:
    # A non-dict on the way (the other side replaced a dict with a leaf) gives way to ours.
    for depth in range(1, len(path)):
        parent = _get(doc, path[:depth])
        if parent is not DELETED and not isinstance(parent, Mapping):
            doc = set_in(doc, path[:depth], {})
            break
    return set_in(doc, path, value)


def _get(doc: Mapping[Any, Any], path: tuple[Any, ...]) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return DELETED
        node = node[key]
    return node


@dataclass
class MergeResult:
    """What :func:`merge3` produced."""

    merged: dict[Any, Any]
    #: Paths the other side changed (what a reloading store must tell its subscribers).
    theirs: list[tuple[Any, ...]] = field(default_factory=list)
    #: Paths both sides changed to different values; ours won.
    conflicts: list[tuple[Any, ...]] = field(default_factory=list)


def merge3(base: Mapping[Any, Any], ours: Mapping[Any, Any],
           theirs: Mapping[Any, Any]) -> MergeResult:
    """Merge ``ours`` and ``theirs``, two descendants of ``base``; ours wins conflicts."""
    our_changes = diff(base, ours)
    their_changes = diff(base, theirs)
    their_paths = [p for p, _ in their_changes]
    conflicts = []
    if our_changes and their_paths:
        theirs_set = set(their_paths)
        prefixes = {p[:i] for p in their_paths for i in range(1, len(p))}
        for path, value in our_changes:
            overlaps = path in theirs_set or path in prefixes or any(
                path[:i] in theirs_set for i in range(1, len(path)))
            if overlaps and _get(theirs, path) != value:
                conflicts.append(path)
    return MergeResult(apply_changes(theirs, our_changes), their_paths, conflicts)
