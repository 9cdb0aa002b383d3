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

__all__ = ["DELETED", "Change", "MergeResult", "diff", "merge3"]


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
    """Merge ``ours`` and ``theirs``, two descendants of ``base``; ours wins conflicts.

    Costs O(size) (their document is compared with ``base`` in full): it runs only when
    another writer committed in between, never on the ordinary write path.
    """
    result = MergeResult({}, [path for path, _ in diff(base, theirs)])
    result.merged = _merge(base, ours, theirs, (), result.conflicts)
    return result


def _merge(base: Mapping[Any, Any], ours: Mapping[Any, Any], theirs: Mapping[Any, Any],
           path: tuple[Any, ...], conflicts: list[tuple[Any, ...]]) -> dict[Any, Any]:
    merged = dict(theirs)
    for key in [*ours, *(k for k in base if k not in ours)]:
        b, o, t = base.get(key, DELETED), ours.get(key, DELETED), theirs.get(key, DELETED)
        if o is b:
            continue  # we did not touch it: theirs stands
        o_dict, t_dict = isinstance(o, Mapping), isinstance(t, Mapping)
        if not (o_dict and isinstance(b, Mapping)) and _same(o, b):
            continue  # we wrote back the value it had
        if _same(t, b):
            pass  # they did not touch it: ours, no conflict
        elif o_dict and t_dict:
            # Both changed inside the same dict (or both created it): merge key by key.
            merged[key] = _merge(b if isinstance(b, Mapping) else {}, o, t, (*path, key),
                                 conflicts)
            continue
        elif not _same(o, t):
            conflicts.append((*path, key))
        if o is DELETED:
            merged.pop(key, None)
        else:
            merged[key] = o
    return merged


def _same(a: Any, b: Any) -> bool:
    return a is b or (a is not DELETED and b is not DELETED and type(a) is type(b) and a == b)
