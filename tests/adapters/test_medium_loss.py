"""Loss of the medium is never a deletion (issue 11, item 4).

A running store whose medium loses part of the state (a Redis journal key evicted by
``maxmemory``, expired or deleted; the snapshot key gone with its journal left; the server
emptied by FLUSHALL or an empty restart; a JSON journal truncated mid-record; the JSON
file or the SQLite database deleted; a PostgreSQL journal table truncated or emptied, its
snapshot row deleted, its tables or its database dropped and created again) keeps its own
state, rewrites it whole and logs a WARNING, and merges only what another writer put
there: nothing it acknowledged (``flush()`` returned True) is lost, and another client's
writes made meanwhile are kept too. Another writer's real deletion (on top of a state
this store saw) still deletes.

Everything is real: a private redis-server (its own, with ``maxmemory`` and allkeys-lru
where eviction is tested, and for FLUSHALL and restarts), real files, real SQLite, a real
PostgreSQL (the session's scratch database; a database of its own where it is dropped).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import redis
from _helpers import started_postgres, started_redis_server
from _registry import build, kinds
from kit.postgres_server import scratch_database
from kit.redis_server import RedisServer
from psycopg import sql

from cascadeui._backends import (
    AsyncBackend,
    FileStorageBackend,
    PostgresBackend,
    RedisBackend,
    SQLiteBackend,
)
from cascadeui.actions import APPLICATION_DELETE, APPLICATION_SET
from cascadeui.adapters import FileStore, PostgresStore, RedisStore, SQLiteStore
from cascadeui.errors import StateCorruptedError
from cascadeui.store import StateStore

# The tests damage the media with blocking calls on purpose; the store under test does not.
pytestmark = [pytest.mark.anyio, pytest.mark.allow_blocking]



@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for one test alone: it may be emptied, restarted or filled up."""
    server = started_redis_server("the medium-loss tests")
    try:
        yield server
    finally:
        server.close()


async def running(backend: AsyncBackend[Any], *, poll: float | None = None
                  ) -> AsyncIterator[StateStore]:
    """A store persisting to ``backend``, closed (and the backend with it) at the end."""
    store = StateStore()
    await store.enable_persistence(backend, debounce=0, max_delay=0.05, retry_initial=0.02,
                                   retry_max=0.1, poll_interval=poll)
    try:
        yield store
    finally:
        await store.close(close_backend=True)


async def acknowledge(store: StateStore, *names: str) -> None:
    """Set each ``application[name] = name`` and wait until it is durable."""
    for name in names:
        await store.dispatch(APPLICATION_SET, {"path": [name], "value": name})
        assert await store.flush(), f"{name} was not acknowledged"


