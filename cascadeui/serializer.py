"""JSON with an exact round trip for the types bots keep in state.

Plain JSON loses types: a ``set`` comes back as a list, a ``datetime`` as a string and
``{user.id: ...}`` as ``{"1234": ...}``, so ``scores[user.id]`` silently misses after a
restart. :class:`StateSerializer` writes those values as one-key tagged objects that stay
readable in the file::

    {"$datetime": "2026-01-02T03:04:05+00:00"}     datetime (naive or fixed offset)
    {"$datetime": ["2026-...+01:00", "Europe/Paris"]}  datetime in a zoneinfo zone
    {"$date": "2026-01-02"}                          date
    {"$set": [1, 2]}   {"$frozenset": [...]}        set, frozenset (sorted when sortable)
    {"$tuple": [1, "a"]}                             tuple
    {"$map": [[123, "x"], [456, "y"]]}               dict with any non-str key
    {"$dict": [["$set", 1]]}                         a str-keyed dict whose only key is a tag

Everything else is plain JSON, so files written by other tools (and by pycascadeui 2.x,
which stored datetimes as strings and sets as lists) load unchanged: a string stays a string.
Limits (docs/backends.md): nesting deeper than :data:`MAX_DEPTH`, integers above
``_MAX_INT_BITS`` bits, NaN and infinities raise; a duplicate key in a file keeps the last.
"""

from __future__ import annotations

import functools
import json
import re
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from itertools import chain, compress, repeat
from operator import is_
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

from .errors import SerializationError, StateCorruptedError

__all__ = ["MAX_DEPTH", "SnapshotEncoder", "StateSerializer", "check_depth", "check_storable",
           "format_path"]

#: Deepest nesting accepted on save; deeper states raise instead of overflowing the stack.
MAX_DEPTH = 200
_MAX_INT_BITS = 13_000  # ~3,900 decimal digits: below CPython's 4,300-digit str() limit.

_TAGS = frozenset({"$datetime", "$date", "$set", "$frozenset", "$tuple", "$map", "$dict"})
_LEAVES: frozenset[type] = frozenset({str, bool, type(None)})
_FAST_LEAVES: frozenset[type] = frozenset({str, bool, type(None), int, float})
_STR_ONLY: frozenset[type] = frozenset({str})
_PLAIN: frozenset[type] = _FAST_LEAVES | {dict, list}
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                            check_circular=False)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False,
                                  check_circular=False)
P = ParamSpec("P")
R = TypeVar("R")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _fmt_path(path: list[Any]) -> str:
    return "state" + "".join(f"[{p!r}]" for p in path)


def check_depth(value: Any, depth: int, path: Sequence[Any]) -> None:
    """Raise unless ``value``, found ``depth`` levels down a state at ``path``, nests
    within :data:`MAX_DEPTH` levels counted from the top of the state, as a whole write
    counts them.

    A change stored on its own (a journal record, an ``APPLICATION_SET``) is checked here
    so that the state it builds can always be written whole again. Walks only the
    containers inside ``value`` (scalars are skipped), iteratively.

    :param path: the key path from the top of the state (for the message).
    :raises SerializationError: too deep; ``path`` names the first container past it.
    """
    if type(value) in _FAST_LEAVES:
        return
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, depth, ())]
    while stack:
        obj, level, where = stack.pop()
        if level >= MAX_DEPTH:
            at = _fmt_path([*path, *where])
            raise SerializationError(f"{at}: nesting deeper than {MAX_DEPTH} levels",
                                     path=at)
        if isinstance(obj, Mapping):
            items: Any = obj.items()
        elif isinstance(obj, (list, tuple)):
            items = enumerate(obj)
        elif isinstance(obj, (set, frozenset)):
            items = ((None, v) for v in obj)
        else:
            continue  # a datetime, an enum ...: one level, checked above
        for key, child in items:
            if type(child) not in _FAST_LEAVES:
                stack.append((child, level + 1, (*where, key)))


def format_path(keys: tuple[Any, ...] | list[Any]) -> str:
    """The dotted PATH text of a key path (``application.scores.123``), as the CLI reads
    it back; keys with dots, spaces or digits only are quoted."""
    parts = []
    for key in keys:
        if isinstance(key, int) and not isinstance(key, bool):
            parts.append(str(key))
        elif isinstance(key, str) and re.fullmatch(r'[^."\s\\]+', key) and not re.fullmatch(
                r"-?\d+", key):
            parts.append(key)
        else:
            text = key if isinstance(key, str) else repr(key)
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return ".".join(parts)


