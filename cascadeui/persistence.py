"""The persistence API of the seed: backends, ``migrate_storage``, the serializer, errors.

``from cascadeui.persistence import SQLiteBackend, migrate_storage`` is the public path;
the names live in small modules (:mod:`cascadeui._backends`, :mod:`cascadeui.errors`,
:mod:`cascadeui.serializer`) and are re-exported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import anyio.to_thread

from ._backends import (
    AsyncBackend,
    FileStorageBackend,
    MemoryBackend,
    PostgresBackend,
    RedisBackend,
    SQLiteBackend,
    StorageBackend,
    as_backend,
    location_of,
)
from ._targets import backend_for
from .errors import (
    ConfigurationError,
    DurabilityTimeoutError,
    LockTimeoutError,
    MigrationError,
    PersistenceError,
    SchemaVersionError,
    SerializationError,
    StateCorruptedError,
    StateNotFoundError,
    StorageUnavailableError,
    StoreClosedError,
)
from .serializer import StateSerializer

__all__ = [
    "AsyncBackend",
    "ConfigurationError",
    "DurabilityTimeoutError",
    "FileStorageBackend",
    "LockTimeoutError",
    "MemoryBackend",
    "MigrationError",
    "PersistenceError",
    "PostgresBackend",
    "RedisBackend",
    "SQLiteBackend",
    "SchemaVersionError",
    "SerializationError",
    "StateCorruptedError",
    "StateNotFoundError",
    "StateSerializer",
    "StorageBackend",
    "StorageUnavailableError",
    "StoreClosedError",
    "as_backend",
    "backend_from_url",
    "copy_state",
    "migrate_storage",
]

log: logging.Logger = logging.getLogger(__name__)

#: ``progress(done_steps, total_steps, what)``, called as a migration goes.
Progress = Callable[[int, int, str], None]


async def migrate_storage(source: object, target: object) -> bool:
    """Copy the state from ``source`` to ``target`` (any backends or sync adapters).

    Reads the target back and compares before returning True; never modifies the source,
    and touches the target only once the source was read and holds something.

    :returns: False (logged) when the source holds nothing or the target did not take the
        copy.
    :raises PersistenceError: the source cannot be read.
    """
    return await copy_state(as_backend(source), as_backend(target))


async def copy_state(src: StorageBackend, dst: StorageBackend, *,
                     progress: Progress | None = None, strict: bool = False) -> bool:
    """The one implementation of ``migrate_storage`` (the sync twin runs it too).

    :param progress: ``progress(done, 3, what)`` after each step.
    :param strict: raise the target's error instead of logging it and returning False.
    """
    def step(done: int, what: str) -> None:
        if progress is not None:
            progress(done, 3, what)

    step(0, "reading the source")
    state = await src.load_state()
    if not state:
        log.warning("migrate_storage: %s holds no state (missing or empty); nothing copied",
                    _where(src))
        return False
    step(1, "writing the target")
    try:
        if strict and isinstance(dst, AsyncBackend):
            await anyio.to_thread.run_sync(dst.store.save, state)
        elif not await dst.save_state(state):
            raise StorageUnavailableError(f"{_where(dst)} did not take the copy",
                                          location=_where(dst))
        step(2, "verifying the copy")
        copied = await dst.load_state()
        if copied != state:
            raise StorageUnavailableError(
                f"{_where(dst)} read back different state than was written",
                location=_where(dst))
    except (SerializationError, StoreClosedError):
        raise
    except (PersistenceError, OSError) as exc:
        if strict:
            raise
        log.error("migrate_storage: %s", exc)
        return False
    step(3, "done")
    return True


def _where(backend: object) -> str:
    return location_of(backend)


def backend_from_url(url: str | os.PathLike[str]) -> AsyncBackend[Any]:
    """Build a backend from a path or URL.

    ``state.json`` or ``file:///abs/state.json``: :class:`FileStorageBackend`;
    ``sqlite:///relative.db``, ``sqlite:////abs.db`` or a ``.db``/``.sqlite`` path:
    :class:`SQLiteBackend`; ``redis://[:password@]host[:port][/db]?key=...&ttl=...``
    (also ``rediss://``, ``unix://``): :class:`RedisBackend`;
    ``postgresql://user@host:port/dbname?table=...`` (also ``postgres://``):
    :class:`PostgresBackend`; ``memory://NAME``: :class:`MemoryBackend`. The registry of
    schemes is :data:`cascadeui._targets.SCHEMES`.

    :raises ConfigurationError: anything else (the message lists what is accepted).
    """
    return backend_for(url)
