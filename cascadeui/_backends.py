"""Async facades: one generic :class:`AsyncBackend` over any synchronous adapter.

Every blocking call runs in an anyio worker thread (``anyio.to_thread.run_sync``) as one
whole unit of work, so nothing blocks the event loop, and the same code serves asyncio and
trio. The three built-in backends only choose their adapter.

Error policy, by layer: adapters raise typed errors. :meth:`AsyncBackend.save_state`
returns ``False`` and logs the reason for a failure of the medium (I/O, server, lock
timeout), because a bot must keep running; it still raises
:class:`~cascadeui.errors.SerializationError` (a ``TypeError``), which is a bug in the
caller's data, not an outage. :meth:`AsyncBackend.load_state` always raises, and so do the
versioned and journal coroutines the store's persistence engine uses
(:meth:`~AsyncBackend.load_versioned`, :meth:`~AsyncBackend.save_if_version`,
:meth:`~AsyncBackend.save_changes`, :meth:`~AsyncBackend.load_changes`): the engine
classifies their errors itself (see :mod:`cascadeui._engine`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, cast, runtime_checkable

import anyio
import anyio.to_thread

from cascadeui._merge import diff
from cascadeui.adapters import (
    BackupStore,
    DescribedStore,
    FileStore,
    JournaledStore,
    MemoryStore,
    PostgresStore,
    RedisStore,
    SQLiteStore,
    SyncStore,
    TransactionalStore,
    VersionedStore,
)
from cascadeui.errors import PersistenceError, SerializationError, StoreClosedError
from cascadeui.serializer import SnapshotEncoder, StateSerializer

__all__ = [
    "AsyncBackend",
    "Capabilities",
    "FileStorageBackend",
    "MemoryBackend",
    "PostgresBackend",
    "RedisBackend",
    "SQLiteBackend",
    "StorageBackend",
    "aclose_backend",
    "as_backend",
    "is_adapter",
    "location_of",
    "save_or_log",
]

log: logging.Logger = logging.getLogger("cascadeui.persistence")

S = TypeVar("S", bound=SyncStore)
T = TypeVar("T")


@runtime_checkable
class StorageBackend(Protocol):
    """The seed's interface for custom backends: two coroutines."""

    async def save_state(self, state: dict[str, Any]) -> bool:
        """Persist ``state``; return True on success."""
        ...

    async def load_state(self) -> dict[str, Any]:
        """Return the saved state, an empty dict when nothing was saved."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What a synchronous adapter offers beyond ``load``/``save``, worked out once.

    The engine, the readers and the migrations ask this value (``backend.capabilities``,
    or :meth:`of` for a bare adapter) instead of probing the adapter's attributes.
    """

    #: ``load_versioned()`` / ``save_if_version()``: compare-and-set writes.
    versioned: bool = False
    #: ``save_changes()`` / ``load_changes()``: a change journal (with versions only).
    journaled: bool = False
    #: ``load_checked(since)``: tells a medium that lost data from another writer's commit
    #: (with versions only).
    load_checked: bool = False
    #: ``version()``: a cheap change counter.
    counter: bool = False
    #: ``transaction()``: an atomic read-modify-write.
    transaction: bool = False
    #: ``listener(notify)``: hears the commits other processes announce.
    listener: bool = False
    #: ``list_backups()`` / ``read_backup()``.
    backups: bool = False
    #: ``exists()`` / ``describe()`` / ``check()``.
    described: bool = False
    #: ``companion(tag)``: another store on the same medium (migration backups).
    companion: bool = False
    #: ``close()``.
    closable: bool = False
    #: The backend's short name (``"redis"``), else the adapter's class name.
    kind: str = ""

    @classmethod
    def of(cls, adapter: object) -> Capabilities:
        """Work out what ``adapter`` offers (the one place that probes an adapter)."""

        versioned = isinstance(adapter, VersionedStore)
        return cls(versioned=versioned,
                   journaled=versioned and isinstance(adapter, JournaledStore),
                   load_checked=versioned and callable(getattr(adapter, "load_checked", None)),
                   counter=callable(getattr(adapter, "version", None)),
                   transaction=isinstance(adapter, TransactionalStore),
                   listener=callable(getattr(adapter, "listener", None)),
                   backups=isinstance(adapter, BackupStore),
                   described=isinstance(adapter, DescribedStore),
                   companion=callable(getattr(adapter, "companion", None)),
                   closable=callable(getattr(adapter, "close", None)),
                   kind=str(getattr(adapter, "kind", None) or type(adapter).__name__))


