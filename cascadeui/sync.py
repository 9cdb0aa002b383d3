"""Blocking twins of the public API, for scripts, threads and notebooks.

``from cascadeui import sync`` then ``sync.load_state("bot_state.json")``: no
``asyncio.run`` and no "event loop is already running" inside Jupyter. Two paths:

* Data operations (:func:`load_state`, :func:`save_state`, :func:`transaction`,
  :func:`migrate_storage`) call the synchronous adapters directly, in the calling thread.
  A custom async-only backend runs through the private loop thread instead.
* What must run async (the store: :func:`setup_persistence`, :func:`dispatch`) runs in
  one private event-loop thread kept for the process (an anyio blocking portal), never by
  nesting loops. A call that would wait on the loop it is running on raises
  :class:`LoopReentryError`, which names the ``await`` form to use instead.

Every function accepts a built-in backend (its ``.store`` adapter is used), a synchronous
adapter, a custom async backend, or a path/URL string (``backend_from_url``); a store built
from a string is closed again before the call returns.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import queue
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from cascadeui._backends import location_of, save_or_log
from cascadeui._targets import Resolved, open_store, redacted, resolve
from cascadeui.actions import PERSISTED_SLICES, SCHEMA_KEY
from cascadeui.adapters import SyncStore, TransactionalStore
from cascadeui.migrations import (
    Migration,
    MigrationPlan,
    migrate_adapter,
    migrate_backend,
    plan_migration,
)

__all__ = [
    "LoopReentryError",
    "dispatch",
    "load_state",
    "migrate_schema",
    "migrate_storage",
    "open_adapter",
    "save_state",
    "setup_persistence",
    "transaction",
]

log: logging.Logger = logging.getLogger(__name__)

T = TypeVar("T")
Target = Any  # a backend, an adapter, or a path/URL string: checked at run time
#: ``progress(done_steps, total_steps, what)``, called by :func:`migrate_storage`.
Progress = Callable[[int, int, str], None]


class LoopReentryError(RuntimeError):
    """Raised when a blocking call would wait on the event loop it is running on.

    The message names the ``await`` form to use instead; waiting would deadlock.
    """


# -- the private loop thread ------------------------------------------------------------


class _LoopThread:
    """One event loop in a daemon thread, reached through an anyio blocking portal.

    A daemon thread (not ``start_blocking_portal``'s executor) so that a forgotten store
    never keeps the interpreter alive; an ``atexit`` hook stops the loop cleanly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._hooked = False
        #: The asyncio loop behind the portal (anyio runs asyncio by default).
        self.aio_loop: asyncio.AbstractEventLoop | None = None

    def portal(self) -> BlockingPortal:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if self._portal is None or not alive or self._pid != os.getpid():
                self._start()
            assert self._portal is not None
            return self._portal

    @property
    def ident(self) -> int | None:
        thread = self._thread
        return thread.ident if thread is not None and self._pid == os.getpid() else None

    def _start(self) -> None:
        handoff: queue.SimpleQueue[
            tuple[BlockingPortal, asyncio.AbstractEventLoop] | BaseException
        ] = queue.SimpleQueue()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                handoff.put((portal, asyncio.get_running_loop()))
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # pragma: no cover - only if anyio cannot start
                handoff.put(exc)

        thread = threading.Thread(target=run, name="cascadeui-sync-loop", daemon=True)
        thread.start()
        got = handoff.get(timeout=30)
        if isinstance(got, BaseException):  # pragma: no cover
            raise RuntimeError("cascadeui could not start its private event loop") from got
        (self._portal, self.aio_loop), self._thread, self._pid = got, thread, os.getpid()
        if not self._hooked:
            atexit.register(self.stop)
            self._hooked = True

    def stop(self) -> None:
        """Stop the loop (pending calls are cancelled) and wait for its thread."""
        with self._lock:
            portal, thread = self._portal, self._thread
            self._portal = self._thread = None
        if portal is None or thread is None or not thread.is_alive():
            return
        try:
            portal.call(_close_store_on, self.aio_loop)
        except Exception:  # never fail interpreter exit; the store logged the reason
            log.exception("closing the store on cascadeui's private loop failed")
        with contextlib.suppress(Exception):
            portal.call(portal.stop, True)
        thread.join(timeout=10)

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, what: str) -> T:
        """Run ``await fn(*args)`` on the private loop and return its result."""
        if threading.get_ident() == self.ident:
            raise LoopReentryError(
                f"{what} was called on cascadeui's private event loop and would wait on "
                f"itself; use `await {what}` there instead")
        return self.portal().call(fn, *args)


