"""The persistence state machine of one store, with no event loop (issue 20).

:class:`Ledger` holds what is durable (slice objects, compared by identity), the merge
base and the version it was read at; :class:`EngineCore` adds one loop's pending work
(the coalescing and retry schedule, ``flush()`` and durable waiters) and every transition:
a write's outcome, a compare-and-set miss and its merge, the medium losing data, a
catch-up after another process committed, a successor on a new loop. Every input (the
state, its generation, the time, what the backend answered) is an argument, so tests and
a simulator step it deterministically; :mod:`cascadeui._engine` drives it from one
asyncio task and does the I/O.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._merge import diff, merge3
from .actions import PERSISTED_SLICES
from .adapters import apply_shared
from .errors import (
    DurabilityTimeoutError,
    PersistenceError,
    SerializationError,
    StateCorruptedError,
    StorageUnavailableError,
    StoreClosedError,
)

if TYPE_CHECKING:
    from .serializer import SnapshotEncoder

__all__ = ["MAX_MERGE_ROUNDS", "MISSING", "Attempt", "EngineCore", "Ledger", "Timing",
           "Waiter", "is_bad_data", "persisted_part", "replay"]

log: logging.Logger = logging.getLogger("cascadeui._engine")

#: A slice value no state holds: "nothing known to be durable".
MISSING: Any = object()
#: Compare-and-set attempts per write before giving up until the next retry.
MAX_MERGE_ROUNDS = 20
#: Each retry delay is the capped exponential one times a factor drawn from this range, so
#: processes that failed together do not retry together.
_JITTER = (1.0, 1.25)
#: What a catch-up installs: a ``STATE_RELOADED`` payload (``state``, ``base``, ``paths``).
Reload = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Timing:
    """The writer's timings, in seconds (checked once, at ``enable_persistence``)."""

    debounce: float
    max_delay: float
    retry_initial: float
    retry_max: float
    poll_interval: float | None = None
    durable_timeout: float = 2.5
    #: Listen for commits announced by other processes (the adapter's listener), on top of polling.
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


class Waiter(Protocol):
    """What waits for a write: an ``asyncio.Future`` in the engine, any future in a test."""

    def done(self) -> bool: ...

    def set_result(self, result: bool, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


def is_bad_data(exc: BaseException) -> bool:
    """True for an error that retrying the same snapshot cannot cure (bad data)."""
    if isinstance(exc, SerializationError):
        return True
    # A custom backend's own json.dumps raises plain TypeError/ValueError on bad data; a
    # PersistenceError that happens to be a ValueError (StateCorruptedError,
    # ConfigurationError) is the medium's fault, not the data's.
    return isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, PersistenceError)


def persisted_part(loaded: Any, location: str) -> dict[str, Any]:
    """The persisted slices of what a backend returned, checked; other keys are ignored.

    :raises StateCorruptedError: not a dict, or a persisted slice that is not one.
    """
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


def replay(known: Mapping[str, Any], records: list[list[list[Any]]]) -> Mapping[str, Any]:
    """``known`` with journal ``records`` applied, sharing every unchanged subtree."""
    raw = known
    for ops in records:
        raw = apply_shared(raw, ops)
    return raw


def _settle(waiter: Waiter, outcome: bool | BaseException) -> None:
    if not waiter.done():
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)


def _matches(state: Mapping[str, Any], slices: Mapping[str, Any] | None) -> bool:
    return slices is not None and all(state[n] is slices[n] for n in PERSISTED_SLICES)


