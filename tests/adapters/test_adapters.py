"""The async facade's contract over every store (issue 2).

Each test runs over every backend of ``_registry.BACKENDS`` x [the async facade under
asyncio, under trio], from the loop (the adapters themselves run the same promises, with
no loop, in ``cascadeui.testing.conformance``: ``tests/adapters/test_conformance.py``).
Custom backends (the ``StorageBackend`` Protocol) and a plain sync object wrapped
by ``as_backend`` get the round-trip part of the contract at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from _registry import build, kinds
from blockbuster import BlockingError

from cascadeui._backends import AsyncBackend
from cascadeui.adapters import (
    BaseStore,
    FileStore,
    RedisStore,
    SQLiteStore,
    SyncStore,
)
from cascadeui.errors import StoreClosedError
from cascadeui.persistence import (
    FileStorageBackend,
    RedisBackend,
    SQLiteBackend,
    StateSerializer,
    StorageBackend,
    as_backend,
)
from cascadeui.testing.conformance import RICH as CONTRACT_RICH

pytestmark = pytest.mark.anyio

KINDS = kinds()
LOOPS = ("asyncio", "trio")

#: The conformance suite's exact-round-trip state, plus a zoned datetime (tzdata needed).
RICH: dict[str, Any] = {**CONTRACT_RICH, "application": {
    **CONTRACT_RICH["application"],
    "zoned": datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Paris"))}}


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> BaseStore:
    return build(kind, request, tmp_path)


class Api:
    """The contract calls through the async facade over one adapter."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self.backend: AsyncBackend[Any] = AsyncBackend(store)

    async def load(self) -> dict[str, Any]:
        return await self.backend.load_state()

    async def save(self, state: Mapping[str, Any]) -> None:
        assert await self.backend.save_state(state) is True

    async def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        async with self.backend.transaction() as st:
            change(st)

    async def version(self) -> int:
        return await self.backend.version()


@pytest.fixture(params=[(k, loop) for k in KINDS for loop in LOOPS], ids=lambda p: "-".join(p))
def combo(request: pytest.FixtureRequest) -> tuple[str, str]:
    return tuple(request.param)  # type: ignore[return-value]


@pytest.fixture
def anyio_backend(combo: tuple[str, str]) -> str:
    return combo[1]


@pytest.fixture
def api(combo: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest
        ) -> Iterator[Api]:
    store = make_store(combo[0], request, tmp_path)
    yield Api(store)
    store.close()


# -- the contract ----------------------------------------------------------------------


async def test_empty_store_loads_empty_dict(api: Api) -> None:
    assert await api.load() == {}
    assert await api.version() == 0


async def test_round_trip_is_exact(api: Api) -> None:
    await api.save(RICH)
    back = await api.load()
    assert back == RICH
    app = back["application"]
    assert type(app["seen"]) is set
    assert type(app["frozen"]) is frozenset
    assert app["pair"] == (1, "a", (2, 3))
    assert type(app["pair"][2]) is tuple
    assert app["scores"][1234567890123456789] == 10  # int keys stay ints
    assert app["aware"].utcoffset() == timedelta(hours=-5)
    assert app["naive"].tzinfo is None
    assert app["zoned"].tzinfo == ZoneInfo("Europe/Paris")
    assert app["zoned"].utcoffset() == timedelta(hours=1)
    assert type(app["day"]) is date
    assert app["tagged-looking"] == {"$set": [1, 2]}


async def test_save_replaces_whole_state(api: Api) -> None:
    await api.save({"a": 1, "b": 2})
    await api.save({"c": 3})
    assert await api.load() == {"c": 3}


async def test_transaction_commits_changes(api: Api) -> None:
    await api.save({"counter": 1, "names": {"x"}})

    def change(st: dict[str, Any]) -> None:
        st["counter"] += 1
        st["names"].add("y")

    await api.update(change)
    assert await api.load() == {"counter": 2, "names": {"x", "y"}}


async def test_transaction_on_empty_store_starts_from_empty_dict(api: Api) -> None:
    seen: list[dict[str, Any]] = []

    def change(st: dict[str, Any]) -> None:
        seen.append(dict(st))
        st["n"] = 1

    await api.update(change)
    assert seen == [{}]
    assert await api.load() == {"n": 1}