def is_adapter(obj: object) -> bool:
    """``obj`` is a synchronous adapter: it has ``load()`` and ``save(state)``."""
    return callable(getattr(obj, "load", None)) and callable(getattr(obj, "save", None))


def location_of(target: object, default: str | None = None) -> str:
    """Where a backend or an adapter keeps its state, password-free: its ``location``,
    else ``default``, else its class name."""
    found = getattr(target, "location", None)
    if found is not None:
        return str(found)
    return default if default is not None else type(target).__name__


async def aclose_backend(backend: object) -> None:
    """Close ``backend`` if it can be closed (a custom backend may have no ``aclose()``)."""
    close = getattr(backend, "aclose", None)
    if close is not None:
        await close()


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in an anyio worker thread, or inline once no thread can start.

    At interpreter exit (the final writes of :mod:`cascadeui._shutdown`) Python 3.12.0-3.12.1
    refuses every new thread ("can't create new thread at interpreter shutdown"); blocking
    the exiting loop is then the only way the last changes get written.
    """
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except RuntimeError as exc:
        if "interpreter shutdown" not in str(exc):
            raise
    return fn(*args)


def save_or_log(store: SyncStore, state: Mapping[str, Any], where: str) -> bool:
    """The save-failure policy, in one place: True once saved, False (logged) when the
    medium failed; a caller's bug (:class:`~cascadeui.errors.SerializationError`) or a
    closed store raises."""
    try:
        store.save(state)
    except (SerializationError, StoreClosedError):
        raise
    except (PersistenceError, OSError) as exc:
        log.error("save to %s failed: %s", where, exc)
        return False
    return True


class AsyncBackend(Generic[S]):
    """Runs a synchronous adapter in anyio worker threads behind the seed's async API.

    :param store: any object with the :class:`~cascadeui.adapters.SyncStore` methods.
    """

    def __init__(self, store: S) -> None:
        self.store: S = store
        #: What the adapter offers, detected once here rather than probed on every call
        #: (a runtime protocol check walks every member).
        self.capabilities: Capabilities = Capabilities.of(store)
        caps, any_store = self.capabilities, cast(Any, store)
        self._versioned: VersionedStore | None = any_store if caps.versioned else None
        self._journal: JournaledStore | None = any_store if caps.journaled else None
        self._version: Callable[[], int] | None = any_store.version if caps.counter else None
        self._checked: Callable[[int], tuple[dict[str, Any], int, str | None]] | None = (
            any_store.load_checked if caps.load_checked else None)

    @property
    def versioned(self) -> bool:
        """True when the adapter offers compare-and-set (``load_versioned``/``save_if_version``)."""
        return self._versioned is not None

    @property
    def journaled(self) -> bool:
        """True when the adapter can also append change records (``save_changes``)."""
        return self._journal is not None

    @property
    def serializer(self) -> StateSerializer | None:
        """The versioned adapter's serializer (None for an adapter without versions)."""
        return self._versioned.serializer if self._versioned is not None else None

    @property
    def location(self) -> str:
        """Where the state lives (password-free)."""
        return location_of(self.store)

    async def save_state(self, state: Mapping[str, Any]) -> bool:
        """Write ``state``; True on success, False (logged) when the medium failed.

        :raises SerializationError: ``state`` holds a value JSON cannot store.
        :raises StoreClosedError: the backend was closed.
        """
        return await _in_thread(save_or_log, self.store, state, self.location)

    async def load_state(self) -> dict[str, Any]:
        """Return the saved state, ``{}`` when nothing was saved.

        :raises StateCorruptedError: stored data (and every backup) is unreadable.
        :raises StorageUnavailableError: the medium cannot be reached.
        """
        return await _in_thread(self.store.load)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[dict[str, Any]]:
        """``async with`` twin of the adapter's ``transaction()``: atomic read-modify-write.

        The adapter's transaction runs in one dedicated thread for its whole life (its
        lock and connection belong to that thread) while the body runs on the event loop.
        Nothing is written if the body raises.
        """
        if not self.capabilities.transaction:
            raise TypeError(f"{type(self.store).__name__} has no transaction()")
        commands: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        replies: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

        def hold() -> None:
            try:
                with self.store.transaction() as state:
                    replies.put(("state", state))
                    abort = commands.get()
                    if abort is not None:
                        raise _AbortError
            except _AbortError:
                replies.put(("aborted", None))
            except BaseException as exc:
                replies.put(("error", exc))
            else:
                replies.put(("committed", None))

        worker = threading.Thread(target=hold, name="cascadeui-transaction", daemon=True)
        worker.start()
        # Shielded waits: a cancelled caller still waits for the holder thread to finish,
        # so the lock is never left held by a transaction nobody will end.
        kind, value = await _shielded_get(replies)
        if kind == "error":
            raise value
        try:
            yield value
        except BaseException as exc:
            commands.put(exc)
            await _shielded_get(replies)
            raise
        commands.put(None)
        kind, value = await _shielded_get(replies)
        if kind == "error":
            raise value

    async def version(self) -> int:
        """The adapter's cheap change counter (see each adapter's ``version()``).

        :raises TypeError: the adapter has no ``version()``.
        :raises StorageUnavailableError: the medium cannot be reached.
        """
        if self._version is None:
            raise TypeError(f"{type(self.store).__name__} has no version()")
        return int(await _in_thread(self._version))

    # -- versions and the change journal (the store's persistence engine) --------------

    def _cas(self) -> VersionedStore:
        if self._versioned is None:
            raise TypeError(f"{type(self.store).__name__} has no load_versioned() / "
                            "save_if_version()")
        return self._versioned

    async def load_versioned(self) -> tuple[dict[str, Any], int]:
        """The stored state and the version it was read at, consistently (one thread call).

        :raises TypeError: the adapter has no versions (see :attr:`versioned`).
        :raises StateCorruptedError: stored data (and every backup) is unreadable.
        :raises StorageUnavailableError: the medium cannot be reached.
        """
        return await _in_thread(self._cas().load_versioned)

    async def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                              encoder: SnapshotEncoder | None = None) -> int | None:
        """Rewrite ``state`` whole if the stored version is still ``expected``.

        Encoding and writing are one worker-thread call; a whole write empties a journal.

        :param encoder: an incremental encoder that reuses the text of subtrees unchanged
            since its previous call (the state must never be changed in place).
        :returns: the new version, or None (nothing written) when another writer
            committed since ``expected``.
        :raises SerializationError: ``state`` holds a value that cannot be stored.
        :raises PersistenceError: the medium failed (the subclass says how).
        """
        adapter = self._cas()

        def write() -> int | None:
            encoded = encoder.encode(state) if encoder is not None else None
            return adapter.save_if_version(state, expected, encoded=encoded)

        return await _in_thread(write)

    async def save_changes(self, before: Mapping[str, Any], after: Mapping[str, Any],
                           expected: int, *,
                           encoder: SnapshotEncoder | None = None) -> int | None:
        """Append the changes from ``before`` (stored at ``expected``) to ``after``.

        One worker-thread call finds the leaf changes (by identity between snapshots that
        share unchanged subtrees, so it costs what changed) and appends them as one journal
        record; when the journal is due for compaction the adapter rewrites ``after``
        whole instead. An adapter without a journal rewrites ``after`` whole.

        :returns: the new version, or None when another writer committed since ``expected``.
        :raises SerializationError: a changed value cannot be stored (nothing written).
        :raises PersistenceError: the medium failed (the subclass says how).
        """
        journal = self._journal
        if journal is None:
            return await self.save_if_version(after, expected, encoder=encoder)
        serializer = self._cas().serializer

        def full() -> str:
            return encoder.encode(after) if encoder is not None else serializer.serialize(after)

        def append() -> int | None:
            return journal.save_changes(diff(before, after), expected, full=full)

        return await _in_thread(append)

    async def load_changes(self, since: int) -> tuple[list[list[list[Any]]], int] | None:
        """The journal records committed after version ``since`` and the current version.

        :returns: None when the journal no longer holds every commit since ``since``, or
            the adapter keeps no journal: load the whole document instead.
        :raises StateCorruptedError: a record since ``since`` does not decode.
        :raises StorageUnavailableError: the medium cannot be reached.
        """
        if self._journal is None:
            return None
        return await _in_thread(self._journal.load_changes, since)

    async def load_checked(self, since: int) -> tuple[dict[str, Any], int, str | None]:
        """:meth:`load_versioned`, plus why the stored state is not a descendant of the
        one this backend's adapter read or wrote at version ``since``: the medium lost
        data (a journal evicted or cut short, the state emptied and written again by
        someone else, an older copy restored). None when nothing was lost, or when the
        adapter cannot tell (it has no ``load_checked``). See docs/multiprocess.md.

        :raises TypeError: the adapter has no versions (see :attr:`versioned`).
        :raises StateCorruptedError: stored data is unreadable.
        :raises StorageUnavailableError: the medium cannot be reached.
        """
        if self._checked is None:
            state, version = await self.load_versioned()
            return state, version, None
        return await anyio.to_thread.run_sync(self._checked, since)

    async def aclose(self) -> None:
        """Release the adapter's connections and handles; idempotent."""
        if self.capabilities.closable:
            await _in_thread(self.store.close)

    async def __aenter__(self) -> AsyncBackend[S]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}>"