def expect_all(app: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if app.get(n) != n]
    assert not missing, f"acknowledged keys lost: {missing} (stored: {sorted(app)})"


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()`` (a poll every 20 ms) or fail after 5 seconds."""
    for _ in range(250):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not within 5 s: {what}")


def cut_mid_record(journal: Path, record: int) -> None:
    """Truncate ``journal`` in place half way through its ``record``-th record line."""
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) > record
    with open(journal, "r+b") as fh:
        fh.truncate(sum(map(len, lines[:record])) + len(lines[record]) // 2)


def holds(path: Path, *names: str) -> bool:
    with FileStore(path) as probe:
        app = probe.load().get("application", {})
    return all(app.get(n) == n for n in names)


def unlink(*paths: Path) -> None:
    for path in paths:
        path.unlink()


def state_files(directory: Path, prefix: str) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(prefix)]


def loss_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The store's WARNINGs that it found its medium lost data (or emptied)."""
    return [m for m in (r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
            if "lost data" in m or "holds no state any more" in m]


OURS = tuple(f"a{i}" for i in range(8))


# -- Redis -----------------------------------------------------------------------------------


def _evict_journal(client: redis.Redis, key: str, journal: str) -> None:
    """Fill the server past ``maxmemory`` until the journal key is evicted.

    ``volatile-lru`` evicts only keys with an expiry: the journal gets a long one (and the
    junk too), so the eviction can take the journal and never the snapshot, the version
    or the lineage (``allkeys-lru`` samples keys at random and once in a while took the
    snapshot first, which is another case: that made this test flaky).
    """
    client.config_set("maxmemory-policy", "volatile-lru")
    client.pexpire(journal, 3_600_000)
    blob = b"x" * 20_000
    for i in range(5_000):
        client.set(f"junk:{i}", blob, ex=3600)
        if not client.exists(journal):
            return
    raise AssertionError("the journal key was never evicted")


@pytest.mark.parametrize("how", ["del", "expire", "evict"])
async def test_redis_journal_key_lost_while_the_snapshot_survives(
        own_redis: RedisServer, how: str, caplog: pytest.LogCaptureFixture) -> None:
    key = "bot:state"
    client = redis.Redis.from_url(own_redis.url)
    if how == "evict":
        client.config_set("maxmemory", 4 * 1024 * 1024)
        client.config_set("maxmemory-policy", "allkeys-lru")
    store_it = running(RedisBackend(url=own_redis.url, key=key))
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS)
        assert client.llen(f"{key}:journal") >= len(OURS) - 1  # appended, not rewritten
        if how == "del":
            client.delete(f"{key}:journal")
        elif how == "expire":
            client.pexpire(f"{key}:journal", 1)
            await anyio.sleep(0.05)
        else:
            _evict_journal(client, key, f"{key}:journal")
            # No more evictions from here: what the store writes next must stay (an
            # eviction after an acknowledgement is the server's configuration, not ours).
            client.config_set("maxmemory", 0)
        assert not client.exists(f"{key}:journal")
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            await acknowledge(store, "after")
        assert loss_warnings(caplog), caplog.text
        expect_all(store.state["application"], *OURS, "after")
    finally:
        await store_it.aclose()
    client.config_set("maxmemory", 0)
    with RedisStore(own_redis.url, key=key) as fresh:
        expect_all(fresh.load()["application"], *OURS, "after")
    client.close()


def redis_holds(url: str, key: str, *names: str) -> bool:
    with RedisStore(url, key=key) as probe:
        try:
            app = probe.load().get("application", {})
        except StateCorruptedError:  # a journal without its snapshot: not rewritten yet
            return False
    return all(app.get(n) == n for n in names)


@pytest.mark.parametrize("lost", ["journal", "snapshot"])
async def test_an_idle_redis_store_notices_a_lost_key_at_its_next_poll(
        redis_url: str, redis_key: str, raw: redis.Redis, lost: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Deleting a key changes no counter: version() reads negative while the state is not
    whole, so the poll looks, and the acknowledged state is back without a new write."""
    store_it = running(RedisBackend(url=redis_url, key=redis_key), poll=0.05)
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS)
        raw.delete(f"{redis_key}:journal" if lost == "journal" else redis_key)
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            await eventually(lambda: redis_holds(redis_url, redis_key, *OURS),
                             "the idle store rewrote its state")
        assert loss_warnings(caplog), caplog.text
        with RedisStore(redis_url, key=redis_key) as probe:
            assert probe.version() > 0  # whole again
    finally:
        await store_it.aclose()


async def test_redis_snapshot_lost_with_its_journal_left_is_rewritten_from_memory(
        redis_url: str, redis_key: str, raw: redis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    """Before: every flush raised (a journal without its snapshot), and close lost all."""
    store_it = running(RedisBackend(url=redis_url, key=redis_key))
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS)
        assert raw.llen(f"{redis_key}:journal") >= 1
        raw.delete(redis_key)
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            with anyio.fail_after(5):
                await acknowledge(store, "after")
        assert loss_warnings(caplog), caplog.text
        assert store.last_write_error is None
    finally:
        await store_it.aclose()
    with RedisStore(redis_url, key=redis_key) as fresh:
        expect_all(fresh.load()["application"], *OURS, "after")


@pytest.mark.parametrize("how", ["flushall", "restart"])
@pytest.mark.parametrize("their_commits", [1, 30])
async def test_redis_emptied_then_written_by_another_client_before_the_store_polls(
        own_redis: RedisServer, how: str, their_commits: int,
        caplog: pytest.LogCaptureFixture) -> None:
    """30 commits take the version counter past this store's: only the lineage tells."""
    key = "bot:state"
    store_it = running(RedisBackend(url=own_redis.url, key=key))  # never polls
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS[:5])
        if how == "flushall":
            client = redis.Redis.from_url(own_redis.url)
            client.flushall()
            client.close()
        else:  # a server without persistence restarted: empty
            own_redis.stop()
            own_redis.start()
        with RedisStore(own_redis.url, key=key) as script:
            for i in range(their_commits):
                with script.transaction() as state:
                    state.setdefault("application", {})[f"theirs{i}"] = i
                    state.setdefault("persistent_views", {})
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            await acknowledge(store, *OURS[5:])
        assert loss_warnings(caplog), caplog.text
    finally:
        await store_it.aclose()
    with RedisStore(own_redis.url, key=key) as fresh:
        app = fresh.load()["application"]
    expect_all(app, *OURS)
    assert all(app[f"theirs{i}"] == i for i in range(their_commits)), app