async def test_transaction_that_raises_writes_nothing(api: Api) -> None:
    await api.save({"counter": 1})
    before = await api.version()

    def change(st: dict[str, Any]) -> None:
        st["counter"] = 99
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await api.update(change)
    assert await api.load() == {"counter": 1}
    assert await api.version() == before
    await api.update(lambda st: st.update(counter=2))  # the lock was released
    assert await api.load() == {"counter": 2}


async def test_version_changes_on_every_commit(api: Api) -> None:
    seen = [await api.version()]
    for i in range(5):
        await api.save({"i": i % 2})  # same size, alternating content
        seen.append(await api.version())
    await api.update(lambda st: st.update(i=7))
    seen.append(await api.version())
    assert all(a != b for a, b in itertools.pairwise(seen)), seen
    assert seen[-1] == await api.version()  # reading does not change it


async def test_concurrent_transactions_lose_no_update(api: Api) -> None:
    await api.save({"n": 0})

    def bump(st: dict[str, Any]) -> None:
        st["n"] += 1

    async def worker() -> None:
        for _ in range(10):
            await api.update(bump)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(worker)
    assert await api.load() == {"n": 40}


async def test_close_is_idempotent_and_final(api: Api) -> None:
    await api.save({"a": 1})
    await api.backend.aclose()
    await api.backend.aclose()
    assert api.store.closed
    with pytest.raises(StoreClosedError, match="closed"):
        await api.load()
    with pytest.raises(StoreClosedError):
        await api.save({"a": 2})
    assert "closed" in repr(api.store)


async def test_repr_names_location(api: Api) -> None:
    text = repr(api.backend)
    assert api.store.location in text


# -- lifecycle and files (sync only: no loop needed) -----------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sync_context_manager_without_event_loop(kind: str, tmp_path: Path,
                                                 request: pytest.FixtureRequest) -> None:
    with make_store(kind, request, tmp_path) as store:
        assert isinstance(store, SyncStore)
        store.save({"a": {1, 2}})
        with store.transaction() as st:
            st["b"] = (3,)
        assert store.load() == {"a": {1, 2}, "b": (3,)}
    assert store.closed
    with pytest.raises(StoreClosedError), store:
        pass


@pytest.mark.parametrize("backups", [0, 1, 3])
def test_file_backup_generations(tmp_path: Path, backups: int) -> None:
    path = tmp_path / "s.json"
    with FileStore(path, backups=backups) as store:
        for i in range(5):
            store.save({"i": i})
        assert store.load() == {"i": 4}
        gens = store.backup_paths()
    assert len(gens) == backups
    # .bak holds the previous save, .bak.1 the one before, and so on.
    for n, gen in enumerate(gens):
        assert json.loads(gen.read_text()) == {"i": 3 - n}
    assert not Path(f"{path}.bak.{backups}").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_file_modes_new_0600_existing_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with FileStore(path) as store:
        store.save({"a": 1})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(f"{path}.lock").stat().st_mode) & 0o077 == 0
        os.chmod(path, 0o640)
        store.save({"a": 2})
        store.save({"a": 3})
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    db = tmp_path / "s.db"
    with SQLiteStore(db) as sq:
        sq.save({"a": 1})
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_sqlite_layout_is_documented_single_row(tmp_path: Path) -> None:
    import sqlite3

    from cascadeui._merge import DELETED

    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        store.save({"a": 1})
        store.save({"a": 2})
        assert store.save_changes([(("b", 5), "x"), (("a",), DELETED)], 2,
                                  full=lambda: "unused") == 3
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT id, data, version FROM cascadeui_state").fetchall()
        journal = conn.execute("SELECT seq, ops FROM cascadeui_state_journal").fetchall()
        columns = [(c[1], c[2], c[5]) for c in
                   conn.execute("PRAGMA table_info(cascadeui_state_journal)")]
        meta = conn.execute("SELECT key, value FROM cascadeui_meta").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    # The snapshot row is what the last full save wrote, with that save's version; the
    # journal row is the append, its seq the version it made.
    assert rows == [(1, '{"a":2}', 2)]
    assert journal == [(3, '{"v":1,"ops":[[["b",5],"x"],[["a"]]]}')]
    assert columns == [("seq", "INTEGER", 1), ("ops", "TEXT", 0)]
    # The lineage id a whole write into the empty table started (issue 11, item 4).
    assert [k for k, _ in meta] == ["schema_version", "lineage"]
    assert meta[0] == ("schema_version", "2")
    assert len(meta[1][1]) == 16
    assert mode == "wal"