async def _shielded_get(replies: queue.SimpleQueue[tuple[str, Any]]) -> tuple[str, Any]:
    """The next reply of a transaction's holder thread, waited for even when cancelled."""
    with anyio.CancelScope(shield=True):
        return await anyio.to_thread.run_sync(replies.get)
    # A shielded scope re-raises what its body raised; this only tells the type checkers.
    raise AssertionError("unreachable")


class _AbortError(Exception):
    """Internal: unwinds the adapter's transaction without committing."""


class FileStorageBackend(AsyncBackend[FileStore]):
    """JSON file backend: atomic replace, fsync, ``.bak`` rotation, a file lock.

    :param file_path: the JSON file.
    :param backups: previous generations to keep (``.bak``, ``.bak.1``, ...); None keeps
        as many as already exist (at least one).
    :param lock_timeout: seconds to wait for ``<file_path>.lock``.
    """

    def __init__(self, file_path: str | os.PathLike[str], *, backups: int | None = 1,
                 lock_timeout: float = 10.0) -> None:
        super().__init__(FileStore(file_path, backups=backups, lock_timeout=lock_timeout))
        self.file_path: Path = self.store.path


class SQLiteBackend(AsyncBackend[SQLiteStore]):
    """SQLite backend (recommended): one row, WAL mode, ``BEGIN IMMEDIATE`` writes.

    Needs ``pip install 'cascadeui-persistence[sqlite]'``.

    :param db_path: the database file, created on first use.
    :param timeout: seconds to wait for the write lock.
    """

    def __init__(self, db_path: str | os.PathLike[str] = "cascadeui.db", *,
                 timeout: float = 10.0) -> None:
        super().__init__(SQLiteStore(db_path, timeout=timeout))
        self.db_path: str = self.store.path