_loop = _LoopThread()


# -- resolving targets ------------------------------------------------------------------


def open_adapter(target: str | os.PathLike[str]) -> SyncStore:
    """Build the synchronous adapter a path or URL names (the caller closes it).

    A JSON file keeps as many ``.bak`` generations as already exist next to it (at least
    one), so a script never prunes a bot's deeper backup history.

    :raises ConfigurationError: the string names no supported backend.
    """
    return open_store(target)


@contextlib.contextmanager
def _opened(target: Target) -> Iterator[Resolved]:
    resolved = resolve(target)
    try:
        yield resolved
    finally:
        if resolved.owned and resolved.adapter is not None:
            resolved.adapter.close()


# -- data operations --------------------------------------------------------------------


def load_state(backend: Target) -> dict[str, Any]:
    """Return the saved state, ``{}`` when nothing was saved.

    :param backend: a backend, an adapter, or a path/URL string.
    :raises StateCorruptedError: stored data (and every backup) is unreadable.
    :raises StorageUnavailableError: the medium cannot be reached.
    """
    with _opened(backend) as r:
        if r.adapter is not None:
            return r.adapter.load()
        return _loop.call(r.backend.load_state, what="backend.load_state()")


def save_state(backend: Target, state: Mapping[str, Any]) -> bool:
    """Write ``state``; True on success, False (logged) when the medium failed.

    Same policy as the async ``save_state`` (one implementation): a bot-style caller
    keeps running.

    :param backend: a backend, an adapter, or a path/URL string.
    :param state: the whole state to store.
    :raises SerializationError: ``state`` holds a value JSON cannot store.
    :raises StoreClosedError: the backend was closed.
    """
    with _opened(backend) as r:
        if r.adapter is None:
            return bool(_loop.call(r.backend.save_state, state, what="backend.save_state()"))
        return save_or_log(r.adapter, state, _where(r.adapter))


@contextlib.contextmanager
def transaction(backend: Target) -> Iterator[dict[str, Any]]:
    """Lock, load, yield the state to change in place, save it on a clean exit.

    Exclusive across threads and processes; nothing is written if the body raises.

    :param backend: a backend, an adapter, or a path/URL string.
    :raises TypeError: a custom backend without an atomic ``transaction()``.
    :raises LockTimeoutError: another writer held the lock past its timeout.
    """
    with _opened(backend) as r:
        if r.adapter is not None:
            if not isinstance(r.adapter, TransactionalStore):
                raise TypeError(f"{type(r.adapter).__name__} has no transaction()")
            with r.adapter.transaction() as state, _with_slices(state):
                yield state
            return
        factory: Callable[[], contextlib.AbstractAsyncContextManager[dict[str, Any]]] | None
        factory = getattr(r.backend, "transaction", None)
        if not callable(factory):
            raise TypeError(
                f"{type(r.backend).__name__} offers no transaction(); a load/save pair "
                "would not be atomic, so sync.transaction() refuses it")
        if threading.get_ident() == _loop.ident:
            raise LoopReentryError(
                "sync.transaction() was called on cascadeui's private event loop; use "
                "`async with backend.transaction()` there instead")
        with _loop.portal().wrap_async_context_manager(factory()) as state, \
                _with_slices(state):
            yield state


