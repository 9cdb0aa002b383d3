"""The persistence engine: one background writer per store, speaking only to its backend.

The engine coalesces changes (``debounce`` after the last change, at most ``max_delay``
after the first unsaved one), writes one snapshot at a time (so an older snapshot never
lands after a newer one), skips snapshots whose persisted slices are the ones already
durable, and retries failures with capped exponential backoff plus jitter without ever
dropping the dirty state. See ``docs/store.md``.

Durable dispatches (``dispatch(..., durable=True)``) are a group commit: a waiter asks for
the state at its dispatch; the writer starts a write at once (no coalescing delay), every
change that arrives while that write is in flight goes into the next one, and every waiter
whose change a write held wakes when that write is durable. A failed write keeps its
durable waiters waiting (retried with backoff) until a write lands or their
``durable_timeout`` passes, then they get :class:`~cascadeui.errors.DurabilityTimeoutError`.

It reaches storage only through the backend: a built-in
:class:`~cascadeui._backends.AsyncBackend` gives it compare-and-set writes, journal appends
and catch-up reads (each one worker-thread call), so several processes can share a state;
any other :class:`~cascadeui._backends.StorageBackend` gets whole ``save_state`` calls.

Errors are classified by type, once, here:

* bad data: :class:`~cascadeui.errors.SerializationError` (or a plain ``TypeError`` /
  ``ValueError`` raised by a custom backend's own encoder). Retrying the same snapshot
  cannot help: it is rejected until the data changes, and ``flush()`` raises it.
* everything else, every other :class:`~cascadeui.errors.PersistenceError` included
  (``StorageUnavailableError``, ``StateCorruptedError``, ``ConfigurationError``,
  ``StoreClosedError``), is a storage failure: retried with capped backoff plus jitter, so
  many processes do not hammer a dead server in step, and kept with its real type in
  ``store.last_write_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from typing import TYPE_CHECKING, Any

from . import _shutdown
from ._backends import AsyncBackend, StorageBackend
from ._merge import diff, merge3
from ._watch import Listener, listener_for
from .actions import PERSISTED_SLICES, STATE_RELOADED
from .adapters import apply_shared
from .errors import (
    DurabilityTimeoutError,
    PersistenceError,
    SerializationError,
    StateCorruptedError,
    StorageUnavailableError,
    StoreClosedError,
)
from .serializer import SnapshotEncoder, StateSerializer

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["MISSING", "Engine", "Timing", "is_bad_data", "load_persisted", "same_backend"]

log: logging.Logger = logging.getLogger(__name__)

#: A slice value no state holds: "nothing known to be durable".
MISSING: Any = object()
#: Compare-and-set attempts per write before giving up until the next retry.
_MAX_MERGE_ROUNDS = 20
#: Each retry delay is the capped exponential one times a factor drawn from this range, so
#: processes that failed together do not retry together.
_JITTER = (1.0, 1.25)


@dataclasses.dataclass(frozen=True)
class Timing:
    """The writer's timings, in seconds (checked once, at ``enable_persistence``)."""

    debounce: float
    max_delay: float
    retry_initial: float
    retry_max: float
    poll_interval: float | None = None
    durable_timeout: float = 2.5
    #: Listen for commits announced by other processes (cascadeui._watch), on top of polling.
    push: bool = True

    def __post_init__(self) -> None:
        if min(self.debounce, self.max_delay, self.retry_initial, self.retry_max) < 0:
            raise ValueError("persistence timings must be >= 0 seconds")
        if self.poll_interval is not None and self.poll_interval <= 0:
            raise ValueError("poll_interval must be > 0 seconds, or None")
        if not self.durable_timeout > 0:
            raise ValueError("durable_timeout must be > 0 seconds")

    def backoff(self, failures: int) -> tuple[float, float]:
        """The delay before retry number ``failures`` (1-based), as (nominal, jitter).

        The nominal delay doubles from ``retry_initial`` up to ``retry_max``; the jitter
        adds up to a quarter of it at random, so processes that failed together (a server
        restart) do not retry together.
        """
        nominal = min(self.retry_initial * 2.0 ** min(failures - 1, 60), self.retry_max)
        return nominal, float(nominal * (random.uniform(*_JITTER) - 1.0))


