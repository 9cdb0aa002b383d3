"""The Redis adapter: a JSON snapshot and a change journal, a version counter, a leased lock.

Keys (``key`` defaults to ``cascadeui:state``)::

    <key>          string: the StateSerializer document, the *snapshot* (what ``save`` wrote)
    <key>:journal  list: journal records appended after the snapshot, oldest first (one per
                   commit of the store's engine, :mod:`cascadeui.adapters.journal`)
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
(documents over ``lua_max_bytes`` do the same through WATCH + MULTI/EXEC). A writer killed
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
import importlib.util
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from cascadeui._merge import Change
from cascadeui._watch import TICK, Listener, Notify, announced_version
from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    PersistenceError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from .base import BaseStore, Check, StoreInfo
from .journal import apply_record, corrupt, decode_record, encode_record, should_compact

__all__ = [
    "RedisListener",
    "RedisStore",
    "redact_secret",
    "redact_url",
    "url_secrets",
]

log: logging.Logger = logging.getLogger("cascadeui.adapters.redis")

# What the scripts (and the WATCH path) return instead of a version, all negative.
_LEASE_LOST = -1       # the lock is no longer ours: our lease ran out
_FOREIGN_KEY = -2      # <key> holds another Redis type than a string
_FOREIGN_JOURNAL = -3  # <key>:journal holds another Redis type than a list
_STALE = -4            # an append: the version (or the journal) moved since it was read
_BUSY = -5             # an append: a full writer holds the lock; retry
_NO_SNAPSHOT = -6      # an append: nothing stored under <key> (nor a journal): write whole
_ORPHAN_JOURNAL = -7   # an append: a journal without its snapshot
_FOREIGN_LINEAGE = -8  # <key>:lineage holds another Redis type than a string

# KEYS: snapshot, version, lock, journal, lineage. ARGV: token, document, ttl seconds (0:
# none), a fresh lineage id, '1' to start a new lineage whatever is stored, the channel to
# PUBLISH the new version on. Returns {version, lineage id}. The stored lineage goes on
# only while the state it names is whole (a snapshot, and exactly the journal records its
# version says); anything else is a medium that lost data, and this write starts a new
# lineage.
_COMMIT = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' and kind ~= 'none' then
  redis.call('DEL', KEYS[3])
  return -2
end
local jkind = redis.call('TYPE', KEYS[4])['ok']
if jkind ~= 'list' and jkind ~= 'none' then
  redis.call('DEL', KEYS[3])
  return -3
end
local lkind = redis.call('TYPE', KEYS[5])['ok']
if lkind ~= 'string' and lkind ~= 'none' then
  redis.call('DEL', KEYS[3])
  return -8
end
local old = redis.call('GET', KEYS[5])
local n = redis.call('LLEN', KEYS[4])
-- INCR first of the writes: it is the only call that can fail (a non-integer planted under
-- the key), and a failing script keeps its earlier writes.
local v = redis.call('INCR', KEYS[2])
local id = ARGV[4]
if ARGV[5] ~= '1' and old and kind == 'string' then
  local oid, s = string.match(old, '^(%S+) (%d+)$')
  if oid and tonumber(s) + n == v - 1 then id = oid end
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
  redis.call('SET', KEYS[5], id .. ' ' .. v, 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[5], id .. ' ' .. v)
end
redis.call('DEL', KEYS[4])
redis.call('DEL', KEYS[3])
-- pcall: a user without the channel in its ACL still commits (it just goes unannounced).
redis.pcall('PUBLISH', ARGV[6], v)
return {v, id}
"""

# KEYS: snapshot, version, lock, journal, lineage. ARGV: the expected version, the
# journal's length read at that version, the record, ttl seconds (0: none), the lineage id
# read at that version ('' for none), the channel to PUBLISH the new version on. Takes no
# lock: a script is atomic, and it appends only while no full writer holds the lock.
_APPEND = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return -4 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -5 end
local kind = redis.call('TYPE', KEYS[1])['ok']
local jkind = redis.call('TYPE', KEYS[4])['ok']
if kind ~= 'string' and kind ~= 'none' then return -2 end
if jkind ~= 'list' and jkind ~= 'none' then return -3 end
if redis.call('TYPE', KEYS[5])['ok'] == 'string' then
  if string.match(redis.call('GET', KEYS[5]), '^(%S+) ') ~= ARGV[5] then return -4 end
