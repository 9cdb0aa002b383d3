"""The synchronous store contract shared by every adapter, and the lifecycle they share.

An adapter is a plain blocking object: no event loop, safe to call from any thread. The
async facades in :mod:`cascadeui.persistence` run each call in one anyio worker thread,
so every method here does one whole unit of work (lock, read, change, write, unlock).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cascadeui.errors import StoreClosedError
from cascadeui.serializer import StateSerializer

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["BaseStore", "SyncStore", "VersionedStore"]


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


class BaseStore:
    """Lifecycle shared by the built-in adapters: context manager, idempotent close, repr."""

    #: Where the state lives, for messages and reprs; never holds a password.
    location: str

    def __init__(self, *, serializer: StateSerializer | None = None) -> None:
        self.serializer: StateSerializer = serializer or StateSerializer()
        self._closed = False
        self._lifecycle = threading.Lock()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(
                f"{type(self).__name__} for {self.location} is closed; create a new one",
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
