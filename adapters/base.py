"""The synchronous store contract shared by every adapter, and the lifecycle they share.

An adapter is a plain blocking object: no event loop, safe to call from any thread. The
async facades in :mod:`cascadeui.persistence` run each call in one anyio worker thread,
so every method here does one whole unit of work (lock, read, change, write, unlock).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from cascadeui.errors import StoreClosedError
from cascadeui.serializer import StateSerializer

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BackupInfo",
    "BackupStore",
    "BaseStore",
    "Check",
    "DescribedStore",
    "StoreInfo",
    "SyncStore",
    "TransactionalStore",
    "VersionedStore",
]


@runtime_checkable
class SyncStore(Protocol):
    """What :class:`~cascadeui.persistence.AsyncBackend` needs from an adapter."""

    def load(self) -> dict[str, Any]:
        """Return the stored state, ``{}`` when nothing was ever saved."""
        ...

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state; raise a :class:`~cascadeui.errors.PersistenceError`."""
        ...

    def transaction(self) -> AbstractContextManager[dict[str, Any]]:
        """Yield the stored state to change in place; commit on a clean exit, atomically."""
        ...

    def close(self) -> None:
        """Release connections and handles; idempotent."""
        ...


@runtime_checkable
class TransactionalStore(Protocol):
    """An optional capability: an atomic read-modify-write (a plain custom adapter with
    only ``load``/``save`` lacks it). Checked once when an adapter is wrapped."""

    def transaction(self) -> AbstractContextManager[dict[str, Any]]:
        """Yield the stored state to change in place; commit on a clean exit."""
        ...


@runtime_checkable
class VersionedStore(Protocol):
    """The compare-and-set surface that lets several processes share one state."""

    serializer: StateSerializer

    def version(self) -> int:
        """A number that changes on every commit (0 when nothing is stored); cheap."""
        ...

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """The stored state and the version it was read at, consistently."""
        ...

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Save only if the stored version is still ``expected`` (under the write lock).

        :param encoded: ``state`` already serialized (the store's incremental
            :class:`~cascadeui.serializer.SnapshotEncoder`); it must encode ``state``.
        :returns: the new version, or None (nothing written) when another writer committed
            since ``expected`` was read.
        """
        ...


@dataclass(frozen=True)
class BackupInfo:
    """One backup generation an adapter keeps: ``index`` 0 is the newest.

    ``path`` is where it lives (a file path for the JSON adapter), for people to read.
    """

    index: int
    path: str
    size: int
    modified: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return {"index": self.index, "path": self.path, "size": self.size,
                "modified": self.modified.isoformat()}


@dataclass(frozen=True)
class StoreInfo:
    """What an adapter says about its medium, without decoding the state (``describe()``).

    Sizes are bytes on the medium: ``size`` is everything a load reads (the snapshot and
    its change journal), ``snapshot_size`` and ``journal_size`` the two parts.
    """

    #: ``file``, ``sqlite``, ``redis``, ``memory``... (the adapter's :attr:`BaseStore.kind`).
    kind: str
    #: Where the state lives, password redacted.
    location: str
    #: The medium holds a stored state (or a backup to fall back to).
    exists: bool
    #: The adapter's ``version()`` now (None where it has none or it cannot be read).
    version: int | None = None
    size: int | None = None
    snapshot_size: int | None = None
    journal_size: int | None = None
    #: When the stored state last changed (None where the medium does not say).
    modified: datetime | None = None
    backups: tuple[BackupInfo, ...] = ()
    #: Set when the adapter's last ``load()`` did not read the main copy (a backup it fell
    #: back to because the main copy is missing or unreadable): which copy it read.
    read_from: str | None = None
    #: Medium-specific facts worth showing (the Redis TTL, the SQLite table...).
    extra: dict[str, Any] = field(default_factory=dict)


class Check(NamedTuple):
    """One line of a health report (``check()``): what was checked, whether it passed, why."""

    name: str
    ok: bool
    detail: str = ""


@runtime_checkable
class DescribedStore(Protocol):
    """What read-only tools (``inspect``, ``cascadeui verify``) ask an adapter."""

    kind: ClassVar[str]

    def exists(self) -> bool:
        """True when the medium holds a state; read-only, never creates anything.

        :raises StateCorruptedError: the medium is something else's (a foreign database).
        :raises StorageUnavailableError: it cannot be reached, or is not usable at all.
        """
        ...

    def describe(self) -> StoreInfo:
        """Where and how big the stored state is, its version and backups; read-only."""
        ...

    def check(self) -> tuple[list[Check], dict[str, Any] | None]:
        """Check the stored bytes themselves, never falling back to a backup.

        :returns: the checks (journal included) and the state a load returns, or None
            when the main copy does not load.
        """
        ...


@runtime_checkable
class BackupStore(Protocol):
    """An adapter whose medium keeps backup generations (the JSON file's ``.bak``)."""

    def list_backups(self) -> list[BackupInfo]:
        """The generations that exist, newest first; never follows a link."""
        ...

    def read_backup(self, index: int) -> dict[str, Any]:
        """Decode generation ``index``.

        :raises StateNotFoundError: there is no such generation.
        :raises ConfigurationError: it is a link or not a regular file (never read).
        :raises StateCorruptedError: it does not decode.
        """
        ...


class BaseStore:
    """Lifecycle shared by the built-in adapters: context manager, idempotent close, repr."""

    #: Where the state lives, for messages and reprs; never holds a password.
    location: str
    #: The medium's short name in descriptions (``StoreInfo.kind``).
    kind: ClassVar[str] = "custom"

    def __init__(self, *, serializer: StateSerializer | None = None) -> None:
        self.serializer: StateSerializer = serializer or StateSerializer()
        self._closed = False
        self._lifecycle = threading.Lock()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(
                f"the {self.kind} store for {self.location} is closed; create a new one",
                location=self.location)

    def close(self) -> None:
        """Release resources; calling it again does nothing."""
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
        self._release()

    def _release(self) -> None:
        """Subclass hook: free connections and handles (called once)."""

    def companion(self, tag: str) -> BaseStore | None:
        """A store on the same medium, named after this one and ``tag``, for a copy of the
        state (the schema migration keeps the pre-migration document there); None where
        the medium has no such place. Its :attr:`location` names it fully.

        :param tag: a short identifier, e.g. ``v1``.
        """
        return None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self.location}{state}>"