#: An error names at most this many keys below the caller's path (a 300-deep value
#: would otherwise name about a thousand characters of ``k.k.k...``).
_PATH_KEYS_SHOWN = 8


def check_storable(value: Any, path: Sequence[Any]) -> None:
    """Raise unless ``value``, put at key ``path`` from the top of the state, can be
    written: every type storable, every number valid JSON, nesting within
    :data:`MAX_DEPTH`, keys included.

    ``APPLICATION_SET`` calls it at dispatch, so a value that could never be saved is
    refused before it is applied instead of failing every later write (issue 23). One
    walk without allocation for plain data; the strict encoder walk only for the rest.

    :raises SerializationError: ``path`` names the user's key path
        (``application.price``, then the keys inside ``value``, shortened when deep).
    """
    tp = type(value)
    if tp in _LEAVES or (tp is int and value.bit_length() <= _MAX_INT_BITS) or (
            tp is float and value - value == 0.0):
        return
    if all(type(key) is str for key in path) and _plainly_storable(value, len(path)):
        return
    try:
        for key in path:
            if type(key) is not str:
                _encode(key, 0)
        _encode(value, len(path), _LEAVES)
    except _UnstorableError as exc:
        inner = exc.path[::-1]
        shown = format_path([*path, *inner[:_PATH_KEYS_SHOWN]])
        more = len(inner) - _PATH_KEYS_SHOWN
        below = f" (and {more} keys further down)" if more > 0 else ""
        raise SerializationError(f"{shown}{below}: {exc.reason}", path=shown) from None
    except RecursionError:
        shown = format_path(list(path))
        raise SerializationError(f"{shown}: a reference cycle or nesting too deep",
                                 path=shown) from None


_SEQUENCES: frozenset[type] = frozenset({list, tuple, set, frozenset})


def _plainly_storable(value: Any, depth: int) -> bool:
    """True when ``value`` is str-keyed dicts, sequences, sets, dates and valid JSON
    scalars within the depth limit; False means "not sure" (the strict walk decides)."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        obj, level = stack.pop()
        if level >= MAX_DEPTH:
            return False
        tp = type(obj)
        if tp is dict:
            if not set(map(type, obj)) <= _STR_ONLY:
                return False
            children: Any = obj.values()
        elif tp in _SEQUENCES:
            children = obj
        elif tp is datetime or tp is date:
            continue
        else:
            return False
        for child in children:
            ctp = type(child)
            if ctp in _LEAVES:
                continue
            if ctp is int:
                if child.bit_length() > _MAX_INT_BITS:
                    return False
            elif ctp is float:
                if child - child != 0.0:
                    return False
            else:
                stack.append((child, level + 1))
    return True


class _UnstorableError(Exception):
    """Internal: a bad value; ``path`` is filled in (innermost first) while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[Any] = []


_BASE_VALUE: tuple[tuple[type, Any], ...] = (
    (int, int.__index__), (float, float.__float__), (str, str.__str__))


def _check_int(v: int) -> None:
    if v.bit_length() > _MAX_INT_BITS:
        # Between ~3,900 and 4,300 digits it depends on the digits: store exactly what
        # json.loads would read back (issue 7: whatever loads must be savable again).
        try:
            str(v)
        except ValueError:
            raise _UnstorableError("integer too large to store (over the "
                                   "interpreter's int digit limit)") from None


def _check_float(v: float) -> None:
    if v - v != 0.0:  # NaN and +-inf are the only floats for which this holds
        raise _UnstorableError(f"{v!r} is not valid JSON")


