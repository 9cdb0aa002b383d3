"""The ``cascadeui`` command line against real files, SQLite databases and Redis.

Every command's main path runs as a real subprocess (``python -m cascadeui`` and the
console script). Starting one costs about a second (discord.py is imported), so variants
of a command already proven in a subprocess run in-process through ``cli.main``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from _spawn import console_script, module

from cascadeui import cli as cli_module
from cascadeui import sync
from cascadeui.adapters import FileStore, SQLiteStore

STATE = {"application": {"scores": {1234567890123456789: 3}, "tags": {"a"}},
         "persistent_views": {"ticket:1": {"class_name": "TicketPanel", "message_id": "900",
                                           "channel_id": "20", "guild_id": "10",
                                           "user_id": None}}}


def cli(*args: str, cwd: Path | None = None, check: int | None = 0,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cascadeui ARGS``; assert the exit code unless ``check`` is None."""
    proc = subprocess.run([*module("cascadeui"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "COLUMNS": "100"})
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def run(capsys: pytest.CaptureFixture[str], *args: str, check: int = 0,
        ) -> tuple[str, str]:
    """``cli.main(ARGS)`` in this process; returns (stdout, stderr)."""
    try:
        code = cli_module.main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == check, (code, out, err)
    return out, err


def test_set_then_get_on_a_json_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    path = tmp_path / "bot.json"
    sync.save_state(str(path), STATE)
    cli("set", str(path), "application.scores.1234567890123456789", "10")
    run(capsys, "set", str(path), 'application."cfg.v2".welcome', '{"$set": [1, 2]}')
    state = sync.load_state(str(path))
    assert state["application"]["scores"] == {1234567890123456789: 10}  # int key kept
    assert state["application"]["cfg.v2"] == {"welcome": {1, 2}}
    out, _ = run(capsys, "get", str(path), "application.scores", "--json")
    assert json.loads(out) == {"$map": [[1234567890123456789, 10]]}  # exact, re-feedable
    assert FileStore(path).backup_paths()[0].exists()  # set goes through a real save


def test_inspect_and_dump_a_sqlite_database(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "bot.db"
    sync.save_state(str(db), STATE)
    report = json.loads(cli("--json", "inspect", str(db)).stdout)  # flag before command
    assert report["backend"] == "sqlite"
    assert report["version"] == 1
    assert report["persistent_views"]["rows"][0]["class"] == "TicketPanel"
    assert report["application"]["keys"]["scores"] == {"type": "dict", "size": 1}
    dumped, _ = run(capsys, "dump", f"sqlite:///{db}")
    # a dump is a valid state file: the serializer reads it back exactly
    (tmp_path / "copy.json").write_text(dumped)
    assert sync.load_state(str(tmp_path / "copy.json")) == STATE
    text, _ = run(capsys, "inspect", str(db))
    assert "persistent views: 1" in text
    assert "class=TicketPanel" in text


def test_redis_get_set_and_a_redacted_password(redis_url: str, redis_key: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    target = f"{redis_url}?key={redis_key}"
    sync.save_state(target, STATE)
    run(capsys, "set", target, "application.motd", '"hello"')
    assert json.loads(run(capsys, "get", target, "application.motd")[0]) == "hello"
    text, _ = run(capsys, "inspect", target)
    assert "redis" in text
    assert "motd: str, 5 chars = hello" in text
    bad = cli("get", "redis://:s3cret-pw@127.0.0.1:1/0", "application", check=1)
    assert "s3cret-pw" not in bad.stderr + bad.stdout
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("cascadeui get redis://:***@127.0.0.1:1/0 key=")
    assert "Traceback" not in bad.stderr


def test_migrate_with_progress_refuses_to_overwrite(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    src, dst = tmp_path / "old.json", tmp_path / "new.db"
    sync.save_state(str(src), STATE)
    proc = cli("migrate", str(src), str(dst), "--progress", "always")
    assert "3/3 done" in proc.stderr
    assert "verified" in proc.stdout
    assert sync.load_state(str(dst)) == STATE
    out, err = run(capsys, "migrate", str(src), str(dst), "--json", check=1)
    assert "--force" in err
    assert json.loads(out)["ok"] is False  # --json errors are JSON on stdout (issue 23)
    out, _ = run(capsys, "migrate", str(src), str(dst), "--force", "--json")
    forced = json.loads(out)
    assert forced["verified"] is True
    assert forced["bytes"] == src.stat().st_size
    run(capsys, "migrate", str(tmp_path / "absent.json"), str(dst), "--force", check=1)


def test_backups_and_restore_backup(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                    ) -> None:
    path = tmp_path / "bot.json"
    with FileStore(path, backups=3) as store:
        for v in (1, 2, 3):
            store.save({"application": {"v": v}, "persistent_views": {}})
    listed = json.loads(run(capsys, "backups", str(path), "--json")[0])["backups"]
    assert [(b["index"], b["readable"]) for b in listed] == [(0, True), (1, True)]
    run(capsys, "restore-backup", str(path), "1")
    assert sync.load_state(str(path))["application"] == {"v": 1}
    with FileStore(path, backups=3) as store:  # the replaced state became the newest .bak
        assert json.loads(store.backup_paths()[0].read_text())["application"] == {"v": 3}
    _, err = run(capsys, "restore-backup", str(path), "7", check=1)
    assert "no backup 7 (available: 0, 1)" in err
    sync.save_state(str(tmp_path / "x.db"), STATE)
    assert "keeps no backup" in run(capsys, "backups", str(tmp_path / "x.db"))[0]


def test_verify_passes_a_good_store_and_fails_a_damaged_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "bot.db"
    sync.save_state(str(db), STATE)
    assert "no problems found" in run(capsys, "verify", str(db))[0]
    path = tmp_path / "bot.json"
    with FileStore(path) as store:
        store.save(STATE)
        store.save(STATE)
    path.write_text('{"application": {"trunc')  # a torn main file; the .bak is fine
    proc = cli("verify", str(path), "--json", check=1)
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert [c["check"] for c in report["checks"] if not c["ok"]] == ["main file decodes"]
    assert any(c["check"] == "backup 0 decodes" and c["ok"] for c in report["checks"])
    views = {"application": {}, "persistent_views": {"k": {"message_id": "x"}}}
    sync.save_state(str(tmp_path / "odd.db"), views)
    out, _ = run(capsys, "verify", str(tmp_path / "odd.db"), check=1)
    assert ("FAIL persistent view entries: would not restore: k (class_name is missing or "
            "not a string)") in out


def test_verify_applies_the_change_journal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bot.json"
    with FileStore(path) as store:
        store.save(STATE)
        version = store.load_versioned()[1]
        assert store.save_changes([(("application", "extra"), 7)], version,
                                  full=lambda: "unused") is not None
    out, _ = run(capsys, "verify", str(path))
    assert "ok   change journal applies: 1 record(s) after the snapshot" in out
    assert json.loads(run(capsys, "get", str(path), "application.extra", "--json")[0]) == 7
    journal = Path(f"{path}.journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:-1], b"00000000 garbage\n", lines[-1]]))
    report = json.loads(cli("verify", str(path), "--json", check=1).stdout)
    assert [c["check"] for c in report["checks"] if not c["ok"]] == [
        "change journal applies"]


def test_set_waits_for_the_lock_a_writer_holds(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    sync.save_state(str(db), STATE)
    with SQLiteStore(db) as store, store.transaction() as state:
        proc = subprocess.Popen([*module("cascadeui"), "set", str(db),
                                 "application.n", "1"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)  # the CLI starts (about 1 s) and then blocks on the write lock
        assert proc.poll() is None
        state["application"]["held"] = True
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert {"held", "n"} <= set(sync.load_state(str(db))["application"])  # both kept


@pytest.mark.parametrize(("args", "needle"), [
    (("set", "x.json", "application.a", "{bad"), "VALUE is not JSON"),
    (("set", "x.json", "views.a", "1"), "must start with application."),
    (("get", "x.txt", "application"), "cannot tell the backend"),
    (("frobnicate",), "invalid choice"),
])
def test_usage_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                             needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    _, err = run(capsys, *args, check=2)
    assert needle in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_bad_path_is_a_usage_error_in_a_subprocess(tmp_path: Path) -> None:
    proc = cli("set", "x.json", "application..a", "1", cwd=tmp_path, check=2)
    assert "empty segment" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_failures_are_one_line_and_debug_adds_the_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli("get", "nothing.db", "application", cwd=tmp_path, check=1)
    assert proc.stderr == "cascadeui get nothing.db: no state stored here\n"
    assert list(tmp_path.iterdir()) == []  # a read never creates the database
    monkeypatch.chdir(tmp_path)
    _, err = run(capsys, "get", "nothing.db", "application", "--debug", check=1)
    assert "Traceback" in err
    assert "StateNotFoundError" in err
    sync.save_state(str(tmp_path / "s.json"), STATE)
    _, err = run(capsys, "get", "s.json", "application.nope", check=1)
    assert err.strip().endswith("no 'nope' under application (a dict)")


def test_console_script_and_demo(tmp_path: Path) -> None:
    script = Path(console_script("cascadeui"))
    assert script.exists(), "the console script is declared in setup.cfg"
    # Run in a bot's directory: the demo works in a scratch directory of its own and
    # never touches the bot's cascadeui.db (issue 23 item 3).
    sync.save_state(str(tmp_path / "cascadeui.db"),
                    {"application": {"panels": {"poll:lunch": {"votes": {"1": "real"}}}}})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = subprocess.run([str(script), "demo"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bot 2: setup_persistence -> " in proc.stdout
    assert "removed the scratch directory" in proc.stdout
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert sync.load_state(str(tmp_path / "cascadeui.db"))["application"]["panels"] == {
        "poll:lunch": {"votes": {"1": "real"}}}
    refused = subprocess.run([str(script), "demo", "--json"], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 2


def test_every_command_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    parser = cli_module._parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    assert sorted(commands) == sorted(
        ["inspect", "get", "set", "delete", "dump", "migrate", "backup", "backups",
         "restore-backup",
         "verify", "migrate-schema", "doctor", "demo"])
    for name in commands:
        assert f"cascadeui {name}" in docs, name
