"""The in-memory adapter: the whole contract, no medium. For tests, examples and the REPL.

Stores of one ``name`` share one state inside a process (``memory://NAME``), the way two
stores of one file share it across processes: a commit through one is seen by the others'
``load``, ``version`` and ``load_changes``. Nothing survives the process. The state is
kept *encoded* (the serializer's JSON, a snapshot plus journal records), so a value JSON
cannot hold fails here exactly as it would on disk, and every load returns fresh objects.

It implements :class:`~cascadeui.adapters.VersionedStore`,
:class:`~cascadeui.adapters.JournaledStore` and
:class:`~cascadeui.adapters.DescribedStore`, and it touches nothing outside ``adapters/``:
the proof that the contract is complete.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cascadeui._merge import Change
from cascadeui.errors import ConfigurationError, LockTimeoutError, StateCorruptedError
from cascadeui.serializer import StateSerializer

from .base import BaseStore, Check, StoreInfo
from .journal import (
    Budget,
    apply_record,
    commit_changes,
    corrupt,
    decode_record,
    encode_record,
    nbytes,
)

if TYPE_CHECKING:
    from .journal import JournaledStore

__all__ = ["MemoryStore"]


@dataclass
class _Medium:
    """One named state: a snapshot, the journal after it, the version, one write lock."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    snapshot: str | None = None
    #: Version of the commit that wrote ``snapshot``; the journal holds the ones after it.
    snapshot_version: int = 0
    journal: list[str] = field(default_factory=list)
    version: int = 0
    modified: datetime | None = None

    def budget(self) -> Budget:
        """The compaction budget's inputs now."""
        return Budget(self.version, len(self.journal), sum(map(nbytes, self.journal)),
                      nbytes(self.snapshot or ""))


_MEDIA: dict[str, _Medium] = {}
_MEDIA_LOCK = threading.Lock()
_PRIVATE = itertools.count(1)


def _medium(name: str) -> _Medium:
    with _MEDIA_LOCK:
        return _MEDIA.setdefault(name, _Medium())


