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

What is durable and every transition live in :mod:`cascadeui._persist_state`, a plain
object with no event loop; this module is its asyncio driver: the task, the timers, the
listener, and the backend calls.

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
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from . import _shutdown
from ._backends import AsyncBackend, StorageBackend, location_of
from ._persist_state import (
    MISSING,
    EngineCore,
    Ledger,
    Timing,
    is_bad_data,
    persisted_part,
    replay,
)
from .actions import STATE_RELOADED
from .adapters import Listener, listener_for
from .errors import PersistenceError, StoreClosedError
from .serializer import SnapshotEncoder, StateSerializer

__all__ = ["MISSING", "Engine", "Host", "Timing", "is_bad_data", "load_persisted",
           "same_backend"]

log: logging.Logger = logging.getLogger(__name__)


class Host(Protocol):
    """What the engine needs of its store (:class:`~cascadeui.store.StateStore`)."""

    @property
    def state(self) -> dict[str, Any]: ...

    @property
    def generation(self) -> int: ...

    @property
    def batching(self) -> bool: ...

    async def dispatch(self, action_type: str, payload: Any = None, *,
                       durable: bool = False) -> dict[str, Any]: ...


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
    stored = persisted_part(loaded, location_of(backend, str(backend)))
    return stored, version, len(stored) != len(loaded)


def same_backend(a: StorageBackend, b: StorageBackend) -> bool:
    """The same object, or the same built-in backend class on the same location."""
    if a is b:
        return True
    where = location_of(a, "")
    return type(a) is type(b) and where != "" and where == location_of(b, "")


