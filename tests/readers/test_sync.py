"""cascadeui.sync: blocking twins that work in scripts, threads and running event loops."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _registry import kinds, target
from _spawn import run, worker

from cascadeui import sync
from cascadeui._restore import setup_persistence as async_setup
from cascadeui.actions import APPLICATION_SET
from cascadeui.adapters import FileStore, SQLiteStore
from cascadeui.persistence import FileStorageBackend, RedisBackend, SQLiteBackend
from cascadeui.store import get_store, reset_store

STATE = {"application": {"scores": {1234567890123456789: 3}, "tags": {"a", "b"}},
         "persistent_views": {}}


@pytest.fixture(params=kinds())
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A path or URL string of each backend."""
    return target(request.param, request, tmp_path)


@pytest.fixture
def fresh_store() -> Iterator[None]:
    """A new process-wide store, closed (on whichever loop it persists from) afterwards."""
    reset_store()
    yield
    store = get_store()
    if store.backend is not None and sync._store_loop(store) is sync._loop.aio_loop:
        sync._loop.call(store.close, what="close")
    reset_store()


FORMS: dict[str, Callable[[str], Any]] = {
    "string": lambda u: u,
    "backend": lambda u: _backend_of(u),
    "adapter": sync.open_adapter,
}


def _backend_of(url: str) -> Any:
    from cascadeui.persistence import backend_from_url
    return backend_from_url(url)


@pytest.mark.parametrize("form", FORMS)
def test_data_operations_in_a_plain_script(url: str, form: str) -> None:
    target = FORMS[form](url)
    try:
        assert sync.save_state(target, STATE) is True
        assert sync.load_state(target) == STATE  # int keys and sets survive
        with sync.transaction(target) as state:
            state["application"]["scores"][1234567890123456789] += 1
        assert sync.load_state(url)["application"]["scores"] == {1234567890123456789: 4}
    finally:
        if form != "string":
            getattr(target, "store", target).close()


def test_migrate_storage_copies_and_verifies(tmp_path: Path, redis_url: str,
                                             redis_key: str) -> None:
    src = str(tmp_path / "old.json")
    assert sync.save_state(src, STATE)
    steps: list[tuple[int, int, str]] = []
    dst = f"{redis_url}?key={redis_key}"
    assert sync.migrate_storage(src, dst, progress=lambda *a: steps.append(a)) is True
    assert sync.load_state(dst) == STATE
    assert sync.load_state(src) == STATE  # the source is never modified
    assert [s[0] for s in steps] == [0, 1, 2, 3]
    assert steps[-1][1] == 3
    assert sync.migrate_storage(str(tmp_path / "empty.json"), dst) is False


