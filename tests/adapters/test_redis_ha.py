"""Redis beyond one server: a user-built client for a Redis Cluster and for Sentinel.

Real servers on loopback ports (``kit.redis_topologies``): a three-master
cluster formed with CLUSTER MEET/ADDSLOTSRANGE, and one master, one replica and three
sentinels whose master is SIGKILLed while a store writes (issue 14).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster
import redis.sentinel
from kit.redis_topologies import RedisClusterServers, SentinelServers

from cascadeui.actions import APPLICATION_SET
from cascadeui.adapters import RedisStore
from cascadeui.errors import DurabilityTimeoutError, StorageUnavailableError
from cascadeui.persistence import RedisBackend
from cascadeui.store import StateStore

pytestmark = pytest.mark.slow


def master_client(ha: SentinelServers) -> Any:
    """A client that follows the master the sentinels name (through failovers)."""
    sentinel = redis.sentinel.Sentinel(ha.sentinel_hosts, socket_timeout=1)
    return sentinel.master_for(ha.master_name, socket_timeout=1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers(masters=3) as servers:
        yield servers


@pytest.fixture
def cluster_client(cluster: RedisClusterServers) -> Iterator[Any]:
    client = redis.cluster.RedisCluster(host=cluster.host, port=cluster.ports[0],
                                        socket_timeout=2)
    yield client
    client.close()



def test_cluster_keys_share_one_slot(cluster_client: Any) -> None:
    store = RedisStore(client=cluster_client, key="bot:state")
    keys = [store.key, store.journal_key, store.version_key, store.lock_key,
            store.keys.stage("token")]
    assert keys[1:] == ["{bot:state}:journal", "{bot:state}:version", "{bot:state}:lock",
                        "{bot:state}:stage:token"]
    assert len({cluster_client.keyslot(k) for k in keys}) == 1
    tagged = RedisStore(client=cluster_client, key="{bot}:state")
    assert tagged.journal_key == "{bot}:state:journal"  # a hash tag of the user's is kept
    plain = RedisStore("redis://127.0.0.1:1/0", key="bot:state")
    assert plain.journal_key == "bot:state:journal"  # a single server's layout is unchanged
    assert "redis-cluster://" in store.location


def test_cluster_store_saves_journals_and_transacts(cluster_client: Any) -> None:
    key = f"cascadeui:test:{time.monotonic_ns()}"
    store = RedisStore(client=cluster_client, key=key)
    try:
        store.save({"application": {"n": 1}, "persistent_views": {}})
        _doc, version = store.load_versioned()
        whole = {"application": {"n": 2}, "persistent_views": {}}
        new = store.save_changes([(("application", "n"), 2)], version,
                                 full=lambda: store.serializer.serialize(whole))
        assert new is not None
        assert new > version
        assert cluster_client.llen(store.journal_key) == 1  # an append, not a rewrite
        records, now = store.load_changes(version) or ([], -1)
        assert now == new
        assert len(records) == 1  # one record: catching up reads it, not the document
        with store.transaction() as state:
            state["application"]["n"] += 1
        assert store.load()["application"]["n"] == 3
        store.lua_max_bytes = 0  # a staged commit: SET, then the script renames it in the slot
        with store.transaction() as state:
            state["application"]["n"] += 1
        assert store.load()["application"]["n"] == 4
    finally:
        store.close()
    assert cluster_client.ping()  # the client stays the user's: closing the store kept it


@pytest.mark.anyio
async def test_a_store_on_a_cluster_persists_through_the_engine(cluster_client: Any) -> None:
    key = f"cascadeui:engine:{time.monotonic_ns()}"
    first = StateStore()
    await first.enable_persistence(RedisBackend(client=cluster_client, key=key))
    for n in range(20):
        await first.dispatch(APPLICATION_SET, {"path": ["n"], "value": n})
    assert await first.flush()
    second = StateStore()
    await second.enable_persistence(RedisBackend(client=cluster_client, key=key))
    assert second.state["application"]["n"] == 19
    await first.close()
    await second.close()


@pytest.mark.anyio
async def test_a_store_continues_on_the_promoted_replica() -> None:
    with SentinelServers(replicas=1, sentinels=3, down_after_ms=800) as ha:
        client = master_client(ha)
        store = StateStore()
        await store.enable_persistence(RedisBackend(client=client, key="ha:state"),
                                       retry_initial=0.05, retry_max=0.5)
        for n in range(10):
            await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": n})
            assert await store.flush()
        # Everything acknowledged so far reached the replica before the crash.
        assert client.execute_command("WAIT", 1, 2000) == 1
        await asyncio.to_thread(ha.kill_master)
        await store.dispatch(APPLICATION_SET, {"path": ["after"], "value": True})
        deadline = time.monotonic() + 20
        while not await store.flush():  # the engine retries until the new master answers
            assert time.monotonic() < deadline, store.last_write_error
            await asyncio.sleep(0.1)
        reader = StateStore()
        await reader.enable_persistence(RedisBackend(client=client, key="ha:state"))
        assert reader.state["application"] == {"n": 9, "after": True}
        await reader.close()
        await store.close()
        client.close()


async def _durable_users(store: StateStore, users: int, per_user: int,
                         acked: list[tuple[int, int]]) -> None:
    async def user(u: int) -> None:
        for i in range(per_user):
            try:
                await store.dispatch(APPLICATION_SET, {"path": [f"u{u}", f"c{i}"], "value": i},
                                     durable=True)
            except DurabilityTimeoutError:
                continue
            acked.append((u, i))
            await asyncio.sleep(0.01)

    await asyncio.gather(*(user(u) for u in range(users)))


@pytest.mark.anyio
async def test_replica_acknowledged_changes_survive_a_failover() -> None:
    with SentinelServers(replicas=2, sentinels=3, down_after_ms=800) as ha:
        client = master_client(ha)
        store = StateStore()
        await store.enable_persistence(
            RedisBackend(client=client, key="ha:wait", min_replicas=1, replica_timeout=0.5),
            retry_initial=0.05, retry_max=0.3, durable_timeout=15)
        acked: list[tuple[int, int]] = []
        users = asyncio.ensure_future(_durable_users(store, 5, 60, acked))
        await asyncio.sleep(0.3)
        before = len(acked)
        await asyncio.to_thread(ha.kill_master)
        await users
        assert before > 0
        assert len(acked) > before  # it went on after the failover, on the promoted replica
        reader = StateStore()
        await reader.enable_persistence(RedisBackend(client=client, key="ha:wait"))
        app = reader.state["application"]
        lost = [(u, i) for u, i in acked if app.get(f"u{u}", {}).get(f"c{i}") != i]
        assert lost == []
        await reader.close()
        await store.close()
        client.close()


def test_what_asynchronous_replication_loses_and_min_replicas_refuses() -> None:
    with SentinelServers(replicas=1, sentinels=3, down_after_ms=800) as ha:
        client = master_client(ha)
        plain = RedisStore(client=client, key="ha:lost")
        careful = RedisStore(client=client, key="ha:kept", min_replicas=1, replica_timeout=0.3)
        plain.save({"application": {"n": 1}})
        careful.save({"application": {"n": 1}})
        replica = ha.replicas[0]
        assert replica._proc is not None
        # Cut the replication link, and freeze the replica before it reconnects (it tries
        # once a second): from now on the master's writes reach no replica.
        master = redis.Redis(port=ha.master.port)
        for _ in range(20):
            redis.Redis(port=replica.port).execute_command("CLIENT", "KILL", "TYPE", "master")
            replica._proc.send_signal(signal.SIGSTOP)
            time.sleep(0.1)
            if master.info("replication")["connected_slaves"] == 0:
                break
            replica._proc.send_signal(signal.SIGCONT)  # it reconnected first: again
        else:
            pytest.fail("could not cut the replication link")
        try:
            plain.save({"application": {"n": 2}})  # acknowledged by the master alone
            with pytest.raises(StorageUnavailableError, match="0 of the 1 replicas"):
                careful.save({"application": {"n": 2}})  # not acknowledged
            with pytest.raises(StorageUnavailableError):  # nor by reading it back
                careful.load()
            ha.master.kill()
        finally:
            replica._proc.send_signal(signal.SIGCONT)
        _wait_promoted(ha, replica.port)
        # The promoted replica never got the plain store's acknowledged write.
        assert _retry(plain.load) == {"application": {"n": 1}}
        plain.close()
        careful.close()
        client.close()


def _retry(fn: Any) -> Any:
    """``fn()`` once the sentinels and the promoted replica agree (a few seconds at most)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return fn()
        except StorageUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _wait_promoted(ha: SentinelServers, port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if ha.master_port() == port:
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the replica was not promoted")
