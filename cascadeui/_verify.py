"""Phase 2 of ``setup_persistence``: check each attached panel's message, paced.

Each check is one ``GET /channels/{channel_id}/messages/{message_id}``, ``concurrency`` at
a time, interleaved across channels and spaced under Discord's global rate limit. What a
check finds decides the panel's fate (see ``docs/panels.md``, "Life of a panel"):

- the message is there: ``restored`` (a record of lost access, if any, is cleared);
- 404 Unknown Channel / Unknown Message: ``removed``, entry and data, durably;
- 403, 5xx, a timeout, a network error: the panel stays routed and ``failed``, and its
  entry records since when it is unreachable (``unreachable_since``); once that is older
  than ``unreachable_ttl`` it is ``removed`` (reason ``unreachable_expired``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import discord

from . import _lifecycle
from ._kinds import EntryPanel
from .actions import PERSISTENCE_VERIFIED, PERSISTENT_VIEW_REGISTERED
from .store import StateStore
from .views import PersistentPanel

__all__ = ["GONE_CODES", "LISTS", "PROGRESS_EVERY", "RESTORE_FAILED", "TASKS",
           "UNREACHABLE_FIELD", "Lists", "Outcome", "Pacer", "track", "verify", "when_ready"]

log: logging.Logger = logging.getLogger(__name__)

#: Dispatched (no reducer, subscribers only) when a view's ``on_restore`` raises:
#: payload ``{"state_key", "class_name", "error"}``.
RESTORE_FAILED = "PERSISTENT_VIEW_RESTORE_FAILED"
#: Discord's "gone for good" answers: Unknown Channel, Unknown Message.
GONE_CODES = frozenset({10003, 10008})
#: The four lists of a restore, in order.
LISTS = ("restored", "skipped", "failed", "removed")
#: The registry entry field holding when a panel was first found unreachable (ISO 8601).
UNREACHABLE_FIELD = "unreachable_since"
#: Seconds between two INFO lines of progress while messages are checked (10,000 panels
#: at 45 checks/s take about 220 s; a start says how far it is instead of falling silent).
PROGRESS_EVERY = 10.0

Outcome = Literal["restored", "failed", "removed"]
Lists = dict[str, list[str]]

#: Our tasks (message checks, ``on_restore`` hooks), each tagged with its bot.
TASKS: set[asyncio.Task[Any]] = set()
_LISTS = LISTS
_TASKS = TASKS


def track(task: asyncio.Task[Any], bot: discord.Client) -> None:
    """Keep ``task`` until done and tag it with its bot (the bot's close cancels it)."""
    task.cascadeui_bot = bot  # type: ignore[attr-defined]
    _TASKS.add(task)
    task.add_done_callback(_done)


def _done(task: asyncio.Task[Any]) -> None:
    _TASKS.discard(task)
    if not task.cancelled() and task.exception() is not None:  # retrieved: no GC warning
        log.error("%s failed", task.get_name(), exc_info=task.exception())



def _by_channel(pending: list[tuple[str, EntryPanel]],
                ) -> Iterator[tuple[str, EntryPanel]]:
    """Round-robin over channels: discord.py serializes requests per channel bucket, so
    consecutive checks in different channels never queue behind each other."""
    queues: dict[int | None, deque[tuple[str, EntryPanel]]] = {}
    for item in pending:
        queues.setdefault(item[1].channel_id, deque()).append(item)
    rounds = list(queues.values())
    while rounds:
        for queue in rounds:
            yield queue.popleft()
        rounds = [queue for queue in rounds if queue]


class Pacer:
    """Spaces request starts at least ``1 / rate`` seconds apart, measured when they start.

    Starts go one at a time through a lock and each waits for the previous one's actual
    start plus the interval, so a stalled event loop (a busy machine, a GC pause) delays
    the checks but never lets the delayed ones leave together: slots reserved in advance
    did, and a burst over Discord's global limit got HTTP 429s (4 in 10,000 panels on a
    loaded 2-core machine, ``scripts/bench``'s ratelimit mode).
    """

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._last = float("-inf")
        self._lock: asyncio.Lock | None = None

    async def wait(self) -> None:
        if not self._interval:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            loop = asyncio.get_running_loop()
            delay = self._last + self._interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._last = loop.time()


async def verify(bot: discord.Client, store: StateStore, known: Lists,
                 pending: list[tuple[str, EntryPanel]], outcomes: dict[str, Outcome],
                 *, concurrency: int, fetch_timeout: float, rate_limit: float | None,
                 unreachable_ttl: timedelta | None, pacer: Pacer | None = None) -> Lists:
    """Check every attached panel's message; unroute and purge the gone ones, record the
    unreachable ones (and purge those unreachable for longer than ``unreachable_ttl``).

    :param outcomes: filled in as the checks end, so an early return can report them.
    :param pacer: shared by every check of this bot (a start and late registrations), so
        together they stay under ``rate_limit``; a new one by default.
    """
    result: Lists = {name: list(known[name]) for name in LISTS}
    order = _by_channel(pending)
    pacer = pacer if pacer is not None else Pacer(rate_limit)
    unreachable: set[str] = set()
    progress = _Progress(len(pending), rate_limit)

    async def worker() -> None:
        for state_key, view in order:  # one shared iterator: each panel is checked once
            await pacer.wait()
            outcome = await _check(bot, view, fetch_timeout)
            if outcome == "removed":
                view.stop()  # discord.py's public way out of its view store: unrouted now
            elif outcome == "unreachable":
                unreachable.add(state_key)
            outcomes[state_key] = "failed" if outcome == "unreachable" else outcome
            progress.checked(outcome)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(pending)))))
    progress.done()
    expired = await _age(bot, store, pending, outcomes, unreachable, unreachable_ttl)
    gone: list[tuple[str, EntryPanel]] = []
    for state_key, view in pending:
        outcome = "removed" if state_key in expired else outcomes[state_key]
        result[outcome].append(state_key)
        if outcome == "removed" and state_key not in expired:
            gone.append((state_key, view))
        elif outcome == "restored" and type(view).on_restore is not PersistentPanel.on_restore:
            _schedule_on_restore(bot, view)
    views = store.state["persistent_views"]
    # A panel re-sent under the same key while its old message was being checked now
    # points at a new message: that entry is not the one Discord said is gone.
    await _lifecycle.remove(bot, store, [(key, {"message_id": str(view.message_id)})
                                         for key, view in gone], "not_found")
    await _lifecycle.emit(bot, store, [
        _lifecycle.panel_event(_lifecycle.PANEL_RESTORED, key, views.get(key), "restored")
        for key, _ in pending if outcomes[key] == "restored"])
    await store.dispatch(PERSISTENCE_VERIFIED, {name: list(result[name]) for name in LISTS})
    return result


