"""Backup names of a schema migration are never taken from an unrelated state, and a
private memory store cannot be joined by its generated name (issue 21 items 12-13)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _registry import kinds

from cascadeui.adapters import BaseStore, MemoryStore
from cascadeui.errors import MigrationError
from cascadeui.migrations import migrate_adapter

V0: dict[str, Any] = {"application": {"motd": "hi"}, "persistent_views": {}}
UNRELATED: dict[str, Any] = {"application": {"someone": "else's"}, "persistent_views": {}}


def _to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "application": {"renamed": doc["application"]["motd"]}}


def _fails(doc: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("step bug")


def _backup_of(adapter: BaseStore) -> BaseStore:
    backup = adapter.companion("v0")
    assert backup is not None
    return backup


@pytest.mark.parametrize("kind", kinds())
def test_a_backup_name_holding_an_unrelated_state_is_refused(
        kind: str, new_store: Callable[[str], BaseStore]) -> None:
    adapter = new_store(kind)
    adapter.save(V0)
    with _backup_of(adapter) as taken:
        taken.save(UNRELATED)
    with pytest.raises(MigrationError, match="already holds another state"):
        migrate_adapter(adapter, 1, {1: _to_v1})
    assert adapter.load() == V0  # nothing migrated
    with _backup_of(adapter) as taken:
        assert taken.load() == UNRELATED  # nothing overwritten
        taken.save({})
        if kind == "memory":
            MemoryStore.forget(str(getattr(taken, "name", "")))


@pytest.mark.parametrize("kind", kinds())
def test_a_retry_after_a_failed_step_reuses_its_own_backup(
        kind: str, new_store: Callable[[str], BaseStore]) -> None:
    adapter = new_store(kind)
    adapter.save(V0)
    with pytest.raises(MigrationError, match="version 1"):
        migrate_adapter(adapter, 1, {1: _fails})
    plan = migrate_adapter(adapter, 1, {1: _to_v1})
    assert plan.written
    assert adapter.load()["application"]["renamed"] == "hi"
    with _backup_of(adapter) as backup:
        assert backup.load() == V0
        if kind == "memory":
            MemoryStore.forget(str(getattr(backup, "name", "")))


def test_a_private_memory_store_cannot_be_joined_by_its_generated_name() -> None:
    private = MemoryStore()
    private.save({"application": {"secret": 1}})
    joined = MemoryStore(private.name)
    try:
        assert joined.load() == {}
        assert private.load() == {"application": {"secret": 1}}
    finally:
        private.close()
        joined.close()
        MemoryStore.forget(private.name)
