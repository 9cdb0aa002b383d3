"""Plain synchronous stores, installed as ``cascadeui.adapters``.

They need no event loop: call them from scripts, threads and notebooks. The async
backends in :mod:`cascadeui.persistence` run them in worker threads.
"""

from ._file_store import FileStore
from ._journal import JournaledStore, apply_shared
from ._listeners import Listener, StatListener, listener_for
from ._memory_store import MemoryStore
from ._postgres_store import PostgresStore
from ._redis_store import RedisStore
from ._sqlite_store import SQLiteStore
from ._urls import redact_url
from .base import (
    BackupInfo,
    BackupStore,
    BaseStore,
    Check,
    DescribedStore,
    StoreInfo,
    SyncStore,
    TransactionalStore,
    VersionedStore,
)

__all__ = [
    "BackupInfo",
    "BackupStore",
    "BaseStore",
    "Check",
    "DescribedStore",
    "FileStore",
    "JournaledStore",
    "Listener",
    "MemoryStore",
    "PostgresStore",
    "RedisStore",
    "SQLiteStore",
    "StatListener",
    "StoreInfo",
    "SyncStore",
    "TransactionalStore",
    "VersionedStore",
    "apply_shared",
    "listener_for",
    "redact_url",
]