@contextlib.contextmanager
def _with_slices(state: dict[str, Any]) -> Iterator[None]:
    """Give a transaction's body both persisted slices, so that
    ``state["application"]["motd"] = ...`` works on a fresh store (issue 23); a slice
    added here and left empty is taken out again, so nothing is written for it. A schema
    version the body removed is put back."""
    added = [name for name in PERSISTED_SLICES if name not in state]
    for name in added:
        state[name] = {}
    app = state["application"]
    version = app.get(SCHEMA_KEY) if isinstance(app, dict) else None
    yield
    for name in added:
        if state.get(name) == {}:
            del state[name]
    app = state.get("application")
    if version is not None and not (isinstance(app, dict) and SCHEMA_KEY in app):
        # The schema version is not the body's to delete (a /reset clearing every key).
        state["application"] = {**(app if isinstance(app, dict) else {}), SCHEMA_KEY: version}


def migrate_storage(source: Target, target: Target, *,
                    progress: Progress | None = None, strict: bool = False) -> bool:
    """Copy the state from ``source`` to ``target`` and read it back to compare.

    The blocking twin of :func:`cascadeui.persistence.migrate_storage` (the same code, run
    on cascadeui's private loop). Never modifies the source, and touches the target only
    once the source was read and holds something.

    :param source: a backend, an adapter, or a path/URL string.
    :param target: the same kinds; its current state is replaced.
    :param progress: optional ``progress(done_steps, total_steps, what)`` callback.
    :param strict: raise the target's error instead of logging it and returning False.
    :returns: False (logged) when the source holds nothing or the target did not take
        the copy.
    :raises PersistenceError: the source cannot be read.
    """
    from cascadeui.persistence import copy_state

    with _opened(source) as src, _opened(target) as dst:
        run = functools.partial(copy_state, src.backend, dst.backend, progress=progress,
                                strict=strict)
        return bool(_loop.call(run, what="migrate_storage(...)"))


def _where(target: object) -> str:
    if isinstance(target, (str, os.PathLike)):
        return redacted(os.fspath(target))
    return location_of(target)


# -- the store, through the private loop ------------------------------------------------


def setup_persistence(bot: Any = None, *, file_path: str | os.PathLike[str] | None = None,
                      backend: Target = None, version: int | None = None,
                      migrations: Mapping[int, Migration] | None = None,
                      strict_version: bool = False) -> dict[str, list[str]]:
    """Blocking :func:`cascadeui.setup_persistence`: restore the state on the private loop.

    The process-wide store then persists from cascadeui's loop thread, so later
    :func:`dispatch` calls work from any thread, including a notebook's.

    :param bot: must be ``None``: panels re-attach on the bot's own loop, so a bot calls
        ``await cascadeui.setup_persistence(bot)`` in ``setup_hook``.
    :param file_path: a JSON file, as in the async API.
    :param backend: a backend object, or a path/URL string.
    :param version: the schema version this code writes (see ``docs/migrations.md``).
    :param migrations: ``{k: fn}`` upgrading the persisted document to version ``k``.
    :param strict_version: without ``version``, refuse a versioned stored state.
    :returns: ``{"restored": [], "skipped": [], "failed": [], "removed": []}`` (data only).
    :raises ValueError: a bot was passed.
    :raises LoopReentryError: called on cascadeui's private loop (await it there instead).
    """
    from cascadeui._restore import setup_persistence as async_setup

    if bot is not None:
        # The bot's HTTP session and view store belong to the bot's loop, not ours.
        raise ValueError(
            "sync.setup_persistence() restores data only: in a bot, use `await "
            "cascadeui.setup_persistence(bot, ...)` in setup_hook")

    async def run() -> dict[str, list[str]]:
        result: dict[str, list[str]] = await async_setup(
            bot, file_path=file_path, backend=backend, version=version,
            migrations=migrations, strict_version=strict_version)
        return result

    return _loop.call(run, what="setup_persistence(...)")