async def test_redis_state_of_an_earlier_build_without_lineage_still_works(
        redis_url: str, redis_key: str, raw: redis.Redis) -> None:
    with RedisStore(redis_url, key=redis_key) as old:
        old.save({"application": {"old": 1}, "persistent_views": {}})
    raw.delete(f"{redis_key}:lineage")  # as an earlier build left it
    store_it = running(RedisBackend(url=redis_url, key=redis_key))
    store = await store_it.__anext__()
    try:
        assert store.state["application"]["old"] == 1
        await acknowledge(store, *OURS)
    finally:
        await store_it.aclose()
    with RedisStore(redis_url, key=redis_key) as fresh:
        app = fresh.load()["application"]
    expect_all(app, *OURS)
    assert app["old"] == 1


# -- JSON file -------------------------------------------------------------------------------


async def test_json_journal_truncated_mid_record_is_rewritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    store_it = running(FileStorageBackend(path), poll=0.05)
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS)
        cut_mid_record(Path(f"{path}.journal"), 3)  # the header, then one line per commit
        assert not holds(path, *OURS)
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            # The idle store's poll sees the journal change and finds it shorter.
            await eventually(lambda: holds(path, *OURS), "the store rewrote its state")
        assert loss_warnings(caplog), caplog.text
        await acknowledge(store, "after")
    finally:
        await store_it.aclose()
    with FileStore(path) as fresh:
        expect_all(fresh.load()["application"], *OURS, "after")


@pytest.mark.parametrize("deleted", ["snapshot", "everything"])
async def test_json_file_deleted_then_written_by_another_process_before_the_poll(
        tmp_path: Path, deleted: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    store_it = running(FileStorageBackend(path))  # never polls
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS[:5])
        unlink(*([path] if deleted == "snapshot" else state_files(tmp_path, "state.json")))
        with FileStore(path) as script, script.transaction() as state:  # `cascadeui set`
            state.setdefault("application", {})["theirs"] = 1
            state.setdefault("persistent_views", {})
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            await acknowledge(store, *OURS[5:])
        assert loss_warnings(caplog), caplog.text
    finally:
        await store_it.aclose()
    with FileStore(path) as fresh:
        app = fresh.load()["application"]
    expect_all(app, *OURS)
    assert app["theirs"] == 1


async def test_json_file_deleted_with_no_other_writer_is_written_again(
        tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store_it = running(FileStorageBackend(path), poll=0.05)
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS)
        unlink(path)
        await eventually(lambda: holds(path, *OURS), "the store wrote its state again")
        await acknowledge(store, "after")
    finally:
        await store_it.aclose()
    with FileStore(path) as fresh:
        expect_all(fresh.load()["application"], *OURS, "after")


# -- SQLite ----------------------------------------------------------------------------------


