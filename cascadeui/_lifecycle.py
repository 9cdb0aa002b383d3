"""A panel's life after it is sent: removals seen live, and the events that tell the bot.

:func:`watch` (called by ``setup_persistence``) adds listeners for discord.py's events that
end a panel for good: its message deleted (one or in bulk), its channel or thread
deleted, the bot removed from its guild (``on_guild_remove``; an outage is
``on_guild_unavailable`` and removes nothing). :func:`remove` drops such panels' registry
entries and their data in one durable action, unroutes their views and reports each with
a :class:`PanelEvent`: ``bot.dispatch("cascadeui_panel_removed", event)``, and for the
store's subscribers one :data:`~cascadeui.actions.PANEL_EVENTS` action (data-only mode
has no bot). A bot running some shards only gets its own shards' events.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._entries import parse_id
from ._kinds import PanelKind, aliases_of, class_and_kind, registered
from ._panel_data import PANELS_KEY
from .actions import APPLICATION_DELETE, APPLICATION_SET, PANEL_EVENTS, PERSISTENT_VIEWS_REMOVED

__all__ = ["PANEL_REMOVED", "PANEL_RESTORED", "PANEL_UNREACHABLE", "PERSISTENCE_ERROR",
           "REASONS", "PanelEvent", "adopt_aliases", "bind_bot", "bot_of", "emit",
           "panel_event", "remove", "watch"]

log: logging.Logger = logging.getLogger(__name__)

#: Event names, for ``bot.dispatch`` (a bot handles ``on_<name>``).
PANEL_RESTORED = "cascadeui_panel_restored"
PANEL_REMOVED = "cascadeui_panel_removed"
PANEL_UNREACHABLE = "cascadeui_panel_unreachable"
PERSISTENCE_ERROR = "cascadeui_persistence_error"

#: Why a panel was removed (``PanelEvent.reason`` of a removed event).
REASONS = frozenset({"message_deleted", "channel_deleted", "guild_removed", "not_found",
                     "unreachable_expired", "expired", "deleted"})


@dataclass(frozen=True)
class PanelEvent:
    """What happened to one panel; the argument of every ``on_cascadeui_*`` event.

    ``reason`` of a removal is one of :data:`REASONS`; a restored panel has
    ``"restored"``, an unreachable one ``"unreachable"``. ``error`` is set on a
    persistence error (the change stays applied in memory and the writer retries it).
    """

    event: str
    state_key: str
    class_name: str | None
    message_id: int | None
    channel_id: int | None
    guild_id: int | None
    reason: str
    error: BaseException | None = None
    #: When the panel was first found unreachable (unreachable events).
    unreachable_since: datetime | None = None


def _id(entry: Mapping[str, Any], name: str) -> int | None:
    try:
        return parse_id(entry.get(name), optional=True)
    except ValueError:
        return None


def panel_event(event: str, state_key: str, entry: Any, reason: str, **extra: Any,
                ) -> PanelEvent:
    """The event for a panel from its registry entry (ids read leniently)."""
    entry = entry if isinstance(entry, Mapping) else {}
    name = entry.get("class_name")
    return PanelEvent(event, state_key, name if isinstance(name, str) else None,
                      _id(entry, "message_id"), _id(entry, "channel_id"),
                      _id(entry, "guild_id"), reason, **extra)


async def emit(bot: Any, store: Any, events: Sequence[PanelEvent]) -> None:
    """Dispatch ``events`` to the bot (``on_<event>``) and, as one action, to the store's
    subscribers; a failing subscriber is the store's to log."""
    if not events:
        return
    if bot is not None:
        for event in events:
            bot.dispatch(event.event, event)
    await store.dispatch(PANEL_EVENTS, {"events": list(events)})


def data_root(entry: Any) -> str:
    """Where the panel of a registry entry keeps its data (its kind's ``data_root``)."""
    found = class_and_kind(entry.get("class_name")) if isinstance(entry, Mapping) else None
    return found[1].data_root if found is not None and found[1].message_bound else PANELS_KEY


