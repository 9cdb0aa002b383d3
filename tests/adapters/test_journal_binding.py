"""FileStore's journal is bound to its snapshot's content, not its inode (issue 11, item 3).

Copying ``state.json`` and ``state.json.journal`` together by any ordinary means (``cp``,
``cp -p``, ``shutil.copy``, ``shutil.copy2``, read and write) keeps every journaled change.
A journal that names another snapshot is reported by the load (WARNING naming both files)
and by ``cascadeui verify`` (a failure), and the next write moves it aside instead of
deleting it. The leftover of a full write killed between replacing the snapshot and
deleting the journal (a real SIGKILL at that point) is recognised as harmless. Journals
written by earlier builds (header bound to the inode) still load, and the next append
rewrites their header.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from _helpers import JournalWriter
from _spawn import module, worker

from cascadeui import cli as cli_module
from cascadeui.adapters import FileStore

BASE = {"application": {"n": 0, "keep": "x"}, "persistent_views": {}}


def line(payload: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def journaled(path: Path, commits: int = 5) -> dict[str, object]:
    """A snapshot plus ``commits`` journal records at ``path``; the state they make."""
    with FileStore(path) as store:
        store.save(BASE)
        writer = JournalWriter(store)
        for i in range(1, commits + 1):
            assert writer.commit([(("application", "n"), i),
                                  (("application", "log", i), f"entry {i}")]) is not None
        assert Path(f"{path}.journal").exists()
        return writer.doc


def verify(path: Path) -> tuple[int, dict[str, object]]:
    """``cascadeui verify PATH --json`` in a subprocess: the exit code and the report."""
    proc = subprocess.run([*module("cascadeui"), "verify", str(path), "--json"],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def failed_checks(report: dict[str, object]) -> list[str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return [c["check"] for c in checks if not c["ok"]]


def copy_with_cp(src: Path, dst: Path) -> None:
    subprocess.run(["cp", str(src), str(dst)], check=True)


def copy_with_cp_p(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-p", str(src), str(dst)], check=True)


def copy_by_reading(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


COPIES: dict[str, Callable[[Path, Path], object]] = {
    "cp": copy_with_cp, "cp -p": copy_with_cp_p, "shutil.copy": shutil.copy,
    "shutil.copy2": shutil.copy2, "read+write": copy_by_reading}


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copied_pair_keeps_every_journaled_change(tmp_path: Path, how: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "live" / "state.json"
    src.parent.mkdir()
    expected = journaled(src)
    dst_dir = tmp_path / "backup"
    dst_dir.mkdir()
    dst = dst_dir / "state.json"
    # The journal first, then the snapshot: the order does not matter.
    COPIES[how](Path(f"{src}.journal"), Path(f"{dst}.journal"))
    COPIES[how](src, dst)
    caplog.set_level(logging.INFO, logger="cascadeui")
    with FileStore(dst) as store:
        assert store.load() == expected
        assert store.journal_mismatch() is None
        # The copy goes on: an append to it, then a fresh store reads everything.
        writer = JournalWriter(store)
        assert writer.doc == expected
        assert writer.commit([(("application", "after_copy"), True)]) is not None
    with FileStore(dst) as fresh:
        assert fresh.load() == {**expected, "application": {
            **expected["application"], "after_copy": True}}  # type: ignore[dict-item]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    code, report = verify(dst)
    assert code == 0, report


def test_moving_the_directory_keeps_every_change(tmp_path: Path) -> None:
    src = tmp_path / "a" / "state.json"
    src.parent.mkdir()
    expected = journaled(src)
    # Another filesystem is what changes inodes for certain: /dev/shm when there is one.
    other = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    dst_dir = Path(shutil.copytree(src.parent, other / f"cascadeui-move-{os.getpid()}"))
    try:
        with FileStore(dst_dir / "state.json") as store:
            assert store.load() == expected
    finally:
        shutil.rmtree(dst_dir)


def test_a_journal_of_another_snapshot_is_reported_and_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    journaled(path)
    journal = Path(f"{path}.journal")
    records = journal.read_bytes()
    # An older snapshot restored by hand (not the one the journal was written against),
    # while the journal stays: the records do not belong to it.
    path.write_text(json.dumps({"application": {"n": 100}, "persistent_views": {}}))
    caplog.set_level(logging.INFO, logger="cascadeui")
    with FileStore(path) as store:
        assert store.load() == {"application": {"n": 100}, "persistent_views": {}}
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert str(journal) in warnings[0]
        assert str(path) in warnings[0]
        assert "5 record(s) are not applied" in warnings[0]
        store.load()  # reported once per journal file, not on every read
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        assert store.journal_mismatch() is not None
        code, report = verify(path)
        assert code == 1
        assert failed_checks(report) == ["change journal belongs to the snapshot"]
        # The next write keeps the records: moved aside, never deleted.
        writer = JournalWriter(store)
        assert writer.commit([(("application", "m"), 1)]) is not None
    aside = list(tmp_path.glob("state.json.journal.orphan-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == records
    with FileStore(path) as fresh:
        assert fresh.load() == {"application": {"n": 100, "m": 1}, "persistent_views": {}}
    assert verify(path)[0] == 0


def test_a_full_save_over_a_foreign_journal_moves_it_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    journaled(path)
    records = Path(f"{path}.journal").read_bytes()
    path.write_text(json.dumps({"application": {"n": 100}}))
    with FileStore(path) as store:
        store.save({"application": {"n": 101}})
    assert not Path(f"{path}.journal").exists()
    aside = list(tmp_path.glob("state.json.journal.orphan-*"))
    assert [p.read_bytes() for p in aside] == [records]


@pytest.mark.parametrize("backups", [1, 0])
def test_a_write_killed_between_replace_and_journal_removal(
        tmp_path: Path, backups: int, caplog: pytest.LogCaptureFixture) -> None:
    """The crash the binding exists for: the new snapshot, the old snapshot's journal."""
    path = tmp_path / "state.json"
    journaled(path)
    proc = subprocess.run([*worker("kill_between_replace"), str(path),
                           str(backups)], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert Path(f"{path}.journal").exists()
    assert json.loads(path.read_text()) == {"application": {"n": 99}}
    caplog.set_level(logging.INFO, logger="cascadeui")
    with FileStore(path, backups=backups) as store:
        # Never applied to the new snapshot (its records were written against the old one).
        assert store.load() == {"application": {"n": 99}}
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        if backups:
            # .bak is the snapshot it belongs to: recognised as the harmless leftover.
            assert not warnings
            assert store.journal_mismatch() is None
            assert verify(path)[0] == 0
        else:
            # Without a backup nothing tells it from a foreign journal: reported, kept.
            assert len(warnings) == 1
        writer = JournalWriter(store)
        assert writer.commit([(("application", "m"), 1)]) is not None
    assert len(list(tmp_path.glob("state.json.journal.orphan-*"))) == (0 if backups else 1)
    with FileStore(path) as fresh:
        assert fresh.load() == {"application": {"n": 99, "m": 1}}


def _format1_journal(path: Path, records: list[bytes]) -> bytes:
    """A journal as earlier builds wrote it: the header names the snapshot's inode."""
    st = path.stat()
    header = json.dumps({"cascadeui_journal": 1,
                         "snapshot": [st.st_ino, st.st_mtime_ns, st.st_size]},
                        separators=(",", ":")).encode()
    return line(header) + b"".join(records)


def test_a_journal_written_by_an_earlier_build_loads_and_is_upgraded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    expected = journaled(path, commits=3)
    journal = Path(f"{path}.journal")
    records = journal.read_bytes().splitlines(keepends=True)[1:]
    journal.write_bytes(_format1_journal(path, records))
    caplog.set_level(logging.INFO, logger="cascadeui")
    with FileStore(path) as store:
        assert store.load() == expected
        assert verify(path)[0] == 0
        writer = JournalWriter(store)
        assert writer.commit([(("application", "up"), 1)]) is not None
    header = json.loads(journal.read_bytes().split(b"\n", 1)[0][9:])
    assert header["cascadeui_journal"] == 2
    assert journal.read_bytes().splitlines(keepends=True)[1:4] == records
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # From now on a copy keeps everything.
    dst = tmp_path / "copy.json"
    shutil.copy(path, dst)
    shutil.copy(journal, f"{dst}.journal")
    with FileStore(dst) as copy:
        assert copy.load()["application"]["up"] == 1
        assert copy.load()["application"]["n"] == 3


def test_a_format1_leftover_is_recognised_by_the_backup_inode(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    journaled(path, commits=2)
    journal = Path(f"{path}.journal")
    old = _format1_journal(path, journal.read_bytes().splitlines(keepends=True)[1:])
    with FileStore(path) as store:
        store.save({"application": {"n": 7}})  # rotates the old snapshot to .bak
    journal.write_bytes(old)  # as if the earlier build had crashed before deleting it
    caplog.set_level(logging.INFO, logger="cascadeui")
    with FileStore(path) as store:
        assert store.load() == {"application": {"n": 7}}
        assert store.journal_mismatch() is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_verify_in_process_names_the_mismatch(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.json"
    journaled(path, commits=1)
    path.write_text(json.dumps({"application": {"other": 1}}))
    assert cli_module.main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL change journal belongs to the snapshot" in out
    assert f"{path}.journal does not belong to the snapshot {path}" in out
