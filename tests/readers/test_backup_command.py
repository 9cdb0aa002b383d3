"""``cascadeui backup TARGET DEST``: a safe copy of any backend's state, and ``verify``
explaining the SQLite ``-wal`` pair (issue 23 item 4). Real files, servers, subprocesses."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _registry import kinds, target
from _spawn import module, run

from cascadeui import sync
from cascadeui.adapters import SQLiteStore

STATE: dict[str, Any] = {"application": {"votes": {"1": "pizza"}, "n": 3},
                         "persistent_views": {}}


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(module("cascadeui", *args), cwd=cwd, timeout=60)


def test_backup_of_a_live_sqlite_database_keeps_what_only_the_wal_holds(
        tmp_path: Path) -> None:
    live = SQLiteStore(tmp_path / "bot.db")  # a running bot: its changes sit in the -wal
    try:
        live.save(STATE)
        assert (tmp_path / "bot.db-wal").stat().st_size > 0
        shutil.copy(tmp_path / "bot.db", tmp_path / "cp.db")  # the unsafe way
        assert sync.load_state(str(tmp_path / "cp.db")) == {}
        proc = _cli(tmp_path, "backup", "bot.db", "safe.db", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["method"] == "whole database, online backup"
        assert sync.load_state(str(tmp_path / "safe.db")) == STATE
        assert (tmp_path / "safe.db").stat().st_mode & 0o077 == 0
        live.save({**STATE, "application": {"n": 4}})  # the bot goes on, the copy stays
        assert sync.load_state(str(tmp_path / "safe.db")) == STATE
    finally:
        live.close()
    checked = _cli(tmp_path, "verify", "cp.db")
    assert checked.returncode == 1
    assert "-wal" in checked.stdout
    assert "cascadeui backup" in checked.stdout


@pytest.mark.parametrize("kind", kinds("multiprocess"))  # the CLI is another process
def test_backup_copies_any_backend_and_never_replaces_a_state(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    source = target(kind, request, tmp_path)
    sync.save_state(source, STATE)
    proc = _cli(tmp_path, "backup", source, "copy.json")
    assert proc.returncode == 0, proc.stderr
    assert sync.load_state(str(tmp_path / "copy.json")) == STATE
    again = _cli(tmp_path, "backup", source, "copy.json")
    assert again.returncode == 1
    assert "already holds state" in again.stderr
    missing = _cli(tmp_path, "backup", "nothing.db", "other.json")
    assert missing.returncode == 1
    assert "no state stored here" in missing.stderr
    assert not (tmp_path / "other.json").exists()
    assert not (tmp_path / "nothing.db").exists()
