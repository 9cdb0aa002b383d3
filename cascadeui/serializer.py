"""JSON with an exact round trip for the types bots keep in state.

Plain JSON loses types: a ``set`` comes back as a list, a ``datetime`` as a string and
``{user.id: ...}`` as ``{"1234": ...}``, so ``scores[user.id]`` silently misses after a
restart. :class:`StateSerializer` writes those values as one-key tagged objects that stay
readable in the file::

    {"$datetime": "2026-01-02T03:04:05+00:00"}   datetime (naive or aware)
    {"$date": "2026-01-02"}                        date
    {"$set": [1, 2]}   {"$frozenset": [...]}      set, frozenset (sorted when sortable)
    {"$tuple": [1, "a"]}                           tuple
    {"$map": [[123, "x"], [456, "y"]]}             dict with any non-str key
    {"$dict": [["$set", 1]]}                       a str-keyed dict whose only key is a tag

Everything else is plain JSON, so files written by other tools (and by pycascadeui 2.x,
which stored datetimes as strings and sets as lists) load unchanged: a string stays a string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from .errors import SerializationError, StateCorruptedError

__all__ = ["MAX_DEPTH", "StateSerializer"]

#: Deepest nesting accepted on save; deeper states raise instead of overflowing the stack.
MAX_DEPTH = 200
_MAX_INT_BITS = 13_000  # ~3,900 decimal digits: below CPython's 4,300-digit str() limit.

_TAGS = frozenset({"$datetime", "$date", "$set", "$frozenset", "$tuple", "$map", "$dict"})
_SCALARS = (str, int, bool, type(None))


def _fmt_path(path: list[Any]) -> str:
    return "state" + "".join(f"[{p!r}]" for p in path)


class _Unstorable(Exception):
    """Internal: a bad value; ``path`` is filled in (innermost first) while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[Any] = []


def _encode(obj: Any, depth: int) -> Any:
    """Return ``obj`` as JSON-native data; the same object where nothing needs converting.

    The key path is not carried down (that would allocate at every node): a failure
    raises :class:`_Unstorable` and each level adds its key on the way out.
    """
    tp = type(obj)
    if tp is str or obj is None or tp is bool:
        return obj
    if tp is int:
        if obj.bit_length() > _MAX_INT_BITS:
            raise _Unstorable("integer too large to store")
        return obj
    if tp is float:
        if not math.isfinite(obj):
            raise _Unstorable(f"{obj!r} is not valid JSON")
        return obj
    if depth >= MAX_DEPTH:
        raise _Unstorable(f"nesting deeper than {MAX_DEPTH} levels")
    if tp is dict:
        return _encode_dict(obj, depth)
    if tp is list or tp is tuple:
        out = _encode_items(obj, depth)
        if tp is tuple:
            return {"$tuple": out}
        return obj if out is None else out
    if tp is set or tp is frozenset:
        try:
            items = sorted(obj)
        except TypeError:
            items = list(obj)
        out = _encode_items(items, depth)
        return {"$set" if tp is set else "$frozenset": items if out is None else out}
    if isinstance(obj, datetime):
        return {"$datetime": obj.isoformat()}
    if isinstance(obj, date):
        return {"$date": obj.isoformat()}
    # Subclasses of the JSON types (IntEnum, StrEnum, OrderedDict, ...) are stored as
    # their base type: they are data, and the base type round-trips exactly.
    for base in (bool, int, float, str):
        if isinstance(obj, base):
            return _encode(base(obj), depth)
    if isinstance(obj, Mapping):
        return _encode_dict(dict(obj), depth)
    if isinstance(obj, list):
        return _encode(list(obj), depth)
    raise _Unstorable(
        f"{tp.__name__} is not serializable "
        "(store JSON types, datetime, date, set, frozenset or tuple)")


def _encode_items(items: Any, depth: int) -> list[Any] | None:
    """Encode a sequence; None when every item was already JSON-native (no copy needed)."""
    out: list[Any] | None = None
    for i, v in enumerate(items):
        try:
            e = _encode(v, depth + 1)
        except _Unstorable as exc:
            exc.path.append(i)
            raise
        if out is not None:
            out.append(e)
        elif e is not v or type(items) is not list:
            out = list(items[:i]) if isinstance(items, (list, tuple)) else list(items)[:i]
            out.append(e)
    if out is None and type(items) is not list:
        return list(items)
    return out


def _encode_dict(obj: dict[Any, Any], depth: int) -> Any:
    str_keys = True
    out: dict[Any, Any] | None = None
    for k, v in obj.items():
        if type(k) is not str:
            str_keys = False
        try:
            e = _encode(v, depth + 1)
        except _Unstorable as exc:
            exc.path.append(k)
            raise
        if e is not v:
            if out is None:
                out = dict(obj)
            out[k] = e
    result = obj if out is None else out
    if not str_keys:
        pairs = []
        for k, v in result.items():
            try:
                pairs.append([_encode(k, depth + 1), v])
            except _Unstorable as exc:
                exc.path.append(k)
                raise
        return {"$map": pairs}
    if len(result) == 1 and next(iter(result)) in _TAGS:
        return {"$dict": [[k, v] for k, v in result.items()]}
    return result


def _decode_hook(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        return obj
    (tag, value), = obj.items()
    if tag not in _TAGS:
        return obj
    if tag == "$datetime":
        return datetime.fromisoformat(value)
    if tag == "$date":
        return date.fromisoformat(value)
    if tag == "$set":
        return set(value)
    if tag == "$frozenset":
        return frozenset(value)
    if tag == "$tuple":
        return tuple(value)
    # "$map" and "$dict" hold [key, value] pairs.
    return {_hashable(k): v for k, v in value}


def _hashable(key: Any) -> Any:
    hash(key)  # a list or dict key means the data was not written by us: TypeError
    return key


class StateSerializer:
    """Turns a state dict into compact JSON text and back, exactly.

    Raises :class:`~cascadeui.errors.SerializationError` (a ``TypeError``) naming the key
    path for a value it cannot store, and :class:`~cascadeui.errors.StateCorruptedError`
    (a ``ValueError``) for text that is not a state it wrote.
    """

    def serialize(self, state: Mapping[str, Any]) -> str:
        """Encode ``state`` as compact JSON; nothing is partially written on error."""
        if not isinstance(state, Mapping):
            raise SerializationError(
                f"state must be a dict, not {type(state).__name__}", path="state")
        try:
            native = _encode(dict(state), 0)
        except _Unstorable as exc:
            path = _fmt_path(exc.path[::-1])
            raise SerializationError(f"{path}: {exc.reason}", path=path) from None
        return json.dumps(native, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False, check_circular=False)

    def deserialize(self, text: str | bytes) -> dict[str, Any]:
        """Decode JSON text written by :meth:`serialize` (or plain JSON) into a dict."""
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            value = json.loads(text, object_hook=_decode_hook,
                               parse_constant=_reject_constant)
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
