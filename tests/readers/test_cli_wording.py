"""The CLI's wording and exit codes (issue 23 item 13): each case runs as a user would, in
a real subprocess (``python -m cascadeui``) against real files and servers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from _spawn import module

from cascadeui import __version__, sync
from cascadeui.adapters import SQLiteStore
from cascadeui.errors import LockTimeoutError

ENTRY = {"class_name": "Poll", "message_id": "9", "channel_id": "8", "guild_id": "7"}


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*module("cascadeui"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_version(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"cascadeui {__version__}"


def test_migrate_blames_a_missing_or_directory_source(tmp_path: Path) -> None:
    missing = _cli(tmp_path, "migrate", "gone.json", "out.json")
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith("cascadeui migrate gone.json: no state stored here")
    (tmp_path / "src.json").mkdir()
    folder = _cli(tmp_path, "migrate", "src.json", "out.json")
    assert folder.returncode == 2
    assert "cascadeui migrate src.json: " in folder.stderr
    assert "out.json:" not in folder.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("command", ["get", "inspect", "backups", "verify", "dump"])
@pytest.mark.parametrize("name", ["x.db", "x.json", "plain"])
def test_a_directory_target_is_the_same_usage_error_whatever_its_suffix(
        tmp_path: Path, command: str, name: str) -> None:
    (tmp_path / name).mkdir()
    args = [command, name] + (["application.a"] if command == "get" else [])
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert "is a directory; name a state file or database inside it" in proc.stderr


def test_a_too_deep_value_names_the_users_path_briefly(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "set", "s.json", "application.v", "[" * 300 + "]" * 300)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "application.v.0.0" in line
    assert "state['v']" not in line
    assert len(line) < 300


def test_inspect_of_a_damaged_file_points_the_right_way(tmp_path: Path) -> None:
    target = str(tmp_path / "s.json")
    sync.save_state(target, {"application": {"a": 1}})
    sync.save_state(target, {"application": {"a": 2}})
    Path(target).write_text('{"application": {"a"')
    proc = _cli(tmp_path, "inspect", "s.json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    note = next(i for i, line in enumerate(lines) if "read from:" in line)
    size = next(i for i, line in enumerate(lines) if line.strip().startswith("size:"))
    assert "below" in lines[note]
    assert size > note


def test_inspect_shows_no_user_for_a_panel_without_an_owner(tmp_path: Path) -> None:
    sync.save_state(str(tmp_path / "s.json"), {"persistent_views": {
        "open": {**ENTRY, "user_id": None}, "mine": {**ENTRY, "user_id": "42"}}})
    proc = _cli(tmp_path, "inspect", "s.json")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()
            if line.strip().startswith("key=")}
    assert "user=" not in rows["key=open"]
    assert "user=42" in rows["key=mine"]


def test_restore_backup_help_explains_n(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "restore-backup", "--help")
    assert proc.returncode == 0
    assert "0 (the default) is the newest" in proc.stdout


def test_json_errors_are_json(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "get", "gone.json", "application.a", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report == {"ok": False, "command": "get", "exit_code": 1, "target": "gone.json",
                      "error": "StateNotFoundError", "message": "no state stored here"}
    usage = _cli(tmp_path, "set", "s.json", "application.a", "NaN", "--json")
    assert usage.returncode == 2
    assert json.loads(usage.stdout)["exit_code"] == 2


def test_postgres_url_mistakes_are_named(tmp_path: Path, postgres_url: str,
                                         pg_table: str) -> None:
    sep = "&" if "?" in postgres_url else "?"
    bogus = _cli(tmp_path, "verify", f"{postgres_url}{sep}sslmode=bogus")
    assert bogus.returncode == 2, bogus.stderr
    assert "invalid connection option" in bogus.stderr
    assert "unreachable" not in bogus.stderr
    system = _cli(tmp_path, "inspect", f"{postgres_url}{sep}table=pg_class")
    assert system.returncode == 1
    line = system.stderr.strip().splitlines()[-1]
    assert "columns (oid," in line
    assert len(line) < 500


def test_a_lock_timeout_says_it_could_not_get_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    sync.save_state(str(path), {"application": {"a": 1}})
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with SQLiteStore(path, timeout=0.2) as store, pytest.raises(
                LockTimeoutError, match=r"could not get the write lock within 0\.2s"):
            store.save({"application": {"a": 2}})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
