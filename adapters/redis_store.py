"""The Redis adapter: the JSON document under one key, a version counter, a leased lock.

Keys (``key`` defaults to ``cascadeui:state``)::

    <key>          string: the StateSerializer document (TTL refreshed on every save)
    <key>:version  integer: +1 on every commit, for change detection (never expires, so
                   it never repeats a value a poller has seen, even after the TTL ran out)
    <key>:lock     string: a random token while a writer holds the lock (leased, PX)

A write takes the lock (``SET NX PX``), then one Lua script checks that the token is still
ours, writes the document, bumps the version and releases the lock, atomically. A writer
killed while holding the lock blocks others only until its lease (``lock_timeout``) ends;
a writer whose lease ran out before it committed gets an error and writes nothing. The
script also refuses to overwrite a key of another Redis type (a hash, a list...): that
key belongs to something else, and ``save`` raises instead of destroying it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    PersistenceError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from .base import BaseStore

__all__ = ["RedisStore", "redact_secret", "redact_url", "url_secrets"]

_COMMIT = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' and kind ~= 'none' then
  redis.call('DEL', KEYS[3])
  return -2
end
-- INCR first: it is the only call that can fail (a non-integer planted under the key),
-- and a failing script keeps its earlier writes, so nothing may be written before it.
local v = redis.call('INCR', KEYS[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('DEL', KEYS[3])
return v
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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
    """State under one Redis key, safe across threads, processes and hosts.

    :param url: a ``redis://`` or ``rediss://`` URL (``redis://:password@host:port/db``).
    :param key: the key holding the document.
    :param ttl: seconds of expiry, set and refreshed on every save; ``None`` keeps it forever.
    :param lock_timeout: seconds to wait for the lock, and the lease of a held lock.
    :param socket_timeout: connect and read timeout in seconds.
    """

    def __init__(self, url: str = "redis://localhost", *, key: str = "cascadeui:state",
                 ttl: int | None = None, lock_timeout: float = 10.0,
                 socket_timeout: float = 5.0,
                 serializer: StateSerializer | None = None) -> None:
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
        self.url = redact_url(url)
        self._secrets = url_secrets(url)
        self.key = key
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.location = f"{self.url} key={key!r}"
        self.version_key = f"{key}:version"
        self.lock_key = f"{key}:lock"
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"bad Redis URL {self.url}: use redis://, rediss:// or unix://")
        self._raw_url = url
        self._socket_timeout = socket_timeout
        self._built: Any = None
        self._build_lock = threading.Lock()

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
        self._commit = client.register_script(_COMMIT)
        self._release_lock = client.register_script(_RELEASE)
        return client

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Translate redis-py errors into the cascadeui hierarchy; never leak the password."""
        import redis.exceptions as rex

        self._check_open()
        try:
            yield
        except PersistenceError:
            raise
        except rex.ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                raise StateCorruptedError(
                    f"{self.location}: the key holds another Redis type, not a string",
                    location=self.location, tried=(self.location,)) from None
            raise StorageUnavailableError(
                f"{self.location}: server error: {self._redacted(exc)}",
                location=self.location) from None
        except rex.RedisError as exc:
            raise StorageUnavailableError(
                f"{self.location}: {type(exc).__name__}: {self._redacted(exc)}",
                location=self.location) from None

    def _redacted(self, exc: BaseException) -> str:
        return redact_secret(str(exc), self._secrets)

    # -- the contract ------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Return the stored state, ``{}`` when the key does not exist.

        :raises StateCorruptedError: the key holds another type or does not decode.
        :raises StorageUnavailableError: the server is unreachable or failed.
        """
        with self._mapped_errors():
            return self._decode(self._client.get(self.key))

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state (under the lock, so transactions are never torn).

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

        If the body raises, nothing is written and the lock is released.
        """
        with self._mapped_errors(), self._locked() as token:
            state = self._decode(self._client.get(self.key))
            yield state
            self._write(token, self.serializer.serialize(state))

    def version(self) -> int:
        """The commit counter (0 when never written); cheap to poll."""
        with self._mapped_errors():
            raw = self._client.get(self.version_key)
            try:
                return int(raw) if raw is not None else 0
            except ValueError:  # garbage planted under the key (issue 7, test_fuzz_load)
                raise StateCorruptedError(
                    f"{self.location}: {self.version_key!r} holds no integer",
                    location=self.location, tried=(self.location,)) from None

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """:meth:`load` and the :meth:`version` of that document, read in one MULTI/EXEC."""
        with self._mapped_errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self.key)
            pipe.get(self.version_key)
            raw, version = pipe.execute()
            state = self._decode(raw)
            try:
                return state, int(version) if version is not None else 0
            except ValueError:
                raise StateCorruptedError(
                    f"{self.location}: {self.version_key!r} holds no integer",
                    location=self.location, tried=(self.location,)) from None

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save: see :meth:`~cascadeui.adapters.VersionedStore.save_if_version`."""
        data = self.serializer.serialize(state) if encoded is None else encoded
        with self._mapped_errors(), self._locked() as token:
            if self.version() != expected:
                self._release_lock(keys=[self.lock_key], args=[token])
                return None
            return self._write(token, data)

    # -- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[str]:
        token = secrets.token_hex(16)
        lease_ms = max(1, int(self.lock_timeout * 1000))
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while not self._client.set(self.lock_key, token, nx=True, px=lease_ms):
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"{self.location}: could not lock {self.lock_key!r} within "
                    f"{self.lock_timeout:g}s", lock=self.lock_key,
                    timeout=self.lock_timeout, location=self.location)
            time.sleep(delay)
            delay = min(delay * 2, 0.01)  # short: a commit takes about a millisecond
        try:
            yield token
        except BaseException:
            # A commit releases the lock itself; this covers a body or commit that raised.
            with contextlib.suppress(Exception):
                self._release_lock(keys=[self.lock_key], args=[token])
            raise

    #: Documents up to this size commit through the Lua script (one round trip). Larger ones
    #: commit through WATCH/MULTI: a Lua script copies its arguments into Lua strings and
    #: back, which cost a 10 MB save about 20% (docs/performance.md).
    lua_max_bytes = 256 * 1024

    def _write(self, token: str, data: str) -> int:
        """Commit ``data`` if the lock is still ours; return the new version."""
        if len(data) > self.lua_max_bytes:
            result = self._write_watched(token, data)
        else:
            result = self._commit(keys=[self.key, self.version_key, self.lock_key],
                                  args=[token, data, self.ttl or 0])
        if result == -2:
            raise StateCorruptedError(
                f"{self.location}: the key holds another Redis type, not a string; "
                "refusing to overwrite it (is the key shared with something else?)",
                location=self.location, tried=(self.location,))
        if result == -1:
            raise LockTimeoutError(
                f"{self.location}: the lock's {self.lock_timeout:g}s lease ran out before "
                "the commit; nothing was written", lock=self.lock_key,
                timeout=self.lock_timeout, location=self.location)
        return int(result)

    def _write_watched(self, token: str, data: str) -> int:
        """The commit script's checks and writes as WATCH + MULTI/EXEC (large documents).

        WATCH on the lock and the document: if another writer takes the lock after our
        lease ran out, or anything touches the key, EXEC writes nothing.
        """
        import redis.exceptions as rex

        with self._client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.lock_key, self.key)
                owner = pipe.get(self.lock_key)
                if owner is None or owner.decode() != token:
                    return -1
                if pipe.type(self.key) not in (b"string", b"none", "string", "none"):
                    pipe.unwatch()
                    self._release_lock(keys=[self.lock_key], args=[token])
                    return -2
                pipe.multi()
                pipe.set(self.key, data, ex=self.ttl)
                pipe.incr(self.version_key)
                pipe.delete(self.lock_key)
                _, version, _ = pipe.execute()
            except rex.WatchError:
                return -1
        return int(version)

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
        if client is not None:
            client.close()
            client.connection_pool.disconnect()
