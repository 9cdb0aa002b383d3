"""The Redis adapter: the JSON document under one key, a version counter, a leased lock.

Keys (``key`` defaults to ``cascadeui:state``)::

    <key>          string: the StateSerializer document (TTL refreshed on every save)
    <key>:version  integer: +1 on every commit, for change detection
    <key>:lock     string: a random token while a writer holds the lock (leased, PX)

A write takes the lock (``SET NX PX``), then one Lua script checks that the token is still
ours, writes the document, bumps the version and releases the lock, atomically. A writer
killed while holding the lock blocks others only until its lease (``lock_timeout``) ends;
a writer whose lease ran out before it committed gets an error and writes nothing.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    PersistenceError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from .base import BaseStore

__all__ = ["RedisStore", "redact_url"]

_COMMIT = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
local v = redis.call('INCR', KEYS[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) else redis.call('PERSIST', KEYS[2]) end
redis.call('DEL', KEYS[3])
return v
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for reprs, logs, errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


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
        try:
            import redis
        except ImportError:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "RedisStore needs redis: pip install 'pycascadeui[redis]'") from None
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"ttl must be a positive number of seconds, not {ttl!r}")
        if not key:
            raise ConfigurationError("key must be a non-empty string")
        self.url = redact_url(url)
        self.key = key
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.location = f"{self.url} key={key!r}"
        self.version_key = f"{key}:version"
        self.lock_key = f"{key}:lock"
        try:
            self._client = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                retry_on_timeout=False)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {self.url}: {exc}") from None
        self._commit = self._client.register_script(_COMMIT)
        self._release_lock = self._client.register_script(_RELEASE)

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
            raise StorageUnavailableError(f"{self.location}: server error: {exc}",
                                          location=self.location) from None
        except rex.RedisError as exc:
            raise StorageUnavailableError(
                f"{self.location}: {type(exc).__name__}: {exc}",
                location=self.location) from None

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
            return int(raw) if raw is not None else 0

    # -- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[str]:
        token = secrets.token_hex(16)
        lease_ms = max(1, int(self.lock_timeout * 1000))
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.002
        while not self._client.set(self.lock_key, token, nx=True, px=lease_ms):
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"{self.location}: could not lock {self.lock_key!r} within "
                    f"{self.lock_timeout:g}s", lock=self.lock_key,
                    timeout=self.lock_timeout, location=self.location)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield token
        except BaseException:
            # A commit releases the lock itself; this covers a body or commit that raised.
            with contextlib.suppress(Exception):
                self._release_lock(keys=[self.lock_key], args=[token])
            raise

    def _write(self, token: str, data: str) -> None:
        result = self._commit(keys=[self.key, self.version_key, self.lock_key],
                              args=[token, data, self.ttl or 0])
        if result == -1:
            raise LockTimeoutError(
                f"{self.location}: the lock's {self.lock_timeout:g}s lease ran out before "
                "the commit; nothing was written", lock=self.lock_key,
                timeout=self.lock_timeout, location=self.location)

    def _decode(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            return {}
        try:
            return self.serializer.deserialize(raw)
        except StateCorruptedError as exc:
            raise StateCorruptedError(f"{self.location}: {exc}", location=self.location,
                                      tried=(self.location,)) from exc

    def _release(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()