elseif ARGV[5] ~= '' then
  return -4
end
if kind == 'none' then
  if jkind == 'none' then return -6 end
  return -7
end
if redis.call('LLEN', KEYS[4]) ~= tonumber(ARGV[2]) then return -4 end
-- The version matched an integer just above, so INCR cannot fail after a write.
local v = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[4], ARGV[3])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  -- One absolute expiry for both keys: no reader ever sees one without the other.
  local now = redis.call('TIME')
  local at = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl * 1000
  at = string.format('%d', at)
  redis.call('PEXPIREAT', KEYS[1], at)
  redis.call('PEXPIREAT', KEYS[4], at)
  redis.call('PEXPIREAT', KEYS[5], at)
else
  -- As a full write without ttl (a plain SET) does: the state no longer expires.
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[4])
  redis.call('PERSIST', KEYS[5])
end
redis.pcall('PUBLISH', ARGV[6], v)  -- as in _COMMIT: never fails the append
return v
"""

# KEYS: snapshot, version, journal, lineage. ARGV: since, the lineage id read at since
# ('' for none, '*' unknown). Returns {version, journal length, the records after
# since...}, or nil when the journal no longer holds all of them (a full write since, a
# missing snapshot, a key of another type, a non-integer counter, another lineage, a
# journal shorter than the counter says).
_CHANGES = """
local raw = redis.call('GET', KEYS[2])
local v = tonumber(raw or '0')
local since = tonumber(ARGV[1])
if v == nil or since < 0 or v < since then return nil end
if v == 0 then return {'0', 0} end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return nil end
local jkind = redis.call('TYPE', KEYS[3])['ok']
if jkind ~= 'list' and jkind ~= 'none' then return nil end
local n = redis.call('LLEN', KEYS[3])
local lineage = nil
if redis.call('TYPE', KEYS[4])['ok'] == 'string' then lineage = redis.call('GET', KEYS[4]) end
if ARGV[2] ~= '*' then
  local id = lineage and string.match(lineage, '^(%S+) ') or ''
  if id ~= ARGV[2] then return nil end
end
if lineage then
  local s = tonumber(string.match(lineage, ' (%d+)$') or '-1')
  if s + n ~= v then return nil end
end
local count = v - since
if count > n then return nil end
local out = {raw, n}
if count > 0 then
  local records = redis.call('LRANGE', KEYS[3], -count, -1)
  for i = 1, #records do out[i + 2] = records[i] end
end
return out
"""

# KEYS: snapshot, journal, version. Returns {exists, snapshot bytes, journal records,
# journal bytes, version or false, pttl}: what describe() shows, summed on the server.
_DESCRIBE = """
local n = redis.call('EXISTS', KEYS[1]) + redis.call('EXISTS', KEYS[2])
local size, count, bytes = 0, 0, 0
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then size = redis.call('STRLEN', KEYS[1]) end
if redis.call('TYPE', KEYS[2])['ok'] == 'list' then
  count = redis.call('LLEN', KEYS[2])
  for _, r in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do bytes = bytes + #r end
end
return {n, size, count, bytes, redis.call('GET', KEYS[3]), redis.call('PTTL', KEYS[1])}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Sizes(NamedTuple):
    """What the compaction budget needs, as of one version (this store's last read/write):
    the journal module's :class:`~cascadeui.adapters.journal.Budget` fields, plus the
    lineage. Bytes as read back, characters as written: a budget, not a count.
    """

    version: int
    records: int
    journal_bytes: int
    snapshot_bytes: int
    #: The lineage id stored at that version ('' when none: written by an earlier build).
    lineage: str = ""

    def due(self, record_bytes: int) -> bool:
        """True when appending ``record_bytes`` would take the journal past its budget."""
        return should_compact(self.journal_bytes, record_bytes, self.snapshot_bytes)


