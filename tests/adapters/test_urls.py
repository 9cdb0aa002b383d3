"""``backend_from_url`` and ``migrate_storage`` (issue 2)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from cascadeui.adapters import FileStore, SQLiteStore
from cascadeui.errors import ConfigurationError, StateCorruptedError
from cascadeui.persistence import (
    FileStorageBackend,
    RedisBackend,
    SQLiteBackend,
    StateSerializer,
    backend_from_url,
    migrate_storage,
)

pytestmark = pytest.mark.anyio

STATE: dict[str, Any] = {"application": {"scores": {123: 4}, "seen": {"a"}, "t": (1, 2)},
                         "persistent_views": {"v1": {"class": "Panel"}}}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _exists(path: Path) -> bool:
    return path.exists()


# -- backend_from_url ----------------------------------------------------------------------


@pytest.mark.parametrize(("form", "kind"), [
    ("{d}/state.json", FileStorageBackend),
    ("file://{d}/state.json", FileStorageBackend),
    ("{d}/STATE.JSON", FileStorageBackend),
    ("sqlite:///{d}/state.db", SQLiteBackend),
    ("{d}/state.db", SQLiteBackend),
    ("{d}/state.sqlite", SQLiteBackend),
    ("{d}/state.sqlite3", SQLiteBackend),
])
async def test_file_and_sqlite_forms(form: str, kind: type, tmp_path: Path) -> None:
    backend = backend_from_url(form.format(d=tmp_path))
    assert type(backend) is kind
    async with backend:
        assert await backend.save_state(STATE) is True
        assert await backend.load_state() == STATE
    name = form.rsplit("/", 1)[1]
    assert (tmp_path / name).exists()


def test_pathlike_and_relative_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert isinstance(backend_from_url(Path("x.json")), FileStorageBackend)
    rel = backend_from_url("sqlite:///rel.db")
    assert isinstance(rel, SQLiteBackend)
    assert rel.db_path == str(tmp_path / "rel.db")
    absolute = backend_from_url(f"sqlite:///{tmp_path}/abs.db")
    assert absolute.store.path == str(tmp_path / "abs.db")
    spaced = backend_from_url(f"file://{tmp_path}/with%20space.json")
    assert spaced.store.path == tmp_path / "with space.json"


async def test_redis_form_with_key_and_ttl(redis_url: str, redis_key: str) -> None:
    backend = backend_from_url(f"{redis_url}?key={redis_key}&ttl=60")
    assert isinstance(backend, RedisBackend)
    assert (backend.key, backend.ttl) == (redis_key, 60)
    assert "key=" not in backend.url  # our options are not passed to redis-py
    async with backend:
        assert await backend.save_state(STATE) is True
        assert await backend.load_state() == STATE
    default = backend_from_url("redis://localhost:6390/2")
    assert (default.key, default.ttl) == ("cascadeui:state", None)
    await default.aclose()


@pytest.mark.parametrize(("url", "match"), [
    ("ftp://host/x.json", "unsupported URL scheme 'ftp'"),
    ("mysql://u:p@h/db", "unsupported URL scheme"),
    ("state.txt", "cannot tell the backend"),
    ("state", "cannot tell the backend"),
    ("sqlite://", "sqlite:///"),
    ("sqlite://host/x.db", "sqlite:///"),
    ("redis://localhost/0?ttl=soon", "whole seconds"),
    ("redis://localhost/0?ttl=-5", "positive"),
    ("redis://localhost/0?key=", "key"),
])
def test_bad_urls_raise_configuration_error(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        backend_from_url(url)
    assert isinstance(info.value, ValueError)


# -- migrate_storage -----------------------------------------------------------------------


async def test_migrate_between_builtins_leaves_source_untouched(
        tmp_path: Path, redis_url: str, redis_key: str) -> None:
    src_path = tmp_path / "old.json"
    await anyio.to_thread.run_sync(FileStore(src_path).save, STATE)
    before = src_path.read_bytes()
    source = FileStorageBackend(src_path)
    sqlite = SQLiteBackend(tmp_path / "new.db")
    redis_b = RedisBackend(redis_url, key=redis_key)
    async with source, sqlite, redis_b:
        assert await migrate_storage(source=source, target=sqlite) is True
        assert await sqlite.load_state() == STATE
        assert await migrate_storage(sqlite, redis_b) is True
        assert await redis_b.load_state() == STATE
        assert await migrate_storage(redis_b, FileStorageBackend(tmp_path / "back.json"))
    assert src_path.read_bytes() == before
    assert not _exists(Path(f"{src_path}.bak"))  # the source was never written
    assert await anyio.to_thread.run_sync(FileStore(tmp_path / "back.json").load) == STATE


async def test_migrate_accepts_sync_adapters_and_custom_backends(tmp_path: Path) -> None:
    class Memory:
        def __init__(self) -> None:
            self.saved: list[str] = []
            self.ser = StateSerializer()

        async def save_state(self, state: dict[str, Any]) -> bool:
            self.saved.append(self.ser.serialize(state))
            return True

        async def load_state(self) -> dict[str, Any]:
            return self.ser.deserialize(self.saved[-1]) if self.saved else {}

    custom = Memory()
    store = SQLiteStore(tmp_path / "a.db")
    await anyio.to_thread.run_sync(store.save, STATE)
    assert await migrate_storage(store, custom) is True
    assert await custom.load_state() == STATE
    assert await migrate_storage(custom, FileStore(tmp_path / "b.json")) is True
    assert await anyio.to_thread.run_sync(FileStore(tmp_path / "b.json").load) == STATE
    await anyio.to_thread.run_sync(store.close)


async def test_migrate_returns_false_when_source_is_empty(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target_path = tmp_path / "t.json"
    async with FileStorageBackend(tmp_path / "none.json") as src, \
            FileStorageBackend(target_path) as dst:
        with caplog.at_level(logging.INFO, logger="cascadeui"):
            assert await migrate_storage(src, dst) is False
    assert not target_path.exists()
    assert not (tmp_path / "none.json").exists()
    assert "no state" in caplog.text


async def test_migrate_returns_false_when_target_fails(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite " * 100)
    async with FileStorageBackend(tmp_path / "s.json") as src, SQLiteBackend(junk) as dst:
        await src.save_state(STATE)
        assert await migrate_storage(src, dst) is False


async def test_migrate_returns_false_when_read_back_differs(tmp_path: Path) -> None:
    class Lossy:
        async def save_state(self, state: dict[str, Any]) -> bool:
            return True

        async def load_state(self) -> dict[str, Any]:
            return {"something": "else"}

    async with FileStorageBackend(tmp_path / "s.json") as src:
        await src.save_state(STATE)
        assert await migrate_storage(src, Lossy()) is False


async def test_migrate_raises_for_unreadable_source(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    async with FileStorageBackend(bad, backups=0) as src, \
            SQLiteBackend(tmp_path / "t.db") as dst:
        with pytest.raises(StateCorruptedError):
            await migrate_storage(src, dst)
        assert await dst.load_state() == {}
    assert bad.read_text() == "{"


def test_migrate_rejects_non_backends() -> None:
    with pytest.raises(TypeError, match="not a storage backend"):
        anyio.run(migrate_storage, object(), object())
