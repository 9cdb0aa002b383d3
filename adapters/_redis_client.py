"""The redis-py client of a :class:`~cascadeui.adapters.RedisStore`: built or validated,
its scripts registered, AOF and replica acknowledgements, and redis-py errors mapped onto
the cascadeui hierarchy with the password never shown."""

from __future__ import annotations

import codecs
import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from cascadeui.errors import (
    ConfigurationError,
    PersistenceError,
    StateCorruptedError,
    StorageUnavailableError,
)

from ._redis_scripts import Scripts
from ._urls import redact_secret, redact_url, url_secrets

__all__ = ["RedisClient", "client_url", "is_cluster"]

_SCHEMES = ("redis", "rediss", "unix", "redis-cluster", "redis-sentinel")


def is_cluster(client: Any) -> bool:
    """True for a ``redis.cluster.RedisCluster`` (never imports redis-py to find out)."""
    if client is None or "redis.cluster" not in sys.modules:
        return False
    import redis.cluster

    return isinstance(client, redis.cluster.RedisCluster)


def client_url(client: Any) -> str:
    """A URL naming where a user-built client points, for messages (never a password)."""
    if is_cluster(client):
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


def _check_encoding(client: Any, url: str) -> None:
    """Refuse a user-built client that does not encode text as strict UTF-8.

    The stored documents and records are UTF-8 JSON that every other process reads back
    as such: a client of another encoding would fail on the first non-Latin character
    (a raw UnicodeEncodeError, taken for bad data and never retried) or store text the
    others misread. Checked at construction, before anything is written.
    """
    get_encoder = getattr(client, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else None
    encoding = getattr(encoder, "encoding", "utf-8")
    errors = getattr(encoder, "encoding_errors", "strict")
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except (LookupError, TypeError):
        utf8 = False
    if not utf8 or errors != "strict":
        raise ConfigurationError(
            f"the Redis client for {url} encodes text as {encoding!r} "
            f"(errors={errors!r}); RedisStore stores UTF-8: build the client with "
            "encoding='utf-8' and encoding_errors='strict' (redis-py's defaults)",
            location=url)


class RedisClient:
    """One store's redis-py client, built on first use (in the worker thread: importing
    redis-py takes about half a second, and constructors run on the event loop)."""

    def __init__(self, url: str, *, key: str, given: Any, socket_timeout: float,
                 wait_aof: bool, min_replicas: int, replica_timeout: float,
                 ack_key: str) -> None:
        self.given = given
        if given is not None:
            url = client_url(given)
            _check_encoding(given, url)
        #: The URL, password redacted, for messages.
        self.url: str = redact_url(url)
        self.secrets = url_secrets(url)
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in _SCHEMES:
            raise ConfigurationError(
                f"bad Redis URL {self.url}: use redis://, rediss:// or unix://")
        if min_replicas < 0 or replica_timeout <= 0:
            raise ConfigurationError("min_replicas must be >= 0 and replica_timeout > 0")
        if min_replicas and is_cluster(given):
            raise ConfigurationError("min_replicas is not supported with a RedisCluster "
                                     "client (WAIT runs per shard)")
        #: Where the state lives, for messages: the redacted URL and the key.
        self.location = f"{self.url} key={key!r}"
        self._raw_url = url
        self.socket_timeout = socket_timeout
        self.wait_aof = wait_aof
        self.min_replicas = min_replicas
        self.replica_timeout = replica_timeout
        self.ack_key = ack_key
        #: A write reached the master but not yet ``min_replicas`` replicas.
        self.unconfirmed = False
        self._built: Any = None
        self._scripts: Scripts | None = None
        self._build_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The redis-py client (one connection pool per store), built on first use."""
        if self._built is None:
            with self._build_lock:
                if self._built is None:
                    self._built = self._build()
        return self._built

    @property
    def scripts(self) -> Scripts:
        """The commit protocol's scripts, registered on :attr:`client`."""
        if self._scripts is None:
            self.client  # noqa: B018 - builds the client, which registers the scripts
        assert self._scripts is not None
        return self._scripts

    def _build(self) -> Any:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        if self.given is not None:
            client = self.given
        else:
            try:
                # One quick retry (a pooled connection the server dropped), not redis-py's
                # default seconds of backoff: an outage must reach save_state fast.
                client = redis.Redis.from_url(
                    self._raw_url, socket_timeout=self.socket_timeout,
                    socket_connect_timeout=self.socket_timeout,
                    retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1))
            except ValueError as exc:
                raise ConfigurationError(
                    f"bad Redis URL {self.url}: {self.redacted(exc)}",
                    location=self.location) from None
        self._scripts = Scripts(client)
        if self.wait_aof:
            self._check_aof(client)
        return client

    def _check_aof(self, client: Any) -> None:
        """Refuse ``wait_aof`` on a server without WAITAOF or without an append-only file."""
        import redis.exceptions as rex

        try:
            info = client.info("persistence")
            client.execute_command("WAITAOF", 0, 0, 1)  # unknown command before 7.2
        except rex.ResponseError as exc:
            raise ConfigurationError(
                f"{self.location}: wait_aof needs WAITAOF (Redis 7.2+ or Valkey); the "
                f"server says: {self.redacted(exc)}", location=self.location) from None
        if not int(info.get("aof_enabled", 0)):
            raise ConfigurationError(
                f"{self.location}: wait_aof needs the server's append-only file "
                "(appendonly yes)", location=self.location)

    def run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a commit script; with ``wait_aof``, also wait until the server fsynced it.

        WAITAOF waits for the writes of the connection it is sent on, so both go in one
        pipeline (one connection, one round trip).
        """
        if not self.wait_aof:
            return script(keys=keys, args=args)
        pipe = self.client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        wait_ms = max(1, int(self.socket_timeout * 800))  # answered before the socket gives up
        pipe.execute_command("WAITAOF", 1, 0, wait_ms)
        result, (local, _replicas) = pipe.execute()
        # A commit returns {version, lineage}, an append its version; negative: refused.
        wrote = isinstance(result, list) or int(result) >= 0
        if wrote and int(local) < 1:
            raise StorageUnavailableError(
                f"{self.location}: the commit was not fsynced to the append-only file "
                f"within {wait_ms} ms", location=self.location)
        return result

    def confirm_replicas(self) -> None:
        """Wait until ``min_replicas`` replicas hold every write this store made so far.

        ``WAIT`` counts the writes of its own connection only, and a pooled client may
        run the next command on another one: a marker write and ``WAIT`` go together in
        one pipeline, and since the replication stream is ordered, a replica that has the
        marker has every earlier write.

        :raises StorageUnavailableError: fewer replicas within ``replica_timeout``.
        """
        if not self.min_replicas:
            return
        self.unconfirmed = True
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.ack_key, b"1", px=10_000)
        pipe.execute_command("WAIT", self.min_replicas, int(self.replica_timeout * 1000))
        _, acked = pipe.execute()
        if int(acked) < self.min_replicas:
            raise StorageUnavailableError(
                f"{self.location}: the write reached {acked} of the {self.min_replicas} "
                f"replicas asked for within {self.replica_timeout:g}s; not acknowledged",
                location=self.location)
        self.unconfirmed = False

    @contextlib.contextmanager
    def mapped_errors(self, wrong_type: str) -> Iterator[None]:
        """Translate redis-py errors into the cascadeui hierarchy; never leak the password.

        :param wrong_type: what a WRONGTYPE reply means (which keys may hold another type).
        """
        import redis.exceptions as rex

        try:
            if self.unconfirmed:  # never let a read or a retry acknowledge it first
                self.confirm_replicas()
            yield
        except PersistenceError:
            raise
        except (rex.AuthenticationError, rex.AuthenticationWrongNumberOfArgsError) as exc:
            raise self._auth_error(exc) from None
        except rex.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise self._auth_error(exc) from None
            if "WRONGTYPE" in str(exc):
                raise StateCorruptedError(f"{self.location}: {wrong_type}",
                                          location=self.location,
                                          tried=(self.location,)) from None
            raise self.server_error(exc) from None
        except rex.RedisError as exc:
            raise StorageUnavailableError(
                f"{self.location}: {type(exc).__name__}: {self.redacted(exc)}",
                location=self.location) from None

    def server_error(self, exc: BaseException) -> StorageUnavailableError:
        """An error reply of the server (not a type or password problem)."""
        return StorageUnavailableError(f"{self.location}: server error: {self.redacted(exc)}",
                                       location=self.location)

    def _auth_error(self, exc: BaseException) -> StorageUnavailableError:
        """redis-py's raw HELLO/AUTH text, turned into what to change in the URL."""
        if self.secrets:
            hint = ("the server refused the password in the URL (check it, and the user "
                    "name if the server uses ACLs: redis://USER:PASSWORD@host:port/db)")
        else:
            hint = ("the server requires a password: add it to the URL, "
                    "redis://:PASSWORD@host:port/db (or redis://USER:PASSWORD@... with ACLs)")
        return StorageUnavailableError(f"{self.location}: {hint} [{self.redacted(exc)}]",
                                       location=self.location)

    def redacted(self, exc: BaseException) -> str:
        """``str(exc)`` with the URL's secrets hidden."""
        return redact_secret(str(exc), self.secrets)

    def release(self) -> None:
        """Close the client this store built (a given client stays its owner's)."""
        with self._build_lock:
            client, self._built = self._built, None
        if client is not None and client is not self.given:
            client.close()
            client.connection_pool.disconnect()