@pytest.mark.parametrize("deleted", ["db", "db+wal+shm", "db, then another writer"])
async def test_sqlite_database_deleted_while_open_is_noticed_and_rewritten(
        tmp_path: Path, deleted: str, caplog: pytest.LogCaptureFixture) -> None:
    """Before: flush() kept returning True for commits into the unlinked file."""
    db = tmp_path / "state.db"
    store_it = running(SQLiteBackend(db))
    store = await store_it.__anext__()
    other: SQLiteStore | None = None
    try:
        await acknowledge(store, *OURS[:5])
        names = ["state.db"] if deleted != "db+wal+shm" else [
            "state.db", "state.db-wal", "state.db-shm"]
        unlink(*(tmp_path / name for name in names))
        if deleted.endswith("another writer"):
            # Another process creates the file again and writes; it stays connected.
            other = SQLiteStore(db)
            with other.transaction() as state:
                state.setdefault("application", {})["theirs"] = 1
                state.setdefault("persistent_views", {})
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            await acknowledge(store, *OURS[5:])
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("deleted or replaced while this store had it open" in m
                   for m in warned), warned
    finally:
        await store_it.aclose()
    with SQLiteStore(db) as fresh:
        app = fresh.load()["application"]
    expect_all(app, *OURS)
    if other is not None:
        assert app["theirs"] == 1
        # The other writer still reads and writes the same, complete state.
        assert other.load()["application"] == app
        other.close()


# -- PostgreSQL ------------------------------------------------------------------------------


def pg(url: str, *statements: str) -> None:
    """Run ``statements`` on their own autocommit connection (another client)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def their_transactions(url: str, table: str, count: int) -> None:
    """Another process's ``count`` transactions (its connection creates the tables)."""
    with PostgresStore(url, table=table) as script:
        script.version()
        for i in range(count):
            with script.transaction() as state:
                state.setdefault("application", {})[f"theirs{i}"] = i
                state.setdefault("persistent_views", {})


#: What is done to the tables under the running store (``{t}``: the state table, ``{j}``:
#: its journal). Every commit after the first one appended a journal row.
ROW_DAMAGE = {
    "journal truncated": 'TRUNCATE "{j}"',  # PostgreSQL only: SQLite has no TRUNCATE
    "journal rows deleted": 'DELETE FROM "{j}"',
    "journal's last rows deleted": 'DELETE FROM "{j}" WHERE seq > (SELECT min(seq) FROM "{j}")',
    "snapshot row deleted": 'DELETE FROM "{t}" WHERE id = 1',
    "state table emptied": 'DELETE FROM "{t}"',
}


def row_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path
              ) -> tuple[Callable[[], AsyncBackend[Any]], Callable[[], PostgresStore | SQLiteStore],
                         Callable[[str], None], str]:
    """The backend and adapter builders of a row store (one medium), a way to run damage
    SQL as another client, and the state table's name."""
    if kind == "postgres":
        url, table = request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_table")
        return (lambda: PostgresBackend(url=url, table=table),
                lambda: PostgresStore(url, table=table), lambda q: pg(url, q), table)
    db = tmp_path / "state.db"

    def damage(statement: str) -> None:
        conn = sqlite3.connect(db)
        try:
            conn.execute(statement)
            conn.commit()
        finally:
            conn.close()

    return lambda: SQLiteBackend(db), lambda: SQLiteStore(db), damage, "cascadeui_state"


