"""Expiry: a panel sent with a ``ttl`` is disabled on its message, then removed.

A panel class's ``ttl`` (or ``send(..., ttl=)``) stores ``expires_at`` in the registry
entry. :func:`sweeper` (started by ``setup_persistence`` with a bot) sweeps at start and
every ``sweep_interval`` seconds: each expired panel of this process's shards has its
components disabled on its message (one edit, paced with the message checks), then its
entry and data are removed durably (reason ``"expired"``). Application keys set with a
``ttl`` (``APPLICATION_SET`` payload ``{"path", "value", "ttl": seconds}``, recorded
under ``application["__expires__"]``) are deleted by the same sweeps, durably.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import discord

from ._kinds import class_and_kind
from ._lifecycle import remove
from ._verify import Pacer
from .actions import APPLICATION_DELETE, EXPIRY_KEY
from .store import StateStore
from .views import EXPIRES_FIELD

__all__ = ["DEFAULT_SWEEP_INTERVAL", "expires_at", "sweep", "sweep_data", "sweeper"]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds between two sweeps by default.
DEFAULT_SWEEP_INTERVAL = 60.0


def expires_at(entry: Any) -> datetime | None:
    """When the panel of a registry entry expires; None for never (or unreadable)."""
    text = entry.get(EXPIRES_FIELD) if isinstance(entry, Mapping) else None
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return when if when is None or when.tzinfo else when.replace(tzinfo=timezone.utc)


async def sweep(bot: discord.Client, store: StateStore, owns: Callable[[Any], bool] | None,
                pacer: Pacer) -> list[str]:
    """Disable and remove every expired panel of our shards; the keys removed."""
    now = datetime.now(timezone.utc)
    due = [(key, entry) for key, entry in store.state["persistent_views"].items()
           if (when := expires_at(entry)) is not None and when <= now
           and (owns is None or owns(entry))]
    for key, entry in due:
        found = class_and_kind(entry.get("class_name"))
        if found is None:
            continue
        await pacer.wait()
        try:
            await found[1].disable(bot, store, key, int(entry["message_id"]))
        except (discord.HTTPException, ValueError, KeyError) as exc:
            log.info("expired panel %r: its components could not be disabled (%s); "
                     "removed anyway", key, exc)
    removed = await remove(bot, store, due, "expired")
    if removed:
        log.info("%d expired panels removed", len(removed))
    await sweep_data(store)
    return removed


async def sweep_data(store: StateStore) -> list[list[Any]]:
    """Delete, durably, every application key whose ``ttl`` is over; the paths deleted.

    Any process may sweep: deleting a key already gone changes nothing, and the deletion
    reaches every process through the store like any other change.
    """
    expiry = store.state["application"].get(EXPIRY_KEY)
    if not isinstance(expiry, Mapping):
        return []
    now = datetime.now(timezone.utc)
    due: list[list[Any]] = []
    for key, text in expiry.items():
        when = expires_at({EXPIRES_FIELD: text})
        if when is not None and when <= now:
            try:
                path = json.loads(key)
            except ValueError:
                path = None
            if isinstance(path, list) and path:
                due.append(path)
    if due:
        async with store.batch():
            for path in due:
                await store.dispatch(APPLICATION_DELETE, {"path": path})
        await store.wait_durable()
        log.info("%d expired application keys deleted", len(due))
    return due


async def sweeper(bot: discord.Client, store: StateStore, owns: Callable[[Any], bool] | None,
                  pacer: Pacer, interval: float) -> None:
    """Sweep now and every ``interval`` seconds until the bot closes (its close cancels
    this task); a failed sweep is logged and the next one runs."""
    while not bot.is_closed():
        try:
            await sweep(bot, store, owns, pacer)
        except Exception:
            log.exception("sweeping expired panels failed; retrying in %.0fs", interval)
        await asyncio.sleep(interval)
