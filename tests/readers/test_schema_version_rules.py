"""The schema version's rules, the same everywhere (issue 23 items 9-11, issue 21 item 9):
no store made by ``migrate-schema`` on a missing target, one rule for keys above the
target version, a WARNING (or with ``strict_version`` a refusal) for an unversioned start
on a versioned state, and a version user code cannot delete."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from _registry import kinds
from _spawn import module

from cascadeui import sync
from cascadeui.actions import APPLICATION_DELETE, APPLICATION_SET, SCHEMA_KEY
from cascadeui.adapters import BaseStore
from cascadeui.errors import SchemaVersionError
from cascadeui.store import StateStore

CALLS: list[int] = []


def _step(n: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def step(doc: dict[str, Any]) -> dict[str, Any]:
        CALLS.append(n)
        return {**doc, "application": {**doc["application"], f"v{n}": True}}
    return step


#: One dict shared across releases: release 2 ships it with the step to 3 already in.
SHARED = {1: _step(1), 2: _step(2), 3: _step(3)}
MODULE = ("def step(n):\n"
          "    return lambda doc: {**doc, 'application': {**doc['application'], f'v{n}': True}}\n"
          "MIGRATIONS = {1: step(1), 2: step(2), 3: step(3)}\n")


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*module("cascadeui"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("name", ["missing.json", "missing.db"])
def test_migrate_schema_on_a_missing_target_creates_nothing(tmp_path: Path,
                                                            name: str) -> None:
    (tmp_path / "bot_migrations.py").write_text(MODULE)
    proc = _cli(tmp_path, "migrate-schema", name, "--to", "1", "--migrations",
                "bot_migrations")
    assert proc.returncode == 1, proc.stderr
    assert "no state stored here" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == [
        "bot_migrations.py"]


def test_migrate_schema_to_a_negative_version_is_a_usage_error(tmp_path: Path) -> None:
    sync.save_state(str(tmp_path / "s.json"), {"application": {"a": 1}})
    (tmp_path / "bot_migrations.py").write_text(MODULE)
    proc = _cli(tmp_path, "migrate-schema", "s.json", "--to", "-1", "--migrations",
                "bot_migrations")
    assert proc.returncode == 2, proc.stderr
    assert "--to must be a schema version >= 0" in proc.stderr


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.anyio
async def test_keys_above_the_target_are_ignored_by_start_sync_and_cli(
        kind: str, new_store: Callable[[str], BaseStore], tmp_path: Path) -> None:
    adapter = new_store(kind)
    await anyio.to_thread.run_sync(adapter.save, {"application": {"a": 1}})
    CALLS.clear()
    store = StateStore()
    await store.enable_persistence(adapter, version=1, migrations=SHARED)
    await store.close()
    assert CALLS == [1]
    plan = await anyio.to_thread.run_sync(
        lambda: sync.migrate_schema(adapter, 2, SHARED))
    assert plan.written
    assert CALLS == [1, 2]
    assert (await anyio.to_thread.run_sync(adapter.load))["application"][SCHEMA_KEY] == 2


def test_the_cli_follows_the_same_rule(tmp_path: Path) -> None:
    sync.save_state(str(tmp_path / "s.db"), {"application": {"a": 1}})
    (tmp_path / "bot_migrations.py").write_text(MODULE)
    proc = _cli(tmp_path, "migrate-schema", "s.db", "--to", "2", "--migrations",
                "bot_migrations", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["to_version"] == 2
    app = sync.load_state(str(tmp_path / "s.db"))["application"]
    assert app == {"a": 1, "v1": True, "v2": True, SCHEMA_KEY: 2}


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.anyio
async def test_an_unversioned_start_on_a_versioned_state_warns_or_refuses(
        kind: str, new_store: Callable[[str], BaseStore],
        caplog: pytest.LogCaptureFixture) -> None:
    adapter = new_store(kind)
    document = {"application": {"a": 1, SCHEMA_KEY: 3}}
    await anyio.to_thread.run_sync(adapter.save, document)
    strict = StateStore()
    with pytest.raises(SchemaVersionError, match="schema version 3") as info:
        await strict.enable_persistence(adapter, strict_version=True)
    assert info.value.stored == 3
    assert strict.backend is None  # nothing enabled
    store = StateStore()
    with caplog.at_level(logging.WARNING, logger="cascadeui.migrations"):
        await store.enable_persistence(adapter)
    await store.close()
    assert any("schema version 3" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_sync_setup_persistence_takes_strict_version(tmp_path: Path) -> None:
    target = str(tmp_path / "s.json")
    sync.save_state(target, {"application": {SCHEMA_KEY: 2}})
    from cascadeui.store import reset_store

    reset_store()
    try:
        with pytest.raises(SchemaVersionError, match="strict_version"):
            sync.setup_persistence(backend=target, strict_version=True)
    finally:
        reset_store()


@pytest.mark.anyio
async def test_user_code_cannot_delete_the_schema_version(
        new_store: Callable[[str], BaseStore]) -> None:
    adapter = new_store("sqlite")
    await anyio.to_thread.run_sync(adapter.save, {"application": {"points": 1}})
    store = StateStore()
    await store.enable_persistence(adapter, version=1, migrations={1: lambda d: d})
    try:
        for key in list(store.state["application"]):  # a /reset, key by key
            await store.dispatch(APPLICATION_DELETE, {"path": [key]}, durable=True)
        with pytest.raises(ValueError, match="schema version"):
            await store.dispatch(APPLICATION_SET, {"path": [SCHEMA_KEY], "value": 0})
    finally:
        await store.close()
    assert (await anyio.to_thread.run_sync(adapter.load))["application"] == {SCHEMA_KEY: 1}
    def reset_in_a_script() -> None:
        with sync.transaction(adapter) as state:
            state["application"].clear()

    await anyio.to_thread.run_sync(reset_in_a_script)
    stored = await anyio.to_thread.run_sync(adapter.load)
    assert stored["application"] == {SCHEMA_KEY: 1}
    again = StateStore()  # the next start migrates nothing again
    await again.enable_persistence(adapter, version=1, migrations={1: lambda d: {}})
    await again.close()


def test_the_cli_cannot_delete_it_and_inspect_shows_it_apart(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sync.save_state(str(db), {"application": {"points": 1, SCHEMA_KEY: 2}})
    proc = _cli(tmp_path, "delete", "s.db", f"application.{SCHEMA_KEY}")
    assert proc.returncode == 2, proc.stderr
    assert "migrate-schema" in proc.stderr
    assert sync.load_state(str(db))["application"][SCHEMA_KEY] == 2
    shown = _cli(tmp_path, "inspect", "s.db", "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["schema_version"] == 2
    assert list(summary["application"]["keys"]) == ["points"]
    text = _cli(tmp_path, "inspect", "s.db").stdout
    assert "schema version: 2" in text
    assert SCHEMA_KEY not in text
