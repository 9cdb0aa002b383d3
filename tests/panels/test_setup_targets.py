"""One entry path (issue 20): ``setup_persistence`` takes every target the sync API takes.

A path string, a ``PathLike``, a URL, a backend and a synchronous adapter all go through
the one resolver (``cascadeui._targets.resolve``), in the async and the blocking form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from cascadeui import setup_persistence, sync
from cascadeui.actions import APPLICATION_SET
from cascadeui.adapters import SQLiteStore
from cascadeui.errors import ConfigurationError
from cascadeui.persistence import FileStorageBackend, MemoryBackend
from cascadeui.store import StateStore, get_store, reset_store

pytestmark = pytest.mark.anyio

STATE = {"application": {"kept": 1}, "persistent_views": {}}

#: target form -> builder(tmp_path) of a target naming a fresh medium.
TARGETS: dict[str, Callable[[Path], Any]] = {
    "json path str": lambda d: str(d / "s.json"),
    "sqlite PathLike": lambda d: d / "s.db",
    "sqlite URL": lambda d: f"sqlite:///{d / 's.db'}",
    "memory URL": lambda d: f"memory://setup-{d.name}",
    "backend": lambda d: FileStorageBackend(d / "s.json"),
    "adapter": lambda d: SQLiteStore(d / "s.db"),
}


@pytest.mark.parametrize("form", list(TARGETS))
async def test_setup_persistence_takes_every_target_form(tmp_path: Path, form: str) -> None:
    target = await anyio.to_thread.run_sync(TARGETS[form], tmp_path)
    seed = await anyio.to_thread.run_sync(sync.save_state, target, STATE)
    assert seed
    store = StateStore()
    result = await setup_persistence(backend=target, store=store)
    assert result == {"restored": [], "skipped": [], "failed": [], "removed": []}
    assert store.state["application"] == {"kept": 1}
    await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": 2}, durable=True)
    await store.close(close_backend=True)
    found = await anyio.to_thread.run_sync(sync.load_state, _reader(tmp_path, form))
    assert found["application"] == {"kept": 1, "n": 2}


async def test_a_string_naming_no_backend_is_the_resolvers_error(tmp_path: Path) -> None:
    store = StateStore()
    with pytest.raises(ConfigurationError, match="cannot tell the backend"):
        await setup_persistence(backend=str(tmp_path / "s.txt"), store=store)
    with pytest.raises(TypeError, match="not a storage target"):
        await setup_persistence(backend=42, store=store)  # type: ignore[arg-type]
    assert store.backend is None


async def test_a_backend_built_from_a_string_is_closed_when_not_taken(tmp_path: Path) -> None:
    store = StateStore()
    await store.enable_persistence(MemoryBackend("first"), poll_interval=None)
    await setup_persistence(backend=str(tmp_path / "other.db"), store=store)  # ignored
    assert isinstance(store.backend, MemoryBackend)
    await store.close()


@pytest.mark.parametrize("form", ["json path str", "sqlite PathLike", "backend", "adapter"])
def test_the_blocking_form_takes_the_same_targets(tmp_path: Path, form: str) -> None:
    reset_store()
    target = TARGETS[form](tmp_path)
    sync.save_state(target, STATE)
    try:
        sync.setup_persistence(backend=target)
        assert get_store().state["application"] == {"kept": 1}
        sync.dispatch(APPLICATION_SET, {"path": ["n"], "value": 3})
    finally:
        store = get_store()
        if store.backend is not None:
            sync._loop.call(functools.partial(store.close, close_backend=True), what="close")
        reset_store()
    assert sync.load_state(_reader(tmp_path, form))["application"] == {"kept": 1, "n": 3}


def _reader(directory: Path, form: str) -> str:
    """A string naming the medium of ``TARGETS[form]`` (a reader built from it is closed)."""
    target = TARGETS[form]
    if form.startswith(("sqlite", "adapter")):
        return str(directory / "s.db")
    if form == "memory URL":
        return str(target(directory))
    return str(directory / "s.json")