@pytest.mark.parametrize("idle", [False, True], ids=["writing", "idle"])
@pytest.mark.parametrize("how", list(ROW_DAMAGE))
@pytest.mark.parametrize("kind", kinds("rows"))
async def test_row_store_journal_or_snapshot_lost_under_a_running_store(
        kind: str, how: str, idle: bool, request: pytest.FixtureRequest, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The row-store base on both SQL media. Before, on PostgreSQL: 7 of the 8 keys were
    read as deletions (journal), or nothing was logged and the journal kept growing
    without its snapshot (snapshot row)."""
    if kind == "sqlite" and how.endswith("truncated"):
        pytest.skip("SQLite has no TRUNCATE (its DELETE case is the same)")
    backend, adapter, damage, table = row_store(kind, request, tmp_path)

    def holds(*names: str) -> bool:
        with adapter() as probe:
            try:
                app = probe.load().get("application", {})
            except StateCorruptedError:  # a journal without its snapshot: not rewritten yet
                return False
        return all(app.get(n) == n for n in names)

    store_it = running(backend(), poll=0.05 if idle else None)
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS)
        with adapter() as probe:
            assert probe.describe().extra["journal_records"] == len(OURS) - 1  # appended
        damage(ROW_DAMAGE[how].format(t=table, j=f"{table}_journal"))
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            if idle:  # the poll sees the version move (back, or negative) and looks
                await eventually(lambda: holds(*OURS), "the idle store rewrote its state")
            await acknowledge(store, "after")
        assert loss_warnings(caplog), caplog.text
        expect_all(store.state["application"], *OURS, "after")
    finally:
        await store_it.aclose()
    with adapter() as fresh:
        expect_all(fresh.load()["application"], *OURS, "after")


@pytest.mark.parametrize("their_commits", [0, 1, 30])
async def test_postgres_tables_dropped_and_created_again_under_a_running_store(
        postgres_url: str, pg_table: str, their_commits: int,
        caplog: pytest.LogCaptureFixture) -> None:
    """Another process creates the tables again (and writes): 30 commits take the version
    past this store's, so only the lineage tells."""
    store_it = running(PostgresBackend(url=postgres_url, table=pg_table))  # never polls
    store = await store_it.__anext__()
    try:
        await acknowledge(store, *OURS[:5])
        pg(postgres_url, f'DROP TABLE "{pg_table}", "{pg_table}_journal"')
        their_transactions(postgres_url, pg_table, their_commits)
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            await acknowledge(store, *OURS[5:])
        assert loss_warnings(caplog), caplog.text
    finally:
        await store_it.aclose()
    with PostgresStore(postgres_url, table=pg_table) as fresh:
        app = fresh.load()["application"]
    expect_all(app, *OURS)
    assert all(app[f"theirs{i}"] == i for i in range(their_commits)), app


@pytest.fixture
def pg_admin() -> Iterator[str]:
    """An admin URL of the PostgreSQL server (its role may create and drop databases)."""
    with started_postgres("the PostgreSQL medium-loss tests") as (admin_url, _server):
        yield admin_url


@pytest.mark.parametrize("their_commits", [0, 30])
async def test_postgres_database_dropped_and_created_again_under_a_running_store(
        pg_admin: str, their_commits: int, caplog: pytest.LogCaptureFixture) -> None:
    with scratch_database(pg_admin, prefix="cascadeui_loss_") as url:
        name = sql.Identifier(url.rsplit("/", 1)[1].split("?")[0])
        store_it = running(PostgresBackend(url=url, table="bot_state"))  # never polls
        store = await store_it.__anext__()
        try:
            await acknowledge(store, *OURS[:5])
            with psycopg.connect(pg_admin, autocommit=True, connect_timeout=5) as admin:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
                admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
            their_transactions(url, "bot_state", their_commits)
            with caplog.at_level(logging.WARNING, logger="cascadeui"):
                await acknowledge(store, *OURS[5:])
            assert loss_warnings(caplog), caplog.text
        finally:
            await store_it.aclose()
        with PostgresStore(url, table="bot_state") as fresh:
            app = fresh.load()["application"]
    expect_all(app, *OURS)
    assert all(app[f"theirs{i}"] == i for i in range(their_commits)), app


# -- loss versus a real deletion --------------------------------------------------------------


@pytest.mark.parametrize("kind", kinds("multiprocess"))
async def test_another_writers_real_deletion_still_deletes(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest,
        caplog: pytest.LogCaptureFixture) -> None:
    """A deletion committed on top of a state this store saw is a deletion, not loss:
    through a whole write (a script's transaction) and through the journal (another
    running store's append)."""

    def backend() -> AsyncBackend[Any]:
        return AsyncBackend(adapter())

    def adapter() -> Any:
        return build(kind, request, tmp_path)

    a_it = running(backend(), poll=0.05)
    a = await a_it.__anext__()
    b_it = running(backend(), poll=0.05)
    b = await b_it.__anext__()
    try:
        await acknowledge(a, "x", "y", "z")
        await eventually(lambda: b.state["application"].get("z") == "z", "b saw a's keys")
        with adapter() as script, script.transaction() as state:
            del state["application"]["x"]
        await b.dispatch(APPLICATION_DELETE, {"path": ["y"]})
        assert await b.flush()
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            await eventually(lambda: not {"x", "y"} & set(a.state["application"]),
                             "a applied both deletions")
            await acknowledge(a, "w")
        assert not loss_warnings(caplog), caplog.text
    finally:
        await b_it.aclose()
        await a_it.aclose()
    with adapter() as fresh:
        app = fresh.load()["application"]
    assert app == {"z": "z", "w": "w"}

