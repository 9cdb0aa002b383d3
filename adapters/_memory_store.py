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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cascadeui.errors import ConfigurationError, StateCorruptedError
from cascadeui.serializer import StateSerializer

from ._journal import Budget, apply_records, decode_records, nbytes
from ._journaled import JournaledBase, Tail
from .base import Check, StoreInfo

if TYPE_CHECKING:
    from ._journal import JournaledStore

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
    #: The lineage id of the stored state ('' before its first whole write).
    lineage: str = ""

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


class MemoryStore(JournaledBase):
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
        self.location: str = f"memory://{self.name}"
        self.lock_timeout = lock_timeout
        # A private state is not registered: its generated name cannot join it (issue 21).
        self._private = None if name is not None else _Medium()

    @property
    def _medium(self) -> _Medium:
        """The state this store reads: the name's current one (a private one never
        changes), so a forgotten name reads as a medium that lost its state."""
        return self._private if self._private is not None else _medium(self.name)

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the state kept under ``name``: every store of the name, open ones too,
        then finds an empty medium (as after a loss)."""
        with _MEDIA_LOCK:
            _MEDIA.pop(name, None)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Medium]:
        medium = self._medium
        self._acquire(medium.lock, self.lock_timeout, "another writer held the state")
        try:
            yield medium
        finally:
            medium.lock.release()

    # -- the journaled base's hooks -----------------------------------------------------

    @contextlib.contextmanager
    def _write_tx(self, *, whole: bool = False) -> Iterator[_Medium]:
        with self._locked() as medium:
            yield medium

    def _current(self, tx: _Medium) -> int:
        return tx.version

    def _lineage_of(self, tx: _Medium) -> str | None:
        return None if tx.snapshot is None else tx.lineage

    def _put_record(self, tx: _Medium, version: int, record: str) -> None:
        tx.journal.append(record)
        tx.version = version
        tx.modified = datetime.now(timezone.utc)

    def _put_snapshot(self, tx: _Medium, text: str, version: int, lineage: str | None) -> None:
        tx.snapshot, tx.journal = text, []
        tx.version = tx.snapshot_version = version
        tx.modified = datetime.now(timezone.utc)
        if lineage is not None:
            tx.lineage = lineage

    def _measure(self, tx: _Medium, version: int) -> tuple[Budget, bool]:
        return tx.budget(), True  # everything in memory was encoded by a store

    def _read_in(self, tx: _Medium) -> tuple[dict[str, Any], int]:
        return self._decode(tx.snapshot, list(tx.journal), tx.version, tx.lineage)

    def _read(self, *, lenient: bool) -> tuple[dict[str, Any], int, str | None]:
        with self._locked() as medium:
            got = (medium.snapshot, list(medium.journal), medium.version, medium.lineage)
        return (*self._decode(*got), None)

    def _decode(self, snapshot: str | None, journal: list[str], version: int,
                lineage: str) -> tuple[dict[str, Any], int]:
        """The state of a snapshot and its records; records what it read."""
        if snapshot is None:
            self._seen(None, None)
            self._lineage = (version, "")
            return {}, version
        state = self.serializer.deserialize(snapshot)
        decoded, _ = decode_records(self.serializer, enumerate(journal),
                                    location=self.location, name=self._record_name)
        apply_records(state, enumerate(decoded), location=self.location,
                      name=self._record_name)
        self._seen(Budget(version, len(journal), sum(map(nbytes, journal)), nbytes(snapshot)),
                   lineage)
        return state, version

    def _tail(self, since: int) -> Tail:
        with self._locked() as medium:
            base = medium.snapshot_version
            journal = medium.journal[max(0, since - base):] if since < medium.version else []
            return Tail(None if medium.snapshot is None else base,
                        base + 1 if medium.journal else None,
                        medium.version if medium.journal else None,
                        [(medium.version - len(journal) + i + 1, text)
                         for i, text in enumerate(journal)], medium.lineage)

    def version(self) -> int:
        """The commit counter (0 when nothing was stored)."""
        self._check_open()
        return self._medium.version

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