class RedisBackend(AsyncBackend[RedisStore]):
    """Redis backend: the document under ``key``, optional TTL refreshed on every save.

    Needs ``pip install 'cascadeui-persistence[redis]'``.

    :param url: Redis connection URL; a password in it never appears in reprs or logs.
    :param key: the key holding the state.
    :param ttl: optional expiry in seconds.
    :param client: a redis-py client you built instead of ``url`` (``RedisCluster``,
        ``Sentinel(...).master_for(...)``); it stays yours to close.
    :param wait_aof: every commit waits until the server fsynced it to its append-only file
        (``WAITAOF``, Redis 7.2+ / Valkey, ``appendonly yes``), so a durable dispatch
        survives a server crash too. Off: Redis acknowledges what is in its memory, and is
        only as durable as the server's own ``appendonly``/``appendfsync`` settings.
    :param min_replicas: acknowledge writes only once this many replicas hold them
        (``WAIT``); see :class:`~cascadeui.adapters.RedisStore`.
    :param replica_timeout: seconds to wait for those replicas.
    """

    def __init__(self, url: str = "redis://localhost", key: str = "cascadeui:state",
                 ttl: int | None = None, *, lock_timeout: float = 10.0,
                 socket_timeout: float = 5.0, client: Any = None,
                 wait_aof: bool = False, min_replicas: int = 0,
                 replica_timeout: float = 1.0) -> None:
        super().__init__(RedisStore(url, key=key, ttl=ttl, lock_timeout=lock_timeout,
                                    socket_timeout=socket_timeout, client=client,
                                    wait_aof=wait_aof, min_replicas=min_replicas,
                                    replica_timeout=replica_timeout))
        self.url: str = self.store.url
        self.key = key
        self.ttl = ttl


