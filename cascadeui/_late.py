"""Late registration: a panel class defined after ``setup_persistence`` restores at once.

A cog loaded after the start, or an extension reloaded, defines its panel classes when
the bot already runs. :func:`follow` (called by ``setup_persistence``) makes every later
registration, of any kind, restore that class's stored panels right away with the same
attach, checks and pacing as the start: a class-routed kind is routed (``DynamicPanel``:
``bot.add_dynamic_items``), a message-bound one has its entries (under its name or an
alias) rebuilt, routed and checked. Registering again is idempotent: panels already
routing by that class are not rebuilt or fetched again.

At the end of a start, stored panels whose class is still not registered get one WARNING
per class, whatever the kind, naming the class and the fix (:func:`warn_unknown`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import discord

from ._attach import attach
from ._kinds import PanelKind, aliases_of, all_kinds, class_and_kind, on_register
from ._lifecycle import adopt_aliases
from ._verify import LISTS, Lists, Pacer, track, verify
from .store import StateStore

__all__ = ["Follow", "follow", "restore_class", "unknown_classes", "warn_unknown"]

log: logging.Logger = logging.getLogger(__name__)


@dataclass
class Follow:
    """What a late registration restores with: the start's store, shards and settings."""

    store: StateStore
    owns: Callable[[Any], bool] | None
    concurrency: int
    fetch_timeout: float
    pacer: Pacer
    unreachable_ttl: timedelta | None
    loop: asyncio.AbstractEventLoop


_FOLLOWED: weakref.WeakKeyDictionary[discord.Client, Follow] = weakref.WeakKeyDictionary()


def follow(bot: discord.Client, settings: Follow) -> None:
    """Restore each class registered from now on for ``bot`` (the latest settings win)."""
    _FOLLOWED[bot] = settings
    on_register(_registered)


def _registered(cls: type, kind: PanelKind) -> None:
    """A class was just registered: restore its panels in every followed bot's loop."""
    for bot, settings in list(_FOLLOWED.items()):
        if bot.is_closed():
            continue
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is settings.loop:
            _start(bot, settings, cls, kind)
        else:  # defined in another thread: hand it to the bot's loop
            settings.loop.call_soon_threadsafe(_start, bot, settings, cls, kind)


def _start(bot: discord.Client, settings: Follow, cls: type, kind: PanelKind) -> None:
    task = asyncio.get_running_loop().create_task(
        restore_class(bot, settings, cls, kind), name=f"cascadeui-late-{cls.__name__}")
    track(task, bot)


async def restore_class(bot: discord.Client, settings: Follow, cls: type,
                        kind: PanelKind) -> Lists:
    """Restore the stored panels of one newly registered class; the four lists."""
    store = settings.store
    await adopt_aliases(store, [(cls, kind)])
    if not kind.message_bound:
        kind.route_class(bot, cls, store)
        log.info("late registration: %s panels of %s route again", kind.name, cls.__name__)
        return {name: [] for name in LISTS}
    names = frozenset([cls.__name__, *aliases_of(cls.__name__)])
    known, pending = await attach(bot, store, settings.owns, [], classes=names)
    result = await verify(bot, store, known, pending, {}, concurrency=settings.concurrency,
                          fetch_timeout=settings.fetch_timeout, rate_limit=None,
                          unreachable_ttl=settings.unreachable_ttl, pacer=settings.pacer)
    log.info("late registration of %s: %d restored, %d failed, %d removed", cls.__name__,
             len(result["restored"]), len(result["failed"]), len(result["removed"]))
    return result


def unknown_classes(state: Mapping[str, Any], owns: Callable[[Any], bool] | None,
                    ) -> dict[str, list[str]]:
    """Class name -> what is stored for it (state keys, or ``kind:data``) while no class
    by that name or alias is registered."""
    found: dict[str, list[str]] = {}
    for key, entry in state["persistent_views"].items():
        name = entry.get("class_name") if isinstance(entry, Mapping) else None
        if isinstance(name, str) and class_and_kind(name) is None and (
                owns is None or owns(entry)):
            found.setdefault(name, []).append(key)
    for kind in all_kinds():
        for name in kind.stored_classes(state["application"]):
            if class_and_kind(name) is None:
                found.setdefault(name, []).append(f"{kind.data_root} data")
    return found


def warn_unknown(state: Mapping[str, Any], owns: Callable[[Any], bool] | None) -> None:
    """At the end of a start: one WARNING per stored class that is not registered."""
    for name, what in sorted(unknown_classes(state, owns).items()):
        shown = ", ".join(repr(w) for w in what[:5]) + (" ..." if len(what) > 5 else "")
        log.warning("panel class %r is not registered: %d stored panels (%s) get no answer "
                    "to their clicks; load the cog or import the module defining %s (a "
                    "class registered later restores them at once), or, if it was renamed, "
                    "name %r in aliases= of the new class. They are kept.", name, len(what),
                    shown, name, name)