@dataclasses.dataclass(eq=False)
class Ledger:
    """What one store knows is in its backend; carried from one loop's engine to the next."""

    #: The backend appends change records (a journal) instead of rewriting whole.
    journaled: bool = False
    #: Slice objects known to be in the backend (identity compared).
    durable: dict[str, Any] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(PERSISTED_SLICES, MISSING))
    #: The persisted slices as last loaded or written: the common ancestor of a merge.
    base: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The backend version ``base`` was read at (None: not a versioned backend).
    version: int | None = None
    #: Changes were appended since the last whole write (close() folds the journal in).
    appended: bool = False
    #: The next write must be whole: the stored document holds keys that are not persisted
    #: slices (pycascadeui 2.x wrote its transient ``views``), or the medium lost data.
    rewrite: bool = False
    #: Key paths both this store and another process changed (ours won).
    conflicts: int = 0
    #: Slices whose write failed with a data error: not retried until they change.
    rejected: dict[str, Any] | None = None
    rejected_error: BaseException | None = None
    #: The store's generation the last durable write held.
    saved_generation: int = 0
    #: Re-encodes only the subtrees that changed since the last write (None: whole).
    encoder: SnapshotEncoder | None = None


@dataclasses.dataclass(eq=False)
class Attempt:
    """One write in progress: the document for ``expected``, and what a miss merged in."""

    #: The snapshot the write started with (what this store holds).
    snapshot: dict[str, Any]
    #: The version the next compare-and-set expects, and the document stored at it.
    expected: int
    stored: dict[str, Any]
    #: The document to write, and the key paths it holds that the snapshot does not.
    doc: dict[str, Any]
    changed: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    #: Append the changes to the journal (else rewrite the document whole).
    append: bool = False
    misses: int = 0