class Engine:
    """The background writer of one store: one task, one snapshot in flight at a time.

    It drives an :class:`~cascadeui._persist_state.EngineCore` (given: a successor that
    continues another loop's engine on the same ledger).
    """

    def __init__(self, store: Host, backend: StorageBackend, timing: Timing,
                 core: EngineCore | None = None) -> None:
        self.store = store
        self.backend = backend
        self.timing = timing
        #: The compare-and-set backend (None: whole ``save_state`` calls only).
        self.cas: AsyncBackend[Any] | None = versioned_backend(backend)
        if core is None:
            serializer = self.cas.serializer if self.cas is not None else None
            # Re-encodes only the subtrees that changed since the last write (issue 6); not
            # for a custom serializer class, whose own ``serialize`` must be the one used.
            encoder = SnapshotEncoder(serializer) if (
                serializer is not None and type(serializer) is StateSerializer) else None
            ledger = Ledger(journaled=self.cas is not None and self.cas.journaled,
                            saved_generation=store.generation, encoder=encoder)
            core = EngineCore(ledger, backend, location_of(backend, str(backend)))
        self.core: EngineCore = core
        #: One timer for all durable deadlines, at the oldest pending one: a timer (and a
        #: shielded wait_for) per dispatch cost a quarter of a durable change's CPU and
        #: sent enough short-lived objects to the oldest GC generation to trigger full
        #: collections, which stall the loop (scripts/bench/durable.py).
        self.expiry: asyncio.TimerHandle | None = None
        self.stopping: bool = False
        #: A successor on another loop persists the store now (see :meth:`hand_over`).
        self.retired: bool = False
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.wake: asyncio.Event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: The thread that hears other processes' commits at once (the adapter's listener).
        self.listener: Listener | None = None
        #: A commit was announced (or a listener reconnected): check the version now.
        self.pushed: bool = False

    @property
    def durable_timeout(self) -> float:
        """Seconds a durable change (or a final write at shutdown) may take."""
        return self.timing.durable_timeout

    @property
    def conflicts(self) -> int:
        """Key paths both this store and another process changed (ours won)."""
        return self.core.ledger.conflicts

    @property
    def last_error(self) -> BaseException | None:
        """The error of the latest failed write, cleared by the next successful one."""
        return self.core.last_error

    def adopt(self, stored: dict[str, Any], version: int | None, *, rewrite: bool) -> None:
        """Take what :func:`load_persisted` found as the durable starting point.

        Durable = the objects the backend holds (identity compared later; a dispatch made
        by another task while the restore was notified is therefore still written).
        """
        self.core.adopt(self.store.state, self.store.generation, stored, version,
                        rewrite=rewrite)

    def _successor(self) -> Engine:
        """A new engine on the running loop that continues this one (the same ledger)."""
        # Waiters of the old loop stay with it (their futures cannot be woken).
        return Engine(self.store, self.backend, self.timing, self.core.successor())

    def hand_over(self) -> Engine:
        """This engine's loop is closed: a started successor on the running loop."""
        self.retired = True
        fresh = self._successor()
        fresh.start()
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
        if self.core.is_news(version):  # not our own commit, nor one we already hold
            self.pushed = True
            self.wake.set()

    def note_change(self) -> None:
        """Hot path (every persisted change): O(1), wakes the writer on the first one only.

        :meth:`EngineCore.note_change` inlined: one call less on every dispatch.
        """
        core, now = self.core, self.loop.time()
        core.last_change = now
        if core.first_change is None:
            core.first_change = now
            self.wake.set()

    def batch_closed(self, changed: bool) -> None:
        """The store's outermost batch ended (``changed``: a persisted slice changed)."""
        if changed:
            self.note_change()
        self.wake.set()  # the writer may be waiting for the batch

    def needs_write(self) -> bool:
        return self.core.needs_write(self.store.state)

    async def flush(self) -> bool:
        """Write now unless durable and wait; see :meth:`StateStore.flush`."""
        state, core = self.store.state, self.core
        if core.is_durable(state):
            return True
        if core.is_rejected(state):
            raise core.rejection()
        if self.task is None or self.task.done():
            return False
        waiter: asyncio.Future[bool] = self.loop.create_future()
        core.add_waiter(self.store.generation, waiter)
        self.wake.set()
        try:
            return await asyncio.shield(waiter)
        finally:
            core.drop_waiter(waiter)

    async def wait_durable(self) -> None:
        """Return once the current state's persisted slices are durable (group commit).

        :raises DurabilityTimeoutError: not durable within ``timing.durable_timeout``.
        :raises SerializationError: the state holds a value that cannot be stored.
        :raises StoreClosedError: the writer stopped before the change was durable.
        """
        state, core = self.store.state, self.core
        if core.is_durable(state):
            return
        if core.is_rejected(state):
            raise core.rejection()
        if self.task is None or self.task.done():
            raise StoreClosedError(f"the writer of {self.backend!r} is stopped; the change "
                                   "is not durable", location=core.location)
        waiter: asyncio.Future[bool] = self.loop.create_future()
        deadline = self.loop.time() + self.timing.durable_timeout
        core.add_durable(self.store.generation, waiter, deadline)
        if self.expiry is None:
            self.expiry = self.loop.call_at(deadline, self._expire)
        self.wake.set()
        # Not shielded: a cancelled caller cancels its own future, which every settling
        # path skips (done), and it leaves the list with the next write or deadline.
        await waiter

    def _expire(self) -> None:
        """The timer: fail the durable waiters past their deadline, re-arm for the next."""
        self.expiry = None
        deadline = self.core.expire(self.loop.time(), self.timing.durable_timeout)
        if deadline is not None:
            self.expiry = self.loop.call_at(deadline, self._expire)

    # -- shutdown (see cascadeui._shutdown) ---------------------------------------------

    async def final_write(self, why: str) -> None:
        """Write what is pending now, retrying for up to ``durable_timeout`` seconds.

        Only for the writer task itself, or once it is gone: it writes inline. A WARNING
        names what is still unsaved afterwards.
        """
        deadline = self.loop.time() + self.timing.durable_timeout
        while self.needs_write():
            await self._write_once()
            wait = min((self.core.retry_at or 0.0) - self.loop.time(),
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
            fresh = self._successor()  # the same ledger: what it writes is ours too
            await fresh.final_write("interpreter exit")
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
        return not self.retired and not self.stopping

    def warn_unsaved(self, why: str) -> None:
        """Log a WARNING naming how many changes are not saved and where (once)."""
        if not self.needs_write() or self.warned:
            return
        self.warned = True
        count, reason = self.core.unsaved(self.store.state, self.store.generation)
        log.warning("%d change(s) to the persisted state were NOT saved to %s before %s "
                    "(%s); they are lost", count, self.core.location, why,
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
        core, store = self.core, self.store
        while not self.stopping:
            if not core.needs_write(store.state):
                core.idle(store.state, store.generation)
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
            if store.batching and not (core.waiters or core.durable_waiters):
                # A batch is open: its end is the one persistence step (it sets wake).
                self.wake.clear()
                await self.wake.wait()
                continue
            now = self.loop.time()
            delay = core.due(now, self.timing, stopping=self.stopping) - now
            if delay > 0:
                # New changes only move last_change; this wakes once per interval, not per
                # dispatch. flush() and stop() set the event to cut the wait short.
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
                continue
            await self._write_once()
        core.stopped(store.state, store.generation)
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    async def _write_once(self) -> None:
        core, generation = self.core, self.store.generation
        snapshot, first = core.begin_write(self.store.state)
        error: BaseException | None = None
        try:
            written = await self.commit(snapshot)
        except Exception as exc:
            if is_bad_data(exc):
                log.error("state not saved to %r, the data cannot be stored: %s",
                          self.backend, exc)
                core.rejected(snapshot, generation, exc)
                return
            written, error = None, exc
        if written is not None:
            core.succeeded(written, generation)
            return
        backoff, jitter = self.timing.backoff(core.failures + 1)
        core.failed(generation, first,
                    error or PersistenceError(f"save to {self.backend!r} failed"),
                    self.loop.time(), backoff + jitter)
        reason = f"{type(error).__name__}: {error}" if error else "save_state returned False"
        # A traceback only for the unexpected: a storage error's message is its reason.
        expected = error is None or isinstance(error, (PersistenceError, OSError))
        log.error("state not saved to %r (%s); attempt %d, retrying in %.2fs (+%.3fs jitter)",
                  self.backend, reason, core.failures, backoff, jitter,
                  exc_info=None if expected else error)

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
        cas, core = self.cas, self.core
        attempt = core.begin_commit(snapshot) if cas is not None else None
        if cas is None or attempt is None:
            return snapshot if await self.backend.save_state(snapshot) else None
        encoder = core.ledger.encoder
        while True:
            if attempt.append:  # only the leaf changes (the journal may compact instead)
                version = await cas.save_changes(attempt.stored, attempt.doc,
                                                 attempt.expected, encoder=encoder)
            else:
                version = await cas.save_if_version(attempt.doc, attempt.expected,
                                                    encoder=encoder)
            if version is not None:
                break
            theirs, expected, lost = await self._load_theirs(attempt.stored, attempt.expected)
            core.missed(attempt, theirs, expected, lost)
        doc = core.committed(attempt, version)
        if doc is not snapshot:
            await self.store.dispatch(STATE_RELOADED,
                                      {"state": doc, "base": snapshot, "paths": attempt.changed})
        return doc

    async def compact(self) -> None:
        """Rewrite the durable document whole, folding the journal in (on close).

        After a clean shutdown the snapshot alone (the file, the row, the key) holds the
        whole state, for tools that read it directly. Skipped when another process has
        committed since (its own writes keep the journal bounded); failures are logged.
        """
        led = self.core.ledger
        if not led.appended or self.cas is None or led.version is None:
            return
        try:
            version = await self.cas.save_if_version(led.base, led.version,
                                                     encoder=led.encoder)
        except (PersistenceError, TypeError, ValueError) as exc:
            log.warning("could not compact the journal of %r on close: %s", self.backend, exc)
            return
        if version is not None:
            self.core.compacted(version)

    async def _poll(self) -> None:
        """Load and install what another process committed, if the version moved."""
        cas, core = self.cas, self.core
        known = core.ledger.version
        if cas is None or known is None:
            return
        try:
            version = await cas.version()
            if version == known:
                return
            if version == 0:  # the document vanished: lost data, write ours again
                log.warning("%r holds no state any more; writing this store's state again",
                            self.backend)
                left, version, _ = await self._load_theirs(core.ledger.base, 0)
                reload = core.vanished(self.store.state, left, version, self.loop.time())
            else:
                theirs, version, lost = await self._load_theirs(core.ledger.base, known)
                reload = core.caught_up(self.store.state, theirs, version, lost,
                                        self.loop.time())
        except PersistenceError as exc:
            log.warning("cannot check %r for changes from other processes: %s",
                        self.backend, exc)
            return
        if reload is not None:
            await self.store.dispatch(STATE_RELOADED, reload)

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
        found = await self.cas.load_changes(at) if self.core.ledger.journaled and at else None
        raw: Mapping[str, Any]
        lost: str | None = None
        if found is not None:
            records, version = found
            raw = replay(known, records)
        else:
            raw, version, lost = await self.cas.load_checked(at)
        return self.core.loaded(raw), version, lost

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if self.listener is not None:
            self.listener.signal_stop()
        if not task.cancelled() and task.exception() is not None:
            log.error("the persistence writer of %r died", self.store,
                      exc_info=task.exception())
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.core.abandon()
