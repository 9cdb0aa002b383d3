"""The persistence engine of StateStore against real backends (file, SQLite, Redis)."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import pytest
from _helpers import started_redis_server
from _registry import kinds, target
from _spawn import run, worker
from kit.redis_server import RedisServer

from cascadeui._backends import FileStorageBackend, RedisBackend, SQLiteBackend
from cascadeui._engine import Timing
from cascadeui.actions import APPLICATION_DELETE, APPLICATION_SET, PERSISTENT_VIEW_REGISTERED
from cascadeui.errors import (
    ConfigurationError,
    PersistenceError,
    SerializationError,
    StateCorruptedError,
    StorageUnavailableError,
    StoreClosedError,
)
from cascadeui.persistence import backend_from_url
from cascadeui.store import Action, State, StateStore

pytestmark = pytest.mark.anyio
T = TypeVar("T")



class CountingBackend(FileStorageBackend):
    """A real JSON file backend that records every save and can be slowed or made to fail."""

    def __init__(self, path: Path, *, delay: Callable[[], float] = lambda: 0.0,
                 fail_first: int = 0, fail_with: BaseException | None = None) -> None:
        super().__init__(path)
        self.snapshots: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.delay = delay
        self.fail_first = fail_first
        self.fail_with = fail_with
        self.in_flight = 0
        self.max_in_flight = 0

    async def save_state(self, state: Mapping[str, Any]) -> bool:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.snapshots.append(dict(state))
            self.times.append(asyncio.get_running_loop().time())
            await asyncio.sleep(self.delay())
            if len(self.snapshots) <= self.fail_first:
                if self.fail_with is not None:
                    raise self.fail_with
                return False
            return await super().save_state(state)
        finally:
            self.in_flight -= 1


async def off_loop(factory: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Build a backend in a worker thread: adapters may touch the disk when constructed."""
    return await anyio.to_thread.run_sync(functools.partial(factory, *args, **kwargs))


async def stored_at(path: Path) -> dict[str, Any]:
    """What a fresh reader finds in the JSON file at ``path``."""
    reader = await off_loop(FileStorageBackend, path)
    return await reader.load_state()


def persisted(state: State) -> dict[str, Any]:
    return {"application": state["application"],
            "persistent_views": state["persistent_views"]}