def migrate_schema(target: Target, version: int, migrations: Mapping[int, Migration], *,
                   dry_run: bool = False) -> MigrationPlan:
    """Bring a stored state to schema ``version`` now (or, with ``dry_run``, say how).

    The same unit of work as at start-up (:func:`cascadeui.migrations.migrate_adapter`):
    under the write lock, with the pre-migration document kept as a backup.

    :param target: a path or URL, a backend or an adapter.
    :returns: the :class:`~cascadeui.migrations.MigrationPlan`; ``plan.changes()`` lists
        the key paths it changes (or would change).
    :raises SchemaVersionError: the stored state is newer than ``version``.
    :raises MigrationError: a step failed; nothing was written.
    :raises ValueError: the migrations do not cover 1..``version``.
    """
    with _opened(target) as r:
        if r.adapter is None:
            assert r.backend is not None
            if dry_run:
                from cascadeui.migrations import upgrade

                before = _loop.call(r.backend.load_state, what="backend.load_state()")
                after, start = upgrade(before, version, migrations)
                return MigrationPlan(start, version, before, after)
            return _loop.call(migrate_backend, r.backend, version, migrations,
                              what="migrate_schema(...)")
        if dry_run:
            return plan_migration(r.adapter, version, migrations)
        return migrate_adapter(r.adapter, version, migrations)


def _store_loop(store: Any) -> asyncio.AbstractEventLoop | None:
    """The event loop the store's persistence writer runs on (None when off)."""
    loop: asyncio.AbstractEventLoop | None = store.persistence_loop
    return loop


def dispatch(action_type: str, payload: Any = None, *,
             timeout: float | None = 60.0) -> dict[str, Any]:
    """Dispatch on the process-wide store and return once the write is durable.

    Runs on the loop the store persists from: cascadeui's private loop after
    :func:`setup_persistence`, or a bot's loop running in another thread.

    :param action_type: e.g. ``"APPLICATION_SET"``.
    :param payload: the action's payload.
    :param timeout: seconds to wait for the store's loop, when it is another thread's.
    :returns: the new state.
    :raises RuntimeError: persistence is not set up (call :func:`setup_persistence`).
    :raises LoopReentryError: the store persists on the loop this thread is running;
        use ``await store.dispatch(...)`` and ``await store.flush()`` there.
    :raises DurabilityTimeoutError: the write did not become durable within the store's
        ``durable_timeout`` (a :class:`~cascadeui.errors.StorageUnavailableError`).
    :raises SerializationError: the state holds a value the backend cannot store.
    """
    from cascadeui.store import get_store

    store = get_store()
    backend = store.backend
    if backend is None:
        raise RuntimeError(
            "sync.dispatch() needs persistence: call cascadeui.sync.setup_persistence(...) "
            "first (or `await store.dispatch(...)` for an in-memory store)")

    async def run() -> dict[str, Any]:
        # A durable dispatch: failed writes are retried until durable_timeout passes.
        new_state: dict[str, Any] = await store.dispatch(action_type, payload, durable=True)
        return new_state

    loop = _store_loop(store)
    if loop is None or loop is _loop.aio_loop:
        return _loop.call(run, what=f"get_store().dispatch({action_type!r})")
    here = _current_asyncio_loop()
    if loop is here:
        raise LoopReentryError(
            f"sync.dispatch({action_type!r}) would block the event loop this store "
            "persists on; use `await get_store().dispatch(...)` then "
            "`await get_store().flush()` here instead")
    if loop.is_closed() or not loop.is_running():
        raise RuntimeError(
            "the store persists from an event loop that is no longer running; "
            "`await get_store().close()` there, then call sync.setup_persistence(...)")
    return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)


async def _close_store_on(loop: asyncio.AbstractEventLoop | None) -> None:
    """At exit: flush and close the process-wide store if it persists from ``loop``."""
    store_module = sys.modules.get("cascadeui.store")
    if store_module is None or loop is None:
        return
    store = store_module.get_store()
    if store.backend is not None and _store_loop(store) is loop:
        await store.close()


def _current_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