def _same(current: Any, entry: Any) -> bool:
    return (isinstance(current, Mapping) and isinstance(entry, Mapping)
            and str(current.get("message_id")) == str(entry.get("message_id")))


async def remove(bot: Any, store: Any, gone: Iterable[tuple[str, Any]], reason: str,
                 ) -> list[str]:
    """Remove panels for good: registry entry and data in one action, made durable, the
    views unrouted, one removed event each; returns the keys removed.

    A key whose entry now points at another message (re-sent meanwhile) is left alone.
    A write that does not become durable is reported as a persistence error event (the
    writer keeps retrying it).
    """
    views = store.state["persistent_views"]
    chosen = [(key, views[key]) for key, entry in gone if _same(views.get(key), entry)]
    if not chosen:
        return []
    await store.dispatch(PERSISTENT_VIEWS_REMOVED, {
        "state_keys": [key for key, _ in chosen],
        "message_ids": {key: str(entry.get("message_id")) for key, entry in chosen},
        "data_paths": {key: [data_root(entry), key] for key, entry in chosen}})
    if bot is not None:
        for key, entry in chosen:
            _unroute(bot, store, key, entry)
    events = [panel_event(PANEL_REMOVED, key, entry, reason) for key, entry in chosen]
    try:
        await store.wait_durable()
    except Exception as exc:
        log.warning("the removal of %d panels (%s) is not durable yet: %s; the writer "
                    "retries", len(chosen), reason, exc)
        events += [panel_event(PERSISTENCE_ERROR, key, entry, reason, error=exc)
                   for key, entry in chosen]
    await emit(bot, store, events)
    return [key for key, _ in chosen]


def _unroute(bot: Any, store: Any, state_key: str, entry: Mapping[str, Any]) -> None:
    found = class_and_kind(entry.get("class_name"))
    message_id = _id(entry, "message_id")
    if found is not None and message_id is not None:
        found[1].unroute(bot, store, state_key, message_id)


def _at(state: Any, path: Sequence[str]) -> Any:
    for key in path:
        state = state.get(key) if isinstance(state, Mapping) else None
    return state


async def adopt_aliases(store: Any, classes: Iterable[tuple[type, PanelKind]] | None = None,
                        ) -> None:
    """Move the per-class data of renamed classes (``aliases=``) from a former name to the
    class's name; data under both names is left alone, with a WARNING."""
    app = store.state["application"]
    for cls, kind in registered() if classes is None else classes:
        new = kind.class_data_path(cls.__name__)
        for alias in aliases_of(cls.__name__) if new is not None else ():
            old = kind.class_data_path(alias)
            found = _at(app, old) if old is not None else None
            if old is None or new is None or found is None:
                continue
            if _at(app, new) is not None:
                log.warning("%s keeps data under its name and its alias %r; the alias's "
                            "data is left where it is", cls.__name__, alias)
                continue
            async with store.batch():
                await store.dispatch(APPLICATION_SET, {"path": new, "value": found})
                await store.dispatch(APPLICATION_DELETE, {"path": old})
            log.info("%s: data stored under its alias %r moved to its name", cls.__name__,
                     alias)
            app = store.state["application"]


class _Index:
    """Registry entries by message, channel and guild id, rebuilt when the registry
    slice changes (structural sharing: a changed slice is a new object)."""

    def __init__(self) -> None:
        self._slice: Any = None
        self.by: dict[str, dict[str, list[str]]] = {}

    def keys(self, views: Mapping[str, Any], field: str, ids: Iterable[int]) -> list[str]:
        if views is not self._slice:
            by: dict[str, dict[str, list[str]]] = {
                "message_id": {}, "channel_id": {}, "guild_id": {}}
            for key, entry in views.items():
                if isinstance(entry, Mapping):
                    for name, table in by.items():
                        value = entry.get(name)
                        if value is not None:
                            table.setdefault(str(value), []).append(key)
            self._slice, self.by = views, by
        table = self.by[field]
        return [key for i in ids for key in table.get(str(i), ())]


