"""Built-in action types, their reducers, and the immutable helpers reducers are made of.

Every :class:`~cascadeui.store.StateStore` registers :data:`BUILTIN_REDUCERS` at
construction. Reducers here never mutate their input: they copy only the dicts along the
path they change and share everything else (structural sharing), so a state reference
stays a consistent snapshot and "did this slice change" is an identity test. A reducer
that changes nothing returns the state object it was given.

Payloads::

    PERSISTENT_VIEW_REGISTERED   {"state_key", "class_name", "message_id", "channel_id",
                                  "guild_id", "user_id"}  ids: decimal strings or None
    PERSISTENT_VIEW_UNREGISTERED {"state_key"}
    PERSISTENT_VIEWS_REMOVED     {"state_keys": [...], "message_ids": {key: id} (optional),
                                  "data_paths": {key: [k1, k2, ...]} (optional)}
    PANEL_EVENTS                 {"events": [PanelEvent, ...]}: no reducer; what a bot gets
                                 as on_cascadeui_panel_* events, for store subscribers
    APPLICATION_SET              {"path": [k1, k2, ...], "value": v, "ttl": seconds
                                  (optional: the key expires; see EXPIRY_KEY)}
    APPLICATION_DELETE           {"path": [k1, k2, ...]}
    STATE_RESTORED               {"state": {"application": {...}, "persistent_views": {...}}}
    STATE_RELOADED               {"state": {...}, "base": {...} or absent, "paths": [...]}:
                                 another process changed the stored state; ``paths`` are
                                 the key paths it changed (see cascadeui._merge)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict

from ._merge import merge3
from .serializer import check_storable

__all__ = [
    "APPLICATION_DELETE",
    "APPLICATION_SET",
    "BATCH_APPLIED",
    "BUILTIN_REDUCERS",
    "EXPIRY_KEY",
    "PERSISTED_SLICES",
    "PANEL_EVENTS",
    "PERSISTENCE_VERIFIED",
    "PERSISTENT_VIEWS_REMOVED",
    "PERSISTENT_VIEW_REGISTERED",
    "PERSISTENT_VIEW_UNREGISTERED",
    "STATE_RELOADED",
    "STATE_RESTORED",
    "TRANSIENT_SLICES",
    "Action",
    "Reducer",
    "State",
    "delete_in",
    "set_in",
]

State = dict[str, Any]


class Action(TypedDict):
    """What a reducer receives: ``{"type": str, "payload": Any}``."""

    type: str
    payload: Any


#: ``fn(action, state) -> new_state``, plain or async.
Reducer = Callable[[Action, State], State | Awaitable[State]]

#: Slices written to the backend.
PERSISTED_SLICES = ("application", "persistent_views")
#: Slices that live in memory only: live view ids, sessions.
TRANSIENT_SLICES = ("views", "sessions")

PERSISTENT_VIEW_REGISTERED = "PERSISTENT_VIEW_REGISTERED"
PERSISTENT_VIEW_UNREGISTERED = "PERSISTENT_VIEW_UNREGISTERED"
PERSISTENT_VIEWS_REMOVED = "PERSISTENT_VIEWS_REMOVED"
#: Dispatched by setup_persistence when the background checks of restored panels end.
PERSISTENCE_VERIFIED = "PERSISTENCE_VERIFIED"
#: Dispatched (no reducer, subscribers only) with the panel life-cycle events
#: (``cascadeui._lifecycle.PanelEvent``: restored, removed, unreachable, persistence
#: error), also in data-only mode where no bot receives them.
PANEL_EVENTS = "CASCADEUI_PANEL_EVENTS"
APPLICATION_SET = "APPLICATION_SET"
APPLICATION_DELETE = "APPLICATION_DELETE"
#: Key of the ``application`` slice holding the stored schema version (docs/migrations.md);
#: replacing or clearing the whole slice keeps it, so a versioned state never looks old.
SCHEMA_KEY = "__schema_version__"
#: Key of the ``application`` slice holding when keys set with a ``ttl`` expire:
#: ``{json.dumps(path): ISO 8601 time}``. The expiry sweeper of ``setup_persistence``
#: deletes each such key, durably, once its time has passed.
EXPIRY_KEY = "__expires__"
STATE_RESTORED = "STATE_RESTORED"
STATE_RELOADED = "STATE_RELOADED"
#: The action subscribers receive once at the end of ``batch()`` (or when middleware
#: applied several actions in one dispatch): ``{"actions": [...]}`` in the order applied.
BATCH_APPLIED = "BATCH_APPLIED"

_ID_FIELDS = ("message_id", "channel_id", "guild_id", "user_id")


def _as_path(path: Any) -> tuple[Hashable, ...]:
    """Accept a list/tuple of keys, or one key on its own (a str is one key, not a path)."""
    if isinstance(path, (list, tuple)):
        return tuple(path)
    return (path,)


def set_in(mapping: Mapping[Any, Any], path: Sequence[Hashable], value: Any) -> dict[Any, Any]:
    """Return a copy of ``mapping`` with ``value`` at ``path``; only the path is copied.

    Missing dicts on the way are created. When the value already there *is* ``value``,
    ``mapping`` itself is returned (nothing changed, nothing to write).

    :param mapping: the dict to start from; never modified.
    :param path: the keys from the top, e.g. ``["guilds", "123", "prefix"]``; not empty.
    :param value: the new leaf.
    :raises ValueError: ``path`` is empty.
    :raises TypeError: a value on the way is not a dict (it would be silently replaced).
    """
    if not path:
        raise ValueError("set_in needs a non-empty path")
    key, rest = path[0], path[1:]
    if not rest:
        if key in mapping and mapping[key] is value:
            return dict(mapping) if type(mapping) is not dict else mapping
        new = dict(mapping)
        new[key] = value
        return new
    child = mapping.get(key)
    if child is None:
        child = {}
    elif not isinstance(child, Mapping):
        raise TypeError(f"cannot set {list(path)!r}: {key!r} holds a "
                        f"{type(child).__name__}, not a dict")
    new_child = set_in(child, rest, value)
    if new_child is child and key in mapping:
        return dict(mapping) if type(mapping) is not dict else mapping
    new = dict(mapping)
    new[key] = new_child
    return new


def delete_in(mapping: Mapping[Any, Any], path: Sequence[Hashable]) -> dict[Any, Any]:
    """Return a copy of ``mapping`` without the key at ``path``; only the path is copied.

    A missing key (or a non-dict on the way) changes nothing: ``mapping`` is returned.

    :param mapping: the dict to start from; never modified.
    :param path: the keys from the top; not empty.
    :raises ValueError: ``path`` is empty.
    """
    if not path:
        raise ValueError("delete_in needs a non-empty path")
    key, rest = path[0], path[1:]
    same = mapping if type(mapping) is dict else dict(mapping)
    if key not in mapping:
        return same
    if not rest:
        new = dict(mapping)
        del new[key]
        return new
    child = mapping[key]
    if not isinstance(child, Mapping):
        return same
    new_child = delete_in(child, rest)
    if new_child is child:
        return same
    new = dict(mapping)
    new[key] = new_child
    return new


def _payload(action: Action, *fields: str) -> Mapping[str, Any]:
    payload = action.get("payload")
    if not isinstance(payload, Mapping):
        raise TypeError(f"{action['type']} needs a dict payload with {', '.join(fields)}, "
                        f"not {type(payload).__name__}")
    missing = [f for f in fields if f not in payload]
    if missing:
        raise ValueError(f"{action['type']} payload is missing {', '.join(missing)}")
    return payload


def _id_text(value: Any) -> str | None:
    # Snowflakes are 64-bit: stored as decimal strings so any JSON consumer keeps them exact.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"ids must be decimal strings, ints or None, not {type(value).__name__}")


def _with_slice(state: State, name: str, new_slice: dict[str, Any]) -> State:
    if new_slice is state[name]:
        return state
    new = dict(state)
    new[name] = new_slice
    return new


def persistent_view_registered(action: Action, state: State) -> State:
    """Record a sent panel under ``state["persistent_views"][state_key]``."""
    payload = _payload(action, "state_key", "class_name")
    entry = {k: v for k, v in payload.items() if k != "state_key"}
    for field in _ID_FIELDS:
        entry[field] = _id_text(entry.get(field))
    views = set_in(state["persistent_views"], [payload["state_key"]], entry)
    return _with_slice(state, "persistent_views", views)


def persistent_view_unregistered(action: Action, state: State) -> State:
    """Forget one panel; an unknown key changes nothing."""
    payload = _payload(action, "state_key")
    views = delete_in(state["persistent_views"], [payload["state_key"]])
    return _with_slice(state, "persistent_views", views)


def persistent_views_removed(action: Action, state: State) -> State:
    """Forget several panels at once (one copy of the registry, however many keys).

    With ``payload["message_ids"]`` (``{state_key: message_id}``), an entry goes only if
    it still points at that message: a panel re-sent meanwhile is kept. With
    ``payload["data_paths"]`` (``{state_key: path}``), each removed panel's data at that
    path of the ``application`` slice goes in the same action (and only then).
    """
    payload = _payload(action, "state_keys")
    views = state["persistent_views"]
    expected = payload.get("message_ids")
    gone = [k for k in payload["state_keys"] if k in views and (
        not isinstance(expected, Mapping) or not isinstance(views[k], Mapping)
        or str(views[k].get("message_id")) == str(expected.get(k)))]
    if not gone:
        return state
    kept = dict(views)
    for key in gone:
        kept.pop(key, None)
    new = _with_slice(state, "persistent_views", kept)
    data = payload.get("data_paths")
    if isinstance(data, Mapping):  # the removed panels' data goes with their entries
        paths = [_as_path(data[key]) for key in gone if data.get(key)]
        new = _with_slice(new, "application", _delete_many(new["application"], paths))
    return new


def _delete_many(mapping: dict[str, Any], paths: list[tuple[Hashable, ...]]
                 ) -> dict[str, Any]:
    """``delete_in`` for many paths, copying each parent dict once (thousands of panels'
    data removed together stay linear)."""
    if len(paths) < 2:
        return delete_in(mapping, paths[0]) if paths else mapping
    leaves: dict[tuple[Hashable, ...], list[Hashable]] = {}
    for path in paths:
        if path and path[:1] != (SCHEMA_KEY,):
            leaves.setdefault(path[:-1], []).append(path[-1])
    new = mapping
    for parent, keys in leaves.items():
        found: Any = new
        for key in parent:
            found = found.get(key) if isinstance(found, Mapping) else None
        if not isinstance(found, Mapping) or not any(k in found for k in keys):
            continue
        kept = {k: v for k, v in found.items() if k not in set(keys)}
        new = set_in(new, parent, kept) if parent else kept
    return new


def _keep_schema(old: Mapping[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    if SCHEMA_KEY in old and SCHEMA_KEY not in new:
        return {**new, SCHEMA_KEY: old[SCHEMA_KEY]}
    return new


def application_set(action: Action, state: State) -> State:
    """Set ``state["application"][k1][k2]... = value``; an empty path replaces the slice.

    :raises SerializationError: the value cannot be stored (a type JSON cannot hold,
        NaN, nesting deeper than :data:`~cascadeui.serializer.MAX_DEPTH` levels from the
        top of the state); nothing is applied: no later write could ever succeed.
    """
    payload = _payload(action, "path", "value")
    path = _as_path(payload["path"])
    value = payload["value"]
    if path[:1] == (SCHEMA_KEY,):
        raise ValueError(f"application.{SCHEMA_KEY} is the stored schema version, kept by "
                         "cascadeui: pass version= and migrations= instead")
    if path[:1] == (EXPIRY_KEY,):
        raise ValueError(f"application.{EXPIRY_KEY} holds expiry times, kept by cascadeui: "
                         "pass ttl= with the value instead")
    # What whole writes enforce, checked here, so that the state this change builds can
    # always be written whole again (one bad value would otherwise fail every later write).
    check_storable(value, ("application", *path))
    if not path:
        if not isinstance(value, dict):
            raise TypeError("APPLICATION_SET with an empty path needs a dict value")
        return _with_slice(state, "application", _keep_schema(state["application"], value))
    app = _expire(set_in(state["application"], path, value), path, payload.get("ttl"))
    return _with_slice(state, "application", app)


def _expire(app: dict[str, Any], path: tuple[Hashable, ...], ttl: Any) -> dict[str, Any]:
    """Record when ``path`` expires (``ttl`` seconds from now), or forget its expiry (no
    ``ttl``: a key set again lives until set with one)."""
    key = json.dumps(list(path))
    if ttl is None:
        expiry = app.get(EXPIRY_KEY)
        return (delete_in(app, [EXPIRY_KEY, key])
                if isinstance(expiry, Mapping) and key in expiry else app)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"APPLICATION_SET ttl must be a number of seconds > 0, not {ttl!r}")
    when = datetime.now(timezone.utc) + timedelta(seconds=ttl)
    return set_in(app, [EXPIRY_KEY, key], when.isoformat())


def application_delete(action: Action, state: State) -> State:
    """Delete ``state["application"][k1][k2]...`` if present; an empty path clears it.
    The schema version is kept: a ``/reset`` deleting every key leaves it in place."""
    payload = _payload(action, "path")
    path = _as_path(payload["path"])
    if path[:1] == (SCHEMA_KEY,):
        return state  # the schema version is not application data (issue 21): kept
    if not path:
        kept = _keep_schema(state["application"], {})
        return _with_slice(state, "application", kept) if state["application"] != kept else state
    return _with_slice(state, "application",
                       _expire(delete_in(state["application"], path), path, None))


def state_restored(action: Action, state: State) -> State:
    """Replace the persisted slices present in ``payload["state"]``; others are kept."""
    payload = _payload(action, "state")
    stored = payload["state"]
    if not isinstance(stored, Mapping):
        raise TypeError(f"{action['type']} needs payload['state'] to be a dict")
    new = state
    for name in PERSISTED_SLICES:
        if name not in stored:
            continue
        value = stored[name]
        if not isinstance(value, dict):
            raise TypeError(f"stored slice {name!r} is a {type(value).__name__}, not a dict")
        new = _with_slice(new, name, value)
    return new


def state_reloaded(action: Action, state: State) -> State:
    """Install persisted slices another process changed, keeping newer local changes.

    ``payload["state"]`` holds the slices to install. When ``payload["base"]`` is given
    (the slices the reload was computed from), a slice that changed in memory since then
    keeps those changes on top (a three-way merge); otherwise it is replaced.
    """
    payload = _payload(action, "state")
    base = payload.get("base")
    if not isinstance(base, Mapping):
        return state_restored(action, state)
    stored = payload["state"]
    new = state
    for name in PERSISTED_SLICES:
        if name not in stored:
            continue
        current = state[name]
        if name in base and current is not base[name]:
            value = merge3(base[name], current, stored[name]).merged
        else:
            value = stored[name]
        new = _with_slice(new, name, value)
    return new


#: Registered in every store, in this order, at construction.
BUILTIN_REDUCERS: dict[str, Reducer] = {
    PERSISTENT_VIEW_REGISTERED: persistent_view_registered,
    PERSISTENT_VIEW_UNREGISTERED: persistent_view_unregistered,
    PERSISTENT_VIEWS_REMOVED: persistent_views_removed,
    APPLICATION_SET: application_set,
    APPLICATION_DELETE: application_delete,
    STATE_RESTORED: state_restored,
    STATE_RELOADED: state_reloaded,
}
