"""Changes pushed to running stores (issue 13): announcements, listeners, catch-up.

Every test polls only every 30 s, so what arrives within seconds arrived by push (or by
the catch-up a listener does after reconnecting). Real servers throughout: the session's
PostgreSQL database, private redis-servers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from _helpers import started_redis_server
from _registry import build, kinds
from kit.redis_server import RedisServer

from cascadeui._backends import AsyncBackend
from cascadeui.actions import APPLICATION_SET
from cascadeui.adapters import FileStore, PostgresStore, RedisStore
from cascadeui.serializer import StateSerializer
from cascadeui.store import StateStore

pytestmark = [pytest.mark.anyio]

POLL = 30.0  # never reached within a test: arrivals are pushed



@asynccontextmanager
async def running(make: Callable[[], Any], *, push: bool = True) -> AsyncIterator[StateStore]:
    store = StateStore()
    await store.enable_persistence(AsyncBackend(make()), debounce=0, poll_interval=POLL,
                                   push=push)
    try:
        yield store
    finally:
        await store.close(close_backend=True)


async def holds(store: StateStore, key: str, value: Any, within: float = 5.0) -> float:
    """Seconds until ``store`` holds ``application[key] == value``; fails after ``within``."""
    start = time.monotonic()
    while store.state["application"].get(key) != value:
        if time.monotonic() - start > within:
            raise AssertionError(f"{key}={value!r} not pushed within {within}s: "
                                 f"{store.state['application']}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def commit(store: StateStore, key: str, value: Any) -> None:
    await store.dispatch(APPLICATION_SET, {"path": [key], "value": value})
    assert await store.flush()


def in_thread(fn: Callable[[], Any]) -> Any:
    return asyncio.to_thread(fn)


# -- every backend: two stores on one medium converge at once ------------------------------


@pytest.fixture(params=kinds("listener"))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    return lambda: build(request.param, request, tmp_path)


async def test_two_running_stores_converge_by_push(make: Callable[[], Any]) -> None:
    async with running(make) as a, running(make) as b:
        assert a._engine is not None
        assert a._engine.listener is not None
        await commit(a, "from_a", 1)
        assert await holds(b, "from_a", 1) < 2.0
        await commit(b, "from_b", 2)
        assert await holds(a, "from_b", 2) < 2.0
        for i in range(20):  # both writing at once: every key ends up in both
            await a.dispatch(APPLICATION_SET, {"path": [f"a{i}"], "value": i})
            await b.dispatch(APPLICATION_SET, {"path": [f"b{i}"], "value": i})
            await asyncio.sleep(0.005)
        assert await a.flush()
        assert await b.flush()
        await holds(a, "b19", 19)
        await holds(b, "a19", 19)
        deadline = time.monotonic() + 5
        while a.state["application"] != b.state["application"]:
            assert time.monotonic() < deadline, "the two stores never converged"
            await asyncio.sleep(0.02)
        assert len(a.state["application"]) == 42


async def test_a_script_commit_reaches_a_running_store(make: Callable[[], Any]) -> None:
    async with running(make) as bot:
        script = make()
        try:
            def change() -> None:
                with script.transaction() as st:
                    st.setdefault("application", {})["motd"] = "hi"
            await in_thread(change)
        finally:
            script.close()
        assert await holds(bot, "motd", "hi") < 2.0


async def test_push_false_only_polls(tmp_path: Path) -> None:
    def make() -> FileStore:
        return FileStore(tmp_path / "state.json")

    async with running(make, push=False) as a, running(make) as b:
        assert a._engine is not None
        assert a._engine.listener is None
        await commit(b, "x", 1)
        await asyncio.sleep(0.5)
        assert "x" not in a.state["application"]  # nothing heard before the 30 s poll


# -- listeners that lose their connection heal and catch up --------------------------------


async def test_postgres_listener_killed_heals_and_catches_up(postgres_url: str,
                                                            pg_table: str) -> None:
    def make() -> PostgresStore:
        return PostgresStore(postgres_url, table=pg_table)

    dbname = postgres_url.rsplit("/", 1)[1]
    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    async with running(make) as bot, running(make) as other:
        await commit(other, "before", 1)
        await holds(bot, "before", 1)

        def cut_listeners(allow: bool) -> int:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {allow}')
                if allow:
                    return 0
                return len(admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "datname = %s AND application_name = 'cascadeui-listener'",
                    (dbname,)).fetchall())

        # The listeners cannot come back while the database refuses connections; the
        # stores' own connections stay open, so the commit below goes through unheard.
        assert await in_thread(lambda: cut_listeners(False)) == 2
        try:
            await commit(other, "missed", 2)
            await asyncio.sleep(0.5)
            assert "missed" not in bot.state["application"]
        finally:
            await in_thread(lambda: cut_listeners(True))
        assert await holds(bot, "missed", 2, within=10) < 10  # reconnected, caught up
        await commit(other, "after", 3)
        assert await holds(bot, "after", 3) < 2.0  # and listening again


async def test_redis_pubsub_killed_catches_up(redis_url: str, redis_key: str) -> None:
    def make() -> RedisStore:
        return RedisStore(redis_url, key=redis_key)

    async with running(make) as bot:
        await commit(bot, "seed", 0)
        store = make()
        raw = redis.Redis.from_url(redis_url)
        try:
            def kill_and_commit() -> None:
                state, version = store.load_versioned()
                state["application"]["missed"] = 1
                # One pipeline: the server drops the subscriber, then runs a whole commit
                # (the adapter's layout) and its PUBLISH before anyone can resubscribe.
                pipe = raw.pipeline(transaction=False)
                pipe.client_kill_filter(_type="pubsub")
                pipe.set(redis_key, StateSerializer().serialize(state))
                pipe.delete(store.journal_key)
                pipe.incr(store.version_key)
                pipe.publish(store.channel, version + 1)
                _, _, _, new, receivers = pipe.execute()
                assert (new, receivers) == (version + 1, 0)  # nobody heard it

            await in_thread(kill_and_commit)
            assert await holds(bot, "missed", 1) < 5.0  # the reconnection caught it up
        finally:
            store.close()
            raw.close()


@pytest.mark.slow
async def test_redis_restart_heals_the_listener(tmp_path: Path) -> None:
    started_redis_server("the restart test").close()  # skips (or fails on CI) without one
    server = RedisServer(appendonly=True, fsync_always=True)
    await in_thread(server.start)
    try:
        def make() -> RedisStore:
            return RedisStore(server.url, key="watch", socket_timeout=1.0)

        async with running(make) as bot, running(make) as other:
            await commit(other, "before", 1)
            await holds(bot, "before", 1)
            await in_thread(server.stop)
            await asyncio.sleep(0.3)  # both listeners fail and back off
            await in_thread(server.start)  # the same port, its data back from the AOF
            script = make()
            try:
                def change() -> None:
                    with script.transaction() as st:
                        st.setdefault("application", {})["after"] = 2
                await in_thread(change)
            finally:
                script.close()
            assert await holds(bot, "after", 2, within=10) < 10
    finally:
        await in_thread(server.close)