class PostgresBackend(AsyncBackend[PostgresStore]):
    """PostgreSQL backend: one snapshot row plus a change journal, one transaction per commit.

    Needs ``pip install 'cascadeui-persistence[postgres]'`` (psycopg 3).

    :param url: a ``postgresql://user[:password]@host[:port]/dbname`` URL; a password in
        it never appears in reprs, logs or errors.
    :param table: the state table (its journal is ``<table>_journal``), created on first use.
    :param timeout: seconds to wait for the write lock.
    :param statement_timeout: seconds before the server cancels a statement (None: its
        own setting).
    :param connect_timeout: seconds to connect to (or hear back from) the server.
    """

    def __init__(self, url: str = "postgresql://localhost/postgres",
                 table: str = "cascadeui_state", *, timeout: float = 10.0,
                 statement_timeout: float | None = 30.0, connect_timeout: float = 5.0) -> None:
        super().__init__(PostgresStore(url, table=table, timeout=timeout,
                                       statement_timeout=statement_timeout,
                                       connect_timeout=connect_timeout))
        self.url: str = self.store.url
        self.table = table


def as_backend(obj: object) -> StorageBackend:
    """Return ``obj`` as an async backend: backends as they are, sync adapters wrapped.

    :raises TypeError: ``obj`` is neither (the message says what is missing).
    """
    if isinstance(obj, StorageBackend):
        return obj
    if is_adapter(obj):
        # A plain adapter may have only load/save: transaction()/version() then raise
        # TypeError and aclose() does nothing (see AsyncBackend).
        return AsyncBackend(cast(SyncStore, obj))
    raise TypeError(
        f"{type(obj).__name__} is not a storage backend: implement async save_state(state) "
        "and load_state(), or sync save(state) and load()")


class MemoryBackend(AsyncBackend[MemoryStore]):
    """In-memory backend for tests and examples: backends of one ``name`` share one state
    inside the process (``memory://NAME``); nothing survives the process.

    :param name: the shared state's name (None: a state private to this backend).
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(MemoryStore(name))
        self.name: str = self.store.name