class _Progress:
    """INFO lines while a start checks its panels' messages: at the start, every
    :data:`PROGRESS_EVERY` seconds, and at the end (counts by outcome, time left)."""

    def __init__(self, total: int, rate: float | None) -> None:
        self.total = total
        self.counts: dict[str, int] = {"restored": 0, "removed": 0, "unreachable": 0}
        self.started = self.last = asyncio.get_running_loop().time()
        if total:
            pace = f", at most {rate:g}/s (about {total / rate:.0f} s)" if rate else ""
            log.info("checking the messages of %d restored panels%s", total, pace)

    def checked(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        now = asyncio.get_running_loop().time()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            done = sum(self.counts.values())
            left = (now - self.started) / done * (self.total - done)
            log.info("checked %d of %d panel messages (%s); about %.0f s left",
                     done, self.total, self._counts(), left)

    def done(self) -> None:
        if self.total:
            took = asyncio.get_running_loop().time() - self.started
            log.info("checked all %d panel messages in %.1f s (%s)", self.total, took,
                     self._counts())

    def _counts(self) -> str:
        return ", ".join(f"{n} {name}" for name, n in self.counts.items())


def _since(entry: Mapping[str, Any]) -> datetime | None:
    """When an entry's panel was first found unreachable; None if never (or unreadable)."""
    text = entry.get(UNREACHABLE_FIELD)
    try:
        since = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return since if since is None or since.tzinfo else since.replace(tzinfo=timezone.utc)


async def _age(bot: discord.Client, store: StateStore, pending: list[tuple[str, EntryPanel]],
               outcomes: Mapping[str, Outcome], unreachable: set[str],
               ttl: timedelta | None) -> set[str]:
    """Record lost access in the entries (and clear it where the message is back); purge
    the panels unreachable for longer than ``ttl``. Returns the purged keys."""
    now = datetime.now(timezone.utc)
    views = store.state["persistent_views"]
    changed: dict[str, dict[str, Any]] = {}
    expired: list[tuple[str, Any]] = []
    events: list[_lifecycle.PanelEvent] = []
    for key, view in pending:
        entry = views.get(key)
        if not isinstance(entry, Mapping) or entry.get("message_id") != str(view.message_id):
            continue  # re-sent meanwhile: not the panel that was checked
        since = _since(entry)
        if key in unreachable:
            if since is not None and ttl is not None and now - since >= ttl:
                view.stop()
                expired.append((key, entry))
                continue
            if since is None:
                since = now
                changed[key] = {**entry, UNREACHABLE_FIELD: now.isoformat(timespec="seconds")}
            events.append(_lifecycle.panel_event(_lifecycle.PANEL_UNREACHABLE, key, entry,
                                                 "unreachable", unreachable_since=since))
        elif outcomes[key] == "restored" and UNREACHABLE_FIELD in entry:
            changed[key] = {k: v for k, v in entry.items() if k != UNREACHABLE_FIELD}
    if changed:
        async with store.batch():
            for key, entry in changed.items():
                await store.dispatch(PERSISTENT_VIEW_REGISTERED, {**entry, "state_key": key})
    removed = await _lifecycle.remove(bot, store, expired, "unreachable_expired")
    await _lifecycle.emit(bot, store, events)
    return set(removed)


async def _check(bot: discord.Client, view: EntryPanel, fetch_timeout: float,
                 ) -> Literal["restored", "removed", "unreachable", "failed"]:
    """Fetch one panel's message and say what became of it (403, 5xx, a timeout or a
    network error: unreachable, which is not gone)."""
    channel_id, message_id = view.channel_id or 0, view.message_id or 0  # set by _bind
    key = view.state_key
    try:
        await asyncio.wait_for(bot.http.get_message(channel_id, message_id), fetch_timeout)
    except discord.NotFound as exc:
        if exc.code in GONE_CODES:
            log.info("panel %r: %s; unrouted and purged", key, exc.text or exc)
            return "removed"
        log.warning("panel %r: 404 with code %s; kept", key, exc.code)
        return "failed"
    except discord.HTTPException as exc:
        log.warning("panel %r: HTTP %s (code %s); kept", key, exc.status, exc.code)
        return "unreachable" if exc.status == 403 or exc.status >= 500 else "failed"
    except asyncio.TimeoutError:
        log.warning("panel %r: no answer within %.1fs; kept", key, fetch_timeout)
        return "unreachable"
    except Exception as exc:  # network errors and anything discord.py lets through
        log.warning("panel %r: %s: %s; kept", key, type(exc).__name__, exc)
        return "unreachable"
    return "restored"


def _schedule_on_restore(bot: discord.Client, view: EntryPanel) -> None:
    task = asyncio.get_running_loop().create_task(
        _run_on_restore(bot, view), name=f"cascadeui-on-restore-{view.state_key}")
    track(task, bot)


async def when_ready(bot: discord.Client) -> None:
    """Return once ``bot`` is ready (or closed)."""
    while not bot.is_closed():
        try:
            await bot.wait_until_ready()
            return
        except RuntimeError:  # not logged in yet: discord.py has no ready event to wait on
            await asyncio.sleep(0.1)


async def _run_on_restore(bot: discord.Client, view: EntryPanel) -> None:
    """Await readiness, then the hook; an exception is logged, kept and dispatched."""
    await when_ready(bot)
    if bot.is_closed():
        return
    try:
        await view.on_restore(bot)
    except Exception as exc:
        log.exception("on_restore of panel %r (%s) failed", view.state_key,
                      type(view).__name__)
        view.restore_error = exc
        try:
            await view.store.dispatch(RESTORE_FAILED, {
                "state_key": view.state_key, "class_name": type(view).__name__,
                "error": f"{type(exc).__name__}: {exc}"})
        except Exception:
            log.exception("reporting the on_restore failure of %r failed", view.state_key)
