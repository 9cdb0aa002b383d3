"""``setup_persistence(bot)``: enable persistence, restore the state, re-attach every panel.

Restoring runs in two phases so that clicks route as early as possible:

1. **Attach** (no HTTP): every well-formed entry whose class is registered is rebuilt and
   registered with ``bot.add_view(view, message_id=...)`` at once, so its clicks route
   from this moment on.
2. **Verify**: each attached panel's message is fetched directly
   (``GET /channels/{channel_id}/messages/{message_id}``: one request, no channel fetch),
   ``concurrency`` at a time, interleaved across channels and paced under Discord's global
   rate limit (``rate_limit`` requests per second). A panel whose channel or message is
   gone for good is unrouted again (``view.stop()``, which removes it from discord.py's
   view store) and purged from state; any other failure keeps both the entry and the
   routing, because the message may well be fine.

By default (``verify="auto"``) the call waits for phase 2 at most ``verify_budget`` seconds
(1.5) from its start and lets the rest of the checks run in a task, so a bot with
thousands of panels still connects to the gateway at once; ``verify="await"`` waits for
every check and ``verify="background"`` does not wait at all (see
:func:`setup_persistence`). The final lists sort every state key into exactly one of:

- ``restored``: rebuilt with its identity, registered with ``bot.add_view``, message seen;
- ``skipped``: its class is not registered (a module not imported yet); kept in state;
- ``removed``: Discord answered 404 Unknown Channel (10003) or Unknown Message (10008):
  unrouted, purged from state, and the purge is flushed to the backend;
- ``failed``: anything else (403, 5xx, a timeout, a network error, a constructor or
  validation error, a malformed entry); kept for the next start. Lost access (403, 5xx,
  timeouts) is recorded in the entry and removes the panel only after
  ``unreachable_ttl`` (:mod:`cascadeui._verify`).

A bot that runs only some of the shards (``shard_ids``/``shard_count`` on an
``AutoShardedClient``, ``shard_id``/``shard_count`` on a ``Client``) restores only the
panels whose guild lives on its shards (``(guild_id >> 22) % shard_count``; panels without
a guild, and entries too malformed to tell, belong to shard 0). Other shards' panels are
left untouched in the registry for the cluster that runs them, and this process paces its
checks at its shards' share of the global limit, so all clusters together stay under it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import anyio.to_thread
import discord

from . import _late, _lifecycle
from ._attach import attach
from ._backends import FileStorageBackend, StorageBackend, aclose_backend, location_of
from ._entries import entry_identity
from ._entries import parse_id as _parse_id
from ._expiry import DEFAULT_SWEEP_INTERVAL, sweeper
from ._kinds import registered
from ._targets import resolve
from ._verify import LISTS, RESTORE_FAILED, TASKS, Lists, Outcome, Pacer, track
from ._verify import verify as verify_panels
from .actions import PERSISTENCE_VERIFIED
from .adapters import SyncStore
from .migrations import Migration, check_migrations
from .store import StateStore, get_store

__all__ = ["DEFAULT_FILE", "DEFAULT_RATE_LIMIT", "DEFAULT_VERIFY_BUDGET", "PERSISTENCE_VERIFIED",
           "RESTORE_FAILED", "RestoreSummary", "panel_shard", "setup_persistence"]

log: logging.Logger = logging.getLogger(__name__)

#: The JSON file used when neither ``file_path`` nor ``backend`` is given.
DEFAULT_FILE = "cascadeui_state.json"
#: Dispatched (no reducer, subscribers only) once every attached panel's message has been
#: checked, in both verify modes: payload ``{"restored", "skipped", "failed", "removed"}``,
#: the final four lists (the purge, if any, is already applied).
#: Message checks per second by default: under Discord's global limit of 50 requests per
#: second, leaving room for the bot's other requests.
DEFAULT_RATE_LIMIT = 45.0
#: Seconds from the start of :func:`setup_persistence` that ``verify="auto"`` waits for the
#: message checks before returning (the bot is offline until ``setup_hook`` returns).
DEFAULT_VERIFY_BUDGET = 1.5

#: How long a panel may stay unreachable (403, 5xx, timeouts at every start's check)
#: before it is removed.
DEFAULT_UNREACHABLE_TTL = timedelta(days=14)
_LISTS = LISTS

Verify = Literal["auto", "await", "background"]

# bot -> the store whose close is chained to the bot's close
_WRAPPED: weakref.WeakKeyDictionary[discord.Client, StateStore] = weakref.WeakKeyDictionary()
_TASKS = TASKS  # our tasks for a bot: its close cancels them


class RestoreSummary(dict[str, list[str]]):
    """What :func:`setup_persistence` returns: exactly the four lists, plus attributes.

    ``verification`` is the task that checks the attached panels' messages. When it is
    done at return (always with ``verify="await"``) the lists are final; otherwise
    ``await summary.verification`` gives the final four lists (a plain dict, the same
    payload as the :data:`PERSISTENCE_VERIFIED` action). It is None without a bot.
    Closing the bot cancels it (awaiting it then raises ``asyncio.CancelledError``;
    nothing is purged).

    ``unverified`` names the panels listed under ``restored`` whose message check had
    not finished at return: they route clicks, and the check may still find them gone.
    ``other_shards`` names the registry entries left to the clusters running other shards.
    """

    verification: asyncio.Task[Lists] | None = None
    unverified: list[str]
    other_shards: list[str]
    #: Names of the :class:`~cascadeui.dynamic.DynamicPanel` classes registered with
    #: ``bot.add_dynamic_items`` (no request: they route by ``custom_id`` template).
    dynamic_items: list[str]
    #: Every class routed as a whole (no registry entries, no request), by kind name:
    #: ``{"dynamic": [...], ...}``.
    routed_classes: dict[str, list[str]]

    def __init__(self, lists: Mapping[str, list[str]] | None = None) -> None:
        super().__init__(lists or {name: [] for name in _LISTS})
        self.unverified = []
        self.other_shards = []
        self.dynamic_items = []
        self.routed_classes = {}


@dataclass(frozen=True)
class _Shards:
    """The shards this process runs, out of ``count``."""

    ids: frozenset[int]
    count: int

    def owns(self, entry: Any) -> bool:
        return panel_shard(entry, self.count) in self.ids


def panel_shard(entry: Any, shard_count: int) -> int:
    """The shard a registry entry's panel belongs to: its guild's, or 0 without a guild.

    Discord's formula, ``(guild_id >> 22) % shard_count``. An entry without a valid guild
    id (a DM panel, or a malformed entry that some cluster has to report) belongs to shard
    0, so every entry has exactly one owner.
    """
    try:
        guild_id = _parse_id(entry.get("guild_id") if isinstance(entry, Mapping) else None,
                             optional=True)
    except ValueError:
        guild_id = None
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


def _shards_of(bot: discord.Client) -> _Shards | None:
    """The shards ``bot`` runs when it runs only some of them; None for all of them.

    ``AutoShardedClient`` has ``shard_ids`` (None: every shard); a plain ``Client`` has
    ``shard_id``. A ``shard_count`` of None (decided by Discord at connect, after
    ``setup_hook``) or 1 means this process runs everything.
    """
    count = getattr(bot, "shard_count", None)
    if not isinstance(count, int) or count <= 1:
        return None
    ids: list[int] | None = getattr(bot, "shard_ids", None)
    shard_id = getattr(bot, "shard_id", None)
    if ids is None and isinstance(shard_id, int):
        ids = [shard_id]
    if ids is None:
        return None
    owned = frozenset(int(i) for i in ids)
    if not owned or not all(0 <= i < count for i in owned):
        raise ValueError(f"shard ids {sorted(owned)} do not fit shard_count={count}")
    return None if len(owned) == count else _Shards(owned, count)


async def setup_persistence(
    bot: discord.Client | None = None, *,
    file_path: str | os.PathLike[str] | None = None,
    backend: StorageBackend | SyncStore | str | os.PathLike[str] | None = None,
    store: StateStore | None = None,
    concurrency: int = 50,
    fetch_timeout: float = 10.0,
    rate_limit: float | None = DEFAULT_RATE_LIMIT,
    verify: Verify = "auto",
    verify_budget: float = DEFAULT_VERIFY_BUDGET,
    rate_share: float | None = None,
    durable_timeout: float = 2.5,
    version: int | None = None,
    migrations: Mapping[int, Migration] | None = None,
    strict_version: bool = False,
    track_deletions: bool = True,
    unreachable_ttl: timedelta | float | None = DEFAULT_UNREACHABLE_TTL,
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
) -> RestoreSummary:
    """Enable persistence, restore the state, and with a bot re-attach every panel.

    Call it once in ``setup_hook``, after loading cogs (so panel classes are registered).
    Calling it again is harmless: persistence stays on its first backend and panels that
    already route clicks are reported as restored without another request.

    Every registered panel routes clicks before the first message check is sent; a panel
    whose message turns out to be gone is unrouted and purged afterwards. A bot running
    only some shards restores only its shards' panels (see the module docstring).

    :param bot: a ``discord.Client`` / ``commands.Bot``; None restores data only.
    :param file_path: a JSON file (:class:`~cascadeui.persistence.FileStorageBackend`).
    :param backend: any storage backend, a synchronous adapter, or a path/URL string (as
        ``backend_from_url`` takes it; closed with the bot). Neither given:
        ``cascadeui_state.json`` in the current directory.
    :param store: the store to use; the process-wide :func:`~cascadeui.store.get_store`
        by default.
    :param concurrency: message checks in flight at once.
    :param fetch_timeout: seconds one message check may take (counted from the moment it
        is handed to discord.py) before it counts as failed.
    :param rate_limit: message checks started per second at most (45 by default: under
        Discord's global 50 requests per second, so a large restore gets no HTTP 429s;
        Discord bans an IP for a while after 10,000 invalid requests in 10 minutes).
        None disables pacing (only for an API without a global limit, e.g. a test double).
        This is the budget of all the bot's processes together: see ``rate_share``.
    :param verify: ``"auto"`` (default): wait for the message checks until
        ``verify_budget`` seconds after the call started, then return and let the rest go
        on in ``summary.verification`` (the bot cannot connect while ``setup_hook`` runs,
        so a long wait keeps it offline). ``"await"``: return once every message was
        checked. ``"background"``: return right after attaching. When the checks are not
        finished at return, the summary lists the panels checked so far under their
        outcome and every other attached panel (it routes clicks) under ``restored``,
        named again in ``summary.unverified``; when the checks end, gone panels are
        purged and :data:`PERSISTENCE_VERIFIED` is dispatched with the final lists.
    :param verify_budget: seconds, from the start of the call, that ``verify="auto"``
        waits for the checks.
    :param rate_share: this process's share of ``rate_limit`` (0 < share <= 1). By
        default the fraction of the shards it runs (``len(shard_ids) / shard_count``), or
        1 for a bot that runs every shard, so clusters together stay under the limit.
    :param durable_timeout: seconds a durable change (``set_data``, the panel helpers,
        ``dispatch(..., durable=True)``) may wait for the backend before it raises
        :class:`~cascadeui.errors.DurabilityTimeoutError` (see
        :meth:`~cascadeui.store.StateStore.enable_persistence`).
    :param version: the schema version this code writes; the stored state is migrated to
        it first, once, by one process (see ``docs/migrations.md``). None: unversioned.
    :param migrations: ``{k: fn}``, ``fn(document) -> document`` upgrading the persisted
        document to version ``k``, for every k in 1..``version`` (later keys are ignored).
    :param strict_version: without ``version``, refuse a stored state that has a schema
        version (by default a WARNING names it and the start goes on).
    :param track_deletions: remove a panel's entry and data, durably, as soon as the bot
        sees its message, channel or thread deleted or is removed from its guild (events
        of this process's shards; see ``docs/panels.md``, "Life of a panel"). False: only
        a restart's message check finds them gone.
    :param unreachable_ttl: how long (a ``timedelta`` or seconds) a panel whose message
        check keeps failing with 403, 5xx or a timeout stays before a check removes it
        (default 14 days). Such a panel stays routed and its entry records
        ``unreachable_since``; a check that reaches it clears that. None: never removed.
    :param sweep_interval: seconds between two sweeps for expired panels (a panel's
        ``ttl``; the first sweep runs at start): each is disabled on its message, then
        removed (this process's shards only).
    :returns: a :class:`RestoreSummary`: ``{"restored": [...], "skipped": [...],
        "failed": [...], "removed": [...]}``, lists of state keys (all empty without a bot).
    :raises TypeError: ``bot`` is not a discord.py client (the message says what to pass).
    :raises ValueError: both ``file_path`` and ``backend``, ``concurrency < 1``, a
        ``rate_limit`` or ``verify_budget`` or ``rate_share`` out of range, an unknown
        ``verify`` mode, a negative ``unreachable_ttl``, a ``sweep_interval`` <= 0, or
        shard ids that do not fit the
        bot's ``shard_count``.
    :raises PersistenceError: the stored state cannot be loaded; nothing is enabled.
    :raises SchemaVersionError: the stored state is newer than ``version``; nothing is
        written or enabled.
    :raises MigrationError: a migration step failed (named); nothing is written or enabled.
    """
    _check_bot(bot)
    if version is not None:
        check_migrations(version, migrations)
    elif migrations:
        raise ValueError("migrations= needs version=, the schema version this code writes")
    if file_path is not None and backend is not None:
        raise ValueError("pass file_path= or backend=, not both: file_path is shorthand "
                         "for backend=FileStorageBackend(file_path)")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if rate_limit is not None and not rate_limit > 0:
        raise ValueError(f"rate_limit must be a positive number of requests per second "
                         f"or None, not {rate_limit!r}")
    if verify not in ("auto", "await", "background"):
        raise ValueError(f"verify must be 'auto', 'await' or 'background', not {verify!r}")
    if not verify_budget >= 0:
        raise ValueError(f"verify_budget must be a number of seconds >= 0, not "
                         f"{verify_budget!r}")
    if rate_share is not None and not 0 < rate_share <= 1:
        raise ValueError(f"rate_share must be in (0, 1], not {rate_share!r}")
    ttl = _duration("unreachable_ttl", unreachable_ttl)
    if not sweep_interval > 0:
        raise ValueError(f"sweep_interval must be a number of seconds > 0, not "
                         f"{sweep_interval!r}")
    shards = _shards_of(bot) if bot is not None else None
    started = asyncio.get_running_loop().time()
    store = store if store is not None else get_store()
    owned = backend is None
    chosen: StorageBackend
    if isinstance(backend, (str, os.PathLike)):  # the one resolver, as sync and the CLI
        # A constructor resolves the path against the cwd (or opens a file): not on the loop
        resolved = await anyio.to_thread.run_sync(functools.partial(
            resolve, backend, tools=False))
        chosen, owned = resolved.backend, resolved.owned
    elif backend is not None:
        chosen = resolve(backend).backend
    else:
        chosen = await anyio.to_thread.run_sync(FileStorageBackend, file_path or DEFAULT_FILE)
    await _enable(store, chosen, owned=owned, durable_timeout=durable_timeout,
                  version=version, migrations=migrations, strict_version=strict_version)
    await _lifecycle.adopt_aliases(store)
    summary = RestoreSummary()
    if bot is None:
        return summary
    _chain_close(bot, store, chosen if owned and store.backend is chosen else None)
    _lifecycle.bind_bot(store, bot)
    if track_deletions:
        _lifecycle.watch(bot, store, shards.owns if shards is not None else None)
    summary.routed_classes = _route_classes(bot, store)
    summary.dynamic_items = list(summary.routed_classes.get("dynamic", []))
    known, pending = await attach(bot, store, shards.owns if shards is not None else None,
                                  summary.other_shards)
    if rate_limit is not None:
        share = rate_share if rate_share is not None else (
            len(shards.ids) / shards.count if shards is not None else 1.0)
        rate_limit *= share
    loop = asyncio.get_running_loop()
    owns = shards.owns if shards is not None else None
    pacer = Pacer(rate_limit)  # shared with late registrations
    _late.follow(bot, _late.Follow(store, owns, concurrency, fetch_timeout, pacer, ttl, loop))
    _late.warn_unknown(store.state, owns)
    track(loop.create_task(sweeper(bot, store, owns, pacer, sweep_interval),
                           name="cascadeui-expiry-sweeper"), bot)
    outcomes: dict[str, Outcome] = {}
    task = loop.create_task(
        verify_panels(bot, store, known, pending, outcomes, concurrency=concurrency,
                      fetch_timeout=fetch_timeout, rate_limit=rate_limit,
                      unreachable_ttl=ttl, pacer=pacer),
        name="cascadeui-verify-panels")
    track(task, bot)
    summary.verification = task
    wait: float | None = {"await": None, "background": 0.0}.get(
        verify, started + verify_budget - asyncio.get_running_loop().time())
    if wait is None or wait > 0:
        # asyncio.wait never cancels the task: a cancelled caller leaves it to close()
        await asyncio.wait({task}, timeout=wait)
    if task.done():
        summary.update(task.result())
        log.info("setup_persistence: %d restored, %d skipped, %d failed, %d removed%s",
                 *(len(summary[k]) for k in _LISTS), _shard_note(shards, summary))
        return summary
    summary.update({name: list(known[name]) for name in _LISTS})
    for state_key, _ in pending:
        outcome = outcomes.get(state_key)
        summary[outcome or "restored"].append(state_key)
        if outcome is None:
            summary.unverified.append(state_key)
    log.info("setup_persistence: %d panels attached, %d skipped, %d failed, %d removed; "
             "checking %d messages in the background%s", len(summary["restored"]),
             len(summary["skipped"]), len(summary["failed"]), len(summary["removed"]),
             len(summary.unverified), _shard_note(shards, summary))
    return summary


def _duration(name: str, value: timedelta | float | None) -> timedelta | None:
    """A ``timedelta`` from a ``timedelta`` or seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ValueError(f"{name} must be a timedelta or seconds >= 0, or None, not "
                         f"{value!r}")
    return value


def _shard_note(shards: _Shards | None, summary: RestoreSummary) -> str:
    if shards is None:
        return ""
    return (f" (shards {sorted(shards.ids)} of {shards.count}; "
            f"{len(summary.other_shards)} panels left to other clusters)")


def _route_classes(bot: discord.Client, store: StateStore) -> dict[str, list[str]]:
    """Let every kind route its registered classes as a whole (dynamic items): no request."""
    routed: dict[str, list[str]] = {}
    for cls, kind in registered():
        if kind.route_class(bot, cls, store):
            routed.setdefault(kind.name, []).append(cls.__name__)
    return routed


def _check_bot(bot: object) -> None:
    if bot is None or isinstance(bot, discord.Client):
        return
    name = type(bot).__name__
    if isinstance(bot, (str, os.PathLike)) or hasattr(bot, "load_state"):
        hint = "pass it as file_path=... or backend=..., and the bot first (or bot=None)"
    elif hasattr(bot, "bot") or hasattr(bot, "client"):
        hint = "pass ctx.bot / interaction.client, not the context"
    else:
        hint = "call it as setup_persistence(self) inside your Bot's setup_hook"
    raise TypeError(f"setup_persistence expected a discord.Client or commands.Bot as bot, "
                    f"got {name}: {hint}")


async def _enable(store: StateStore, backend: StorageBackend, *, owned: bool,
                  durable_timeout: float, version: int | None,
                  migrations: Mapping[int, Migration] | None, strict_version: bool) -> None:
    current = store.backend
    if current is None:
        await store.enable_persistence(backend, durable_timeout=durable_timeout,
                                       version=version, migrations=migrations,
                                       strict_version=strict_version)
        return
    if current is not backend:
        where = location_of(backend, repr(backend))
        if where != location_of(current, repr(current)):
            log.warning("persistence is already enabled on %r; ignoring %s (close the "
                        "store first to switch backends)", current, where)
        if owned:
            await aclose_backend(backend)


def _chain_close(bot: discord.Client, store: StateStore,
                 owned_backend: StorageBackend | None) -> None:
    """Make ``bot.close()`` end with ``store.close()`` so the last action is durable.

    Our tasks for this bot (message checks, ``on_restore`` hooks) are cancelled and
    awaited first, while the HTTP session is still open.
    """
    if _WRAPPED.get(bot) is store:
        return
    _WRAPPED[bot] = store
    original = bot.close

    async def close() -> None:
        try:
            current = asyncio.current_task()
            mine = [t for t in _TASKS
                    if getattr(t, "cascadeui_bot", None) is bot and t is not current]
            for task in mine:
                task.cancel()
            await asyncio.gather(*mine, return_exceptions=True)
            await original()
        finally:
            await store.close()
            await aclose_backend(owned_backend)

    bot.close = close  # type: ignore[method-assign]


#: The one entry check, shared with ``cascadeui verify`` and ``cascadeui set``.
_identity = entry_identity
