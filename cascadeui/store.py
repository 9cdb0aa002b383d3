"""The state store: reducers, middleware, subscribers, ``batch()``, and persistence.

State is one dict of slices. ``application`` and ``persistent_views`` are persisted; ``views``
and ``sessions`` are transient and never written. Reducers return new dicts along the path
they change and share the rest, so any state reference is a consistent snapshot (a worker
thread may serialize it while the loop goes on) and "did a persisted slice change" is two
identity tests, whatever the size of the state.

Writing is the job of the persistence engine (:mod:`cascadeui._engine`), one asyncio task
per store, started by :meth:`StateStore.enable_persistence`. See ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ._backends import StorageBackend, aclose_backend, as_backend, location_of
from ._engine import Engine, Timing, load_persisted, same_backend
from .actions import (
    BATCH_APPLIED,
    BUILTIN_REDUCERS,
    PERSISTED_SLICES,
    STATE_RESTORED,
    TRANSIENT_SLICES,
    Action,
    Reducer,
    State,
    delete_in,
    set_in,
)
from .adapters import SyncStore
from .migrations import Migration, check_unversioned, migrate_backend

__all__ = [
    "PERSISTED_SLICES",
    "TRANSIENT_SLICES",
    "Action",
    "Middleware",
    "Reducer",
    "ReducerError",
    "State",
    "StateStore",
    "Subscriber",
    "delete_in",
    "get_store",
    "reset_store",
    "set_in",
]

log: logging.Logger = logging.getLogger(__name__)

#: ``middleware(action, call_next) -> new state``; ``call_next`` runs the rest of the chain.
Middleware = Callable[[Action, Callable[[Action], Awaitable[State]]], Awaitable[State]]
#: ``callback(state, action)``, plain or async.
Subscriber = Callable[[State, Action], Any]

_SLICES = (*PERSISTED_SLICES, *TRANSIENT_SLICES)
_APP, _VIEWS = PERSISTED_SLICES
_MISSING: Any = object()
# Set while a reducer runs in this task: a reducer that dispatches would deadlock.
_IN_REDUCER: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cascadeui_in_reducer", default=False)


class ReducerError(TypeError):
    """Raised by :meth:`StateStore.dispatch` when a reducer breaks the state contract.

    A reducer must return a dict holding every slice, and must not change the state it was
    given in place. Nothing is applied when this is raised.
    """


class _Sub(NamedTuple):
    callback: Subscriber
    types: frozenset[str] | None
    selector: Callable[[State], Any] | None


def _select(selector: Callable[[State], Any], state: State) -> Any:
    # A selector reading a key that does not exist yet is "missing", not an error.
    try:
        return selector(state)
    except LookupError:
        return _MISSING


class StateStore:
    """One application state, changed only by dispatched actions, optionally persisted.

    :param check_mutations: deep-compare the state before and after every reducer to catch
        in-place mutation (O(state size) per dispatch: for tests and debugging only).
    """

    def __init__(self, *, check_mutations: bool = False) -> None:
        self._state: State = {name: {} for name in _SLICES}
        self._reducers: dict[str, list[Reducer]] = {}
        self._middleware: list[Middleware] = []
        self._subs: tuple[_Sub, ...] = ()
        self._check_mutations = check_mutations
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._batch_depth = 0
        self._batch_actions: list[Action] = []
        #: +1 on every change of a persisted slice; the persistence engine's clock.
        self._generation = 0
        self._engine: Engine | None = None
        for action_type, fn in BUILTIN_REDUCERS.items():
            self.register_reducer(action_type, fn)

    # -- reading and extending -------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state: a snapshot that must not be modified (dispatch instead)."""
        return self._state

    @property
    def backend(self) -> StorageBackend | None:
        """The backend persistence writes to, or None when persistence is not enabled."""
        return self._engine.backend if self._engine is not None else None

    @property
    def generation(self) -> int:
        """A counter of changes to the persisted slices (+1 each): the writer's clock."""
        return self._generation

    @property
    def batching(self) -> bool:
        """A :meth:`batch` is open: its end is the one notification and persistence step."""
        return self._batch_depth > 0

    @property
    def persistence_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the persistence writer runs on (None when persistence is off)."""
        return self._engine.loop if self._engine is not None else None

    def register_reducer(self, action_type: str, fn: Reducer, *, replace: bool = False) -> None:
        """Add a reducer ``fn(action, state) -> new_state`` (plain or async) for ``action_type``.

        Several reducers for one type run in registration order, each given the previous
        one's result.

        :param replace: drop the reducers already registered for ``action_type`` (including
            the built-in one) instead of chaining after them.
        :raises TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"reducer for {action_type!r} must be callable")
        if replace:
            self._reducers[action_type] = [fn]
        else:
            self._reducers.setdefault(action_type, []).append(fn)

    def add_middleware(self, fn: Middleware) -> None:
        """Add ``fn(action, call_next)``; the first added runs first (outermost).

        Middleware may rewrite the action it passes on, call ``call_next`` several times, or
        not at all (the action is then dropped).
        """
        if not callable(fn):
            raise TypeError("middleware must be callable")
        self._middleware.append(fn)

    def subscribe(self, callback: Subscriber, *, action_types: Iterable[str] | None = None,
                  selector: Callable[[State], Any] | None = None) -> Callable[[], None]:
        """Call ``callback(state, action)`` (plain or async) after every applied action.

        :param action_types: only these action types (a batch matches if any of its actions
            does).
        :param selector: only when ``selector(new_state) is not selector(old_state)``; a
            selector that raises ``KeyError``/``IndexError`` reads as "missing".
        :returns: a function that unsubscribes (calling it again does nothing).
        """
        sub = _Sub(callback, None if action_types is None else frozenset(action_types),
                   selector)
        self._subs = (*self._subs, sub)

        def unsubscribe() -> None:
            self._subs = tuple(s for s in self._subs if s is not sub)

        return unsubscribe

    # -- dispatching -----------------------------------------------------------------

    async def dispatch(self, action_type: str, payload: Any = None, *,
                       durable: bool = False) -> State:
        """Run ``{"type": action_type, "payload": payload}`` through middleware and reducers.

        Subscribers are notified (at the end of the outermost ``batch()`` when one is open)
        and a change of a persisted slice is scheduled for writing.

        :param durable: return only once the persisted slices as they are after this
            action are stored in the backend (a group commit: concurrent durable
            dispatches share writes). A failing write is retried with backoff until it
            lands or ``durable_timeout`` (see :meth:`enable_persistence`) passes. Without
            persistence there is no backend to wait for and it returns at once. False (the
            default): return at once; the change is written within ``max_delay``.
        :returns: the state after the action.
        :raises ReducerError: a reducer broke the state contract (nothing applied).
        :raises RuntimeError: called from inside a reducer.
        :raises DurabilityTimeoutError: ``durable`` and the change was not stored in time;
            it stays applied in memory and the writer keeps retrying it, but it is not
            durable (``last_error`` holds the storage failure, with its real type).
        :raises SerializationError: ``durable`` and the persisted slices hold a value the
            backend cannot store (the action stays applied in memory).
        :raises StoreClosedError: ``durable`` and the store was closed before the write.
        """
        if not isinstance(action_type, str):
            raise TypeError(f"action_type must be a str, not {type(action_type).__name__}")
        if _IN_REDUCER.get():
            raise RuntimeError("a reducer must not dispatch (it would deadlock); dispatch "
                               "from middleware or a subscriber instead")
        action: Action = {"type": action_type, "payload": payload}
        before = self._state
        applied: list[Action] = []
        if self._middleware:
            await self._call_chain(0, applied, action)
        else:
            await self._reduce(applied, action)
        if applied:
            if self._batch_depth:
                self._batch_actions.extend(applied)
            else:
                await self._notify(before, self._state, applied)
        state = self._state
        if durable:
            await self.wait_durable()
        return state

    async def wait_durable(self) -> None:
        """Wait until the persisted slices as they are now are stored (see ``dispatch``).

        Returns at once without persistence. Raises as ``dispatch(..., durable=True)``.
        """
        engine = self._live_engine() if self._engine is not None else None
        if engine is not None:
            await engine.wait_durable()

    def _call_chain(self, index: int, applied: list[Action], action: Action) -> Awaitable[State]:
        if index == len(self._middleware):
            return self._reduce(applied, action)
        call_next = functools.partial(self._call_chain, index + 1, applied)
        return self._middleware[index](action, call_next)

    async def _reduce(self, applied: list[Action], action: Action) -> State:
        fns = self._reducers.get(action["type"])
        if fns:
            # Async reducers may await: serialize them so none works on a stale state.
            async with self._dispatch_lock():
                token = _IN_REDUCER.set(True)
                try:
                    old = self._state
                    new = old
                    for fn in fns:
                        new = await self._run_reducer(fn, action, new)
                finally:
                    _IN_REDUCER.reset(token)
                self._install(old, new)
        applied.append(action)
        return self._state

    async def _run_reducer(self, fn: Reducer, action: Action, state: State) -> State:
        refs = [state[name] for name in _SLICES]
        copy = _deep_copy(state) if self._check_mutations else None
        result = fn(action, state)
        if inspect.isawaitable(result):
            result = await result
        name = getattr(fn, "__qualname__", repr(fn))
        if type(result) is not dict:
            raise ReducerError(f"reducer {name} for {action['type']} returned "
                               f"{type(result).__name__}, not the new state dict")
        for slice_name, ref in zip(_SLICES, refs, strict=True):
            if slice_name not in result or type(result[slice_name]) is not dict:
                raise ReducerError(f"reducer {name} for {action['type']} returned a state "
                                   f"without the {slice_name!r} slice dict; return "
                                   "{**state, 'slice': new_slice}")
            # Cheap check (O(slices)): a slice swapped inside the very dict it was given.
            if result is state and result[slice_name] is not ref:
                state.update(zip(_SLICES, refs, strict=True))
                raise ReducerError(f"reducer {name} for {action['type']} replaced "
                                   f"{slice_name!r} in place; return a new dict instead")
        if copy is not None and state != copy:
            raise ReducerError(f"reducer {name} for {action['type']} mutated the state it "
                               "was given; copy along the path (see cascadeui.store.set_in)")
        return result

    def _install(self, old: State, new: State) -> None:
        self._state = new
        if new[_APP] is old[_APP] and new[_VIEWS] is old[_VIEWS]:
            return
        self._generation += 1
        if self._engine is not None and not self._batch_depth:
            engine = self._live_engine()
            if engine is not None:
                engine.note_change()

    def _dispatch_lock(self) -> asyncio.Lock:
        # One lock per event loop: the process-wide store may outlive a loop (scripts,
        # test runs), and an asyncio.Lock is bound to the loop that first waited on it.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _notify(self, old: State, new: State, applied: list[Action]) -> None:
        if not self._subs:
            return
        action: Action
        if len(applied) == 1:
            action = applied[0]
            types = {action["type"]}
        else:
            action = {"type": BATCH_APPLIED, "payload": {"actions": list(applied)}}
            types = {a["type"] for a in applied} | {BATCH_APPLIED}
        for sub in self._subs:
            if sub.types is not None and sub.types.isdisjoint(types):
                continue
            try:
                if sub.selector is not None and (
                        _select(sub.selector, new) is _select(sub.selector, old)):
                    continue
                result = sub.callback(new, action)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # A broken subscriber must not break the dispatch or the other subscribers.
                log.exception("subscriber %r failed on %s", sub.callback, action["type"])

    @contextlib.asynccontextmanager
    async def _batch(self) -> AsyncIterator[None]:
        outermost = self._batch_depth == 0
        before, generation = self._state, self._generation
        if outermost:
            self._batch_actions = []
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if outermost:
                applied, self._batch_actions = self._batch_actions, []
                engine = self._live_engine()
                if engine is not None:
                    engine.batch_closed(self._generation != generation)
                if applied:
                    await self._notify(before, self._state, applied)

    def batch(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Group dispatches: one notification and one persistence step at the end.

        State changes apply at once (``state`` shows them inside the block); subscribers
        get one :data:`~cascadeui.actions.BATCH_APPLIED` action (or the single action) when
        the outermost block exits, even on an exception (nothing is rolled back). The batch
        is store-wide: dispatches from other tasks meanwhile join it.
        """
        return self._batch()

    # -- persistence -----------------------------------------------------------------

    async def enable_persistence(self, backend: StorageBackend | SyncStore, *,
                                 debounce: float = 0.05, max_delay: float = 1.0,
                                 retry_initial: float = 0.1, retry_max: float = 30.0,
                                 poll_interval: float | None = 0.5,
                                 durable_timeout: float = 2.5,
                                 version: int | None = None,
                                 migrations: Mapping[int, Migration] | None = None,
                                 push: bool = True, strict_version: bool = False) -> None:
        """Load the stored state, install its persisted slices, start the background writer.

        Slices found in the backend replace the ones in memory (a ``STATE_RESTORED``
        dispatch); slices it does not hold are kept and written. Enabling again with the
        same backend (the same object, or the same class on the same ``location``) does
        nothing.

        :param backend: a :class:`~cascadeui._backends.StorageBackend` (or a sync adapter).
        :param debounce: seconds of quiet after the last change before writing.
        :param max_delay: seconds after the first unsaved change by which a write starts.
        :param retry_initial: first retry delay after a failed write; doubles each failure.
        :param retry_max: cap of the retry delay.
        :param poll_interval: seconds between checks for changes committed by other
            processes (built-in backends only); None turns the watch off. Writes merge
            with such changes whatever this is (see ``docs/multiprocess.md``).
        :param push: also listen for the commits other processes announce (PostgreSQL
            NOTIFY, Redis PUBLISH, a stat watch of a JSON or SQLite file) and catch up
            at once; polling stays on as the safety net. Needs ``poll_interval``.
        :param durable_timeout: seconds a ``dispatch(..., durable=True)`` waits for its
            change to be stored (retrying failed writes) before it raises
            :class:`~cascadeui.errors.DurabilityTimeoutError`; the default leaves a bot
            time to answer inside Discord's 3 s interaction window.
        :param version: the schema version this code writes; the stored state is brought
            to it before it is loaded (see ``docs/migrations.md``). None: unversioned.
        :param migrations: ``{k: fn}``, ``fn(document) -> document`` upgrading the
            persisted document to version ``k``; one for every version 1..``version``.
        :param strict_version: without ``version``, refuse a stored state that has a
            schema version (by default a WARNING names it and the start goes on).
        :raises SchemaVersionError: the stored state is newer than ``version``, or
            ``strict_version`` refused it; nothing is written or enabled.
        :raises MigrationError: a migration step failed (it is named); nothing is written
            or enabled.
        :raises PersistenceError: the stored state cannot be loaded (``StateCorruptedError``,
            ``StorageUnavailableError``); nothing is enabled and the state is untouched.
        :raises RuntimeError: persistence is already enabled with another backend.
        :raises ValueError: a timing parameter is negative (``durable_timeout`` not
            positive).
        """
        backend = as_backend(backend)
        if self._engine is not None:
            if same_backend(self._engine.backend, backend):
                return
            raise RuntimeError(f"persistence is already enabled with {self._engine.backend!r};"
                               " await store.close() before enabling another backend")
        timing = Timing(debounce, max_delay, retry_initial, retry_max, poll_interval,
                        durable_timeout, push)
        if version is not None:  # before the load: the engine only ever sees current data
            await migrate_backend(backend, version, migrations)
        elif migrations:
            raise ValueError("migrations= needs version=, the schema version this code writes")
        stored, stored_at, rewrite = await load_persisted(backend)
        if version is None:
            check_unversioned(stored, location=location_of(backend, str(backend)),
                              strict=strict_version)
        if self._engine is not None:  # enabled by a concurrent call while we loaded
            raise RuntimeError("persistence was enabled concurrently; call it once")
        if stored:
            await self.dispatch(STATE_RESTORED, {"state": stored})
        engine = Engine(self, backend, timing)
        engine.adopt(stored, stored_at, rewrite=rewrite)
        self._engine = engine
        engine.start()

    def _live_engine(self) -> Engine | None:
        """The engine, moved to the running loop if the loop it was started on is closed.

        Scripts and notebooks may drive the process-wide store from one ``asyncio.run`` after
        another; the writer task dies with its loop, so a new one takes over (same backend,
        timing and durable snapshot) instead of touching a closed loop.
        """
        engine = self._engine
        if engine is not None and engine.loop.is_closed():
            self._engine = engine = engine.hand_over()
        return engine

    async def flush(self) -> bool:
        """Write the current persisted slices now (unless already durable) and wait.

        :returns: True once a snapshot at least as new as the state at the call is durable;
            False when persistence is off or the write failed: the failure, with its real
            type, is in :attr:`last_write_error` (``StorageUnavailableError``,
            ``LockTimeoutError``, ``StateCorruptedError``, ``ConfigurationError``,
            ``StoreClosedError``: every ``PersistenceError`` but ``SerializationError``
            is a storage failure), it is logged, and the writer keeps retrying with
            capped backoff plus jitter.
        :raises SerializationError: the persisted slices hold a value the backend cannot
            store (a ``TypeError``: the bug is in the data; the previous durable state
            stays in the backend).
        """
        engine = self._live_engine()
        if engine is None:
            return False
        return await engine.flush()

    async def close(self, *, close_backend: bool = False) -> None:
        """Flush, then stop the writer; idempotent.

        Never raises for a failed final write: it is logged. The store keeps working in
        memory afterwards and persistence may be enabled again.

        :param close_backend: also close the backend (``aclose()``); off by default because
            the caller created it and may still read from it.
        """
        engine = self._live_engine()
        if engine is None:
            return
        try:
            if await engine.flush():
                await engine.compact()
            else:
                log.error("closing %r with unsaved changes: the final write failed",
                          engine.backend)
        except (TypeError, ValueError) as exc:
            log.error("closing %r with unsaved changes: %s", engine.backend, exc)
        finally:
            self._engine = None
            await engine.stop()
            if close_backend:
                await aclose_backend(engine.backend)

    @property
    def merge_conflicts(self) -> int:
        """How many key paths both this store and another process changed (ours won)."""
        return self._engine.conflicts if self._engine is not None else 0

    @property
    def last_write_error(self) -> BaseException | None:
        """The error of the latest failed write, cleared by the next successful one."""
        return self._engine.last_error if self._engine is not None else None

    def __repr__(self) -> str:
        where = f" persisted to {self._engine.backend!r}" if self._engine else ""
        return f"<{type(self).__name__}{where}>"


def _deep_copy(value: Any) -> Any:
    if type(value) is dict:
        return {k: _deep_copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_deep_copy(v) for v in value]
    return value


_store: StateStore | None = None


def get_store() -> StateStore:
    """Return the process-wide store, creating it on first use."""
    global _store
    if _store is None:
        _store = StateStore()
    return _store


def reset_store() -> StateStore:
    """Replace the process-wide store with a fresh one (tests); the old one is not closed."""
    global _store
    _store = StateStore()
    return _store