def is_bad_data(exc: BaseException) -> bool:
    """True for an error that retrying the same snapshot cannot cure (see the module doc)."""
    if isinstance(exc, SerializationError):
        return True
    # A custom backend's own json.dumps raises plain TypeError/ValueError on bad data; a
    # PersistenceError that happens to be a ValueError (StateCorruptedError,
    # ConfigurationError) is the medium's fault, not the data's.
    return isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, PersistenceError)


def versioned_backend(backend: StorageBackend) -> AsyncBackend[Any] | None:
    """``backend`` when it offers compare-and-set writes the engine may use, else None.

    Only for an :class:`~cascadeui._backends.AsyncBackend` whose ``save_state`` and
    ``load_state`` are not overridden: a subclass that customises them (metrics, another
    format) gets exactly the calls it overrides, and last-writer-wins semantics.
    """
    if not isinstance(backend, AsyncBackend) or not backend.versioned:
        return None
    cls = type(backend)
    if cls.save_state is not AsyncBackend.save_state or (
            cls.load_state is not AsyncBackend.load_state):
        return None
    return backend


async def load_persisted(backend: StorageBackend) -> tuple[dict[str, Any], int | None, bool]:
    """Load what ``backend`` holds: its persisted slices, their version, and whether the
    stored document holds other keys too (then the next write must be whole to drop them).

    :raises PersistenceError: the stored state cannot be loaded.
    """
    versioned = versioned_backend(backend)
    version: int | None = None
    if versioned is not None:
        loaded, version = await versioned.load_versioned()
    else:
        loaded = await backend.load_state()
    stored = persisted_part(loaded, backend)
    return stored, version, len(stored) != len(loaded)


def same_backend(a: StorageBackend, b: StorageBackend) -> bool:
    """The same object, or the same built-in backend class on the same location."""
    if a is b:
        return True
    location = getattr(a, "location", None)
    return type(a) is type(b) and location is not None and location == getattr(
        b, "location", None)


def persisted_part(loaded: Any, backend: StorageBackend) -> dict[str, Any]:
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


