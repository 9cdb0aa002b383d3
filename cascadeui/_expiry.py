"""Expiry: a panel sent with a ``ttl`` is disabled on its message, then removed.

A panel class's ``ttl`` (or ``send(..., ttl=)``) stores ``expires_at`` in the registry
entry. :func:`sweeper` (started by ``setup_persistence`` with a bot) sweeps at start and
every ``sweep_interval`` seconds: each expired panel of this process's shards has its
components disabled on its message (one edit, paced with the message checks), then its
entry and data are removed durably (reason ``"expired"``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import discord

from ._kinds import class_and_kind
from ._lifecycle import remove
from ._verify import Pacer
from .store import StateStore
from .views import EXPIRES_FIELD

__all__ = ["DEFAULT_SWEEP_INTERVAL", "expires_at", "sweep", "sweeper"]

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
    return removed


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
