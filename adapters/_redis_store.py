"""The Redis adapter: a JSON snapshot and a change journal, a version counter, a leased lock.

Keys (``key`` defaults to ``cascadeui:state``)::

    <key>          string: the StateSerializer document, the *snapshot* (what ``save`` wrote)
    <key>:journal  list: journal records appended after the snapshot, oldest first (one per
                   commit of the store's engine, :mod:`cascadeui.adapters._journal`)
    <key>:version  integer: +1 on every commit, appends included, for change detection
                   (never expires, so it never repeats a value a poller has seen)
    <key>:lock     string: a random token while a full writer holds the lock (leased, PX)
    <key>:changes  a pub/sub channel, not a key: every commit PUBLISHes its new version
                   from inside its script, so running stores catch up at once
    <key>:lineage  string: ``<lineage id> <version of the snapshot>``, set by every full
                   write (same expiry as the snapshot)

The state is the snapshot with every journal record applied in order. ``load``,
``load_versioned`` and ``transaction`` read the three keys in one MULTI/EXEC, so they never
mix a snapshot with another snapshot's journal. A journal whose snapshot is missing, a
record that does not decode or does not fit raises StateCorruptedError: never a partial
state. ``load_changes`` (catching up with another process) reads just the records after a
version in one Lua script, and gives up (None) once a full write replaced their snapshot.

Full writes (``save``, ``save_if_version``, ``transaction``, a compaction) take the lock
(``SET NX PX``), then one Lua script checks that the token is still ours, writes the
snapshot, deletes the journal, bumps the version and releases the lock, atomically
(documents over ``lua_max_bytes`` are staged under a key of the lock's token first, and the
same script renames it into place). Every script is in :mod:`._redis_scripts`, the one
source of the protocol; the client, its checks and error mapping are in
:mod:`._redis_client`. A writer killed
while holding the lock blocks others only until its lease (``lock_timeout``) ends; a
writer whose lease ran out before it committed gets an error and writes nothing.

An append (``save_changes``) takes no lock: it is one Lua script, atomic on the server,
that appends only if the version is still the caller's and no full writer holds the lock
(a transaction reads, then writes the whole document: an append in between would be
lost). Seeing the lock held, it waits and retries, like a full writer, up to
``lock_timeout``. It also refuses when the journal's length is not the one this store last
read at that version (records pushed behind the version's back: the caller must reload,
which reports them if they are garbage), and writes the whole document instead when no
snapshot exists (never written, or expired). The journal and the snapshot get the same
absolute expiry on every append (the script reads the server's TIME: Redis 5 or later),
so one never outlives the other; a journal without its snapshot can only be someone's
``DEL <key>``, and reads refuse it rather than apply it to ``{}``.

Loss of the medium is never read as a deletion. The journal must hold exactly ``version -
<snapshot version>`` records; a shorter one (the ``:journal`` key evicted by
``maxmemory``, expired, deleted) is not applied, and a journal without its snapshot is
never applied to ``{}``. A full write keeps the stored lineage id only over a state that is
whole, and starts a new one otherwise (the server emptied then written again, a key
evicted), so a store that saw the old lineage can tell the new document is not the sequel
of what it saw (:meth:`RedisStore.load_checked`) and merges it without deleting anything.

Every script refuses to overwrite a key of another Redis type (a hash under ``<key>``, a
string under ``<key>:journal``...): that key belongs to something else, and the write
raises instead of destroying it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from cascadeui._merge import Change
from cascadeui.errors import LockTimeoutError, StorageUnavailableError

from . import _redis_scripts as lua
from ._journal import Budget, commit_changes, encode_record
from ._listeners import TICK, Listener, Notify, announced_version
from ._redis_read import RedisReads

__all__ = ["RedisListener", "RedisStore"]


class RedisStore(RedisReads):
    """State under one Redis key (and its journal), safe across threads, processes and hosts.

    Implements :class:`~cascadeui.adapters.JournaledStore`: the store's engine appends each
    commit's changes (:meth:`save_changes`) instead of rewriting the whole document.

    :param url: a ``redis://`` or ``rediss://`` URL (``redis://:password@host:port/db``).
    :param key: the key holding the document.
    :param ttl: seconds of expiry, set and refreshed on every save; ``None`` keeps it forever.
    :param lock_timeout: seconds to wait for the lock, and the lease of a held lock.
    :param socket_timeout: connect and read timeout in seconds.
    :param client: a synchronous redis-py client you built instead of ``url``: a
        ``redis.Redis``, ``Sentinel(...).master_for(name)`` or ``RedisCluster(...)``. It
        stays yours: closing the store does not close it. With a ``RedisCluster`` the other
        keys are named ``{key}:journal``, ``{key}:version`` and ``{key}:lock`` (unless
        ``key`` has a hash tag already), so all of them live in ``key``'s slot and every
        script can run.
    :param wait_aof: a commit returns only once the server has fsynced it to its
        append-only file (``WAITAOF 1 0``, Redis 7.2+ / Valkey): a write survives a server
        crash or power cut, not just a client crash. Needs ``appendonly yes`` on the server
        (checked on first use: :class:`~cascadeui.errors.ConfigurationError` otherwise). Off
        by default: Redis then acknowledges a write once it is in the server's memory.
    :param min_replicas: acknowledge a write only once at least this many replicas hold it
        (``WAIT``, after a marker write to ``<key>:ack``; 0, the default, acknowledges
        when the master has it). Replication is asynchronous: without this, a write the
        master acknowledged can be lost when a replica that missed it is promoted. A write
        that does not reach enough replicas within ``replica_timeout`` raises
        :class:`~cascadeui.errors.StorageUnavailableError` and stays unconfirmed: every
        later call of this store first waits for the replicas again, so a retry cannot
        acknowledge it by reading it back. Not with a ``RedisCluster`` client.
    :param replica_timeout: seconds ``WAIT`` waits for the replicas.
    """

    #: Documents up to this size go to the commit script as its argument (one round trip).
    #: Larger ones are SET under a staging key first and renamed into place by the same
    #: script: a script copies its arguments into Lua strings and back, which cost a 10 MB
    #: save about 20% (docs/performance.md). Journal records always go through the append
    #: script: one is at most the journal's budget, half a snapshot.
    lua_max_bytes = 256 * 1024

    def companion(self, tag: str) -> RedisStore:
        """The key ``<key>:<tag>:backup`` on the same server (sharing this store's client)."""
        return RedisStore(key=f"{self.key}:{tag}:backup", client=self._client,
                          serializer=self.serializer)

    def listener(self, notify: Notify) -> Listener:
        """``SUBSCRIBE`` to :attr:`channel` in a thread (for the engine; not started)."""
        return RedisListener(notify, self)

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state (under the lock, so transactions are never torn).

        Writes a new snapshot and empties the journal.

        :raises SerializationError: ``state`` holds a value JSON cannot store (nothing written).
        :raises LockTimeoutError: the lock was not had within ``lock_timeout``.
        :raises StorageUnavailableError: the server is unreachable or failed.
        """
        data = self.serializer.serialize(state)
        with self._mapped_errors(), self._locked() as token:
            self._write(token, data)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, yield the state to change in place, commit it if the lock is ours.

        If the body raises, nothing is written and the lock is released. The commit is a
        full write: a new snapshot, an empty journal.
        """
        with self._mapped_errors(), self._locked() as token:
            state = self._read_raw()[0]
            yield state
            self._write(token, self.serializer.serialize(state))

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save: see :meth:`~cascadeui.adapters.VersionedStore.save_if_version`."""
        data = self.serializer.serialize(state) if encoded is None else encoded
        with self._mapped_errors():
            return self._save_whole_if(data, expected, records=None)

    def save_changes(self, changes: Sequence[Change], expected: int, *,
                     full: Callable[[], str]) -> int | None:
        """Append ``changes`` as one journal record if the version is still ``expected``.

        The contract is :meth:`~cascadeui.adapters.JournaledStore.save_changes`'s, and the
        decision is the journal module's :func:`~cascadeui.adapters._journal.commit_changes`.
        One Lua script, no lock round trips; a full write of ``full()`` instead when the
        journal is due for compaction or no snapshot is stored.

        :raises SerializationError: a changed value cannot be stored (nothing written).
        :raises StateCorruptedError: a key holds another type, or (on the rare path that
            reads the state to measure it) something stored does not decode.
        :raises LockTimeoutError: a full writer held the lock for all of ``lock_timeout``.
        """
        record = encode_record(self.serializer, changes) if changes else ""
        with self._mapped_errors():
            if not changes:
                return expected if self.version() == expected else None
            sizes = self._budget_at(expected)
            if sizes is None:
                return None
            # The append script checks the version itself, atomically: no read first.
            return commit_changes(
                expected, expected, len(record), budget=lambda _: (sizes, True),
                verify=lambda: None,
                snapshot=lambda: self._save_whole_if(full(), expected, records=sizes.records),
                append=lambda budget: self._append_record(record, budget, full))

    # -- internals ---------------------------------------------------------------------

    def _budget_at(self, expected: int) -> Budget | None:
        """The compaction budget at ``expected``: cached, or measured by one whole read
        (which also proves everything stored decodes before anything is written after
        it); None when the stored version is no longer ``expected``."""
        if expected == 0:
            return Budget(0, 0, 0, 0)  # nothing stored yet: the first write is a snapshot
        if self._sizes is not None and self._sizes.version == expected:
            return self._sizes
        # Rare (the engine reads before it writes).
        if self.version() != expected:
            return None
        self._read_raw()
        sizes = self._sizes
        return sizes if sizes is not None and sizes.version == expected else None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[str]:
        token = secrets.token_hex(16)
        lease_ms = max(1, int(self.lock_timeout * 1000))
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while not self._client.set(self.lock_key, token, nx=True, px=lease_ms):
            delay = self._wait_for_lock(deadline, delay)
        try:
            yield token
        except BaseException:
            # A commit releases the lock itself; this covers a body or commit that raised.
            with contextlib.suppress(Exception):
                self._redis.scripts.release(keys=[self.lock_key], args=[token])
            raise

    def _wait_for_lock(self, deadline: float, delay: float) -> float:
        """Sleep ``delay`` before the next try at the lock; the next delay.

        :raises LockTimeoutError: ``deadline`` (monotonic) has passed.
        """
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"{self.location}: could not lock {self.lock_key!r} within "
                f"{self.lock_timeout:g}s", lock=self.lock_key,
                timeout=self.lock_timeout, location=self.location)
        time.sleep(delay)
        return min(delay * 2, 0.01)  # short: a commit takes about a millisecond

    def _save_whole_if(self, data: str, expected: int, *, records: int | None) -> int | None:
        """Write ``data`` as the new snapshot if the version is still ``expected``.

        :param records: also require the journal to hold at most this many records (what
            the caller read at ``expected``), so records pushed behind the version's back
            are never written over unread; None: any journal (an explicit whole save).
            Fewer is fine: they expired with the snapshot, or were deleted by hand.
        :returns: the new version, or None (nothing written).
        """
        with self._locked() as token:
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self.version_key)
            pipe.llen(self.journal_key)
            version, length = pipe.execute(raise_on_error=False)
            self._check_reply(length, f"{self.journal_key!r} holds another Redis type, "
                                      "not a list; refusing to overwrite it")
            if self._parse_version(version) != expected or (
                    records is not None and length > records):
                self._redis.scripts.release(keys=[self.lock_key], args=[token])
                return None
            return self._write(token, data, fork=self._fork_at == expected)

    def _append_record(self, record: str, sizes: Budget,
                       full: Callable[[], str]) -> int | None:
        """Run the append script, waiting out a full writer's lock; the new version."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        lineage = self._lineage_at(sizes.version) or ""
        while True:
            result = int(self._redis.run(
                self._redis.scripts.append,
                [self.key, self.version_key, self.lock_key, self.journal_key,
                 self.lineage_key],
                [sizes.version, sizes.records, record, self.ttl or 0, lineage,
                 self.channel]))
            if result == lua.BUSY:
                delay = self._wait_for_lock(deadline, delay)
                continue
            if result == lua.STALE:
                return None
            if result == lua.NO_SNAPSHOT:  # expired with its journal: write the whole state
                return self._save_whole_if(full(), sizes.version, records=0)
            if result == lua.ORPHAN_JOURNAL:
                # Never appended to; the caller reloads (load_checked reports the lost
                # snapshot) and rewrites its state whole, which replaces the journal.
                return None
            self._raise_for(result)
            self._sizes = sizes.appended(result, len(record))
            self._lineage = (result, lineage)
            self._redis.confirm_replicas()
            return result

    def _write(self, token: str, data: str, *, fork: bool = False) -> int:
        """Commit ``data`` as the snapshot, emptying the journal, if the lock is still ours.

        The stored lineage goes on when the state it replaces is whole; a new one starts
        when it is not (see the commit script), or with ``fork`` (the caller found the
        medium lost: other processes must see that this document is not their state's
        sequel). A document over :attr:`lua_max_bytes` is staged under a key of the lock's
        token first (``SET``, leased like the lock), and the same script renames it.

        :returns: the new version.
        """
        staged = len(data) > self.lua_max_bytes
        stage = self.keys.stage(token)
        if staged:
            self._client.set(stage, data, px=max(1, int(self.lock_timeout * 1000)))
        reply = self._redis.run(
            self._redis.scripts.commit,
            [self.key, self.version_key, self.lock_key, self.journal_key, self.lineage_key,
             stage],
            [token, "" if staged else data, self.ttl or 0, secrets.token_hex(8),
             "1" if fork else "0", self.channel, "1" if staged else "0"])
        if not isinstance(reply, list):
            self._raise_for(int(reply))
        result, lineage = int(reply[0]), reply[1]
        lineage = lineage.decode() if isinstance(lineage, bytes) else str(lineage)
        self._sizes = Budget(result, 0, 0, len(data))
        self._lineage = (result, lineage)
        if fork:
            self._fork_at = None
        self._redis.confirm_replicas()
        return result

    def _raise_for(self, result: int) -> None:
        """Raise the error a script's negative result stands for (a version passes)."""
        if result == lua.FOREIGN_KEY:
            raise self._corrupt(
                "the key holds another Redis type, not a string; refusing to overwrite it "
                "(is the key shared with something else?)")
        if result == lua.FOREIGN_JOURNAL:
            raise self._corrupt(
                f"{self.journal_key!r} holds another Redis type, not a list; refusing to "
                "overwrite it (is the key shared with something else?)")
        if result == lua.FOREIGN_LINEAGE:
            raise self._corrupt(
                f"{self.lineage_key!r} holds another Redis type, not a string; refusing to "
                "overwrite it (is the key shared with something else?)")
        if result == lua.LEASE_LOST:
            raise LockTimeoutError(
                f"{self.location}: the lock's {self.lock_timeout:g}s lease ran out before "
                "the commit; nothing was written", lock=self.lock_key,
                timeout=self.lock_timeout, location=self.location)
        if result == lua.STAGE_LOST:
            raise StorageUnavailableError(
                f"{self.location}: the staged document was gone before the commit "
                "(evicted under memory pressure?); nothing was written",
                location=self.location)
        if result < 0:  # pragma: no cover - every script's codes are handled above
            raise StorageUnavailableError(f"{self.location}: unexpected script result "
                                          f"{result}", location=self.location)


class RedisListener(Listener):
    """``SUBSCRIBE`` to the store's channel on a pub/sub connection of its client."""

    def __init__(self, notify: Notify, store: RedisStore) -> None:
        super().__init__(notify, store.location)
        self.store = store

    def _session(self) -> None:
        pubsub = self.store._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.store.channel)
            # redis-py reconnects a pub/sub connection by itself and resubscribes: what
            # was published meanwhile is lost, so every reconnection is a catch-up too.
            connection = getattr(pubsub, "connection", None)
            if connection is not None:
                connection.register_connect_callback(self._reconnected)
            self._connected()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=TICK)
                if message is not None and message.get("type") == "message":
                    self.notify(announced_version(message.get("data")))
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _reconnected(self, connection: Any) -> None:
        self.notify(None)
