"""Schema versions and migrations on every backend (issue 15).

Each case runs on a real JSON file, a real SQLite database, a private Redis server and a
private PostgreSQL database:
upgrade from 0, from a middle version, nothing to do, a failure mid-chain (nothing
written), two processes starting at once (one migrates), the newer-than-code refusal,
and the backup kept; plus the dry run, a fresh state and the CLI.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from _registry import kinds, target
from _spawn import module, worker

from cascadeui import sync
from cascadeui.actions import APPLICATION_SET, SCHEMA_KEY
from cascadeui.adapters import SyncStore
from cascadeui.errors import MigrationError, SchemaVersionError
from cascadeui.migrations import backup_store, check_migrations, migrate_adapter
from cascadeui.persistence import backend_from_url
from cascadeui.store import StateStore

#: Two OS processes migrate one state at once: every backend several processes can share.
KINDS = kinds("multiprocess")
V0 = {"application": {"scores": {"1": 5, "2": 7}, "motd": "hi"},
      "persistent_views": {"p": {"class_name": "Old", "message_id": "1",
                                 "channel_id": "2", "guild_id": None, "user_id": None}}}


def to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """Scores become objects."""
    app = dict(doc["application"])
    app["scores"] = {k: {"points": v} for k, v in app.get("scores", {}).items()}
    return {**doc, "application": app}


def to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """motd moves under settings; panel class renamed."""
    app = dict(doc["application"])
    app["settings"] = {"motd": app.pop("motd", "")}
    views = {k: {**v, "class_name": "New" if v["class_name"] == "Old" else v["class_name"]}
             for k, v in doc["persistent_views"].items()}
    return {"application": app, "persistent_views": views}


def to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "application": {**doc["application"], "v3": True}}


STEPS = {1: to_v1, 2: to_v2, 3: to_v3}



@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return target(request.param, request, tmp_path)


def adapter(url: str) -> SyncStore:
    store: SyncStore = backend_from_url(url).store
    return store


def seed(url: str, doc: dict[str, Any]) -> None:
    store = adapter(url)
    try:
        store.save(doc)
    finally:
        store.close()


def stored(url: str) -> tuple[dict[str, Any], int]:
    store = adapter(url)
    try:
        return store.load(), store.version()  # type: ignore[attr-defined]
    finally:
        store.close()


def counting(calls: list[int]) -> dict[int, Any]:
    def wrap(k: int) -> Any:
        def fn(doc: dict[str, Any]) -> dict[str, Any]:
            calls.append(k)
            return STEPS[k](doc)
        return fn
    return {k: wrap(k) for k in STEPS}


async def enable(url: str, version: int, migrations: dict[int, Any]) -> StateStore:
    store = StateStore()
    await store.enable_persistence(await built(url), version=version, migrations=migrations)
    return store


async def run(fn: Any, *args: Any) -> Any:
    """A blocking helper, off the loop (the suite fails blocking calls on it)."""
    return await anyio.to_thread.run_sync(fn, *args)


async def built(url: str) -> Any:
    """The backend for ``url``, built off the loop (a path is resolved against the cwd)."""
    return await anyio.to_thread.run_sync(backend_from_url, url)


@pytest.mark.anyio
async def test_upgrade_from_0_runs_every_step_commits_the_version_and_keeps_a_backup(
        url: str) -> None:
    await run(seed, url, V0)
    calls: list[int] = []
    store = await enable(url, 2, {k: v for k, v in counting(calls).items() if k <= 2})
    try:
        assert calls == [1, 2]
        app = store.state["application"]
        assert app["scores"] == {"1": {"points": 5}, "2": {"points": 7}}
        assert app["settings"] == {"motd": "hi"}
        assert "motd" not in app
        assert app[SCHEMA_KEY] == 2
        assert store.state["persistent_views"]["p"]["class_name"] == "New"
    finally:
        await store.close(close_backend=True)
    doc, _ = await run(stored, url)
    assert doc["application"][SCHEMA_KEY] == 2
    backup = await run(lambda: backup_store(adapter(url), 0))
    assert backup is not None
    try:
        assert await run(backup.load) == V0  # the pre-migration document, exactly
    finally:
        await run(backup.close)


@pytest.mark.anyio
async def test_upgrade_from_a_middle_version_runs_only_the_later_steps(url: str) -> None:
    await run(seed, url, V0)
    first = await enable(url, 1, {1: to_v1})
    await first.close(close_backend=True)
    assert (await run(stored, url))[0]["application"][SCHEMA_KEY] == 1
    calls: list[int] = []
    store = await enable(url, 3, counting(calls))
    try:
        assert calls == [2, 3]
        assert store.state["application"]["v3"] is True
        assert store.state["application"]["scores"]["1"] == {"points": 5}
    finally:
        await store.close(close_backend=True)
    backup = await run(lambda: backup_store(adapter(url), 1))
    assert backup is not None
    try:
        assert (await run(backup.load))["application"][SCHEMA_KEY] == 1
    finally:
        await run(backup.close)


@pytest.mark.anyio
async def test_nothing_to_do_runs_nothing_and_writes_nothing(url: str) -> None:
    await run(seed, url, V0)
    (await enable(url, 2, {1: to_v1, 2: to_v2})).state  # noqa: B018
    doc, version = await run(stored, url)
    calls: list[int] = []
    steps = {k: v for k, v in counting(calls).items() if k <= 2}
    plan = await run(sync.migrate_schema, url, 2, steps)
    assert calls == []
    assert not plan.needed
    assert not plan.written
    assert await run(stored, url) == (doc, version)


@pytest.mark.anyio
async def test_a_failure_mid_chain_writes_nothing_and_names_the_step(url: str) -> None:
    await run(seed, url, V0)
    before = await run(stored, url)

    def broken(doc: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("settings")

    store = StateStore()
    with pytest.raises(MigrationError, match="migration to version 2") as err:
        await store.enable_persistence(await built(url), version=3,
                                       migrations={1: to_v1, 2: broken, 3: to_v3})
    assert (err.value.step, err.value.from_version) == (2, 0)
    assert isinstance(err.value.__cause__, KeyError)
    assert await run(stored, url) == before  # untouched: same document, same version
    assert store.backend is None  # nothing enabled
    assert store.state["application"] == {}


@pytest.mark.anyio
async def test_a_state_newer_than_the_code_refuses_to_start_and_writes_nothing(
        url: str) -> None:
    await run(seed, url, {**V0, "application": {**V0["application"], SCHEMA_KEY: 3}})
    before = await run(stored, url)
    store = StateStore()
    with pytest.raises(SchemaVersionError, match="newer than this code's 2") as err:
        await store.enable_persistence(await built(url), version=2,
                                       migrations={1: to_v1, 2: to_v2})
    assert (err.value.stored, err.value.supported) == (3, 2)
    assert await run(stored, url) == before
    assert store.backend is None


@pytest.mark.slow
def test_two_processes_starting_at_once_one_migrates_both_load_the_result(
        url: str, tmp_path: Path) -> None:
    seed(url, V0)
    marks = tmp_path / "marks.txt"
    start_at = time.time() + 1.5  # both interpreters are up by then
    procs = [subprocess.Popen([*worker("migrate"), url, str(marks), str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    lines = marks.read_text().split()
    pids = set(lines[0::2])
    assert len(pids) == 1  # exactly one process ran the migrations
    assert lines[1::2] == ["1", "2"]
    assert results[0] == results[1]  # the other one waited and loaded the result
    assert results[0][SCHEMA_KEY] == 2
    assert results[0]["step1"] == int(lines[0])


def test_a_fresh_state_is_born_at_the_current_version(url: str) -> None:
    calls: list[int] = []
    plan = sync.migrate_schema(url, 2, {k: v for k, v in counting(calls).items() if k <= 2})
    assert calls == []  # no data: nothing to migrate
    assert plan.written
    assert plan.backup is None
    assert stored(url)[0] == {"application": {SCHEMA_KEY: 2}, "persistent_views": {}}


def test_dry_run_shows_the_changes_and_writes_nothing(url: str) -> None:
    seed(url, V0)
    before = stored(url)
    plan = sync.migrate_schema(url, 2, {1: to_v1, 2: to_v2}, dry_run=True)
    assert (plan.from_version, plan.to_version, plan.written) == (0, 2, False)
    changes = dict((tuple(p), kind) for p, kind in plan.changes())
    assert changes[("application", "motd")] == "deleted"
    assert changes[("application", "settings")] == "set"
    assert changes[("persistent_views", "p", "class_name")] == "set"
    assert stored(url) == before


def test_migrations_must_cover_every_step() -> None:
    with pytest.raises(ValueError, match=r"no migration to version\(s\) \[2\]"):
        check_migrations(3, {1: to_v1, 3: to_v3})
    check_migrations(2, {1: to_v1, 2: to_v2, 5: to_v3})  # later releases' steps: ignored
    with pytest.raises(ValueError, match=r"keys must be the versions \(ints >= 1\)"):
        check_migrations(2, {0: to_v1, 1: to_v1, 2: to_v2})
    with pytest.raises(ValueError, match="version must be an int"):
        check_migrations(-1, {})


@pytest.mark.anyio
async def test_replacing_the_application_slice_keeps_the_version(tmp_path: Path) -> None:
    url = str(tmp_path / "s.json")
    store = await enable(url, 1, {1: to_v1})
    try:
        await store.dispatch(APPLICATION_SET, {"path": [], "value": {"fresh": 1}})
        assert store.state["application"] == {"fresh": 1, SCHEMA_KEY: 1}
        await store.dispatch("APPLICATION_DELETE", {"path": []})
        assert store.state["application"] == {SCHEMA_KEY: 1}
    finally:
        await store.close(close_backend=True)


def test_the_adapter_unit_of_work_can_run_from_a_script(tmp_path: Path) -> None:
    url = str(tmp_path / "state.db")
    seed(url, V0)
    store = adapter(url)
    try:
        plan = migrate_adapter(store, 1, {1: to_v1})
    finally:
        store.close()
    assert plan.written
    assert plan.from_version == 0
    assert plan.backup is not None
    assert "v0_backup" in plan.backup


def test_cli_migrate_schema_dry_run_then_for_real(tmp_path: Path) -> None:
    url = str(tmp_path / "state.json")
    seed(url, V0)
    module = tmp_path / "bot_migrations.py"
    module.write_text(
        "def to_v1(doc):\n"
        "    app = dict(doc['application'])\n"
        "    app['renamed'] = app.pop('motd')\n"
        "    return {**doc, 'application': app}\n"
        "MIGRATIONS = {1: to_v1}\n")
    env_path = {"PYTHONPATH": str(tmp_path)}
    dry = _cli(["migrate-schema", url, "--to", "1", "--migrations", "bot_migrations",
                "--dry-run", "--json"], env_path)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["from_version"] == 0
    assert report["to_version"] == 1
    assert report["written"] is False
    assert ["application", "motd"] in [c["path"] for c in report["changes"]]
    assert stored(url)[0] == V0
    real = _cli(["migrate-schema", url, "--to", "1", "--migrations",
                 "bot_migrations:MIGRATIONS", "--json"], env_path)
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["written"] is True
    assert stored(url)[0]["application"]["renamed"] == "hi"
    newer = _cli(["migrate-schema", url, "--to", "0", "--migrations", "bot_migrations"],
                 env_path)
    assert newer.returncode != 0
    assert "newer than this code" in newer.stderr


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([*module("cascadeui"), *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60, check=False)


@pytest.mark.anyio
async def test_setup_persistence_and_a_custom_backend_take_version_and_migrations(
        tmp_path: Path) -> None:
    from cascadeui import setup_persistence

    class MyBackend:  # the seed's protocol: no lock, no backup, still migrated
        def __init__(self) -> None:
            self.saved: dict[str, Any] = {k: dict(v) for k, v in V0.items()}

        async def save_state(self, state: dict[str, Any]) -> bool:
            self.saved = state
            return True

        async def load_state(self) -> dict[str, Any]:
            return self.saved

    custom = MyBackend()
    store = StateStore()
    await setup_persistence(backend=custom, store=store, version=1, migrations={1: to_v1})
    assert store.state["application"]["scores"]["1"] == {"points": 5}
    assert custom.saved["application"][SCHEMA_KEY] == 1
    await store.close()
    with pytest.raises(ValueError, match="migrations= needs version="):
        await setup_persistence(backend=custom, store=StateStore(), migrations={1: to_v1})
    url = str(tmp_path / "s.db")
    await run(seed, url, V0)
    store = StateStore()
    await setup_persistence(backend=await built(url), store=store, version=2,
                            migrations={1: to_v1, 2: to_v2})
    assert store.state["application"]["settings"] == {"motd": "hi"}
    await store.close(close_backend=True)
