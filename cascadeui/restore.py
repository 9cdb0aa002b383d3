"""``setup_persistence(bot)``: enable persistence, restore the state, re-attach every panel.

For every entry of ``state["persistent_views"]`` it fetches the panel's message directly
(``GET /channels/{channel_id}/messages/{message_id}``: one request, no channel fetch), a
bounded number at a time, and routes clicks to a rebuilt view the moment its message is
confirmed. The result sorts every state key into exactly one of four lists:

- ``restored``: rebuilt with its identity and registered with ``bot.add_view``;
- ``skipped``: its class is not registered (a module not imported yet); kept in state;
- ``removed``: Discord answered 404 Unknown Channel (10003) or Unknown Message (10008):
  purged from state, and the purge is flushed to the backend;
- ``failed``: anything else (403, 5xx, a timeout, a network error, a constructor or
  validation error, a malformed entry); kept for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import weakref
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import discord

from .actions import PERSISTENT_VIEWS_REMOVED
from .backends import FileStorageBackend, StorageBackend, as_backend
from .store import StateStore, get_store
from .views import PersistentView, get_view_class

__all__ = ["DEFAULT_FILE", "RESTORE_FAILED", "setup_persistence"]

log = logging.getLogger(__name__)

#: The JSON file used when neither ``file_path`` nor ``backend`` is given.
DEFAULT_FILE = "cascadeui_state.json"
#: Dispatched (no reducer, subscribers only) when a view's ``on_restore`` raises:
#: payload ``{"state_key", "class_name", "error"}``.
RESTORE_FAILED = "PERSISTENT_VIEW_RESTORE_FAILED"

#: Discord's "gone for good" answers: Unknown Channel, Unknown Message.
GONE_CODES = frozenset({10003, 10008})
_SNOWFLAKE = re.compile(r"[1-9][0-9]{0,19}")
_MAX_ID = 2**64 - 1

# bot -> the store whose close is chained to the bot's close
_WRAPPED: weakref.WeakKeyDictionary[discord.Client, StateStore] = weakref.WeakKeyDictionary()
_TASKS: set[asyncio.Task[None]] = set()


async def setup_persistence(
    bot: discord.Client | None = None, *,
    file_path: str | os.PathLike[str] | None = None,
    backend: StorageBackend | None = None,
    store: StateStore | None = None,
    concurrency: int = 50,
    fetch_timeout: float = 10.0,
) -> dict[str, list[str]]:
    """Enable persistence, restore the state, and with a bot re-attach every panel.

    Call it once in ``setup_hook``, after loading cogs (so panel classes are registered).
    Calling it again is harmless: persistence stays on its first backend and panels that
    already route clicks are reported as restored without another request.

    :param bot: a ``discord.Client`` / ``commands.Bot``; None restores data only.
    :param file_path: a JSON file (:class:`~cascadeui.persistence.FileStorageBackend`).
    :param backend: any storage backend. Neither given: ``cascadeui_state.json`` in the
        current directory.
    :param store: the store to use; the process-wide :func:`~cascadeui.store.get_store`
        by default.
    :param concurrency: message checks in flight at once.
    :param fetch_timeout: seconds one message check may take before it counts as failed.
    :returns: ``{"restored": [...], "skipped": [...], "failed": [...], "removed": [...]}``,
        lists of state keys (all empty without a bot).
    :raises TypeError: ``bot`` is not a discord.py client (the message says what to pass).
    :raises ValueError: both ``file_path`` and ``backend``, or ``concurrency < 1``.
    :raises PersistenceError: the stored state cannot be loaded; nothing is enabled.
    """
    _check_bot(bot)
    if file_path is not None and backend is not None:
        raise ValueError("pass file_path= or backend=, not both: file_path is shorthand "
                         "for backend=FileStorageBackend(file_path)")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    store = store if store is not None else get_store()
    owned = backend is None
    chosen: StorageBackend
    if backend is not None:
        chosen = as_backend(backend)
    else:  # the constructor resolves the path against the cwd: not on the event loop
        chosen = await anyio.to_thread.run_sync(FileStorageBackend, file_path or DEFAULT_FILE)
    await _enable(store, chosen, owned=owned)
    result: dict[str, list[str]] = {"restored": [], "skipped": [], "failed": [], "removed": []}
    if bot is None:
        return result
    _chain_close(bot, store, chosen if owned and store.backend is chosen else None)
    await _restore_views(bot, store, result, concurrency=concurrency,
                         fetch_timeout=fetch_timeout)
    log.info("setup_persistence: %d restored, %d skipped, %d failed, %d removed",
             *(len(result[k]) for k in ("restored", "skipped", "failed", "removed")))
    return result


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


async def _enable(store: StateStore, backend: StorageBackend, *, owned: bool) -> None:
    current = store.backend
    if current is None:
        await store.enable_persistence(backend)
        return
    if current is not backend:
        where = getattr(backend, "location", repr(backend))
        if where != getattr(current, "location", repr(current)):
            log.warning("persistence is already enabled on %r; ignoring %s (close the "
                        "store first to switch backends)", current, where)
        if owned:
            aclose = getattr(backend, "aclose", None)
            if aclose is not None:
                await aclose()


def _chain_close(bot: discord.Client, store: StateStore,
                 owned_backend: StorageBackend | None) -> None:
    """Make ``bot.close()`` end with ``store.close()`` so the last action is durable."""
    if _WRAPPED.get(bot) is store:
        return
    _WRAPPED[bot] = store
    original = bot.close

    async def close() -> None:
        try:
            await original()
        finally:
            for task in [t for t in _TASKS if getattr(t, "cascadeui_bot", None) is bot]:
                task.cancel()
            await store.close()
            aclose = getattr(owned_backend, "aclose", None)
            if aclose is not None:
                await aclose()

    bot.close = close  # type: ignore[method-assign]


def _parse_id(value: Any, *, optional: bool) -> int | None:
    """A snowflake from a stored entry (decimal string or int); ValueError when it is not."""
    if value is None and optional:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an id")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _SNOWFLAKE.fullmatch(value):
        number = int(value)
    else:
        raise ValueError(f"{value!r} is not an id")
    if not 0 < number <= _MAX_ID:
        raise ValueError(f"{value!r} is out of the snowflake range")
    return number


def _identity(entry: Any) -> dict[str, Any]:
    """The checked fields of a registry entry; ValueError names what is wrong."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"entry is a {type(entry).__name__}, not a dict")
    if not isinstance(entry.get("class_name"), str):
        raise ValueError("class_name is missing or not a string")
    ids: dict[str, Any] = {}
    for name, optional in (("message_id", False), ("channel_id", False),
                           ("guild_id", True), ("user_id", True)):
        try:
            ids[name] = _parse_id(entry.get(name), optional=optional)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return ids