class MemoryStore(BaseStore):
    """State in this process's memory, shared by every store of the same ``name``.

    :param name: stores of one name share one state (None: a state private to this store).
    :param lock_timeout: seconds a writer waits for another one before
        :class:`~cascadeui.errors.LockTimeoutError`.
    """

    kind = "memory"

    def __init__(self, name: str | None = None, *, lock_timeout: float = 10.0,
                 serializer: StateSerializer | None = None) -> None:
        super().__init__(serializer=serializer)
        if name is not None and not name:
            raise ConfigurationError("name must be a non-empty string (or None: private)")
        self.name: str = name if name is not None else f"<private {next(_PRIVATE)}>"
        self.location = f"memory://{self.name}"
        self.lock_timeout = lock_timeout
        # A private state is not registered: its generated name cannot join it (issue 21).
        self._medium = _medium(self.name) if name is not None else _Medium()

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the state kept under ``name`` (stores still open keep their reference)."""
        with _MEDIA_LOCK:
            _MEDIA.pop(name, None)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Medium]:
        self._check_open()
        medium = self._medium
        if not medium.lock.acquire(timeout=self.lock_timeout):
            raise LockTimeoutError(
                f"{self.location}: another writer held the state past {self.lock_timeout:g}s",
                lock=self.location, timeout=self.lock_timeout, location=self.location)
        try:
            yield medium
        finally:
            medium.lock.release()

    # -- the contract ------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Return the stored state, ``{}`` when nothing was saved."""
        return self.load_versioned()[0]

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """The state and the version it was read at."""
        with self._locked() as medium:
            snapshot, journal, version = medium.snapshot, list(medium.journal), medium.version
        if snapshot is None:
            return {}, version
        state = self.serializer.deserialize(snapshot)
        for index, text in enumerate(journal):
            try:
                apply_record(state, decode_record(self.serializer, text))
            except StateCorruptedError as exc:  # pragma: no cover - we wrote every record
                raise corrupt(self.location, f"journal record {index}: {exc}") from exc
        return state, version

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state (a new snapshot, an empty journal).

        :raises SerializationError: ``state`` holds a value JSON cannot store (nothing stored).
        """
        text = self.serializer.serialize(state)
        with self._locked() as medium:
            self._write(medium, text)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, yield the state to change in place, store it on a clean exit."""
        with self._locked() as medium:
            state = self.load()
            yield state
            self._write(medium, self.serializer.serialize(state))

    def version(self) -> int:
        """The commit counter (0 when nothing was stored)."""
        self._check_open()
        return self._medium.version

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save; None when another writer committed since ``expected``."""
        text = self.serializer.serialize(state) if encoded is None else encoded
        with self._locked() as medium:
            if medium.version != expected:
                return None
            return self._write(medium, text)

    def save_changes(self, changes: Sequence[Change], expected: int, *,
                     full: Callable[[], str]) -> int | None:
        """Append ``changes`` as one journal record if the version is still ``expected``
        (a new snapshot of ``full()`` when nothing is stored or the journal is due)."""
        record = encode_record(self.serializer, changes) if changes else ""
        with self._locked() as medium:
            if not changes:
                return expected if medium.version == expected else None

            def append(budget: Budget) -> int:
                medium.journal.append(record)
                medium.version += 1
                medium.modified = datetime.now(timezone.utc)
                return medium.version

            # Everything in memory was encoded by us: always "known", nothing to verify.
            return commit_changes(
                medium.version, expected, nbytes(record),
                budget=lambda at: (medium.budget(), True), verify=lambda: None,
                snapshot=lambda: self._write(medium, full()), append=append)

    def load_changes(self, since: int) -> tuple[list[list[list[Any]]], int] | None:
        """The records after version ``since`` and the current version; None when a full
        write since then (or a version this store cannot place) leaves them unknown."""
        with self._locked() as medium:
            if since == medium.version:
                return [], since
            if since < medium.snapshot_version or since > medium.version:
                return None
            texts = medium.journal[since - medium.snapshot_version:]
            version = medium.version
        return [decode_record(self.serializer, t) for t in texts], version

    def _write(self, medium: _Medium, text: str) -> int:
        medium.snapshot = text
        medium.journal = []
        medium.version += 1
        medium.snapshot_version = medium.version
        medium.modified = datetime.now(timezone.utc)
        return medium.version

    def companion(self, tag: str) -> MemoryStore:
        """The state named ``<name>:<tag>:backup`` in this process."""
        return MemoryStore(f"{self.name}:{tag}:backup", serializer=self.serializer)

    # -- what readers ask --------------------------------------------------------------

    def exists(self) -> bool:
        """True once something was stored under this name in this process."""
        self._check_open()
        return self._medium.snapshot is not None

    def describe(self) -> StoreInfo:
        """Version and the encoded snapshot and journal sizes."""
        with self._locked() as medium:
            budget = medium.budget()
            snapshot, journal = budget.snapshot_bytes, budget.journal_bytes
            return StoreInfo(
                kind=self.kind, location=self.location, exists=medium.snapshot is not None,
                version=medium.version, size=snapshot + journal, snapshot_size=snapshot,
                journal_size=journal, modified=medium.modified,
                extra={"journal_records": len(medium.journal)})

    def check(self) -> tuple[list[Check], dict[str, Any] | None]:
        """The snapshot and journal decode (they always should: we encoded them)."""
        try:
            state = self.load()
        except StateCorruptedError as exc:  # pragma: no cover
            return [Check("state decodes", False, str(exc))], None
        return [Check("state decodes", True, f"version {self.version()}")], state


if TYPE_CHECKING:
    def _implements(store: MemoryStore) -> JournaledStore:
        return store  # mypy checks that MemoryStore implements the protocol
