"""The reading half of :class:`~cascadeui.adapters.RedisStore`: its keys and client, and
every read (the state in one MULTI/EXEC, the journal's tail in one script, the version
probe, what readers ask), with the checks that tell a medium that lost data.

The writes (the lock, the commit and append scripts) are :mod:`._redis_store`'s.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from typing import Any

from cascadeui.errors import ConfigurationError, StateCorruptedError
from cascadeui.serializer import StateSerializer

from . import _redis_scripts as lua
from ._journal import Budget, apply_records, decode_records, nbytes
from ._journaled import JournalReads
from ._redis_client import RedisClient, is_cluster
from .base import Check, StoreInfo

__all__ = ["RedisReads"]

log: logging.Logger = logging.getLogger("cascadeui.adapters.redis")


class RedisReads(JournalReads):
    """The state's keys on one server and every read of them; see :class:`RedisStore`
    for the parameters. ``load_checked`` and the caches are the journaled base's."""

    kind = "redis"

    def __init__(self, url: str = "redis://localhost", *, key: str = "cascadeui:state",
                 ttl: int | None = None, lock_timeout: float = 10.0,
                 socket_timeout: float = 5.0,
                 serializer: StateSerializer | None = None, client: Any = None,
                 wait_aof: bool = False, min_replicas: int = 0,
                 replica_timeout: float = 1.0) -> None:
        super().__init__(serializer=serializer)
        # redis-py is imported (about half a second) and the client built on first use,
        # in the worker thread: constructors run on the event loop and must not stall it.
        if "redis" not in sys.modules and importlib.util.find_spec("redis") is None:
            raise ImportError(  # pragma: no cover - exercised only without the extra
                "RedisStore needs redis: pip install 'cascadeui-persistence[redis]'")
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"ttl must be a positive number of seconds, not {ttl!r}")
        if not key:
            raise ConfigurationError("key must be a non-empty string")
        self.keys: lua.Keys = lua.Keys.of(key, cluster=is_cluster(client))
        keys = self.keys
        self._redis = RedisClient(url, key=key, given=client, socket_timeout=socket_timeout,
                                  wait_aof=wait_aof, min_replicas=min_replicas,
                                  replica_timeout=replica_timeout, ack_key=keys.ack)
        self.url: str = self._redis.url
        self.key = key
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.location: str = self._redis.location
        self.version_key: str = keys.version
        self.lock_key: str = keys.lock
        self.journal_key: str = keys.journal
        self.lineage_key: str = keys.lineage
        self.ack_key: str = keys.ack
        #: The pub/sub channel every commit PUBLISHes its new version on (from inside the
        #: commit and append scripts, so a commit is announced exactly when it happens).
        self.channel: str = keys.channel
        self.wait_aof = wait_aof
        self.min_replicas = min_replicas
        self.replica_timeout = replica_timeout

    @property
    def _client(self) -> Any:
        """The redis-py client (one connection pool per store), built on first use."""
        return self._redis.client

    def _mapped_errors(self) -> contextlib.AbstractContextManager[None]:
        """Refuse a closed store; map redis-py errors (see :class:`RedisClient`)."""
        self._check_open()
        return self._redis.mapped_errors(
            f"the key holds another Redis type, not a string (or {self.journal_key!r} / "
            f"{self.version_key!r} does)")

    # -- what readers ask (inspect, the CLI) ---------------------------------------------

    def exists(self) -> bool:
        """True when a snapshot or journal is stored under the key (an expired state and a
        key never written are both False)."""
        with self._mapped_errors():
            return bool(self._client.exists(self.key, self.journal_key))

    def describe(self) -> StoreInfo:
        """Snapshot and journal bytes, version and TTL, summed on the server (one script)."""
        with self._mapped_errors():
            client = self._client
            found, snapshot, count, journal, version, pttl = self._redis.scripts.describe(
                keys=[self.key, self.journal_key, self.version_key], client=client)
            try:
                current: int | None = self._parse_version(version)
            except StateCorruptedError:
                current = None
        extra: dict[str, Any] = {"key": self.key, "journal_records": int(count)}
        if int(pttl) > 0:
            extra["expires_in_s"] = round(int(pttl) / 1000, 1)
        return StoreInfo(kind=self.kind, location=self.location, exists=bool(found),
                         version=current, size=int(snapshot) + int(journal),
                         snapshot_size=int(snapshot), journal_size=int(journal), extra=extra)

    def check(self) -> tuple[list[Check], dict[str, Any] | None]:
        """The snapshot and every journal record decode and apply; the counter is sane."""
        checks: list[Check] = []
        try:
            with self._mapped_errors():
                state, version, lost = self._read_raw()
            checks.append(Check("state decodes", True, "snapshot and change journal"))
        except StateCorruptedError as exc:
            return [Check("state decodes", False, str(exc))], None
        # A journal shorter than the counter says lost commits (evicted, expired, deleted).
        checks.append(Check("change journal holds every commit", lost is None, lost or ""))
        try:
            checks.append(Check("version counter", True, f"version {self._parse_version(version)}"))
        except StateCorruptedError as exc:
            checks.append(Check("version counter", False, str(exc)))
        return checks, state

    # -- the contract ------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Return the stored state (snapshot + journal), ``{}`` when nothing is stored.

        :raises StateCorruptedError: a key holds another type, or something does not decode.
        :raises StorageUnavailableError: the server is unreachable or failed.
        """
        with self._mapped_errors():
            return self._read_raw()[0]

    def load_checked(self, since: int) -> tuple[dict[str, Any], int, str | None]:
        """The journaled base's :meth:`~JournalReads.load_checked`; loss here is also a
        journal shorter than the version counter says (the ``:journal`` key evicted,
        expired or deleted) and a snapshot gone, with or without its journal.

        :raises StateCorruptedError: a key holds another type, or something does not decode.
        :raises StorageUnavailableError: the server is unreachable or failed.
        """
        with self._mapped_errors():
            return super().load_checked(since)

    def version(self) -> int:
        """The commit counter (0 when never written); cheap to poll (one round trip).

        Negative (``-counter``, or -1) while the stored state is not whole: its journal
        holds fewer records than the counter says (evicted, expired, deleted) or its
        snapshot is gone. Such a loss changes no counter, so a polling store would not
        otherwise look before its next write; a different number makes it look now.
        """
        with self._mapped_errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self.version_key)
            pipe.get(self.lineage_key)
            pipe.llen(self.journal_key)
            pipe.exists(self.key)
            raw, lineage, length, exists = pipe.execute(raise_on_error=False)
            version = self._parse_version(raw)
            if lineage is None or isinstance(lineage, Exception) or isinstance(length,
                                                                               Exception):
                return version
            _, expected = self._parse_lineage(lineage, raw)
            if not exists or (expected is not None and int(length) < expected):
                return -version or -1
            return version

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """:meth:`load` and the :meth:`version` of that state, read in one MULTI/EXEC."""
        with self._mapped_errors():
            return super().load_versioned()

    def load_changes(self, since: int) -> tuple[list[list[list[Any]]], int] | None:
        """The records committed after version ``since`` and the current version.

        The contract is :meth:`~cascadeui.adapters.JournaledStore.load_changes`'s. One Lua
        script reads the version, the journal's length and the last ``version - since``
        records; None when the journal holds fewer (a full write since), the snapshot is
        missing, or the journal is not the one this store read at ``since``.

        :raises StateCorruptedError: a record since ``since`` does not decode.
        :raises StorageUnavailableError: the server is unreachable or failed.
        """
        with self._mapped_errors():
            client = self._client  # built on first use, registering the scripts
            sizes = self._sizes  # the budget's inputs, if this store knows them at ``since``
            if sizes is not None and sizes.version != since:
                sizes = None
            lineage = self._lineage_at(since)
            reply = self._redis.scripts.changes(
                keys=[self.key, self.version_key, self.journal_key, self.lineage_key],
                args=[since, lineage if sizes is not None and lineage is not None else "*"],
                client=client)
            if reply is None:
                return None
            version, length, texts = self._parse_version(reply[0]), int(reply[1]), reply[2:]
            if sizes is not None and version - length != since - sizes.records:
                return None  # not the journal read at ``since``: pushed behind its back
            records, new_bytes = self._decode_records(texts, length)
            if sizes is not None and texts:  # the budget's cache follows, for appends
                self._sizes = sizes.caught_up(version, len(texts), new_bytes)
                if lineage is not None:
                    self._lineage = (version, lineage)
            return records, version

    # -- internals ---------------------------------------------------------------------

    def _lineage_at(self, version: int) -> str | None:
        """The lineage id this store knows at ``version`` ('' none stored), else None."""
        seen = self._lineage
        return seen[1] if seen is not None and seen[0] == version else None

    def _read(self, *, lenient: bool) -> tuple[dict[str, Any], int, str | None]:
        """The journaled base's hook: :meth:`_read_raw` with the version parsed."""
        state, raw, lost = self._read_raw(lenient=lenient)
        return state, self._parse_version(raw), lost

    def _read_raw(self, *, lenient: bool = False) -> tuple[dict[str, Any], Any, str | None]:
        """The state (snapshot + journal), the version's raw reply and what the medium
        lost (None: nothing), in one MULTI/EXEC.

        Records the compaction budget's inputs and the lineage for that version (when it
        is an integer). A journal shorter than the counter says (evicted, expired,
        deleted) is not applied: the snapshot is what is left (WARNING).

        :param lenient: report a journal without its snapshot, or of the wrong length, as
            a loss instead of raising (a running store rewrites its own state over it);
            so is a snapshot gone that this store's last read or write saw.
        :raises StateCorruptedError: a key of another type, a journal without its snapshot,
            a journal longer than the counter says, or a snapshot or record that does not
            decode or does not fit.
        """
        prior = self._sizes
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self.key)
        pipe.lrange(self.journal_key, 0, -1)
        pipe.get(self.version_key)
        pipe.get(self.lineage_key)
        raw, records, version, lineage = pipe.execute(raise_on_error=False)
        self._check_reply(raw, f"{self.key!r} holds another Redis type, not a string")
        self._check_reply(records, f"{self.journal_key!r} holds another Redis type, not a list")
        self._check_reply(lineage, f"{self.lineage_key!r} holds another Redis type, not a "
                                   "string")
        state = self._decode(raw)
        lost: str | None = None
        if raw is None and records:
            lost = (f"{self.journal_key!r} holds {len(records)} journal record(s) but "
                    f"{self.key!r}, their snapshot, is missing")
            if not lenient:
                raise self._corrupt(f"{lost} (deleted by hand?); delete the journal too, or "
                                      "restore the snapshot")
            records = []
        lineage_id, expected = self._parse_lineage(lineage, version)
        if raw is None:
            lineage_id, expected = "", None  # what is left of a state without its snapshot
            if lenient and lost is None and prior is not None and prior.snapshot_bytes \
                    and version is not None:
                lost = f"the snapshot {self.key!r} is gone"
        if lost is None and expected is not None and expected != len(records):
            lost = (f"{self.journal_key!r} holds {len(records)} journal record(s) where the "
                    f"version counter and {self.lineage_key!r} say {max(expected, 0)} " + (
                        "(evicted, expired or deleted?)" if len(records) < expected else
                        "(pushed behind the counter's back?)"))
            if not records or lenient:
                if not lenient:  # a running store reports it itself, with what it does
                    log.warning("%s: %s; the snapshot without them is what is left",
                                self.location, lost)
                records = []
        decoded, journal_bytes = self._decode_records(records, len(records))
        apply_records(state, enumerate(decoded), location=self.location,
                      name=lambda index: self._journal_record(index, len(records)))
        if records and lost is not None:  # more records than the counter says: refuse them
            raise self._corrupt(lost)
        with contextlib.suppress(StateCorruptedError):  # load() works with a bad counter
            self._seen(Budget(self._parse_version(version), len(records), journal_bytes,
                              nbytes(raw) if raw is not None else 0),
                       lineage_id if lost is None else "")
        return state, version, lost

    def _journal_record(self, index: int, length: int) -> str:
        """How an error names journal record ``index`` of ``length``."""
        return f"{self.journal_key!r} record {index} of {length}"

    def _decode_records(self, texts: Sequence[Any], length: int
                        ) -> tuple[list[list[list[Any]]], int]:
        """The ops of the last ``len(texts)`` records of a journal of ``length``, and their
        bytes (the journal module's decode loop, naming a bad record by its index)."""
        first = length - len(texts)
        return decode_records(self.serializer, enumerate(texts, start=first),
                              location=self.location,
                              name=lambda index: self._journal_record(index, length))

    def _parse_lineage(self, reply: Any, version: Any) -> tuple[str, int | None]:
        """The lineage id in a ``<key>:lineage`` reply ('' when none), and how many journal
        records the version counter says there are (None: cannot tell)."""
        if reply is None:
            return "", None
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        lineage_id, _, snapshot = text.partition(" ")
        try:
            count = self._parse_version(version) - int(snapshot)
        except (StateCorruptedError, ValueError):
            return lineage_id, None
        return lineage_id, count

    def _check_reply(self, reply: Any, wrong_type: str) -> None:
        """Raise for an error reply of a MULTI/EXEC read (``wrong_type`` says whose)."""
        import redis.exceptions as rex

        if isinstance(reply, rex.ResponseError):
            if "WRONGTYPE" in str(reply):
                raise self._corrupt(wrong_type)
            raise self._redis.server_error(reply)

    def _parse_version(self, reply: Any) -> int:
        """The version counter from its GET reply (0 when the key does not exist)."""
        self._check_reply(reply, f"{self.version_key!r} holds another Redis type")
        try:
            return int(reply) if reply is not None else 0
        except ValueError:  # garbage planted under the key (issue 7, test_fuzz_load)
            raise self._corrupt(f"{self.version_key!r} holds no integer") from None

    def _decode(self, raw: bytes | str | None) -> dict[str, Any]:
        if raw is None:
            return {}
        try:
            return self.serializer.deserialize(raw)
        except StateCorruptedError as exc:
            raise StateCorruptedError(f"{self.location}: {exc}", location=self.location,
                                      tried=(self.location,)) from exc

    def _release(self) -> None:
        self._redis.release()