def test_save_state_reports_a_failed_medium_as_false(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    target = str(tmp_path / "a-file" / "state.json")
    assert sync.save_state(target, STATE) is False
    assert "a-file" in caplog.text


def test_transaction_is_exclusive_across_threads(tmp_path: Path) -> None:
    url = str(tmp_path / "count.db")
    sync.save_state(url, {"application": {"n": 0}})
    adapter = SQLiteStore(url)  # one adapter shared by every thread, as a script would

    def work() -> None:
        for _ in range(10):
            with sync.transaction(adapter) as state:
                state["application"]["n"] += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    adapter.close()
    assert sync.load_state(url)["application"]["n"] == 40


def test_transaction_writes_nothing_when_the_body_raises(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    sync.save_state(str(path), STATE)

    def body() -> None:
        with sync.transaction(str(path)) as state:
            state["application"]["scores"] = {}
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert sync.load_state(str(path)) == STATE


class MemoryBackend:
    """A custom async-only backend, as the seed's StorageBackend protocol allows."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] = {}
        self.loops: set[int] = set()

    async def save_state(self, state: dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        self.loops.add(threading.get_ident())
        self.saved = dict(state)
        return True

    async def load_state(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        return dict(self.saved)


def test_custom_async_backend_runs_on_the_private_loop(tmp_path: Path) -> None:
    backend = MemoryBackend()
    assert sync.save_state(backend, STATE)
    assert sync.load_state(backend) == STATE
    assert backend.loops == {sync._loop.ident} != {threading.get_ident()}
    assert sync.migrate_storage(backend, str(tmp_path / "copy.json"))
    assert sync.load_state(str(tmp_path / "copy.json")) == STATE
    with pytest.raises(TypeError, match="not be atomic"), sync.transaction(backend):
        pass


def test_a_custom_backend_with_an_async_transaction_is_used(tmp_path: Path) -> None:
    class Locked(MemoryBackend):
        @contextlib.asynccontextmanager
        async def transaction(self) -> AsyncIterator[dict[str, Any]]:
            state = await self.load_state()
            yield state
            await self.save_state(state)

    backend = Locked()
    with sync.transaction(backend) as state:
        state["application"] = {"n": 1}
    assert backend.saved == {"application": {"n": 1}}


def test_setup_persistence_with_a_bot_points_to_the_async_api(fresh_store: None) -> None:
    with pytest.raises(ValueError, match=r"await cascadeui\.setup_persistence"):
        sync.setup_persistence(object(), file_path="unused.json")


def test_the_sync_api_works_inside_a_running_event_loop(tmp_path: Path,
                                                         fresh_store: None) -> None:
    """The Jupyter case: a thread whose asyncio loop is running calls the blocking API."""
    path = str(tmp_path / "nb.db")
    results: dict[str, Any] = {}

    async def cell() -> None:
        sync.save_state(path, STATE)
        with sync.transaction(path) as state:
            state["application"]["cell"] = True
        results["load"] = sync.load_state(path)
        results["setup"] = sync.setup_persistence(backend=path)
        results["dispatch"] = sync.dispatch(APPLICATION_SET, {"path": ["x"], "value": 1})
        results["custom"] = sync.load_state(MemoryBackend())

    thread = threading.Thread(target=asyncio.run, args=(cell(),))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert results["load"]["application"]["cell"] is True
    assert results["setup"] == {"restored": [], "skipped": [], "failed": [], "removed": []}
    assert results["dispatch"]["application"]["x"] == 1
    assert results["custom"] == {}
    # durable when dispatch returned: a fresh reader sees it without waiting
    assert sync.load_state(path)["application"]["x"] == 1


def test_dispatch_is_durable_when_it_returns(tmp_path: Path, fresh_store: None) -> None:
    path = tmp_path / "bot.json"
    sync.save_state(str(path), {"application": {"kept": 1}, "persistent_views": {}})
    result = sync.setup_persistence(file_path=path)
    assert result["failed"] == []
    assert get_store().state["application"] == {"kept": 1}
    for i in range(5):
        state = sync.dispatch(APPLICATION_SET, {"path": ["n"], "value": i})
        with FileStore(path) as reader:  # another reader, no waiting
            assert reader.load()["application"] == {"kept": 1, "n": i}
    assert state["application"]["n"] == 4


def test_dispatch_without_persistence_says_what_to_call(fresh_store: None) -> None:
    with pytest.raises(RuntimeError, match="setup_persistence"):
        sync.dispatch(APPLICATION_SET, {"path": ["x"], "value": 1})


def test_dispatch_on_the_loop_the_store_persists_on_raises(tmp_path: Path,
                                                            fresh_store: None) -> None:
    async def bot() -> None:
        await async_setup(backend=SQLiteBackend(tmp_path / "bot.db"))
        try:
            with pytest.raises(sync.LoopReentryError, match="await get_store"):
                sync.dispatch(APPLICATION_SET, {"path": ["x"], "value": 1})
        finally:
            await get_store().close()

    asyncio.run(bot())


def test_dispatch_from_another_thread_runs_on_the_bots_loop(tmp_path: Path,
                                                            fresh_store: None) -> None:
    """A bot's loop runs in one thread; a helper thread uses the blocking API."""
    ready = threading.Event()
    path = tmp_path / "bot.db"
    holder: dict[str, Any] = {}

    async def bot() -> None:
        holder["loop"], holder["done"] = asyncio.get_running_loop(), asyncio.Event()
        await async_setup(backend=SQLiteBackend(path))
        ready.set()
        await holder["done"].wait()
        await get_store().close()

    thread = threading.Thread(target=asyncio.run, args=(bot(),))
    thread.start()
    try:
        assert ready.wait(10)
        state = sync.dispatch(APPLICATION_SET, {"path": ["from_script"], "value": "yes"})
        assert state["application"]["from_script"] == "yes"
        assert sync.load_state(str(path))["application"]["from_script"] == "yes"
    finally:
        if "done" in holder:
            holder["loop"].call_soon_threadsafe(holder["done"].set)
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_calls_made_on_the_private_loop_fail_fast(fresh_store: None, tmp_path: Path) -> None:
    sync.setup_persistence(backend=str(tmp_path / "p.json"))

    async def on_private_loop() -> str:
        with pytest.raises(sync.LoopReentryError) as info:
            sync.dispatch(APPLICATION_SET, {"path": ["x"], "value": 1})
        with pytest.raises(sync.LoopReentryError):
            sync.load_state(MemoryBackend())
        return str(info.value)

    message = sync._loop.call(on_private_loop, what="test")
    assert "await" in message
    assert "private event loop" in message


def test_a_script_exits_promptly_after_using_the_store(tmp_path: Path) -> None:
    """The private loop thread never keeps the interpreter alive; writes are on disk."""
    db = tmp_path / "script.db"
    proc = run(worker("probe", "exit-promptly", db), timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert proc.stderr == ""
    assert sync.load_state(str(db))["application"] == {"done": True}


def test_targets_that_are_not_backends_are_refused() -> None:
    with pytest.raises(TypeError, match="not a storage target"):
        sync.load_state(42)


def test_backends_share_the_adapter_instead_of_a_second_connection(
        tmp_path: Path, redis_url: str, redis_key: str) -> None:
    backends = [FileStorageBackend(tmp_path / "a.json"), SQLiteBackend(tmp_path / "a.db"),
                RedisBackend(redis_url, key=redis_key)]
    for backend in backends:
        assert sync.save_state(backend, STATE)
        assert sync.load_state(backend.store) == STATE
        assert not backend.store.closed  # the caller's object stays open
        backend.store.close()