def _encode(obj: Any, depth: int, leaves: frozenset[type] = _LEAVES) -> Any:
    """Return ``obj`` as JSON-native data; the same object where nothing needs converting.

    The key path is not carried down (that would allocate at every node): a failure
    raises :class:`_UnstorableError` and each level adds its key on the way out.
    ``leaves`` are the types the container loops pass through untouched: with
    :data:`_FAST_LEAVES` ints and floats are not checked here (a function call per
    number is most of a Python walk's cost) and the C encoder rejects NaN and oversized
    ints instead; :meth:`StateSerializer.serialize` then re-walks strictly for the path.
    """
    tp = type(obj)
    if tp in _LEAVES:
        return obj
    if tp is int:
        _check_int(obj)
        return obj
    if tp is float:
        _check_float(obj)
        return obj
    if depth >= MAX_DEPTH:
        raise _UnstorableError(f"nesting deeper than {MAX_DEPTH} levels")
    if tp is dict:
        return _encode_dict(obj, depth, leaves)
    if tp is list:
        out = _encode_items(obj, depth, leaves)
        return obj if out is None else out
    if tp is tuple:
        out = _encode_items(obj, depth, leaves)
        return {"$tuple": list(obj) if out is None else out}
    if tp is set or tp is frozenset:
        try:
            items = sorted(obj)
        except TypeError:  # mixed types: keep iteration order
            items = list(obj)
        out = _encode_items(items, depth, leaves)
        return {"$set" if tp is set else "$frozenset": items if out is None else out}
    if isinstance(obj, datetime):
        if isinstance(obj.tzinfo, ZoneInfo) and obj.tzinfo.key:
            return {"$datetime": [obj.isoformat(), obj.tzinfo.key]}
        return {"$datetime": obj.isoformat()}
    if isinstance(obj, date):
        return {"$date": obj.isoformat()}
    # Subclasses of the JSON types (IntEnum, StrEnum, OrderedDict, ...) are stored as
    # their base type: they are data, and the base type round-trips exactly.
    # The base type's own conversion, not str()/int(): str(Mode.FAST) is "Mode.FAST".
    for base, plain in _BASE_VALUE:
        if isinstance(obj, base):
            return _encode(plain(obj), depth, leaves)
    if isinstance(obj, Mapping):
        return _encode_dict(dict(obj), depth, leaves)
    if isinstance(obj, list):
        return _encode(list(obj), depth, leaves)
    raise _UnstorableError(
        f"{tp.__name__} is not serializable "
        "(store JSON types, datetime, date, set, frozenset or tuple)")


def _encode_items(items: list[Any] | tuple[Any, ...], depth: int,
                  leaves: frozenset[type]) -> list[Any] | None:
    """Encode a sequence; None when every item is already JSON-native (no copy needed)."""
    out: list[Any] | None = None
    for i, v in enumerate(items):
        if type(v) in leaves:
            e = v
        else:
            try:
                e = _encode(v, depth + 1, leaves)
            except _UnstorableError as exc:
                exc.path.append(i)
                raise
        if out is not None:
            out.append(e)
        elif e is not v:
            out = list(items[:i])
            out.append(e)
    return out


def _encode_dict(obj: dict[Any, Any], depth: int, leaves: frozenset[type]) -> Any:
    out: dict[Any, Any] | None = None
    for k, v in obj.items():
        if type(v) in leaves:
            continue
        try:
            e = _encode(v, depth + 1, leaves)
        except _UnstorableError as exc:
            exc.path.append(k)
            raise
        if e is not v:
            if out is None:
                out = dict(obj)
            out[k] = e
    result = obj if out is None else out
    # One C-level pass over the keys instead of a type test per key in the loop above.
    if not set(map(type, obj)) <= _STR_ONLY:  # a str subclass key is re-typed via $map
        pairs = []
        for k, v in result.items():
            try:
                pairs.append([_encode(k, depth + 1), v])
            except _UnstorableError as exc:
                exc.path.append(k)
                raise
        return {"$map": pairs}
    if len(result) == 1 and next(iter(result)) in _TAGS:
        return {"$dict": [[k, v] for k, v in result.items()]}
    return result


def _only_plain(state: dict[str, Any]) -> bool:
    """True when ``state`` is plain JSON already: str-keyed dicts, lists and scalars only.

    Then the C encoder alone writes it exactly and the Python walk is skipped. The check
    runs level by level with C iterators (``chain``, ``map``, ``compress``: no Python
    call per value); it stops at the first level holding anything else (a tuple, a set,
    a datetime, a non-str or tag-like key), so a tagged state pays only for the levels
    above its first tagged value. Measured in docs/performance.md.
    """
    dicts: list[dict[Any, Any]] = [state]
    lists: list[list[Any]] = []
    for _ in range(MAX_DEPTH):
        values: list[Any] = []
        if dicts:
            if not set(map(type, chain.from_iterable(dicts))) <= _STR_ONLY:
                return False
            if 1 in set(map(len, dicts)) and not _TAGS.isdisjoint(chain.from_iterable(dicts)):
                return False  # a tag look-alike key: the walk escapes it with $dict
            values.extend(chain.from_iterable(map(dict.values, dicts)))
        if lists:
            values.extend(chain.from_iterable(lists))
        types = list(map(type, values))
        kinds = set(types)
        if kinds <= _FAST_LEAVES:
            return True
        if not kinds <= _PLAIN:
            return False
        dicts = list(compress(values, map(is_, types, repeat(dict)))) if dict in kinds else []
        lists = list(compress(values, map(is_, types, repeat(list)))) if list in kinds else []
    return False  # deeper than MAX_DEPTH: the walk raises the clear error