def _build(state_key: str, cls: type[PersistentView], ids: dict[str, Any],
           store: StateStore) -> PersistentView:
    view = cls.from_registry(state_key, **ids)
    if not isinstance(view, cls):
        raise TypeError(f"{cls.__name__}.from_registry returned {type(view).__name__}")
    if view.state_key != state_key:
        raise ValueError(f"{cls.__name__}.from_registry built state_key "
                         f"{view.state_key!r} for {state_key!r}")
    view._bind(store=store, **ids)
    view.check_persistent()
    return view


async def _restore_views(bot: discord.Client, store: StateStore, result: dict[str, list[str]],
                         *, concurrency: int, fetch_timeout: float) -> None:
    live = {v.state_key: v for v in bot.persistent_views
            if isinstance(v, PersistentView) and not v.is_finished()}
    pending: list[tuple[str, PersistentView]] = []
    for state_key, entry in list(store.state["persistent_views"].items()):
        try:
            ids = _identity(entry)
        except ValueError as exc:
            log.warning("panel %r: malformed registry entry (%s); kept", state_key, exc)
            result["failed"].append(state_key)
            continue
        cls = get_view_class(entry["class_name"])
        if cls is None:
            log.info("panel %r: class %r is not registered (not imported yet?); kept",
                     state_key, entry["class_name"])
            result["skipped"].append(state_key)
            continue
        current = live.get(state_key)
        if current is not None and current.message_id == ids["message_id"]:
            result["restored"].append(state_key)  # already routing in this process
            continue
        try:
            view = _build(state_key, cls, ids, store)
        except Exception:
            log.exception("panel %r: rebuilding %s failed; kept", state_key, cls.__name__)
            result["failed"].append(state_key)
            continue
        pending.append((state_key, view))

    gate = asyncio.Semaphore(concurrency)
    outcomes = await asyncio.gather(
        *(_check(bot, view, gate, fetch_timeout) for _, view in pending))
    for (state_key, view), outcome in zip(pending, outcomes, strict=True):
        result[outcome].append(state_key)
        if outcome == "restored" and type(view).on_restore is not PersistentView.on_restore:
            _schedule_on_restore(bot, view)
    if result["removed"]:
        await store.dispatch(PERSISTENT_VIEWS_REMOVED, {"state_keys": list(result["removed"])})
        if not await store.flush():
            log.warning("the purge of %d gone panels is not durable yet; the writer retries",
                        len(result["removed"]))


async def _check(bot: discord.Client, view: PersistentView, gate: asyncio.Semaphore,
                 fetch_timeout: float) -> str:
    """Fetch one panel's message; attach the view at once when it exists."""
    channel_id, message_id = view.channel_id or 0, view.message_id or 0  # set by _bind
    key = view.state_key
    async with gate:
        try:
            await asyncio.wait_for(bot.http.get_message(channel_id, message_id),
                                   fetch_timeout)
        except discord.NotFound as exc:
            if exc.code in GONE_CODES:
                log.info("panel %r: %s; purged", key, exc.text or exc)
                return "removed"
            log.warning("panel %r: 404 with code %s; kept", key, exc.code)
            return "failed"
        except discord.HTTPException as exc:
            log.warning("panel %r: HTTP %s (code %s); kept", key, exc.status, exc.code)
            return "failed"
        except asyncio.TimeoutError:
            log.warning("panel %r: no answer within %.1fs; kept", key, fetch_timeout)
            return "failed"
        except Exception as exc:  # network errors and anything discord.py lets through
            log.warning("panel %r: %s: %s; kept", key, type(exc).__name__, exc)
            return "failed"
    try:
        bot.add_view(view, message_id=message_id)
    except (TypeError, ValueError) as exc:
        log.warning("panel %r: add_view refused it: %s; kept", key, exc)
        return "failed"
    view._mark_live()
    return "restored"


def _schedule_on_restore(bot: discord.Client, view: PersistentView) -> None:
    task = asyncio.get_running_loop().create_task(
        _run_on_restore(bot, view), name=f"cascadeui-on-restore-{view.state_key}")
    task.cascadeui_bot = bot  # type: ignore[attr-defined]
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _when_ready(bot: discord.Client) -> None:
    while not bot.is_closed():
        try:
            await bot.wait_until_ready()
            return
        except RuntimeError:  # not logged in yet: discord.py has no ready event to wait on
            await asyncio.sleep(0.1)


async def _run_on_restore(bot: discord.Client, view: PersistentView) -> None:
    """Await readiness, then the hook; an exception is logged, kept and dispatched."""
    await _when_ready(bot)
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