class Engine:
    """The background writer of one store: one task, one snapshot in flight at a time."""

    def __init__(self, store: StateStore, backend: StorageBackend, timing: Timing) -> None:
        self.store = store
        self.backend = backend
        self.timing = timing
        #: Slice objects known to be in the backend (identity compared).
        self.durable: dict[str, Any] = dict.fromkeys(PERSISTED_SLICES, MISSING)
        #: The persisted slices as last loaded or written: the common ancestor of a merge.
        self.base: dict[str, Any] = {}
        #: The backend version ``base`` was read at (None: not a versioned backend).
        self.version: int | None = None
        #: The compare-and-set backend (None: whole ``save_state`` calls only).
        self.cas: AsyncBackend[Any] | None = versioned_backend(backend)
        serializer = self.cas.serializer if self.cas is not None else None
        #: Re-encodes only the subtrees that changed since the last write (issue 6); not
        #: for a custom serializer class, whose own ``serialize`` must be the one used.
        self.encoder: SnapshotEncoder | None = SnapshotEncoder(serializer) if (
            serializer is not None and type(serializer) is StateSerializer) else None
        #: The backend appends changes to a journal (issue 6); ``appended`` is set once it
        #: has since the last whole-document write, so close() can fold the journal in.
        self.journaled: bool = self.cas is not None and self.cas.journaled
        self.appended: bool = False
        #: The stored document holds keys that are not persisted slices (pycascadeui 2.x
        #: wrote its transient ``views``): the next write is whole, which drops them.
        self.rewrite: bool = False
        self.conflicts: int = 0
        #: Slices whose write failed with a data error: not retried until they change.
        self.rejected: dict[str, Any] | None = None
        self.rejected_error: BaseException | None = None
        self.last_error: BaseException | None = None
        self.first_change: float | None = None
        self.last_change: float = 0.0
        self.failures: int = 0
        self.retry_at: float | None = None
        #: flush() callers: (generation wanted, future); settled by the next attempt.
        self.waiters: list[tuple[int, asyncio.Future[bool]]] = []
        #: Durable dispatches: (generation wanted, future, deadline); settled only by a write
        #: that holds their change (or a rejection, the writer stopping, or the deadline),
        #: never by a failure. In arrival order, so deadlines only grow.
        self.durable_waiters: list[tuple[int, asyncio.Future[None], float]] = []
        #: One timer for all durable deadlines, at the oldest pending one: a timer (and a
        #: shielded wait_for) per dispatch cost a quarter of a durable change's CPU and
        #: sent enough short-lived objects to the oldest GC generation to trigger full
        #: collections, which stall the loop (scripts/bench/durable.py).
        self.expiry: asyncio.TimerHandle | None = None
        #: A durable waiter arrived since the last attempt: try again soon after a failure.
        self.demand: bool = False
        self.failed_at: float = 0.0
        #: The store's generation the last durable write held (unsaved changes = the
        #: generations since, for the shutdown WARNING).
        self.saved_generation: int = store._generation
        self.stopping: bool = False
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.wake: asyncio.Event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: The thread that hears other processes' commits at once (cascadeui._watch).
        self.listener: Listener | None = None
        #: A commit was announced (or a listener reconnected): check the version now.
        self.pushed: bool = False

    def adopt(self, stored: dict[str, Any], version: int | None, *, rewrite: bool) -> None:
        """Take what :func:`load_persisted` found as the durable starting point.

        Durable = the objects the backend holds (identity compared later; a dispatch made
        by another task while the restore was notified is therefore still written). A
        slice the backend lacks counts as durable only while the memory copy is empty.
        """
        state = self.store.state
        for name in PERSISTED_SLICES:
            if name in stored:
                self.durable[name] = stored[name]
            elif not state[name]:
                self.durable[name] = state[name]
        self.base = {name: stored.get(name, {}) for name in PERSISTED_SLICES}
        self.version = version
        self.rewrite = rewrite  # keys to drop: a journal cannot
        self.saved_generation = self.store._generation

    def successor(self) -> Engine:
        """A new engine on the running loop that continues this one (same durable state)."""
        fresh = Engine(self.store, self.backend, self.timing)
        # Durable waiters of the old loop went with it (their futures cannot be woken).
        fresh.durable, fresh.base = self.durable, self.base
        fresh.version, fresh.conflicts = self.version, self.conflicts
        fresh.encoder, fresh.appended = self.encoder, self.appended
        fresh.rewrite = self.rewrite
        fresh.rejected, fresh.rejected_error = self.rejected, self.rejected_error
        fresh.saved_generation = self.saved_generation
        return fresh

    def start(self) -> None:
        self.task = self.loop.create_task(self._run(), name="cascadeui-store-writer")
        self.task.add_done_callback(self._on_done)
        _shutdown.watch(self)
        if self.needs_write():
            self.note_change()
        if self.cas is not None and self.timing.poll_interval is not None and self.timing.push:
            self.listener = listener_for(self.cas.store, self._announced)
            if self.listener is not None:
                self.listener.start()

    def _announced(self, version: int | None) -> None:
        """From the listener's thread: another commit happened (or may have)."""
        try:
            self.loop.call_soon_threadsafe(self._on_announced, version)
        except RuntimeError:  # the loop is closed: this engine is gone
            if self.listener is not None:
                self.listener.signal_stop()

    def _on_announced(self, version: int | None) -> None:
        if version is not None and self.version is not None and version <= self.version:
            return  # our own commit, or one we already hold
        self.pushed = True
        self.wake.set()

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
        """Write now unless durable and wait; see :meth:`StateStore.flush`."""
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

    async def wait_durable(self) -> None:
        """Return once the current state's persisted slices are durable (group commit).

        :raises DurabilityTimeoutError: not durable within ``timing.durable_timeout``.
        :raises SerializationError: the state holds a value that cannot be stored.
        :raises StoreClosedError: the writer stopped before the change was durable.
        """
        if self._matches(self.durable):
            return
        if self._matches(self.rejected):
            raise self._rejection()
        if self.task is None or self.task.done():
            raise StoreClosedError(f"the writer of {self.backend!r} is stopped; the change "
                                   "is not durable", location=self._location())
        waiter: asyncio.Future[None] = self.loop.create_future()
        deadline = self.loop.time() + self.timing.durable_timeout
        self.durable_waiters.append((self.store._generation, waiter, deadline))
        if self.expiry is None:
            self.expiry = self.loop.call_at(deadline, self._expire)
        self.demand = True
        self.wake.set()
        # Not shielded: a cancelled caller cancels its own future, which every settling
        # path skips (done), and it leaves the list with the next write or deadline.
        await waiter

    def _expire(self) -> None:
        """The timer: fail the durable waiters past their deadline, re-arm for the next."""
        self.expiry = None
        now = self.loop.time()
        keep = []
        timeout = self.timing.durable_timeout
        for target, waiter, deadline in self.durable_waiters:
            if waiter.done():
                continue
            if deadline > now:
                keep.append((target, waiter, deadline))
                continue
            error = self.last_error
            reason = f"{type(error).__name__}: {error}" if error else "the writes were slow"
            exc = DurabilityTimeoutError(
                f"change not stored in {self._location()} within {timeout:g} s ({reason}); "
                "it is kept in memory and the writer keeps retrying",
                timeout=timeout, location=self._location(), last_error=error)
            exc.__cause__, exc.__suppress_context__ = error, True  # as `raise ... from`
            waiter.set_exception(exc)
        self.durable_waiters = keep
        if keep:
            self.expiry = self.loop.call_at(keep[0][2], self._expire)

    def _location(self) -> str:
        return str(getattr(self.backend, "location", self.backend))

    # -- shutdown (see cascadeui._shutdown) ---------------------------------------------

    async def final_write(self, why: str) -> None:
        """Write what is pending now, retrying for up to ``durable_timeout`` seconds.

        Only for the writer task itself, or once it is gone: it writes inline. A WARNING
        names what is still unsaved afterwards.
        """
        deadline = self.loop.time() + self.timing.durable_timeout
        while self.needs_write():
            await self._write_once()
            wait = min((self.retry_at or 0.0) - self.loop.time(),
                       deadline - self.loop.time())
            if not self.needs_write() or self.loop.time() >= deadline:
                break
            if wait > 0:
                await asyncio.sleep(wait)
        self.warn_unsaved(why)

    async def drain(self, why: str, *, warn: bool = True) -> None:
        """Write what is pending through the running writer, and what arrives meanwhile,
        for up to ``durable_timeout`` seconds; then (``warn``) WARN about what is not."""
        if self.task is None or self.task.done():
            await self.final_write(why)
            return
        deadline = self.loop.time() + self.timing.durable_timeout
        while self.needs_write() and self.loop.time() < deadline:
            try:  # a durable wait: failed writes are retried until durable_timeout passes
                await self.wait_durable()
            except (PersistenceError, TypeError, ValueError):
                break
        if warn:
            self.warn_unsaved(why)

    def save_at_exit(self) -> None:
        """Interpreter exit: write what is pending through this engine's loop or a new one."""
        if not self.current or not self.needs_write():
            return
        budget = self.timing.durable_timeout + 1.0
        if self.loop.is_running():  # in another thread (sync API, a bot in a thread)
            future = asyncio.run_coroutine_threadsafe(self.drain("interpreter exit"),
                                                      self.loop)
            try:
                future.result(budget)
            except Exception:
                self.warn_unsaved("interpreter exit")
            return

        async def write_on_new_loop() -> None:
            fresh = self.successor()
            await fresh.final_write("interpreter exit")
            self.durable, self.saved_generation = fresh.durable, fresh.saved_generation
            fresh.warned = self.warned = True  # said once, by final_write

        asyncio.run(write_on_new_loop())

    #: The shutdown WARNING was logged for this engine (said once).
    warned: bool = False

    @property
    def current(self) -> bool:
        """This engine still persists its store (not closed, not replaced by a successor).

        A closed store keeps working in memory: what it changes afterwards is not ours to
        write at exit.
        """
        return self.store._engine is self and not self.stopping

    def warn_unsaved(self, why: str) -> None:
        """Log a WARNING naming how many changes are not saved and where (once)."""
        if not self.needs_write() or self.warned:
            return
        self.warned = True
        count = max(1, self.store._generation - self.saved_generation)
        reason = self.rejected_error if self._matches(self.rejected) else self.last_error
        log.warning("%d change(s) to the persisted state were NOT saved to %s before %s "
                    "(%s); they are lost", count, self._location(), why,
                    f"{type(reason).__name__}: {reason}" if reason else "no write finished")

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.task is not None:
            await asyncio.wait([self.task])
        listener, self.listener = self.listener, None
        if listener is not None:
            # Waited for without a worker thread: stop() also runs at interpreter exit
            # (cascadeui.sync), when no new thread may start. It ends within a tick.
            ended = asyncio.Event()
            listener.signal_stop(on_exit=lambda: self.loop.call_soon_threadsafe(ended.set))
            if listener.alive:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ended.wait(), 2.0)

    def _due(self) -> float:
        """Loop time at which the next write may start."""
        if self.stopping or self.waiters:
            return 0.0
        if self.durable_waiters:
            # Group commit: no coalescing delay. After a failure, new durable demand may
            # cut the backoff short, but attempts stay at least retry_initial apart.
            if self.retry_at is None:
                return 0.0
            if self.demand:
                return min(self.retry_at, self.failed_at + self.timing.retry_initial)
            return self.retry_at
        if self.retry_at is not None:
            return self.retry_at
        if self.first_change is None:
            return self.loop.time()  # dirty without a recorded change (e.g. after enable)
        return min(self.last_change + self.timing.debounce,
                   self.first_change + self.timing.max_delay)

    async def _run(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            # The loop is ending (asyncio.run() returning, Ctrl-C, bot.run() returning):
            # asyncio cancels every task. Write what is pending before going.
            if not self.stopping:
                # Taken: the cancellation was delivered here (3.11+ counts it, and a
                # pending count would make anyio's worker-thread waits cancel at once).
                task = asyncio.current_task()
                uncancel = getattr(task, "uncancel", None)
                if uncancel is not None:
                    uncancel()
                await self.final_write("its event loop ended")
            raise

    async def _serve(self) -> None:
        while not self.stopping:
            if not self.needs_write():
                self.first_change = None
                self._resolve(self.store._generation,
                              True if self._matches(self.durable) else self._rejection())
                if self.pushed:  # announced by another process: catch up at once
                    self.pushed = False
                    await self._poll()
                    continue
                self.wake.clear()
                poll = self.timing.poll_interval if self.cas is not None else None
                try:
                    await asyncio.wait_for(self.wake.wait(), poll)
                except asyncio.TimeoutError:
                    await self._poll()  # the safety net: announcements can be lost
                continue
            if self.store._batch_depth and not (self.waiters or self.durable_waiters):
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
        if self._matches(self.durable):
            self._resolve(self.store._generation, True)
        self._abandon()

    async def _write_once(self) -> None:
        state, generation = self.store.state, self.store._generation
        snapshot = {name: state[name] for name in PERSISTED_SLICES}
        first = self.first_change
        self.first_change = None  # changes from now on start a new coalescing window
        self.demand = False  # durable waiters arriving from now on need the next write
        error: BaseException | None = None
        try:
            written = await self.commit(snapshot)
        except Exception as exc:
            if is_bad_data(exc):
                self._reject(snapshot, generation, exc)
                return
            written, error = None, exc
        if written is not None:
            self.saved_generation = generation
            self.durable, self.rejected, self.rejected_error = written, None, None
            self.failures, self.retry_at, self.last_error = 0, None, None
            self._resolve(generation, True)
            return
        self.failures += 1
        backoff, jitter = self.timing.backoff(self.failures)
        self.failed_at = self.loop.time()
        self.retry_at = self.failed_at + backoff + jitter
        if self.first_change is None or (first is not None and first < self.first_change):
            self.first_change = first if first is not None else self.loop.time()
        reason = f"{type(error).__name__}: {error}" if error else "save_state returned False"
        self.last_error = error or PersistenceError(f"save to {self.backend!r} failed")
        # A traceback only for the unexpected: a storage error's message is its reason.
        expected = error is None or isinstance(error, (PersistenceError, OSError))
        log.error("state not saved to %r (%s); attempt %d, retrying in %.2fs (+%.3fs jitter)",
                  self.backend, reason, self.failures, backoff, jitter,
                  exc_info=None if expected else error)
        self._resolve(generation, False)

    def _reject(self, snapshot: dict[str, Any], generation: int, exc: BaseException) -> None:
        """Bad data: keep the previous durable state, wait for the data to change."""
        log.error("state not saved to %r, the data cannot be stored: %s", self.backend, exc)
        self.rejected, self.rejected_error, self.last_error = snapshot, exc, exc
        self.retry_at, self.failures = None, 0
        self._resolve(generation, exc)

    async def commit(self, snapshot: dict[str, Any]) -> dict[str, Any] | None:
        """The one write step: persist ``snapshot`` (the persisted slices only).

        :returns: the document now durable (``snapshot``, or ``snapshot`` merged with what
            another process committed meanwhile), or None when the backend said no.

        A built-in backend writes by compare-and-set on the version this store last read.
        When another process committed since, its document is loaded and merged with ours
        key path by key path (:func:`~cascadeui._merge.merge3`: their changes kept, ours on
        top, a leaf both changed goes to us as the later writer, logged and counted), the
        merge is written against the new version, and the merged slices are installed in
        memory with a ``STATE_RELOADED`` action. Other backends get a whole-document
        ``save_state``. The document is encoded by :class:`SnapshotEncoder`, which reuses
        the text of every subtree unchanged since the last write (same object).
        """
        cas = self.cas
        if cas is None or self.version is None:
            return snapshot if await self.backend.save_state(snapshot) else None
        expected: int = self.version
        stored = self.base  # what the backend holds at `expected`
        doc = snapshot
        changed: list[tuple[Any, ...]] = []
        for _ in range(_MAX_MERGE_ROUNDS):
            journaled = self.journaled and not self.rewrite
            if journaled and expected:
                # Only the leaf changes are appended (the journal may compact instead).
                version = await cas.save_changes(stored, doc, expected, encoder=self.encoder)
            else:
                version = await cas.save_if_version(doc, expected, encoder=self.encoder)
            if version is not None:
                self.base, self.version, self.rewrite = doc, version, False
                self.appended = self.appended or (journaled and expected != 0)
                break
            theirs, expected, lost = await self._load_theirs(stored, expected)
            # Local only: self.base and self.version change together, on success. Taking
            # their version while keeping our older base would let a write that fails
            # next leave the two out of step, and the retry would pass the
            # compare-and-set with a document lacking their commits (found by
            # scripts/partition_campaign.py; tests/test_engine_retry.py).
            stored = theirs
            if expected == 0:
                # The document vanished (a Redis restarted without persistence, a file
                # removed): that is lost data, not another writer's deletions. Write ours,
                # with whatever is left there (a counter evicted, its document not).
                log.warning("%r holds no state any more; writing this store's state again",
                            self.backend)
                doc = snapshot
                if any(theirs.values()):
                    doc, changed = self._merge_after_loss(snapshot, theirs,
                                                          "its version counter is gone")
                continue
            if lost is not None:
                doc, changed = self._merge_after_loss(snapshot, theirs, lost)
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
        if not self.appended or self.cas is None or self.version is None:
            return
        try:
            version = await self.cas.save_if_version(self.base, self.version,
                                                     encoder=self.encoder)
        except (PersistenceError, TypeError, ValueError) as exc:
            log.warning("could not compact the journal of %r on close: %s", self.backend, exc)
            return
        if version is not None:
            self.version, self.appended = version, False

    async def _poll(self) -> None:
        """Load and install what another process committed, if the version moved."""
        cas = self.cas
        if cas is None or self.version is None:
            return
        try:
            version = await cas.version()
            if version == self.version:
                return
            if version == 0:  # the document vanished: lost data, write ours again
                log.warning("%r holds no state any more; writing this store's state again",
                            self.backend)
                left, version, _ = await self._load_theirs(self.base, 0)
                if version == 0 and any(left.values()):  # a counter evicted, not its state
                    state = self.store.state
                    await self._recover_in_poll({n: state[n] for n in PERSISTED_SLICES},
                                                left, 0, "its version counter is gone")
                    return
                self.version = 0
                self.durable = dict.fromkeys(PERSISTED_SLICES, MISSING)
                self.note_change()
                return
            theirs, version, lost = await self._load_theirs(self.base, self.version)
        except PersistenceError as exc:
            log.warning("cannot check %r for changes from other processes: %s",
                        self.backend, exc)
            return
        state = self.store.state
        current = {name: state[name] for name in PERSISTED_SLICES}
        if lost is not None:
            await self._recover_in_poll(current, theirs, version, lost)
            return
        result = merge3(self.base, current, theirs)  # unsaved local changes stay on top
        self.version = version
        if not result.theirs:
            return  # rewritten with the same content: what is durable is unchanged
        self.base, self.durable = theirs, dict(theirs)
        await self.store.dispatch(STATE_RELOADED, {
            "state": result.merged, "base": current, "paths": result.theirs})

    async def _load_theirs(self, known: dict[str, Any],
                           at: int) -> tuple[dict[str, Any], int, str | None]:
        """The stored persisted slices (every one present), their version, and why they
        are not a descendant of ``known`` when the medium lost data (None: they are).

        ``known`` is the document at version ``at``. A journaled backend that still holds
        every commit since then returns just those records, applied to ``known`` sharing
        its unchanged subtrees: catching up costs what the other process changed, not a
        decode of the whole document (and proves descent). Otherwise the whole document
        is loaded, and the backend says whether it descends from version ``at``.
        """
        assert self.cas is not None
        found = await self.cas.load_changes(at) if self.journaled and at else None
        lost: str | None = None
        if found is not None:
            records, version = found
            raw = known
            for ops in records:
                raw = apply_shared(raw, ops)
        else:
            raw, version, lost = await self.cas.load_checked(at)
        stored = persisted_part(raw, self.backend)  # the slices must still be dicts
        self.rewrite = self.rewrite or len(stored) != len(raw)
        return {name: stored.get(name, {}) for name in PERSISTED_SLICES}, version, lost

    def _merge_after_loss(self, ours: dict[str, Any], theirs: dict[str, Any],
                          lost: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        """What to write when the medium lost data: ours, plus what only it holds.

        The stored document is not a sequel of what this store saw, so nothing missing
        from it is a deletion: merged against an empty base, it can add key paths but
        never remove one, and a leaf both hold keeps our value (the acknowledged one).
        The next write is whole (a journal cannot be appended to what was lost), and the
        adapter starts a new lineage with it, so other processes see the loss too.

        :returns: the document to write, and the key paths only the medium held.
        """
        merged = merge3({}, ours, theirs).merged
        added = [path for path, _ in diff(ours, merged)]
        self.rewrite = True
        log.warning("%r lost data (%s): keeping this store's state and writing it whole; "
                    "%d key path(s) found only there are merged in, nothing is deleted",
                    self.backend, lost, len(added))
        return merged, added

    async def _recover_in_poll(self, current: dict[str, Any], theirs: dict[str, Any],
                               version: int, lost: str) -> None:
        """A poll found the medium lost data: install the add-only merge, write it soon."""
        merged, added = self._merge_after_loss(current, theirs, lost)
        self.version, self.base = version, theirs
        self.durable = dict.fromkeys(PERSISTED_SLICES, MISSING)  # ours is not all stored
        self.note_change()
        if added:
            await self.store.dispatch(STATE_RELOADED,
                                      {"state": merged, "base": current, "paths": added})

    def _count_conflicts(self, conflicts: list[tuple[Any, ...]]) -> None:
        if conflicts:
            self.conflicts += len(conflicts)
            shown = ", ".join(repr(list(p)) for p in conflicts[:5])
            log.warning("%d key path(s) changed both here and by another process; this "
                        "store's later write wins: %s%s", len(conflicts), shown,
                        " ..." if len(conflicts) > 5 else "")

    def _resolve(self, generation: int, outcome: bool | BaseException) -> None:
        """Settle the waiters whose state was in the snapshot just attempted.

        flush() waiters get the outcome, success or failure. Durable waiters get success
        or a rejection (bad data); a failed write (False) leaves them waiting for a retry.
        """
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
        if outcome is False or not self.durable_waiters:
            return
        pending = []
        for target, durable, deadline in self.durable_waiters:
            if target > generation:
                pending.append((target, durable, deadline))
            elif not durable.done():
                if isinstance(outcome, BaseException):
                    durable.set_exception(outcome)
                else:
                    durable.set_result(None)
        self.durable_waiters = pending

    def _abandon(self) -> None:
        """The writer stopped: no durable waiter may be told its change is stored."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        for _, durable, _ in self.durable_waiters:
            if not durable.done():
                durable.set_exception(StoreClosedError(
                    f"the writer of {self.backend!r} stopped before the change was durable",
                    location=self._location()))
        self.durable_waiters = []

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if self.listener is not None:
            self.listener.signal_stop()
        if not task.cancelled() and task.exception() is not None:
            log.error("the persistence writer of %r died", self.store,
                      exc_info=task.exception())
        for _, waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(False)
        self.waiters = []
        self._abandon()