class _Watcher:
    """The listeners of one bot: each gone message, channel or guild removes its panels."""

    def __init__(self, bot: Any, store: Any, owns: Callable[[Any], bool] | None) -> None:
        self.bot, self.store, self.owns = bot, store, owns
        self.index = _Index()

    async def _gone(self, field: str, ids: Iterable[int], reason: str) -> None:
        views = self.store.state["persistent_views"]
        keys = self.index.keys(views, field, ids)
        gone = [(key, views[key]) for key in keys
                if self.owns is None or self.owns(views[key])]
        if gone:
            removed = await remove(self.bot, self.store, gone, reason)
            log.info("%d panels removed (%s)", len(removed), reason)

    async def on_raw_message_delete(self, payload: Any) -> None:
        await self._gone("message_id", [payload.message_id], "message_deleted")

    async def on_raw_bulk_message_delete(self, payload: Any) -> None:
        await self._gone("message_id", payload.message_ids, "message_deleted")

    async def on_guild_channel_delete(self, channel: Any) -> None:
        await self._gone("channel_id", [channel.id], "channel_deleted")

    async def on_raw_thread_delete(self, payload: Any) -> None:
        await self._gone("channel_id", [payload.thread_id], "channel_deleted")

    async def on_guild_remove(self, guild: Any) -> None:
        await self._gone("guild_id", [guild.id], "guild_removed")

    def listeners(self) -> dict[str, Callable[..., Awaitable[None]]]:
        return {"on_raw_message_delete": self.on_raw_message_delete,
                "on_raw_bulk_message_delete": self.on_raw_bulk_message_delete,
                "on_guild_channel_delete": self.on_guild_channel_delete,
                "on_raw_thread_delete": self.on_raw_thread_delete,
                "on_guild_remove": self.on_guild_remove}


_WATCHED: weakref.WeakKeyDictionary[Any, _Watcher] = weakref.WeakKeyDictionary()
# store -> the bot setup_persistence gave it (events of code paths that know no bot)
_BOT_OF: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def bind_bot(store: Any, bot: Any) -> None:
    """Remember ``bot`` as the receiver of ``store``'s panel events (:func:`bot_of`)."""
    _BOT_OF[store] = bot


def bot_of(store: Any) -> Any:
    """The bot ``setup_persistence`` bound to ``store``, or None (data-only mode)."""
    return _BOT_OF.get(store)
_LISTENER_TASKS: set[asyncio.Task[None]] = set()


def watch(bot: Any, store: Any, owns: Callable[[Any], bool] | None) -> None:
    """Remove ``bot``'s panels when discord.py reports them gone (idempotent per bot).

    A ``commands.Bot`` gets the listeners through ``add_listener``, so the bot's own
    ``on_raw_message_delete`` (and the others) still run; a plain ``discord.Client``,
    which has no listeners, gets its gateway dispatch extended instead.

    :param owns: True for the entries of this process's shards (None: every entry).
    """
    watcher = _WATCHED.get(bot)
    if watcher is not None:
        watcher.store, watcher.owns = store, owns
        return
    watcher = _Watcher(bot, store, owns)
    _WATCHED[bot] = watcher
    listeners = watcher.listeners()
    add = getattr(bot, "add_listener", None)
    if add is not None:
        for name, fn in listeners.items():
            add(fn, name)
        return
    # The gateway's events reach a Client through its connection state's ``dispatch``
    # (bound at construction), so that is the one to extend.
    connection = bot._connection
    original = connection.dispatch

    def dispatch(event: str, /, *args: Any, **kwargs: Any) -> None:
        original(event, *args, **kwargs)
        fn = listeners.get(f"on_{event}")
        if fn is not None:
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
                _run(fn, *args))
            _LISTENER_TASKS.add(task)
            task.add_done_callback(_LISTENER_TASKS.discard)

    connection.dispatch = dispatch


async def _run(fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    await fn(*args)
