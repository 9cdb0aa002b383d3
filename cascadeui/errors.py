"""The typed errors of cascadeui, one tree rooted at :class:`PersistenceError`.

::

    PersistenceError
    ├── SerializationError (TypeError)        a value JSON cannot hold; ``path`` names it
    ├── StateCorruptedError (ValueError)      stored bytes that do not decode; ``tried``
    ├── StateNotFoundError (FileNotFoundError) a reader was pointed at a store holding nothing
    ├── StorageUnavailableError (OSError)     the medium failed: I/O error, server down
    │   ├── LockTimeoutError (TimeoutError)   a lock not had in time; ``lock`` names it
    │   └── DurabilityTimeoutError (TimeoutError)  a durable dispatch not stored in time
    ├── ConfigurationError (ValueError)       a bad URL, path or option
    ├── StoreClosedError (RuntimeError)       a store used after ``close()``
    ├── MigrationError (RuntimeError)         a schema migration step failed; ``step``
    ├── SchemaVersionError (ValueError)       stored state newer than the code; ``stored``
    └── UnregisteredPanelError (TypeError)    a ``register=False`` panel class was sent

Each error carries its location as attributes as well as in its message, never a
password, and survives pickling so that it can cross process boundaries.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "DurabilityTimeoutError",
    "LockTimeoutError",
    "MigrationError",
    "PersistenceError",
    "SchemaVersionError",
    "SerializationError",
    "StateCorruptedError",
    "StateNotFoundError",
    "StorageUnavailableError",
    "StoreClosedError",
    "UnregisteredPanelError",
]


def _rebuild(cls: type[PersistenceError], args: tuple[Any, ...], fields: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(fields)
    return err


class PersistenceError(Exception):
    """Root of every error cascadeui raises on purpose.

    :param message: the human-readable reason.
    :param location: where it happened (a path, ``sqlite:///x.db`` or a redacted Redis URL).
    """

    location: str | None

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class SerializationError(PersistenceError, TypeError):
    """Raised by :class:`~cascadeui.serializer.StateSerializer` for a value JSON cannot hold.

    ``path`` is the key path of the offending value, e.g. ``state['application']['when']``.
    Nothing is written when this is raised.
    """

    path: str

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class StateCorruptedError(PersistenceError, ValueError):
    """Raised by ``load`` when no stored copy decodes; ``tried`` lists every copy tried."""

    tried: tuple[str, ...]

    def __init__(self, message: str, *, location: str | None = None,
                 tried: tuple[str, ...] = ()) -> None:
        super().__init__(message, location=location)
        self.tried = tried


class StateNotFoundError(PersistenceError, FileNotFoundError):
    """Raised by read-only tools (``inspect``, the CLI) for a target that holds no state:
    a missing file or database, a Redis key never written. The same error for every
    medium, so a typo is never shown as an empty state."""


class StorageUnavailableError(PersistenceError, OSError):
    """Raised when the medium fails: a disk error, a refused connection, a timeout."""


class LockTimeoutError(StorageUnavailableError, TimeoutError):
    """Raised by ``transaction()`` and ``save()`` when the lock is not had within its timeout."""

    lock: str
    timeout: float

    def __init__(self, message: str, *, lock: str, timeout: float,
                 location: str | None = None) -> None:
        super().__init__(message, location=location)
        self.lock = lock
        self.timeout = timeout


class DurabilityTimeoutError(StorageUnavailableError, TimeoutError):
    """Raised by ``dispatch(..., durable=True)`` (and the panel helpers, durable by default)
    when the change was not stored within ``timeout`` seconds: the writes failed (or were
    too slow) and kept being retried until then.

    The change is applied in memory and the writer keeps retrying it in the background,
    but it was **not** acknowledged as durable: tell the user it was not saved.
    ``timeout`` is the limit that passed; ``last_error`` is the latest write failure (also
    the ``__cause__``), None when the writes were only slow.
    """

    timeout: float
    last_error: BaseException | None

    def __init__(self, message: str, *, timeout: float, location: str | None = None,
                 last_error: BaseException | None = None) -> None:
        super().__init__(message, location=location)
        self.timeout = timeout
        self.last_error = last_error


class ConfigurationError(PersistenceError, ValueError):
    """Raised for a URL, path or option that cannot work, before anything is touched."""


class StoreClosedError(PersistenceError, RuntimeError):
    """Raised when a store or backend is used after ``close()``."""


class MigrationError(PersistenceError, RuntimeError):
    """Raised when a schema migration step fails (it raised, or returned no document).

    ``step`` is the version the failing function upgrades to; ``from_version`` the version
    the stored state had. Nothing was written: the stored state is untouched. The
    original exception is the ``__cause__``.
    """

    step: int
    from_version: int

    def __init__(self, message: str, *, step: int, from_version: int,
                 location: str | None = None) -> None:
        super().__init__(message, location=location)
        self.step = step
        self.from_version = from_version


class SchemaVersionError(PersistenceError, ValueError):
    """Raised when the stored state's schema version is newer than the code's (older code
    started against newer data), or is not a version number. Nothing was written.
    """

    stored: object
    supported: int

    def __init__(self, message: str, *, stored: object, supported: int,
                 location: str | None = None) -> None:
        super().__init__(message, location=location)
        self.stored = stored
        self.supported = supported


class UnregisteredPanelError(PersistenceError, TypeError):
    """Raised by a panel's ``send()``/``respond()`` when its class was defined with
    ``register=False``: no restart could rebuild it, so it is refused before any request.

    ``class_name`` names the class.
    """

    class_name: str

    def __init__(self, class_name: str) -> None:
        super().__init__(
            f"{class_name} was defined with register=False, so it is not in the panel "
            "registry and no restart could rebuild it: its buttons would stop answering. "
            f"Send a registered subclass, or drop register=False from {class_name}.")
        self.class_name = class_name
