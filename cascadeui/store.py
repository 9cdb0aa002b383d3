"""The state store: reducers, middleware, subscribers, ``batch()``, and the persistence engine.

State is one dict of slices. ``application`` and ``persistent_views`` are persisted; ``views``
and ``sessions`` are transient and never written. Reducers return new dicts along the path
they change and share the rest, so any state reference is a consistent snapshot (a worker
thread may serialize it while the loop goes on) and "did a persisted slice change" is two
identity tests, whatever the size of the state.

The persistence engine is one asyncio task per store: it coalesces changes (``debounce``
after the last change, at most ``max_delay`` after the first unsaved one), writes one
snapshot at a time (so an older snapshot never lands after a newer one), skips snapshots
whose persisted slices are the ones already durable, and retries failures with capped
exponential backoff without ever dropping the dirty state. See ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, NamedTuple, cast

import anyio.to_thread

from .actions import (
    BATCH_APPLIED,
    BUILTIN_REDUCERS,
    PERSISTED_SLICES,
    STATE_RELOADED,
    STATE_RESTORED,
    TRANSIENT_SLICES,
    Action,
    Reducer,
    State,
    delete_in,
    set_in,
)
from .adapters import JournaledStore, SyncStore, VersionedStore, apply_shared
from .backends import AsyncBackend, StorageBackend, as_backend
from .errors import PersistenceError, StateCorruptedError, StorageUnavailableError
from .merge import diff, merge3
from .serializer import SnapshotEncoder, StateSerializer

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

log = logging.getLogger(__name__)

#: ``middleware(action, call_next) -> new state``; ``call_next`` runs the rest of the chain.
Middleware = Callable[[Action, Callable[[Action], Awaitable[State]]], Awaitable[State]]
#: ``callback(state, action)``, plain or async.
Subscriber = Callable[[State, Action], Any]

_SLICES = (*PERSISTED_SLICES, *TRANSIENT_SLICES)
_APP, _VIEWS = PERSISTED_SLICES
_MISSING: Any = object()
#: Compare-and-set attempts per write before giving up until the next retry.
_MAX_MERGE_ROUNDS = 20
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
        self._engine: _Engine | None = None
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

    async def dispatch(self, action_type: str, payload: Any = None) -> State:
        """Run ``{"type": action_type, "payload": payload}`` through middleware and reducers.

        Subscribers are notified (at the end of the outermost ``batch()`` when one is open)
        and a change of a persisted slice is scheduled for writing.

        :returns: the state after the action.
        :raises ReducerError: a reducer broke the state contract (nothing applied).
        :raises RuntimeError: called from inside a reducer.
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
        return self._state

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
                    if self._generation != generation:
                        engine.note_change()
                    engine.wake.set()  # the writer may be waiting for the batch
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
                                 poll_interval: float | None = 0.5) -> None:
        """Load the stored state, install its persisted slices, start the background writer.

        Slices found in the backend replace the ones in memory (a ``STATE_RESTORED``
        dispatch); slices it does not hold are kept and written. Enabling again with the
        same backend (the same object, or the same class on the same ``location``) does
        nothing.

        :param backend: a :class:`~cascadeui.backends.StorageBackend` (or a sync adapter).
        :param debounce: seconds of quiet after the last change before writing.
        :param max_delay: seconds after the first unsaved change by which a write starts.
        :param retry_initial: first retry delay after a failed write; doubles each failure.
        :param retry_max: cap of the retry delay.
        :param poll_interval: seconds between checks for changes committed by other
            processes (built-in backends only); None turns the watch off. Writes merge
            with such changes whatever this is (see ``docs/multiprocess.md``).
        :raises PersistenceError: the stored state cannot be loaded (``StateCorruptedError``,
            ``StorageUnavailableError``); nothing is enabled and the state is untouched.
        :raises RuntimeError: persistence is already enabled with another backend.
        :raises ValueError: a timing parameter is negative.
        """
        backend = as_backend(backend)
        if self._engine is not None:
            if _same_backend(self._engine.backend, backend):
                return
            raise RuntimeError(f"persistence is already enabled with {self._engine.backend!r};"
                               " await store.close() before enabling another backend")
        timing = _Timing(debounce, max_delay, retry_initial, retry_max, poll_interval)
        adapter = _versioned_adapter(backend)
        version: int | None = None
        if adapter is not None:
            loaded, version = await anyio.to_thread.run_sync(adapter.load_versioned)
        else:
            loaded = await backend.load_state()
        stored = _persisted_part(loaded, backend)
        if self._engine is not None:  # enabled by a concurrent call while we loaded
            raise RuntimeError("persistence was enabled concurrently; call it once")
        if stored:
            await self.dispatch(STATE_RESTORED, {"state": stored})
        engine = _Engine(self, backend, timing)
        # Durable = the objects the backend holds (identity compared later; a dispatch made
        # by another task while the restore was notified is therefore still written). A
        # slice the backend lacks counts as durable only while the memory copy is empty.
        for name in PERSISTED_SLICES:
            if name in stored:
                engine.durable[name] = stored[name]
            elif not self._state[name]:
                engine.durable[name] = self._state[name]
        engine.base = {name: stored.get(name, {}) for name in PERSISTED_SLICES}
        engine.version = version
        engine.rewrite = len(stored) != len(loaded)  # keys to drop: a journal cannot
        self._engine = engine
        engine.start()

    def _live_engine(self) -> _Engine | None:
        """The engine, moved to the running loop if the loop it was started on is closed.

        Scripts and notebooks may drive the process-wide store from one ``asyncio.run`` after
        another; the writer task dies with its loop, so a new one takes over (same backend,
        timing and durable snapshot) instead of touching a closed loop.
        """
        engine = self._engine
        if engine is not None and engine.loop.is_closed():
            fresh = _Engine(self, engine.backend, engine.timing)
            fresh.durable, fresh.base = engine.durable, engine.base
            fresh.version, fresh.conflicts = engine.version, engine.conflicts
            fresh.encoder, fresh.appended = engine.encoder, engine.appended
            fresh.rewrite = engine.rewrite
            fresh.rejected, fresh.rejected_error = engine.rejected, engine.rejected_error
            self._engine = engine = fresh
            engine.start()
        return engine

    async def flush(self) -> bool:
        """Write the current persisted slices now (unless already durable) and wait.

        :returns: True once a snapshot at least as new as the state at the call is durable;
            False when persistence is off or the write failed (logged; the background
            writer keeps retrying).
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
            aclose = getattr(engine.backend, "aclose", None)
            if close_backend and aclose is not None:
                await aclose()

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


@dataclasses.dataclass(frozen=True)
class _Timing:
    debounce: float
    max_delay: float
    retry_initial: float
    retry_max: float
    poll_interval: float | None = None

    def __post_init__(self) -> None:
        if min(self.debounce, self.max_delay, self.retry_initial, self.retry_max) < 0:
            raise ValueError("persistence timings must be >= 0 seconds")
        if self.poll_interval is not None and self.poll_interval <= 0:
            raise ValueError("poll_interval must be > 0 seconds, or None")


def _save_doc(adapter: VersionedStore, encoder: SnapshotEncoder | None,
              stored: dict[str, Any], doc: dict[str, Any], expected: int,
              journaled: bool) -> int | None:
    """Worker thread: compare-and-set ``doc`` over ``stored`` (the document at ``expected``).

    A journaled adapter gets only the leaf changes (found by identity between the shared
    snapshots, so O(what changed)); it rewrites the whole document, encoded here on
    demand, when its journal is due for compaction. Other adapters get the whole document.
    """
    if not (journaled and expected):
        return _save_full(adapter, encoder, doc, expected)

    def full() -> str:
        return encoder.encode(doc) if encoder is not None else adapter.serializer.serialize(doc)

    return cast(JournaledStore, adapter).save_changes(diff(stored, doc), expected, full=full)


def _save_full(adapter: VersionedStore, encoder: SnapshotEncoder | None,
               doc: dict[str, Any], expected: int) -> int | None:
    """Worker thread: rewrite ``doc`` whole (compare-and-set), which empties a journal."""
    encoded = encoder.encode(doc) if encoder is not None else None
    return adapter.save_if_version(doc, expected, encoded=encoded)


def _versioned_adapter(backend: StorageBackend) -> VersionedStore | None:
    """The compare-and-set adapter behind a backend, if it has one.

    Only for an :class:`~cascadeui.backends.AsyncBackend` whose ``save_state`` and
    ``load_state`` are not overridden: a subclass that customises them (metrics, another
    format) gets exactly the calls it overrides, and last-writer-wins semantics.
    """
    adapter = getattr(backend, "store", None)
    if not isinstance(backend, AsyncBackend) or not isinstance(adapter, VersionedStore):
        return None
    cls = type(backend)
    if cls.save_state is not AsyncBackend.save_state or (
            cls.load_state is not AsyncBackend.load_state):
        return None
    return adapter


def _same_backend(a: StorageBackend, b: StorageBackend) -> bool:
    """The same object, or the same built-in backend class on the same location."""
    if a is b:
        return True
    location = getattr(a, "location", None)
    return type(a) is type(b) and location is not None and location == getattr(
        b, "location", None)


def _persisted_part(loaded: Any, backend: StorageBackend) -> dict[str, Any]:
    """The persisted slices of what a backend returned, checked; other keys are ignored."""
    location = str(getattr(backend, "location", backend))
    if not isinstance(loaded, dict):
        raise StateCorruptedError(f"{location}: stored state is a {type(loaded).__name__}, "
                                  "not a dict", location=location)
    stored: dict[str, Any] = {}
    for name in PERSISTED_SLICES:
        if name in loaded:
            if not isinstance(loaded[name], dict):
                raise StateCorruptedError(
                    f"{location}: stored slice {name!r} is a {type(loaded[name]).__name__}, "
                    "not a dict", location=location)
            stored[name] = loaded[name]
    ignored = sorted(str(k) for k in loaded if k not in PERSISTED_SLICES)
    if ignored:
        # pycascadeui 2.x also wrote its transient "views"; they are dropped on next write.
        log.info("ignoring stored keys %s from %s (not persisted slices)", ignored, location)
    return stored


def _deep_copy(value: Any) -> Any:
    if type(value) is dict:
        return {k: _deep_copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_deep_copy(v) for v in value]
    return value


class _Engine:
    """The background writer of one store: one task, one snapshot in flight at a time."""

    def __init__(self, store: StateStore, backend: StorageBackend, timing: _Timing) -> None:
        self.store = store
        self.backend = backend
        self.timing = timing
        #: Slice objects known to be in the backend (identity compared).
        self.durable: dict[str, Any] = dict.fromkeys(PERSISTED_SLICES, _MISSING)
        #: The persisted slices as last loaded or written: the common ancestor of a merge.
        self.base: dict[str, Any] = {}
        #: The backend version ``base`` was read at (None: not a versioned backend).
        self.version: int | None = None
        self.adapter = _versioned_adapter(backend)
        #: Re-encodes only the subtrees that changed since the last write (issue 6); not
        #: for a custom serializer class, whose own ``serialize`` must be the one used.
        self.encoder = SnapshotEncoder(self.adapter.serializer) if (
            self.adapter is not None and type(self.adapter.serializer) is StateSerializer
        ) else None
        #: The adapter appends changes to a journal (issue 6); ``appended`` is set once it
        #: has since the last whole-document write, so close() can fold the journal in.
        self.journaled = isinstance(self.adapter, JournaledStore)
        self.appended = False
        #: The stored document holds keys that are not persisted slices (pycascadeui 2.x
        #: wrote its transient ``views``): the next write is whole, which drops them.
        self.rewrite = False
        self.conflicts = 0
        #: Slices whose write failed with a data error: not retried until they change.
        self.rejected: dict[str, Any] | None = None
        self.rejected_error: BaseException | None = None
        self.last_error: BaseException | None = None
        self.first_change: float | None = None
        self.last_change = 0.0
        self.failures = 0
        self.retry_at: float | None = None
        self.waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = self.loop.create_task(self._run(), name="cascadeui-store-writer")
        self.task.add_done_callback(self._on_done)
        if self.needs_write():
            self.note_change()

    def note_change(self) -> None:
        """Hot path (every persisted change): O(1), wakes the writer on the first one only."""
        now = self.loop.time()
        self.last_change = now
        if self.first_change is None:
            self.first_change = now
            self.wake.set()

    def _matches(self, slices: dict[str, Any] | None) -> bool:
        state = self.store.state
        return slices is not None and all(state[n] is slices[n] for n in PERSISTED_SLICES)

    def needs_write(self) -> bool:
        return not self._matches(self.durable) and not self._matches(self.rejected)

    def _rejection(self) -> BaseException:
        return self.rejected_error or PersistenceError("the snapshot was rejected")

    async def flush(self) -> bool:
        if self._matches(self.durable):
            return True
        if self._matches(self.rejected):
            raise self._rejection()
        if self.task is None or self.task.done():
            return False
        waiter: asyncio.Future[bool] = self.loop.create_future()
        self.waiters.append((self.store._generation, waiter))
        self.wake.set()
        try:
            return await asyncio.shield(waiter)
        finally:
            if waiter in (w for _, w in self.waiters):
                self.waiters = [(g, w) for g, w in self.waiters if w is not waiter]

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.task is not None:
            await asyncio.wait([self.task])

    def _due(self) -> float:
        """Loop time at which the next write may start."""
        if self.stopping or self.waiters:
            return 0.0
        if self.retry_at is not None:
            return self.retry_at
        if self.first_change is None:
            return self.loop.time()  # dirty without a recorded change (e.g. after enable)
        return min(self.last_change + self.timing.debounce,
                   self.first_change + self.timing.max_delay)

    async def _run(self) -> None:
        while not self.stopping:
            if not self.needs_write():
                self.first_change = None
                self._resolve(self.store._generation,
                              True if self._matches(self.durable) else self._rejection())
                self.wake.clear()
                poll = self.timing.poll_interval if self.adapter is not None else None
                try:
                    await asyncio.wait_for(self.wake.wait(), poll)
                except asyncio.TimeoutError:
                    await self._poll()
                continue
            if self.store._batch_depth and not self.waiters:
                # A batch is open: its end is the one persistence step (it sets wake).
                self.wake.clear()
                await self.wake.wait()
                continue
            delay = self._due() - self.loop.time()
            if delay > 0:
                # New changes only move last_change; this wakes once per interval, not per
                # dispatch. flush() and stop() set the event to cut the wait short.
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
                continue
            await self._write_once()
        self._resolve(self.store._generation, False)

    async def _write_once(self) -> None:
        state, generation = self.store.state, self.store._generation
        snapshot = {name: state[name] for name in PERSISTED_SLICES}
        first = self.first_change
        self.first_change = None  # changes from now on start a new coalescing window
        try:
            written = await self.commit(snapshot)
            error: BaseException | None = None
        except (TypeError, ValueError) as exc:
            # Bad data (SerializationError is a TypeError): retrying the same snapshot
            # cannot help. Keep the previous durable state, wait for the data to change.
            log.error("state not saved to %r, the data cannot be stored: %s", self.backend, exc)
            self.rejected, self.rejected_error, self.last_error = snapshot, exc, exc
            self.retry_at, self.failures = None, 0
            self._resolve(generation, exc)
            return
        except Exception as exc:
            written, error = None, exc
        if written is not None:
            self.durable, self.rejected, self.rejected_error = written, None, None
            self.failures, self.retry_at, self.last_error = 0, None, None
            self._resolve(generation, True)
            return
        self.failures += 1
        backoff = min(self.timing.retry_initial * 2 ** (self.failures - 1),
                      self.timing.retry_max)
        self.retry_at = self.loop.time() + backoff
        if self.first_change is None or (first is not None and first < self.first_change):
            self.first_change = first if first is not None else self.loop.time()
        reason = f"{type(error).__name__}: {error}" if error else "save_state returned False"
        self.last_error = error or PersistenceError(f"save to {self.backend!r} failed")
        # A traceback only for the unexpected: a storage error's message is its reason.
        expected = error is None or isinstance(error, (PersistenceError, OSError))
        log.error("state not saved to %r (%s); attempt %d, retrying in %.2fs",
                  self.backend, reason, self.failures, backoff,
                  exc_info=None if expected else error)
        self._resolve(generation, False)

    async def commit(self, snapshot: dict[str, Any]) -> dict[str, Any] | None:
        """The one write step: persist ``snapshot`` (the persisted slices only).

        :returns: the document now durable (``snapshot``, or ``snapshot`` merged with what
            another process committed meanwhile), or None when the backend said no.

        A built-in backend writes by compare-and-set on the version this store last read.
        When another process committed since, its document is loaded and merged with ours
        key path by key path (:func:`~cascadeui.merge.merge3`: their changes kept, ours on
        top, a leaf both changed goes to us as the later writer, logged and counted), the
        merge is written against the new version, and the merged slices are installed in
        memory with a ``STATE_RELOADED`` action. Other backends get a whole-document
        ``save_state``. The document is encoded by :class:`SnapshotEncoder`, which reuses
        the text of every subtree unchanged since the last write (same object).
        """
        adapter, encoder = self.adapter, self.encoder
        if adapter is None or self.version is None:
            return snapshot if await self.backend.save_state(snapshot) else None
        expected: int = self.version
        stored = self.base  # what the backend holds at `expected`
        doc, changed = snapshot, []
        for _ in range(_MAX_MERGE_ROUNDS):
            journaled = self.journaled and not self.rewrite
            version = await anyio.to_thread.run_sync(_save_doc, adapter, encoder, stored, doc,
                                                     expected, journaled)
            if version is not None:
                self.base, self.version, self.rewrite = doc, version, False
                self.appended = self.appended or (journaled and expected != 0)
                break
            theirs, expected = await self._load_theirs(adapter, stored, expected)
            stored, self.version = theirs, expected
            if expected == 0:
                # The document vanished (a Redis restarted without persistence, a file
                # removed): that is lost data, not another writer's deletions. Write ours.
                log.warning("%r holds no state any more; writing this store's state again",
                            self.backend)
                doc = snapshot
                continue
            result = merge3(self.base, snapshot, theirs)
            doc, changed = result.merged, result.theirs
            self._count_conflicts(result.conflicts)
        else:
            raise StorageUnavailableError(
                f"{self.backend!r}: other writers kept moving the version; gave up after "
                f"{_MAX_MERGE_ROUNDS} merge rounds (will retry)")
        if doc is not snapshot:
            await self.store.dispatch(STATE_RELOADED,
                                      {"state": doc, "base": snapshot, "paths": changed})
        return doc

    async def compact(self) -> None:
        """Rewrite the durable document whole, folding the journal in (on close).

        After a clean shutdown the snapshot alone (the file, the row, the key) holds the
        whole state, for tools that read it directly. Skipped when another process has
        committed since (its own writes keep the journal bounded); failures are logged.
        """
        if not self.appended or self.adapter is None or self.version is None:
            return
        try:
            version = await anyio.to_thread.run_sync(_save_full, self.adapter, self.encoder,
                                                     self.base, self.version)
        except (PersistenceError, TypeError, ValueError) as exc:
            log.warning("could not compact the journal of %r on close: %s", self.backend, exc)
            return
        if version is not None:
            self.version, self.appended = version, False

    async def _poll(self) -> None:
        """Load and install what another process committed, if the version moved."""
        adapter = self.adapter
        if adapter is None or self.version is None:
            return
        try:
            version = await anyio.to_thread.run_sync(adapter.version)
            if version == self.version:
                return
            if version == 0:  # the document vanished: lost data, write ours again
                log.warning("%r holds no state any more; writing this store's state again",
                            self.backend)
                self.version = 0
                self.durable = dict.fromkeys(PERSISTED_SLICES, _MISSING)
                self.note_change()
                return
            theirs, version = await self._load_theirs(adapter, self.base, self.version)
        except PersistenceError as exc:
            log.warning("cannot check %r for changes from other processes: %s",
                        self.backend, exc)
            return
        state = self.store.state
        current = {name: state[name] for name in PERSISTED_SLICES}
        result = merge3(self.base, current, theirs)  # unsaved local changes stay on top
        self.version = version
        if not result.theirs:
            return  # rewritten with the same content: what is durable is unchanged
        self.base, self.durable = theirs, dict(theirs)
        await self.store.dispatch(STATE_RELOADED, {
            "state": result.merged, "base": current, "paths": result.theirs})

    async def _load_theirs(self, adapter: VersionedStore, known: dict[str, Any],
                           at: int) -> tuple[dict[str, Any], int]:
        """The stored persisted slices (every one present) and their version.

        ``known`` is the document at version ``at``. A journaled adapter that still holds
        every commit since then returns just those records, applied to ``known`` sharing
        its unchanged subtrees: catching up costs what the other process changed, not a
        decode of the whole document. Otherwise the whole document is loaded.
        """
        found = None
        if self.journaled and at:
            found = await anyio.to_thread.run_sync(
                cast(JournaledStore, adapter).load_changes, at)
        if found is not None:
            records, version = found
            raw = known
            for ops in records:
                raw = apply_shared(raw, ops)
        else:
            raw, version = await anyio.to_thread.run_sync(adapter.load_versioned)
        stored = _persisted_part(raw, self.backend)  # the slices must still be dicts
        self.rewrite = self.rewrite or len(stored) != len(raw)
        return {name: stored.get(name, {}) for name in PERSISTED_SLICES}, version

    def _count_conflicts(self, conflicts: list[tuple[Any, ...]]) -> None:
        if conflicts:
            self.conflicts += len(conflicts)
            shown = ", ".join(repr(list(p)) for p in conflicts[:5])
            log.warning("%d key path(s) changed both here and by another process; this "
                        "store's later write wins: %s%s", len(conflicts), shown,
                        " ..." if len(conflicts) > 5 else "")

    def _resolve(self, generation: int, outcome: bool | BaseException) -> None:
        """Settle every flush() waiter whose state was in the snapshot just attempted."""
        keep = []
        for target, waiter in self.waiters:
            if target > generation:
                keep.append((target, waiter))
            elif not waiter.done():
                if isinstance(outcome, BaseException):
                    waiter.set_exception(outcome)
                else:
                    waiter.set_result(outcome)
        self.waiters = keep

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the persistence writer of %r died", self.store,
                      exc_info=task.exception())
        for _, waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(False)
        self.waiters = []


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