async def wait_for(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    """Bounded poll: fails the test instead of hanging."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def store() -> AsyncIterator[StateStore]:
    s = StateStore()
    yield s
    await s.close()


@pytest.fixture(params=kinds())
def make_backend(request: pytest.FixtureRequest,
                 tmp_path: Path) -> Iterator[Callable[[], Awaitable[Any]]]:
    """A factory of fresh backend objects on one real medium (a second one = a restart)."""
    made: list[Any] = []
    where = target(request.param, request, tmp_path)

    async def make() -> Any:
        backend = await off_loop(backend_from_url, where)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.store.close()


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis server of its own for outage tests (stopped at teardown).

    It keeps its port, so a test may ``stop()`` it and ``start()`` it again.
    """
    server = started_redis_server("the outage test", workdir=tmp_path)
    try:
        yield server
    finally:
        server.close()


async def test_changes_are_written_without_asking_and_survive_a_restart(
        make_backend: Callable[[], Awaitable[Any]]) -> None:
    store = StateStore()
    await store.enable_persistence((await make_backend()), debounce=0.01)
    await store.dispatch(APPLICATION_SET, {"path": ["guilds", "1"], "value": {"n": {1, 2}}})
    await store.dispatch(PERSISTENT_VIEW_REGISTERED, {
        "state_key": "p", "class_name": "Panel", "message_id": "1", "channel_id": "2",
        "guild_id": "3", "user_id": None})
    reader = (await make_backend())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while (await reader.load_state()) != persisted(store.state):  # no flush: automatic
        assert loop.time() < deadline, "the change was never written"
        await asyncio.sleep(0.01)
    stored = await reader.load_state()
    assert set(stored) == {"application", "persistent_views"}  # never transient slices
    await store.close()

    restarted = StateStore()
    await restarted.enable_persistence(await make_backend())
    assert persisted(restarted.state) == persisted(store.state)
    assert restarted.state["views"] == {}
    assert restarted.state["sessions"] == {}
    await restarted.close()


async def test_rapid_dispatches_are_coalesced(tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json")
    await store.enable_persistence(backend, debounce=0.05, max_delay=1.0)
    for i in range(300):
        await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": i})
    assert await store.flush()
    assert len(backend.snapshots) <= 3, len(backend.snapshots)
    assert (await stored_at(tmp_path / "s.json"))["application"] == {
        "n": 299}


async def test_debounce_writes_after_quiet_period(tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json")
    await store.enable_persistence(backend, debounce=0.08, max_delay=1.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
    await wait_for(lambda: len(backend.snapshots) == 1)
    assert backend.times[0] - start >= 0.07
    await asyncio.sleep(0.1)
    assert len(backend.snapshots) == 1  # nothing new: no second write


async def test_max_delay_bounds_the_age_of_unsaved_changes(
        tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json")
    await store.enable_persistence(backend, debounce=0.05, max_delay=0.15)
    loop = asyncio.get_running_loop()
    start = loop.time()
    # A change every 10 ms never leaves 50 ms of quiet: only max_delay can trigger writes.
    while loop.time() - start < 0.8:
        await store.dispatch(APPLICATION_SET, {"path": ["t"], "value": loop.time()})
        await asyncio.sleep(0.01)
    assert len(backend.snapshots) >= 3, backend.times
    assert backend.times[0] - start < 0.5
    gaps = [b - a for a, b in zip(backend.times, backend.times[1:], strict=False)]
    assert max(gaps) < 0.5, gaps  # 0.15 s plus the write itself, with slack for a busy box


async def test_no_write_when_no_persisted_slice_changed(
        tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json")

    def open_view(action: Action, state: State) -> State:
        return {**state, "views": {**state["views"], action["payload"]: {"live": True}}}

    store.register_reducer("VIEW_OPENED", open_view)
    await store.enable_persistence(backend, debounce=0.0)
    for i in range(20):
        await store.dispatch("VIEW_OPENED", f"v{i}")
        await store.dispatch("NOT_HANDLED")
    await store.dispatch(APPLICATION_DELETE, {"path": ["absent"]})
    assert await store.flush()
    await asyncio.sleep(0.05)
    assert backend.snapshots == []
    assert len(store.state["views"]) == 20


async def test_transient_slices_are_never_written(tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json")

    def touch_both(action: Action, state: State) -> State:
        return {**state, "views": {"v": 1}, "sessions": {"s": 1},
                "application": {"a": action["payload"]}}

    store.register_reducer("BOTH", touch_both)
    await store.enable_persistence(backend, debounce=0.0)
    await store.dispatch("BOTH", 1)
    assert await store.flush()
    assert [set(s) for s in backend.snapshots] == [{"application", "persistent_views"}]
    assert all(type(s) is dict for s in backend.snapshots)
    on_disk = (tmp_path / "s.json").read_text()
    assert '"views"' not in on_disk
    assert '"sessions"' not in on_disk


async def test_writes_are_strictly_ordered_under_a_slow_backend(
        tmp_path: Path, store: StateStore) -> None:
    rng = random.Random(7)
    backend = await off_loop(CountingBackend, tmp_path / "s.json",
                             delay=lambda: rng.uniform(0, 0.02))
    await store.enable_persistence(backend, debounce=0.0, max_delay=0.0)
    for i in range(60):
        await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": i})
        if i % 7 == 0:
            await asyncio.sleep(rng.uniform(0, 0.01))
    assert await store.flush()
    written = [s["application"]["n"] for s in backend.snapshots]
    assert written == sorted(set(written)), written  # strictly increasing, no repeats
    assert written[-1] == 59
    assert backend.max_in_flight == 1
    stored = await stored_at(tmp_path / "s.json")
    assert stored["application"]["n"] == 59


async def test_failed_writes_are_retried_with_backoff(
        tmp_path: Path, store: StateStore, caplog: pytest.LogCaptureFixture) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json", fail_first=4)
    await store.enable_persistence(backend, debounce=0.0, retry_initial=0.02, retry_max=0.05)
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
    await wait_for(lambda: len(backend.snapshots) == 2)
    await store.dispatch(APPLICATION_SET, {"path": ["b"], "value": 2})  # while failing
    await wait_for(lambda: len(backend.snapshots) == 5)
    gaps = [b - a for a, b in zip(backend.times, backend.times[1:], strict=False)]
    # 20 ms, 40 ms, then capped at 50 ms (with scheduling slack).
    assert gaps[0] >= 0.015, gaps
    assert gaps[1] >= 0.035, gaps
    assert gaps[2] >= 0.045, gaps
    assert max(gaps) < 1.0, gaps  # capped (slack for a busy machine)
    assert await store.flush()
    assert backend.snapshots[-1]["application"] == {"a": 1, "b": 2}  # nothing dropped
    assert store.last_write_error is None
    stored = await stored_at(tmp_path / "s.json")
    assert stored["application"] == {"a": 1, "b": 2}
    assert "save_state returned False" in caplog.text
    assert "retrying" in caplog.text


async def test_raising_backend_is_logged_with_reason_and_retried(
        tmp_path: Path, store: StateStore, caplog: pytest.LogCaptureFixture) -> None:
    failure = StorageUnavailableError("disk on fire")
    backend = await off_loop(CountingBackend, tmp_path / "s.json", fail_first=2, fail_with=failure)
    await store.enable_persistence(backend, debounce=0.0, retry_initial=0.01)
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
    assert not await store.flush()  # the first attempt fails: flush says so
    assert store.last_write_error is failure
    await wait_for(lambda: len(backend.snapshots) >= 3)
    assert await store.flush()
    assert "disk on fire" in caplog.text


@pytest.mark.parametrize("failure", [
    StateCorruptedError("garbled reply", location="x"),
    ConfigurationError("the server refused the option"),
    StoreClosedError("closed under us"),
    StorageUnavailableError("gone"),
], ids=lambda e: type(e).__name__)
async def test_every_persistence_error_but_bad_data_is_a_retried_storage_failure(
        tmp_path: Path, store: StateStore, failure: PersistenceError) -> None:
    # StateCorruptedError and ConfigurationError are ValueErrors: they must not be taken
    # for bad data (rejected until the data changes); only SerializationError is.
    backend = await off_loop(CountingBackend, tmp_path / "s.json", fail_first=2,
                             fail_with=failure)
    await store.enable_persistence(backend, debounce=0.0, retry_initial=0.01)
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
    assert not await store.flush()
    assert store.last_write_error is failure  # its real type, for the caller to inspect
    await wait_for(lambda: len(backend.snapshots) >= 3)  # retried by itself
    assert await store.flush()
    assert store.last_write_error is None
    assert (await stored_at(tmp_path / "s.json"))["application"] == {"a": 1}


def test_retry_delays_double_up_to_the_cap_with_bounded_jitter() -> None:
    timing = Timing(0.0, 0.0, retry_initial=0.1, retry_max=1.0)
    for failures, nominal in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (80, 1.0)]:
        draws = [timing.backoff(failures) for _ in range(200)]
        assert all(base == pytest.approx(nominal) for base, _ in draws)
        jitters = [jitter for _, jitter in draws]
        assert all(0.0 <= j <= 0.25 * nominal + 1e-12 for j in jitters)
        assert len(set(jitters)) > 100  # spread out, not in step


async def test_flush_interrupts_backoff_and_reports_failure(
        tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json", fail_first=2)
    await store.enable_persistence(backend, debounce=10.0, max_delay=10.0,
                                   retry_initial=10.0)
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
    assert not await store.flush()  # written now despite the 10 s debounce; it failed
    assert not await store.flush()  # written now despite the 10 s backoff; failed again
    assert await store.flush()
    assert len(backend.snapshots) == 3


async def test_flush_when_nothing_changed_writes_nothing(
        tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json")
    assert not await store.flush()  # persistence off: nothing is durable
    await store.enable_persistence(backend)
    assert await store.flush()
    assert backend.snapshots == []


async def test_flush_covers_changes_made_during_a_write(
        tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json", delay=lambda: 0.05)
    await store.enable_persistence(backend, debounce=0.0)
    await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": 1})
    await wait_for(lambda: backend.in_flight == 1)
    await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": 2})
    assert await store.flush()
    assert backend.snapshots[-1]["application"] == {"n": 2}


async def test_unserializable_data_is_surfaced_and_the_writer_survives(
        tmp_path: Path, store: StateStore, caplog: pytest.LogCaptureFixture) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json")
    await store.enable_persistence(backend, debounce=0.0)
    await store.dispatch(APPLICATION_SET, {"path": ["ok"], "value": 1})
    assert await store.flush()
    # APPLICATION_SET refuses such a value at dispatch now (tests/store/
    # test_unstorable_values.py); a reducer of the application's own can still put one
    # in, and the writer is what must refuse it then.
    store.register_reducer("PUT_RAW", lambda action, state: {
        **state, "application": {**state["application"], "bad": object()}})
    await store.dispatch("PUT_RAW")
    with pytest.raises(SerializationError, match="bad"):
        await store.flush()
    with pytest.raises(SerializationError):  # still rejected, not retried in a loop
        await store.flush()
    attempts = len(backend.snapshots)
    await asyncio.sleep(0.05)
    assert len(backend.snapshots) == attempts
    stored = await stored_at(tmp_path / "s.json")
    assert stored["application"] == {"ok": 1}  # the previous durable state is kept
    assert "cannot be stored" in caplog.text
    await store.dispatch(APPLICATION_DELETE, {"path": ["bad"]})
    await store.dispatch(APPLICATION_SET, {"path": ["later"], "value": 2})
    assert await store.flush()  # the writer is still alive
    stored = await stored_at(tmp_path / "s.json")
    assert stored["application"] == {"ok": 1, "later": 2}


async def test_batch_is_one_persistence_step(tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json")
    await store.enable_persistence(backend, debounce=0.0, max_delay=0.0)
    async with store.batch():
        for i in range(5):
            await store.dispatch(APPLICATION_SET, {"path": [f"k{i}"], "value": i})
            await asyncio.sleep(0.02)  # far longer than debounce and max_delay
        assert backend.snapshots == []
    await wait_for(lambda: len(backend.snapshots) == 1)
    assert await store.flush()
    assert len(backend.snapshots) == 1
    assert backend.snapshots[0]["application"] == {f"k{i}": i for i in range(5)}


async def test_close_flushes_the_last_change_and_is_idempotent(
        make_backend: Callable[[], Awaitable[Any]]) -> None:
    store = StateStore()
    await store.enable_persistence((await make_backend()), debounce=30.0, max_delay=60.0)
    await store.dispatch(APPLICATION_SET, {"path": ["last"], "value": "words"})
    await store.close()
    await store.close()
    assert store.backend is None
    assert (await (await make_backend()).load_state())["application"] == {"last": "words"}
    await store.dispatch(APPLICATION_SET, {"path": ["after"], "value": 1})  # memory only
    assert (await (await make_backend()).load_state())["application"] == {"last": "words"}


async def test_close_with_a_dead_backend_logs_and_returns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore()
    backend = await off_loop(CountingBackend, tmp_path / "s.json", fail_first=100)
    await store.enable_persistence(backend, debounce=30.0)
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
    await asyncio.wait_for(store.close(), 2)
    assert "unsaved changes" in caplog.text
    assert store.backend is None


@pytest.mark.parametrize("garbage", [b"{not json", b"[1, 2, 3]", b'{"application": 5}'])
async def test_unreadable_state_raises_and_enables_nothing(
        tmp_path: Path, store: StateStore, garbage: bytes) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(garbage)
    await store.dispatch(APPLICATION_SET, {"path": ["in_memory"], "value": 1})
    before = store.state
    with pytest.raises(StateCorruptedError):
        await store.enable_persistence(await off_loop(FileStorageBackend, path), debounce=0.0)
    assert store.backend is None
    assert store.state is before
    await store.dispatch(APPLICATION_SET, {"path": ["x"], "value": 2})
    assert not await store.flush()
    await asyncio.sleep(0.03)
    assert path.read_bytes() == garbage  # never overwritten by an empty store


async def test_unreadable_sqlite_file_raises(tmp_path: Path, store: StateStore) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateCorruptedError):
        await store.enable_persistence(await off_loop(SQLiteBackend, path))
    assert store.backend is None


async def test_unreachable_redis_raises_and_enables_nothing(store: StateStore) -> None:
    backend = RedisBackend("redis://127.0.0.1:9/0", key="x", socket_timeout=0.5)
    with pytest.raises(StorageUnavailableError):
        await store.enable_persistence(backend)
    assert store.backend is None
    backend.store.close()


async def test_memory_data_kept_when_backend_is_empty_and_stale_keys_dropped(
        tmp_path: Path, store: StateStore) -> None:
    path = tmp_path / "s.json"
    legacy = await off_loop(FileStorageBackend, path)
    assert await legacy.save_state({
        "persistent_views": {"p": {"class_name": "P"}},
        "views": {"stale": 1}})  # what pycascadeui 2.x left behind
    await store.dispatch(APPLICATION_SET, {"path": ["defaults"], "value": True})
    await store.enable_persistence(await off_loop(FileStorageBackend, path), debounce=0.0)
    assert store.state["application"] == {"defaults": True}  # not stored: kept
    assert store.state["persistent_views"] == {"p": {"class_name": "P"}}
    assert store.state["views"] == {}
    assert await store.flush()
    assert await stored_at(path) == {
        "application": {"defaults": True}, "persistent_views": {"p": {"class_name": "P"}}}


async def test_enable_twice(tmp_path: Path, store: StateStore) -> None:
    backend = await off_loop(FileStorageBackend, tmp_path / "a.json")
    await store.enable_persistence(backend)
    await store.enable_persistence(backend)  # same backend: harmless
    await store.enable_persistence(await off_loop(FileStorageBackend, tmp_path / "a.json"))
    assert store.backend is backend  # same class on the same file: harmless too
    with pytest.raises(RuntimeError, match="already enabled"):
        await store.enable_persistence(
            await off_loop(FileStorageBackend, tmp_path / "b.json"))
    other = StateStore()
    with pytest.raises(ValueError, match=">= 0"):
        await other.enable_persistence(backend, debounce=-1.0)
    assert other.backend is None


async def test_writer_survives_an_unexpected_backend_exception(
        tmp_path: Path, store: StateStore, caplog: pytest.LogCaptureFixture) -> None:
    backend = await off_loop(CountingBackend, tmp_path / "s.json", fail_first=1,
                              fail_with=RuntimeError("dictionary changed size"))
    await store.enable_persistence(backend, debounce=0.0, retry_initial=0.01)
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
    await wait_for(lambda: len(backend.snapshots) == 2)
    assert await store.flush()
    assert "dictionary changed size" in caplog.text


async def test_redis_outage_is_survived(restartable_redis: RedisServer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """A real Redis server stops and comes back on the same port: nothing is lost."""
    caplog.set_level(logging.ERROR)
    server = restartable_redis
    backend = RedisBackend(server.url, key="outage", socket_timeout=0.3)
    store = StateStore()
    try:
        await store.enable_persistence(backend, debounce=0.0, retry_initial=0.05,
                                       retry_max=0.2)
        await store.dispatch(APPLICATION_SET, {"path": ["before"], "value": 1})
        assert await store.flush()
        server.stop()
        await store.dispatch(APPLICATION_SET, {"path": ["during"], "value": 2})
        assert not await store.flush()
        assert "retrying" in caplog.text
        server.start()  # fresh, empty server: the dirty state must still be written
        await wait_for(lambda: store.last_write_error is None, limit=5)
        assert await store.flush()
        assert (await backend.load_state())["application"] == {"before": 1, "during": 2}
    finally:
        await store.close()
        backend.store.close()


def test_last_action_before_exit_is_durable_across_processes(tmp_path: Path) -> None:
    """A real restart: one process dispatches and closes; a second one restores."""
    db = tmp_path / "state.db"
    run(worker("probe", "restart-write", db), check=True, timeout=60)
    reader = SQLiteBackend(db)
    try:
        assert reader.store.load()["application"] == {"n": 99}
    finally:
        reader.store.close()


def test_store_outlives_its_event_loop(tmp_path: Path) -> None:
    """Scripts run one asyncio.run after another on the process-wide store."""
    path = tmp_path / "s.json"
    store = StateStore()

    async def first() -> None:
        await store.enable_persistence(FileStorageBackend(path), debounce=30.0)
        await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
        # the loop ends with the change unsaved and the writer task cancelled

    async def second() -> bool:
        await store.dispatch(APPLICATION_SET, {"path": ["b"], "value": 2})
        ok = await store.flush()
        await store.close()
        return ok

    asyncio.run(first())
    assert asyncio.run(second())
    assert FileStorageBackend(path).store.load()["application"] == {"a": 1, "b": 2}


async def test_restore_is_announced_and_not_written_back(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    seed = await off_loop(FileStorageBackend, path)
    assert await seed.save_state({"application": {"kept": 1}, "persistent_views": {}})
    store = StateStore()
    seen: list[Action] = []
    store.subscribe(lambda state, action: seen.append(action), action_types=["STATE_RESTORED"])
    backend = await off_loop(CountingBackend, path)
    await store.enable_persistence(backend, debounce=0.0)
    try:
        assert [a["payload"]["state"]["application"] for a in seen] == [{"kept": 1}]
        await asyncio.sleep(0.05)
        assert await store.flush()
        assert backend.snapshots == []  # what was just loaded is already durable
    finally:
        await store.close()