def _decode_hook(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        return obj
    (tag, value), = obj.items()
    if tag not in _TAGS:
        return obj
    if tag == "$datetime":
        if isinstance(value, list) and len(value) == 2:
            text, zone = value
            return datetime.fromisoformat(_text(tag, text)).astimezone(
                ZoneInfo(_text(tag, zone)))
        return datetime.fromisoformat(_text(tag, value))
    if tag == "$date":
        return date.fromisoformat(_text(tag, value))
    if not isinstance(value, list):
        raise ValueError(f"{tag} holds a {type(value).__name__}, not a list")
    if tag == "$set":
        return set(value)
    if tag == "$frozenset":
        return frozenset(value)
    if tag == "$tuple":
        return tuple(value)
    # "$map" and "$dict" hold [key, value] pairs.
    out = {}
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"{tag} holds {pair!r}, not a [key, value] pair")
        key = pair[0]
        hash(key)  # a list or dict key means the data was not written by us: TypeError
        out[key] = pair[1]
    return out


def _text(tag: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{tag} holds a {type(value).__name__}, not a string")
    return value


class _ClassOrInstance(Generic[P, R]):
    """A method that also works called on the class, with a default instance.

    pycascadeui 2.1.0 code calls ``StateSerializer.serialize(state)`` and
    ``StateSerializer.deserialize(text)`` on the class itself (issue 15); on an instance
    (and through ``super()``) it is an ordinary bound method.
    """

    def __init__(self, fn: Callable[Concatenate[Any, P], R]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: object, owner: type[Any] | None = None) -> Callable[P, R]:
        if obj is None:
            obj = owner() if owner is not None else StateSerializer()
        return types.MethodType(self.fn, obj)


class StateSerializer:
    """Turns a state dict into compact JSON text and back, exactly.

    Raises :class:`~cascadeui.errors.SerializationError` (a ``TypeError``) naming the key
    path for a value it cannot store, and :class:`~cascadeui.errors.StateCorruptedError`
    (a ``ValueError``) for text that is not a state it wrote. ``serialize`` and
    ``deserialize`` also work called on the class, as pycascadeui 2.1.0 code does.
    """

    @_ClassOrInstance
    def serialize(self, state: Mapping[str, Any]) -> str:
        """Encode ``state`` as compact JSON; nothing is partially written on error.

        :param state: the state dict; keys of any hashable storable type.
        :raises SerializationError: a value JSON cannot store; ``path`` names it.
        """
        if not isinstance(state, Mapping):
            raise SerializationError(
                f"state must be a dict, not {type(state).__name__}", path="state")
        try:
            plain = state if type(state) is dict else dict(state)
            native = plain if _only_plain(plain) else _encode(plain, 0, _FAST_LEAVES)
            try:
                return self._utf8_safe(_ENCODER.encode(native), native)
            except ValueError:  # NaN, infinity or an oversized int: find it, with its path
                _encode(plain, 0, _LEAVES)
                raise
        except _UnstorableError as exc:
            path = _fmt_path(exc.path[::-1])
            raise SerializationError(f"{path}: {exc.reason}", path=path) from None
        except RecursionError:  # only a self-referencing container gets this deep
            raise SerializationError("state contains a reference cycle or is nested too "
                                     "deeply", path="state") from None
        except RuntimeError as exc:  # "dictionary changed size during iteration"
            if "during iteration" not in str(exc):
                raise
            raise RuntimeError(
                f"the state changed while it was being saved ({exc}): another thread "
                "mutated it, which is a bug in the caller; nothing was written. Save a "
                "copy, or change the state only from the thread that saves it") from exc

    def encode_value(self, value: Any, *, depth: int = 0,
                     path: tuple[Any, ...] = ()) -> str:
        """Encode one value found at ``path`` (``depth`` levels down) as JSON text.

        The building block of :class:`SnapshotEncoder`; errors name the full key path.
        """
        try:
            native = _encode(value, depth, _LEAVES)
            return self._utf8_safe(_ENCODER.encode(native), native)
        except _UnstorableError as exc:
            where = _fmt_path([*path, *exc.path[::-1]])
            raise SerializationError(f"{where}: {exc.reason}", path=where) from None
        except RecursionError:
            where = _fmt_path(list(path))
            raise SerializationError(f"{where}: a reference cycle or nesting too deep",
                                     path=where) from None

    @staticmethod
    def _utf8_safe(text: str, native: Any) -> str:
        if not text.isascii() and _SURROGATE.search(text):
            # A lone surrogate has no UTF-8 form; JSON's \u escapes keep it exactly
            # (json.loads reads them back as the same str). Issue 7, test_fuzz_load.py.
            return _ASCII_ENCODER.encode(native)
        return text

    @_ClassOrInstance
    def deserialize(self, text: str | bytes) -> dict[str, Any]:
        """Decode JSON text written by :meth:`serialize` (or plain JSON) into a dict.

        :param text: the document, as text or UTF-8 bytes.
        :raises StateCorruptedError: the text is not JSON, not an object, or a tag is bad.
        """
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            # Fast path: every tag is a key starting with '$'; without one, skip the hook.
            hook = _decode_hook if '"$' in text else None
            value = json.loads(text, object_hook=hook, parse_constant=_reject_constant,
                               parse_float=_parse_float)
        except RecursionError:
            raise StateCorruptedError("stored state is nested too deeply to decode") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise StateCorruptedError(f"stored state is not valid: {exc}") from exc
        if not isinstance(value, dict):
            raise StateCorruptedError(
                f"stored state is a JSON {type(value).__name__}, not an object")
        return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # 1e999 overflows to inf, which could never be saved again
        raise ValueError(f"{text[:40]} does not fit a float")
    return value


class SnapshotEncoder:
    """Encodes successive snapshots of one immutable state, re-encoding only what changed.

    A store's snapshots share every unchanged subtree with the previous one (reducers copy
    only along the path they change), so the text of each dict and list in the top
    ``levels`` levels, and of every container with at least ``wide`` items below them, is
    kept by identity and reused while the object is the same: a small
    change to a large state re-encodes the changed path and joins cached pieces. Each piece
    is a separate encoder call, so a worker thread running this lets the event loop thread
    take the GIL between pieces instead of stalling it for the whole document.

    Only for states that are never changed in place (the store's contract): a dict
    mutated in place would keep its old text. The output equals
    :meth:`StateSerializer.serialize`'s.
    """

    def __init__(self, serializer: StateSerializer | None = None, *, levels: int = 3,
                 wide: int = 64) -> None:
        self.serializer: StateSerializer = serializer or StateSerializer()
        self.levels = levels
        self.wide = wide
        self._memo: dict[int, tuple[Any, str]] = {}
        self._next: dict[int, tuple[Any, str]] = {}

    def encode(self, state: Mapping[str, Any]) -> str:
        """The JSON text of ``state``; pieces of the previous call are reused by identity.

        :raises SerializationError: a value JSON cannot store; ``path`` names it.
        """
        if not isinstance(state, dict):
            return self.serializer.serialize(state)
        self._next = {}
        try:
            return self._piece(state, 0, ())
        finally:
            # Keep only what this snapshot used: the memo never outgrows one state.
            self._memo, self._next = self._next, {}

    def _piece(self, value: Any, depth: int, path: tuple[Any, ...]) -> str:
        tp = type(value)
        if (tp is not dict and tp is not list) or (
                depth >= self.levels and len(value) < self.wide):
            # A leaf, or a narrow container deep down: one piece.
            return self.serializer.encode_value(value, depth=depth, path=path)
        key = id(value)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is value:
            self._next[key] = hit
            return hit[1]
        # One join per container: "[" + ",".join(...) + "]" would copy a large text twice
        # more, and every copy of a fresh 10 MB buffer holds the GIL for its page faults.
        parts: list[str] = []
        if tp is list:
            for i, v in enumerate(value):
                parts += (",", self._piece(v, depth + 1, (*path, i)))
            parts[:1] = ["["]  # the first separator becomes the opening bracket
            parts.append("]")
            text = "".join(parts) if value else "[]"
        elif not all(type(k) is str for k in value) or (
                len(value) == 1 and next(iter(value)) in _TAGS):
            text = self.serializer.encode_value(value, depth=depth, path=path)  # $map / $dict
        else:
            for k, v in value.items():
                parts += (",", self.serializer._utf8_safe(_ENCODER.encode(k), k), ":",
                          self._piece(v, depth + 1, (*path, k)))
            parts[:1] = ["{"]
            parts.append("}")
            text = "".join(parts) if value else "{}"
        self._next[key] = (value, text)
        return text