def test_redis_layout_and_ttl(redis_url: str, redis_key: str) -> None:
    import redis

    with RedisStore(redis_url, key=redis_key, ttl=100) as store:
        store.save({"a": 1})
        store.save({"a": 2})
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get(redis_key) == b'{"a":2}'
        assert 90 < client.ttl(redis_key) <= 100
        assert client.get(f"{redis_key}:version") == b"2"
        assert client.ttl(f"{redis_key}:version") == -1  # the counter never expires
        assert not client.exists(f"{redis_key}:lock")
        client.expire(redis_key, 5)
        with RedisStore(redis_url, key=redis_key, ttl=100) as store, \
                store.transaction() as st:
            st["a"] = 3
        assert client.ttl(redis_key) > 90  # every commit refreshes the expiry
    finally:
        client.delete(redis_key, f"{redis_key}:version")
        client.close()


# -- custom backends -------------------------------------------------------------------


class DictBackend:
    """A custom async backend through the seed's Protocol: state kept as JSON text."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.serializer = StateSerializer()

    async def save_state(self, state: dict[str, Any]) -> bool:
        await anyio.lowlevel.checkpoint()
        self.text = self.serializer.serialize(state)
        return True

    async def load_state(self) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return self.serializer.deserialize(self.text) if self.text else {}


class PlainSync:
    """A plain synchronous adapter: only ``load`` and ``save``."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        return dict(self.data)

    def save(self, state: Mapping[str, Any]) -> None:
        self.data = dict(state)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("make", [DictBackend, PlainSync], ids=["protocol", "plain-sync"])
async def test_custom_backends_work_like_builtins(make: Callable[[], Any], anyio_backend: str,
                                                  tmp_path: Path) -> None:
    from cascadeui.persistence import migrate_storage

    custom = as_backend(make())
    assert isinstance(custom, StorageBackend)
    assert await custom.load_state() == {}
    assert await custom.save_state(RICH) is True
    assert await custom.load_state() == RICH
    async with FileStorageBackend(tmp_path / "s.json") as fb:
        assert await migrate_storage(custom, fb) is True
        assert await fb.load_state() == RICH


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_as_backend_passes_backends_and_wraps_sync(anyio_backend: str,
                                                         tmp_path: Path) -> None:
    custom = DictBackend()
    assert as_backend(custom) is custom
    plain = PlainSync()
    wrapped = as_backend(plain)
    assert isinstance(wrapped, AsyncBackend)
    assert wrapped.store is plain
    with pytest.raises(TypeError, match="no transaction"):
        async with wrapped.transaction():
            pass
    with pytest.raises(TypeError, match="no version"):
        await wrapped.version()
    await wrapped.aclose()  # nothing to close: no error
    with pytest.raises(TypeError, match="not a storage backend"):
        as_backend(object())
    sb = SQLiteBackend(tmp_path / "x.db")
    assert isinstance(sb, StorageBackend)
    assert as_backend(sb) is sb
    await sb.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_builtin_backends_keep_the_seed_signatures(anyio_backend: str, tmp_path: Path,
                                                         redis_url: str,
                                                         redis_key: str) -> None:
    fb = FileStorageBackend(tmp_path / "s.json")
    sb = SQLiteBackend(tmp_path / "s.db")
    rb = RedisBackend(url=redis_url, key=redis_key, ttl=None)
    assert (fb.file_path, sb.db_path) == (tmp_path / "s.json", str(tmp_path / "s.db"))
    assert (rb.key, rb.ttl) == (redis_key, None)
    for b in (fb, sb, rb):
        async with b:
            assert await b.save_state({"k": 1}) is True
            assert await b.load_state() == {"k": 1}
    default = RedisBackend()
    assert (default.url, default.key, default.ttl) == ("redis://localhost", "cascadeui:state",
                                                       None)
    await default.aclose()