_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "auth", "token"})


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for reprs, logs, errors).

    Covers the userinfo (``redis://user:pw@host``) and secret query parameters
    (``?password=pw``, which redis-py also accepts); anything unparsable is hidden whole.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _pw = userinfo.partition(":")
            netloc = f"{user}:***@{hostport}" if sep else f"{userinfo}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
                query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v)
                                   for k, v in pairs], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparsable Redis URL>"


def url_secrets(url: str) -> tuple[str, ...]:
    """The secrets a Redis URL carries (password raw and unquoted, secret query values)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS]
    except ValueError:
        return ()
    found += [unquote(f) for f in found]
    return tuple(sorted({f for f in found if f}, key=len, reverse=True))


def redact_secret(text: str, secrets_: tuple[str, ...]) -> str:
    """Return ``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets_:
        text = text.replace(secret, "***")
    return text


class RedisStore(BaseStore):
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
                "RedisStore needs redis: pip install 'pycascadeui[redis]'")
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"ttl must be a positive number of seconds, not {ttl!r}")
        if not key:
            raise ConfigurationError("key must be a non-empty string")
        self._given = client
        if client is not None:
            url = _client_url(client)
        self.url: str = redact_url(url)
        self._secrets = url_secrets(url)
        self.key = key
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.location: str = f"{self.url} key={key!r}"
        # In a cluster every key of one state must hash to one slot (the scripts touch all
        # of them). A key without a hash tag hashes whole, so "{key}:x" lands in its slot.
        base = f"{{{key}}}" if _is_cluster(client) and not _has_hash_tag(key) else key
        self.version_key: str = f"{base}:version"
        self.lock_key: str = f"{base}:lock"
        self.journal_key: str = f"{base}:journal"
        self.lineage_key: str = f"{base}:lineage"
        self.ack_key: str = f"{base}:ack"
        if min_replicas < 0 or replica_timeout <= 0:
            raise ConfigurationError("min_replicas must be >= 0 and replica_timeout > 0")
        if min_replicas and _is_cluster(client):
            raise ConfigurationError("min_replicas is not supported with a RedisCluster "
                                     "client (WAIT runs per shard)")
        self.min_replicas = min_replicas
        self.replica_timeout = replica_timeout
        #: A write reached the master but not yet ``min_replicas`` replicas.
        self._unconfirmed = False
        #: The pub/sub channel every commit PUBLISHes its new version on (from inside the
        #: commit and append scripts, so a commit is announced exactly when it happens).
        self.channel: str = f"{base}:changes"
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("redis", "rediss", "unix", "redis-cluster", "redis-sentinel"):
            raise ConfigurationError(
                f"bad Redis URL {self.url}: use redis://, rediss:// or unix://")
        self._raw_url = url
        self._socket_timeout = socket_timeout
        self.wait_aof = wait_aof
        self._built: Any = None
        self._build_lock = threading.Lock()
        #: The compaction budget's inputs as of this store's last read or write.
        self._sizes: _Sizes | None = None
        #: The version at which :meth:`load_checked` found the medium lost: the whole
        #: write over it starts a new lineage (see docs/multiprocess.md).
        self._fork_at: int | None = None

    @property
    def _client(self) -> Any:
        """The redis-py client (one connection pool per store), built on first use."""
        if self._built is None:
            with self._build_lock:
                if self._built is None:
                    self._built = self._build_client()
        return self._built

    def _build_client(self) -> Any:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        if self._given is not None:
            client = self._given
            self._register_scripts(client)
            return client
        try:
            # One quick retry (a pooled connection the server dropped), not redis-py's
            # default seconds of backoff: an outage must reach save_state fast.
            client = redis.Redis.from_url(
                self._raw_url, socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1))
        except ValueError as exc:
            raise ConfigurationError(
                f"bad Redis URL {self.url}: {redact_secret(str(exc), self._secrets)}",
                location=self.location) from None
        self._register_scripts(client)
        return client

    def _register_scripts(self, client: Any) -> None:
        self._commit = client.register_script(_COMMIT)
        self._append = client.register_script(_APPEND)
        self._changes = client.register_script(_CHANGES)
        self._describe = client.register_script(_DESCRIBE)
        self._release_lock = client.register_script(_RELEASE)
        if self.wait_aof:
            self._check_aof(client)

    def _check_aof(self, client: Any) -> None:
        """Refuse ``wait_aof`` on a server without WAITAOF or without an append-only file."""
        import redis.exceptions as rex

        try:
            info = client.info("persistence")
            client.execute_command("WAITAOF", 0, 0, 1)  # unknown command before 7.2
        except rex.ResponseError as exc:
            raise ConfigurationError(
                f"{self.location}: wait_aof needs WAITAOF (Redis 7.2+ or Valkey); the "
                f"server says: {self._redacted(exc)}", location=self.location) from None
        if not int(info.get("aof_enabled", 0)):
            raise ConfigurationError(
                f"{self.location}: wait_aof needs the server's append-only file "
                "(appendonly yes)", location=self.location)

    def _run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a commit script; with ``wait_aof``, also wait until the server fsynced it.

        WAITAOF waits for the writes of the connection it is sent on, so both go in one
        pipeline (one connection, one round trip).
        """
        if not self.wait_aof:
            return script(keys=keys, args=args)
        pipe = self._client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        wait_ms = max(1, int(self._socket_timeout * 800))  # answered before the socket gives up
        pipe.execute_command("WAITAOF", 1, 0, wait_ms)
        result, (local, _replicas) = pipe.execute()
        # A commit returns {version, lineage}, an append its version; negative: refused.
        wrote = isinstance(result, list) or int(result) >= 0
        if wrote and int(local) < 1:
            raise StorageUnavailableError(
                f"{self.location}: the commit was not fsynced to the append-only file "
                f"within {wait_ms} ms", location=self.location)
        return result

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Translate redis-py errors into the cascadeui hierarchy; never leak the password."""
        import redis.exceptions as rex

        self._check_open()
        try:
            if self._unconfirmed:  # never let a read or a retry acknowledge it first
                self._confirm_replicas()
            yield
        except PersistenceError:
            raise
        except (rex.AuthenticationError, rex.AuthenticationWrongNumberOfArgsError) as exc:
            raise self._auth_error(exc) from None
        except rex.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise self._auth_error(exc) from None
            if "WRONGTYPE" in str(exc):
                raise StateCorruptedError(
                    f"{self.location}: the key holds another Redis type, not a string "
                    f"(or {self.journal_key!r} / {self.version_key!r} does)",
                    location=self.location, tried=(self.location,)) from None
            raise StorageUnavailableError(
                f"{self.location}: server error: {self._redacted(exc)}",
                location=self.location) from None
        except rex.RedisError as exc:
            raise StorageUnavailableError(
                f"{self.location}: {type(exc).__name__}: {self._redacted(exc)}",
                location=self.location) from None

    def _auth_error(self, exc: BaseException) -> StorageUnavailableError:
        """redis-py's raw HELLO/AUTH text, turned into what to change in the URL."""
        if self._secrets:
            hint = ("the server refused the password in the URL (check it, and the user "
                    "name if the server uses ACLs: redis://USER:PASSWORD@host:port/db)")
        else:
            hint = ("the server requires a password: add it to the URL, "
                    "redis://:PASSWORD@host:port/db (or redis://USER:PASSWORD@... with ACLs)")
        return StorageUnavailableError(f"{self.location}: {hint} [{self._redacted(exc)}]",
                                       location=self.location)

    def _redacted(self, exc: BaseException) -> str:
        return redact_secret(str(exc), self._secrets)

    def companion(self, tag: str) -> RedisStore:
        """The key ``<key>:<tag>:backup`` on the same server (sharing this store's client)."""
        return RedisStore(key=f"{self.key}:{tag}:backup", client=self._client,
                          serializer=self.serializer)

    def listener(self, notify: Notify) -> Listener:
        """``SUBSCRIBE`` to :attr:`channel` in a thread (for the engine; not started)."""
        return RedisListener(notify, self)

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
            found, snapshot, count, journal, version, pttl = self._describe(
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
                state, version, lost = self._read()
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
            return self._read()[0]

    def load_checked(self, since: int) -> tuple[dict[str, Any], int, str | None]:
        """:meth:`load_versioned`, plus why the stored state is not a descendant of the one
        this store read or wrote at version ``since``: the medium lost data.

        Loss is: a journal shorter than the version counter says (the ``:journal`` key
        evicted, expired or deleted), a snapshot gone (with or without its journal), a
        state of another lineage (the server emptied, then written by someone else), or a
        version older than ``since`` (restored from an older dump). Never raises for
        those: the state returned is what is left (the snapshot without the records; ``{}``
        without a snapshot), and the next whole write over it starts a new lineage, so
        other processes see the loss too. None when nothing was lost, or when this store
        did not read or write version ``since`` itself (then nothing can be told).

        :raises StateCorruptedError: a key holds another type, or something does not decode.
        :raises StorageUnavailableError: the server is unreachable or failed.
        """
        with self._mapped_errors():
            seen = self._sizes if self._sizes is not None and self._sizes.version == since \
                else None
            state, raw, problem = self._read(lenient=True)
            version = self._parse_version(raw)
            now = self._sizes
            if problem is None and seen is not None and version != 0:
                if version < since:
                    problem = f"its version went back from {since} to {version}"
                elif now is None or (now.snapshot_bytes == 0 and seen.snapshot_bytes):
                    problem = f"the snapshot {self.key!r} is gone"
                elif seen.lineage and now.lineage != seen.lineage:
                    problem = (f"it holds another lineage ({now.lineage or 'none'}, this "
                               f"store saw {seen.lineage}): the server was emptied or the "
                               "keys replaced, then written by another client")
            if problem is not None:
                self._fork_at = version
            return state, version, problem

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
            state = self._read()[0]
            yield state
            self._write(token, self.serializer.serialize(state))

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
            state, version, _ = self._read()
            return state, self._parse_version(version)

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save: see :meth:`~cascadeui.adapters.VersionedStore.save_if_version`."""
        data = self.serializer.serialize(state) if encoded is None else encoded
        with self._mapped_errors():
            return self._save_whole_if(data, expected, records=None)

    def save_changes(self, changes: Sequence[Change], expected: int, *,
                     full: Callable[[], str]) -> int | None:
        """Append ``changes`` as one journal record if the version is still ``expected``.

        The contract is :meth:`~cascadeui.adapters.JournaledStore.save_changes`'s. One Lua
        script, no lock round trips; a full write of ``full()`` instead when the journal is
        due for compaction or no snapshot is stored.

        :raises SerializationError: a changed value cannot be stored (nothing written).
        :raises StateCorruptedError: a key holds another type, or (on the rare path that
            reads the state to measure it) something stored does not decode.
        :raises LockTimeoutError: a full writer held the lock for all of ``lock_timeout``.
        """
        record = encode_record(self.serializer, changes) if changes else ""
        with self._mapped_errors():
            if not changes:
                return expected if self.version() == expected else None
            if expected == 0:  # nothing stored yet: the first write is a snapshot
                return self._save_whole_if(full(), expected, records=0)
            sizes = self._sizes
            if sizes is None or sizes.version != expected:
                # Rare (the engine reads before it writes): measure by reading, which also
                # proves everything stored decodes before anything is written after it.
                if self.version() != expected:
                    return None
                self._read()
                sizes = self._sizes
                if sizes is None or sizes.version != expected:
                    return None
            if sizes.due(len(record)):
                return self._save_whole_if(full(), expected, records=sizes.records)
            return self._append_record(record, sizes, full)

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
            reply = self._changes(
                keys=[self.key, self.version_key, self.journal_key, self.lineage_key],
                args=[since, sizes.lineage if sizes is not None else "*"], client=client)
            if reply is None:
                return None
            version, length, texts = self._parse_version(reply[0]), int(reply[1]), reply[2:]
            if sizes is not None and version - length != since - sizes.records:
                return None  # not the journal read at ``since``: pushed behind its back
            records = []
            for index, text in enumerate(texts, start=length - len(texts)):
                try:
                    records.append(decode_record(self.serializer, text))
                except StateCorruptedError as exc:
                    raise self._corrupted(
                        f"{self.journal_key!r} record {index} of {length}: {exc}") from exc
            if sizes is not None and texts:  # the budget's cache follows, for appends
                self._sizes = sizes._replace(
                    version=version, records=length,
                    journal_bytes=sizes.journal_bytes + sum(map(len, texts)))
            return records, version

    # -- internals ---------------------------------------------------------------------

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
                self._release_lock(keys=[self.lock_key], args=[token])
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

    def _read(self, *, lenient: bool = False) -> tuple[dict[str, Any], Any, str | None]:
        """The state (snapshot + journal), the version's raw reply and what the medium
        lost (None: nothing), in one MULTI/EXEC.

        Records the compaction budget's inputs and the lineage for that version (when it
        is an integer). A journal shorter than the counter says (evicted, expired,
        deleted) is not applied: the snapshot is what is left (WARNING).

        :param lenient: report a journal without its snapshot, or of the wrong length, as
            a loss instead of raising (a running store rewrites its own state over it).
        :raises StateCorruptedError: a key of another type, a journal without its snapshot,
            a journal longer than the counter says, or a snapshot or record that does not
            decode or does not fit.
        """
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
                raise self._corrupted(f"{lost} (deleted by hand?); delete the journal too, or "
                                      "restore the snapshot")
            records = []
        lineage_id, expected = self._parse_lineage(lineage, version)
        if raw is None:
            lineage_id, expected = "", None  # what is left of a state without its snapshot
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
        for index, ops in enumerate(self._decode_records(records)):
            try:
                apply_record(state, ops)
            except StateCorruptedError as exc:
                raise self._corrupted(
                    f"{self.journal_key!r} record {index} of {len(records)}: {exc}") from exc
        if records and lost is not None:  # more records than the counter says: refuse them
            raise self._corrupted(lost)
        with contextlib.suppress(StateCorruptedError):  # load() works with a bad counter
            self._sizes = _Sizes(self._parse_version(version), len(records),
                                 sum(map(len, records)), len(raw) if raw is not None else 0,
                                 lineage_id if lost is None else "")
        return state, version, lost

    def _decode_records(self, records: list[Any]) -> list[list[list[Any]]]:
        """The ops of each journal record, in order.

        :raises StateCorruptedError: a record does not decode (named by its index).
        """
        decoded = []
        for index, text in enumerate(records):
            try:
                decoded.append(decode_record(self.serializer, text))
            except StateCorruptedError as exc:
                raise self._corrupted(
                    f"{self.journal_key!r} record {index} of {len(records)}: {exc}") from exc
        return decoded

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
                raise self._corrupted(wrong_type)
            raise StorageUnavailableError(
                f"{self.location}: server error: {self._redacted(reply)}",
                location=self.location)

    def _parse_version(self, reply: Any) -> int:
        """The version counter from its GET reply (0 when the key does not exist)."""
        self._check_reply(reply, f"{self.version_key!r} holds another Redis type")
        try:
            return int(reply) if reply is not None else 0
        except ValueError:  # garbage planted under the key (issue 7, test_fuzz_load)
            raise self._corrupted(f"{self.version_key!r} holds no integer") from None

    def _corrupted(self, what: str) -> StateCorruptedError:
        return corrupt(self.location, what)

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
                self._release_lock(keys=[self.lock_key], args=[token])
                return None
            return self._write(token, data, fork=self._fork_at == expected)

    def _append_record(self, record: str, sizes: _Sizes,
                       full: Callable[[], str]) -> int | None:
        """Run the append script, waiting out a full writer's lock; the new version."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            result = int(self._run_script(
                self._append, [self.key, self.version_key, self.lock_key, self.journal_key,
                               self.lineage_key],
                [sizes.version, sizes.records, record, self.ttl or 0, sizes.lineage,
                 self.channel]))
            if result == _BUSY:
                delay = self._wait_for_lock(deadline, delay)
                continue
            if result == _STALE:
                return None
            if result == _NO_SNAPSHOT:  # expired with its journal: write the whole state
                return self._save_whole_if(full(), sizes.version, records=0)
            if result == _ORPHAN_JOURNAL:
                # Never appended to; the caller reloads (load_checked reports the lost
                # snapshot) and rewrites its state whole, which replaces the journal.
                return None
            self._raise_for(result)
            self._sizes = sizes._replace(version=result, records=sizes.records + 1,
                                         journal_bytes=sizes.journal_bytes + len(record))
            self._confirm_replicas()
            return result

    #: Documents up to this size commit through the Lua script (one round trip). Larger ones
    #: commit through WATCH/MULTI: a Lua script copies its arguments into Lua strings and
    #: back, which cost a 10 MB save about 20% (docs/performance.md). Journal records always
    #: go through the append script: one is at most the journal's budget, half a snapshot.
    lua_max_bytes = 256 * 1024

    def _write(self, token: str, data: str, *, fork: bool = False) -> int:
        """Commit ``data`` as the snapshot, emptying the journal, if the lock is still ours.

        The stored lineage goes on when the state it replaces is whole; a new one starts
        when it is not (see ``_COMMIT``), or with ``fork`` (the caller found the medium
        lost: other processes must see that this document is not their state's sequel).

        :returns: the new version.
        """
        fresh = secrets.token_hex(8)
        # WATCH/MULTI releases its connection at EXEC, before a WAITAOF could follow it.
        if len(data) > self.lua_max_bytes and not self.wait_aof:
            reply: Any = self._write_watched(token, data, fresh, fork)
        else:
            reply = self._run_script(
                self._commit, [self.key, self.version_key, self.lock_key, self.journal_key,
                               self.lineage_key],
                [token, data, self.ttl or 0, fresh, "1" if fork else "0", self.channel])
        if not isinstance(reply, list):
            self._raise_for(int(reply))
        result, lineage = int(reply[0]), reply[1]
        lineage = lineage.decode() if isinstance(lineage, bytes) else str(lineage)
        self._sizes = _Sizes(result, 0, 0, len(data), lineage)
        if fork:
            self._fork_at = None
        self._confirm_replicas()
        return result

    def _confirm_replicas(self) -> None:
        """Wait until ``min_replicas`` replicas hold every write this store made so far.

        ``WAIT`` counts the writes of its own connection only, and a pooled client may
        run the next command on another one: a marker write and ``WAIT`` go together in
        one pipeline, and since the replication stream is ordered, a replica that has the
        marker has every earlier write.

        :raises StorageUnavailableError: fewer replicas within ``replica_timeout``.
        """
        if not self.min_replicas:
            return
        self._unconfirmed = True
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self.ack_key, b"1", px=10_000)
        pipe.execute_command("WAIT", self.min_replicas, int(self.replica_timeout * 1000))
        _, acked = pipe.execute()
        if int(acked) < self.min_replicas:
            raise StorageUnavailableError(
                f"{self.location}: the write reached {acked} of the {self.min_replicas} "
                f"replicas asked for within {self.replica_timeout:g}s; not acknowledged",
                location=self.location)
        self._unconfirmed = False

    def _raise_for(self, result: int) -> None:
        """Raise the error a script's negative result stands for (a version passes)."""
        if result == _FOREIGN_KEY:
            raise self._corrupted(
                "the key holds another Redis type, not a string; refusing to overwrite it "
                "(is the key shared with something else?)")
        if result == _FOREIGN_JOURNAL:
            raise self._corrupted(
                f"{self.journal_key!r} holds another Redis type, not a list; refusing to "
                "overwrite it (is the key shared with something else?)")
        if result == _FOREIGN_LINEAGE:
            raise self._corrupted(
                f"{self.lineage_key!r} holds another Redis type, not a string; refusing to "
                "overwrite it (is the key shared with something else?)")
        if result == _LEASE_LOST:
            raise LockTimeoutError(
                f"{self.location}: the lock's {self.lock_timeout:g}s lease ran out before "
                "the commit; nothing was written", lock=self.lock_key,
                timeout=self.lock_timeout, location=self.location)
        if result < 0:  # pragma: no cover - every script's codes are handled above
            raise StorageUnavailableError(f"{self.location}: unexpected script result "
                                          f"{result}", location=self.location)

    def _write_watched(self, token: str, data: str, fresh: str,
                       fork: bool) -> list[Any] | int:
        """The commit script's checks and writes as WATCH + MULTI/EXEC (large documents).

        WATCH on the lock, the document, the journal, the version and the lineage: if
        another writer takes the lock after our lease ran out, or anything touches those
        keys, EXEC writes nothing. Returns what the script returns.
        """
        import redis.exceptions as rex

        with self._client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.lock_key, self.key, self.journal_key, self.version_key,
                           self.lineage_key)
                owner = pipe.get(self.lock_key)
                if owner is None or owner.decode() != token:
                    return _LEASE_LOST
                kinds = {}
                for key, allowed, code in ((self.key, "string", _FOREIGN_KEY),
                                           (self.journal_key, "list", _FOREIGN_JOURNAL),
                                           (self.lineage_key, "string", _FOREIGN_LINEAGE)):
                    kind = pipe.type(key)
                    kinds[key] = kind = kind.decode() if isinstance(kind, bytes) else kind
                    if kind not in (allowed, "none"):
                        pipe.unwatch()
                        self._release_lock(keys=[self.lock_key], args=[token])
                        return code
                # MULTI applies every queued command even when one fails: refuse a
                # non-integer counter (INCR would fail after the SET) before queueing.
                current = self._parse_version(pipe.get(self.version_key))
                lineage = fresh
                old_id, count = self._parse_lineage(pipe.get(self.lineage_key), current)
                if (not fork and old_id and kinds[self.key] == "string"
                        and count == pipe.llen(self.journal_key)):
                    lineage = old_id  # the state it replaces is whole: the lineage goes on
                pipe.multi()
                pipe.set(self.key, data, ex=self.ttl)
                pipe.incr(self.version_key)
                pipe.set(self.lineage_key, f"{lineage} {current + 1}", ex=self.ttl)
                pipe.delete(self.journal_key)
                pipe.delete(self.lock_key)
                _, version, _, _, _ = pipe.execute()
            except rex.WatchError:
                return _LEASE_LOST
        # After EXEC, not inside it: a PUBLISH the user's ACL denies would abort the
        # whole transaction. An announcement that fails costs only latency (polling).
        with contextlib.suppress(rex.RedisError):
            self._client.publish(self.channel, int(version))
        return [int(version), lineage]

    def _decode(self, raw: bytes | str | None) -> dict[str, Any]:
        if raw is None:
            return {}
        try:
            return self.serializer.deserialize(raw)
        except StateCorruptedError as exc:
            raise StateCorruptedError(f"{self.location}: {exc}", location=self.location,
                                      tried=(self.location,)) from exc

    def _release(self) -> None:
        with self._build_lock:
            client, self._built = self._built, None
        if client is not None and client is not self._given:  # a given client stays theirs
            client.close()
            client.connection_pool.disconnect()


def _is_cluster(client: Any) -> bool:
    if client is None or "redis.cluster" not in sys.modules:
        return False
    import redis.cluster

    return isinstance(client, redis.cluster.RedisCluster)


def _has_hash_tag(key: str) -> bool:
    """Redis Cluster hashes only the part between the first ``{`` and the next ``}``."""
    start = key.find("{")
    return start >= 0 and key.find("}", start + 1) > start + 1


def _client_url(client: Any) -> str:
    """A URL naming where a user-built client points, for messages (never a password)."""
    if _is_cluster(client):
        node = client.get_default_node()
        return f"redis-cluster://{node.host}:{node.port}"
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:  # Sentinel(...).master_for(service)
        return f"redis-sentinel://{service}"
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return (f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
            f"/{kwargs.get('db', 0)}")


class RedisListener(Listener):
    """``SUBSCRIBE`` to the store's channel on a pub/sub connection of its client."""

    def __init__(self, notify: Notify, store: Any) -> None:
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