class EngineCore:
    """One loop's persistence bookkeeping over a :class:`Ledger`: transitions, no I/O.

    ``label`` names the backend in log lines; ``location`` is its password-free place.
    """

    def __init__(self, ledger: Ledger, label: object, location: str) -> None:
        self.ledger = ledger
        self.label = label
        self.location = location
        self.first_change: float | None = None
        self.last_change: float = 0.0
        self.failures: int = 0
        self.retry_at: float | None = None
        self.failed_at: float = 0.0
        #: A durable waiter arrived since the last attempt: try again soon after a failure.
        self.demand: bool = False
        self.last_error: BaseException | None = None
        #: flush() callers: (generation wanted, waiter); settled by the next attempt.
        self.waiters: list[tuple[int, Waiter]] = []
        #: Durable dispatches: (generation wanted, waiter, deadline); settled only by a
        #: write that holds their change (or a rejection, the writer stopping, or the
        #: deadline), never by a failure. In arrival order, so deadlines only grow.
        self.durable_waiters: list[tuple[int, Waiter, float]] = []

    def successor(self) -> EngineCore:
        """The core for a new loop: the same ledger; the old loop's waiters stay behind."""
        return EngineCore(self.ledger, self.label, self.location)

    # -- what is durable ------------------------------------------------------------

    def adopt(self, state: Mapping[str, Any], generation: int, stored: dict[str, Any],
              version: int | None, *, rewrite: bool) -> None:
        """Take what the backend held at enable as the durable starting point.

        A slice the backend lacks counts as durable only while the memory copy is empty.
        """
        led = self.ledger
        for name in PERSISTED_SLICES:
            if name in stored:
                led.durable[name] = stored[name]
            elif not state[name]:
                led.durable[name] = state[name]
        led.base = {name: stored.get(name, {}) for name in PERSISTED_SLICES}
        led.version = version
        led.rewrite = rewrite  # keys to drop: a journal cannot
        led.saved_generation = generation

    def is_durable(self, state: Mapping[str, Any]) -> bool:
        return _matches(state, self.ledger.durable)

    def is_rejected(self, state: Mapping[str, Any]) -> bool:
        return _matches(state, self.ledger.rejected)

    def needs_write(self, state: Mapping[str, Any]) -> bool:
        led = self.ledger
        return not _matches(state, led.durable) and not _matches(state, led.rejected)

    def rejection(self) -> BaseException:
        return self.ledger.rejected_error or PersistenceError("the snapshot was rejected")

    def is_news(self, version: int | None) -> bool:
        """An announced commit this store does not hold yet (None: may be)."""
        held = self.ledger.version
        return version is None or held is None or version > held

    def unsaved(self, state: Mapping[str, Any], generation: int
                ) -> tuple[int, BaseException | None]:
        """How many changes are not durable (at least 1) and the latest reason why."""
        reason = self.ledger.rejected_error if self.is_rejected(state) else self.last_error
        return max(1, generation - self.ledger.saved_generation), reason

    # -- the schedule ---------------------------------------------------------------

    def note_change(self, now: float) -> bool:
        """A persisted change at ``now``; True for the first one since the last write."""
        self.last_change = now
        if self.first_change is None:
            self.first_change = now
            return True
        return False

    def due(self, now: float, timing: Timing, *, stopping: bool = False) -> float:
        """The time at which the next write may start."""
        if stopping or self.waiters:
            return 0.0
        if self.durable_waiters:
            # Group commit: no coalescing delay. After a failure, new durable demand may
            # cut the backoff short, but attempts stay at least retry_initial apart.
            if self.retry_at is None:
                return 0.0
            if self.demand:
                return min(self.retry_at, self.failed_at + timing.retry_initial)
            return self.retry_at
        if self.retry_at is not None:
            return self.retry_at
        if self.first_change is None:
            return now  # dirty without a recorded change (e.g. after enable)
        return min(self.last_change + timing.debounce, self.first_change + timing.max_delay)

    # -- waiters --------------------------------------------------------------------

    def add_waiter(self, generation: int, waiter: Waiter) -> None:
        self.waiters.append((generation, waiter))

    def drop_waiter(self, waiter: Waiter) -> None:
        if any(w is waiter for _, w in self.waiters):
            self.waiters = [(g, w) for g, w in self.waiters if w is not waiter]

    def add_durable(self, generation: int, waiter: Waiter, deadline: float) -> None:
        """Wait for ``generation`` to be durable by ``deadline`` (see :meth:`expire`)."""
        self.durable_waiters.append((generation, waiter, deadline))
        self.demand = True

    def resolve(self, generation: int, outcome: bool | BaseException) -> None:
        """Settle the waiters whose state was in the snapshot just attempted.

        flush() waiters get the outcome, success or failure. Durable waiters get success
        or a rejection (bad data); a failed write (False) leaves them waiting for a retry.
        """
        keep = []
        for target, waiter in self.waiters:
            if target > generation:
                keep.append((target, waiter))
            else:
                _settle(waiter, outcome)
        self.waiters = keep
        if outcome is False or not self.durable_waiters:
            return
        pending = []
        for target, durable, deadline in self.durable_waiters:
            if target > generation:
                pending.append((target, durable, deadline))
            else:
                _settle(durable, outcome)
        self.durable_waiters = pending

    def expire(self, now: float, timeout: float) -> float | None:
        """Fail the durable waiters past their deadline; the next deadline, if any."""
        keep = []
        for target, waiter, deadline in self.durable_waiters:
            if waiter.done():
                continue
            if deadline > now:
                keep.append((target, waiter, deadline))
                continue
            error = self.last_error
            reason = f"{type(error).__name__}: {error}" if error else "the writes were slow"
            exc = DurabilityTimeoutError(
                f"change not stored in {self.location} within {timeout:g} s ({reason}); "
                "it is kept in memory and the writer keeps retrying",
                timeout=timeout, location=self.location, last_error=error)
            exc.__cause__, exc.__suppress_context__ = error, True  # as `raise ... from`
            waiter.set_exception(exc)
        self.durable_waiters = keep
        return keep[0][2] if keep else None

    def idle(self, state: Mapping[str, Any], generation: int) -> None:
        """Nothing to write: end the coalescing window, settle who waits for this state."""
        self.first_change = None
        self.resolve(generation, True if self.is_durable(state) else self.rejection())

    def stopped(self, state: Mapping[str, Any], generation: int) -> None:
        """The writer stopped: flush() callers learn the outcome, durable waiters fail."""
        self.resolve(generation, False)
        if self.is_durable(state):
            self.resolve(generation, True)
        self.abandon()

    def abandon(self) -> None:
        """The writer is gone: nobody may be told a change is stored any more."""
        for _, waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(False)
        self.waiters = []
        for _, durable, _ in self.durable_waiters:
            if not durable.done():
                durable.set_exception(StoreClosedError(
                    f"the writer of {self.label!r} stopped before the change was durable",
                    location=self.location))
        self.durable_waiters = []

    # -- one write ------------------------------------------------------------------

    def begin_write(self, state: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
        """The snapshot to write now, and when its coalescing window opened."""
        first = self.first_change
        self.first_change = None  # changes from now on start a new coalescing window
        self.demand = False  # durable waiters arriving from now on need the next write
        return {name: state[name] for name in PERSISTED_SLICES}, first

    def succeeded(self, written: dict[str, Any], generation: int) -> None:
        """``written`` (the snapshot, or it merged with theirs) is durable at ``generation``."""
        led = self.ledger
        led.saved_generation = generation
        led.durable, led.rejected, led.rejected_error = written, None, None
        self.failures, self.retry_at, self.last_error = 0, None, None
        self.resolve(generation, True)

    def failed(self, generation: int, first: float | None, error: BaseException,
               now: float, delay: float) -> None:
        """A storage failure: keep the change dirty, retry ``delay`` seconds from ``now``."""
        self.failures += 1
        self.failed_at = now
        self.retry_at = now + delay
        if self.first_change is None or (first is not None and first < self.first_change):
            self.first_change = first if first is not None else now
        self.last_error = error
        self.resolve(generation, False)

    def rejected(self, snapshot: dict[str, Any], generation: int, exc: BaseException) -> None:
        """Bad data: keep the previous durable state, wait for the data to change."""
        led = self.ledger
        led.rejected, led.rejected_error, self.last_error = snapshot, exc, exc
        self.retry_at, self.failures = None, 0
        self.resolve(generation, exc)

    # -- compare-and-set and merges ---------------------------------------------------

    def begin_commit(self, snapshot: dict[str, Any]) -> Attempt | None:
        """A compare-and-set write of ``snapshot``; None when the version is unknown."""
        led = self.ledger
        if led.version is None:
            return None
        attempt = Attempt(snapshot, led.version, led.base, snapshot)
        attempt.append = self._appends(attempt.expected)
        return attempt

    def _appends(self, expected: int) -> bool:
        led = self.ledger
        return led.journaled and not led.rewrite and expected != 0

    def committed(self, attempt: Attempt, version: int) -> dict[str, Any]:
        """The write of ``attempt.doc`` landed at ``version``: it is the new base."""
        led = self.ledger
        led.base, led.version, led.rewrite = attempt.doc, version, False
        led.appended = led.appended or attempt.append
        return attempt.doc

    def loaded(self, raw: Any) -> dict[str, Any]:
        """The persisted slices of a document read from the backend (every one present).

        :raises StateCorruptedError: the document or a slice is not a dict.
        """
        stored = persisted_part(raw, self.location)
        self.ledger.rewrite = self.ledger.rewrite or len(stored) != len(raw)
        return {name: stored.get(name, {}) for name in PERSISTED_SLICES}

    def missed(self, attempt: Attempt, theirs: dict[str, Any], version: int,
               lost: str | None) -> None:
        """Another writer committed: merge ``theirs`` (stored at ``version``) for the retry.

        ``lost`` says why ``theirs`` is not a sequel of what this store saw (the medium
        lost data), or None. The ledger's base and version stay as they are until a write
        lands: taking their version while keeping our older base would let a write that
        fails next pass the compare-and-set without their commits (tests/test_engine_retry).

        :raises StorageUnavailableError: other writers kept moving the version.
        """
        attempt.misses += 1
        attempt.expected, attempt.stored = version, theirs
        snapshot = attempt.snapshot
        if version == 0:
            # The document vanished (a Redis restarted without persistence, a file
            # removed): that is lost data, not another writer's deletions. Write ours,
            # with whatever is left there (a counter evicted, its document not).
            log.warning("%r holds no state any more; writing this store's state again",
                        self.label)
            attempt.doc = snapshot
            if any(theirs.values()):
                attempt.doc, attempt.changed = self.merge_after_loss(
                    snapshot, theirs, "its version counter is gone")
        elif lost is not None:
            attempt.doc, attempt.changed = self.merge_after_loss(snapshot, theirs, lost)
        else:
            result = merge3(self.ledger.base, snapshot, theirs)
            attempt.doc, attempt.changed = result.merged, result.theirs
            self._count_conflicts(result.conflicts)
        attempt.append = self._appends(version)
        if attempt.misses >= MAX_MERGE_ROUNDS:
            raise StorageUnavailableError(
                f"{self.label!r}: other writers kept moving the version; gave up after "
                f"{MAX_MERGE_ROUNDS} merge rounds (will retry)")

    def merge_after_loss(self, ours: dict[str, Any], theirs: dict[str, Any],
                         lost: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        """What to write when the medium lost data: ours, plus what only it holds.

        Merged against an empty base, it can add key paths but never remove one, and a
        leaf both hold keeps our value (the acknowledged one). The next write is whole
        (a journal cannot be appended to what was lost).

        :returns: the document to write, and the key paths only the medium held.
        """
        merged = merge3({}, ours, theirs).merged
        added = [path for path, _ in diff(ours, merged)]
        self.ledger.rewrite = True
        log.warning("%r lost data (%s): keeping this store's state and writing it whole; "
                    "%d key path(s) found only there are merged in, nothing is deleted",
                    self.label, lost, len(added))
        return merged, added

    def _count_conflicts(self, conflicts: list[tuple[Any, ...]]) -> None:
        if conflicts:
            self.ledger.conflicts += len(conflicts)
            shown = ", ".join(repr(list(p)) for p in conflicts[:5])
            log.warning("%d key path(s) changed both here and by another process; this "
                        "store's later write wins: %s%s", len(conflicts), shown,
                        " ..." if len(conflicts) > 5 else "")

    # -- catching up with other processes --------------------------------------------

    def caught_up(self, state: Mapping[str, Any], theirs: dict[str, Any], version: int,
                  lost: str | None, now: float) -> Reload | None:
        """A poll read ``theirs`` at ``version``: what to install (None: nothing)."""
        led = self.ledger
        current = {name: state[name] for name in PERSISTED_SLICES}
        if lost is not None:
            return self._recover(current, theirs, version, lost, now)
        result = merge3(led.base, current, theirs)  # unsaved local changes stay on top
        led.version = version
        if not result.theirs:
            return None  # rewritten with the same content: what is durable is unchanged
        led.base, led.durable = theirs, dict(theirs)
        return {"state": result.merged, "base": current, "paths": result.theirs}

    def vanished(self, state: Mapping[str, Any], left: dict[str, Any], version: int,
                 now: float) -> Reload | None:
        """A poll found the version counter at 0 and read ``left``: write ours again."""
        if version == 0 and any(left.values()):  # a counter evicted, not its state
            current = {name: state[name] for name in PERSISTED_SLICES}
            return self._recover(current, left, 0, "its version counter is gone", now)
        self.ledger.version = 0
        self.ledger.durable = dict.fromkeys(PERSISTED_SLICES, MISSING)
        self.note_change(now)
        return None

    def _recover(self, current: dict[str, Any], theirs: dict[str, Any], version: int,
                 lost: str, now: float) -> Reload | None:
        """The medium lost data: install the add-only merge, write it soon."""
        merged, added = self.merge_after_loss(current, theirs, lost)
        led = self.ledger
        led.version, led.base = version, theirs
        led.durable = dict.fromkeys(PERSISTED_SLICES, MISSING)  # ours is not all stored
        self.note_change(now)
        return {"state": merged, "base": current, "paths": added} if added else None

    def compacted(self, version: int) -> None:
        """The journal was folded into a whole write at ``version``."""
        self.ledger.version, self.ledger.appended = version, False