# -- blockbuster guards the loop ---------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_blocking_call_on_the_loop_is_caught(anyio_backend: str, tmp_path: Path) -> None:
    """The autouse fixture must fail a test whose cascadeui code blocks the loop."""
    store = FileStore(tmp_path / "s.json")
    with pytest.raises(BlockingError):
        store.save({"a": 1})  # deliberately on the loop thread
    await anyio.to_thread.run_sync(store.save, {"a": 1})  # the right way: no error
    backend = AsyncBackend(store)
    assert await backend.load_state() == {"a": 1}
    await backend.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_blockbuster_catches_a_blocking_custom_adapter_call(anyio_backend: str) -> None:
    class Sleepy(AsyncBackend[Any]):
        async def load_state(self) -> dict[str, Any]:
            import time

            time.sleep(0.001)  # noqa: ASYNC251  (the deliberate bug under test)
            return {}

    with pytest.raises(BlockingError, match="sleep"):
        await _call_from_cascadeui(Sleepy(PlainSync()))


async def _call_from_cascadeui(backend: AsyncBackend[Any]) -> dict[str, Any]:
    # The subclass above lives in this test file, which blockbuster does not scan; route
    # the call through cascadeui code (migrate_storage) so a cascadeui frame is on the stack.
    from cascadeui.persistence import migrate_storage

    await migrate_storage(backend, DictBackend())
    return {}


@pytest.mark.parametrize("lua_max", [256 * 1024, 0], ids=["argument-commit", "staged-commit"])
def test_redis_commit_paths_check_lease_and_type(redis_url: str, redis_key: str,
                                                 lua_max: int) -> None:
    """Both Redis commit paths (small documents: an argument; large: staged) keep the rules."""
    import time

    import redis

    from cascadeui.errors import LockTimeoutError, StateCorruptedError

    client = redis.Redis.from_url(redis_url)
    try:
        with RedisStore(redis_url, key=redis_key, ttl=50) as store:
            store.lua_max_bytes = lua_max
            store.save({"a": 1, "blob": "x" * 300_000})
            with store.transaction() as st:
                st["a"] += 1
            assert store.load() == {"a": 2, "blob": "x" * 300_000}
            assert store.version() == 2
            assert 40 < client.ttl(redis_key) <= 50
            store.lock_timeout = 0.05

            def lose_the_lease() -> None:
                with store.transaction() as st:
                    time.sleep(0.1)  # our lease ends...
                    client.set(store.lock_key, "another-writer")  # ...and someone takes it
                    st["a"] = 99

            with pytest.raises(LockTimeoutError, match="lease ran out"):
                lose_the_lease()
            assert store.load()["a"] == 2
            assert client.get(store.lock_key) == b"another-writer"  # theirs, untouched
            client.delete(store.lock_key, redis_key)
            client.hset(redis_key, "field", "theirs")
            with pytest.raises(StateCorruptedError, match="another Redis type"):
                store.save({"a": 3})
            assert client.hgetall(redis_key) == {b"field": b"theirs"}
            assert not client.exists(store.lock_key)
    finally:
        client.delete(redis_key, f"{redis_key}:version", f"{redis_key}:lock")
        client.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_cancellation_never_leaves_a_lock_or_a_torn_file(anyio_backend: str,
                                                               tmp_path: Path) -> None:
    """A cancelled save still finishes in its thread; a cancelled transaction writes nothing."""
    path = tmp_path / "s.json"
    backend = FileStorageBackend(path, lock_timeout=2)
    big = {"blob": "x" * 2_000_000}
    assert await backend.save_state({"n": 0})
    with anyio.move_on_after(0.001):
        await backend.save_state(big)  # the thread is not abandoned: it finishes the save
    assert await backend.load_state() in ({"n": 0}, big)  # whole, old or new
    with anyio.move_on_after(0.05):
        async with backend.transaction() as st:
            st["n"] = 99
            await anyio.sleep(10)  # cancelled here: the transaction must not commit
    assert (await backend.load_state()).get("n") != 99
    other = FileStorageBackend(path, lock_timeout=0.5)  # the lock is free again
    assert await other.save_state({"n": 1})
    assert await backend.load_state() == {"n": 1}
    await backend.aclose()
    await other.aclose()
