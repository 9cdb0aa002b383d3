"""Nothing lost when a program ends (issue 11 item 2), with real subprocesses.

Each child is a small program as a user would write it, with coalescing so slow
(``debounce``/``max_delay`` of 60 s) that only the shutdown path can have written its
last change; the parent then reads the medium with a fresh adapter.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from _helpers import started_redis_server
from _spawn import run, start, worker

from cascadeui.adapters import FileStore, SQLiteStore


def sqlite_state(path: Path) -> dict[str, object]:
    with SQLiteStore(path) as store:
        return store.load()


def test_asyncio_run_returning_keeps_a_non_durable_change(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    out = run(worker("shutdown", "run-returning", str(db)))
    assert out.returncode == 0, out.stderr
    assert sqlite_state(db)["application"] == {"n": 41, "last": "kept"}
    assert "NOT saved" not in out.stderr


def test_the_seeds_data_only_form_stores_the_change_when_asyncio_run_returns(
        tmp_path: Path) -> None:
    db = tmp_path / "cascadeui.db"
    out = run(worker("shutdown", "seed-data-only", str(db)))
    assert out.returncode == 0, out.stderr
    assert sqlite_state(db)["application"] == {"greeting": "hi"}




@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_to_a_busy_process_keeps_its_last_change(
        tmp_path: Path, sig: signal.Signals) -> None:
    path = tmp_path / "state.json"
    proc = start(worker("shutdown", "busy", path))
    try:
        assert proc.stdout is not None
        last = 0
        for line in proc.stdout:
            last = int(line)
            if last >= 50:
                break
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = max([last, *(int(x) for x in rest.split())])
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM, err  # still ends as SIGTERM says
    with FileStore(path) as reader:
        stored = reader.load()["application"]["n"]
    # Every printed change was dispatched (acknowledged in memory) before the signal; at
    # most one more was dispatched between the last print and the signal's handling.
    assert last <= stored <= last + 1, (last, stored, err)
    assert "NOT saved" not in err


def test_a_loop_left_unclosed_is_written_at_interpreter_exit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    out = run(worker("shutdown", "loop-unclosed", str(db)))
    assert out.returncode == 0, out.stderr
    assert sqlite_state(db)["application"] == {"n": 7}


def test_sync_api_writes_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    out = run(worker("shutdown", "sync-exit", str(path)))
    assert out.returncode == 0, out.stderr
    with FileStore(path) as reader:
        assert reader.load()["application"] == {"a": 1, "b": 2}


def test_changes_that_cannot_be_written_at_exit_are_named_in_a_warning(
        tmp_path: Path) -> None:
    server = started_redis_server("the shutdown warning test")
    try:
        proc = start(worker("shutdown", "dying-medium", server.url), stdin=True)
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        server.stop()
        started = time.monotonic()
        _, err = proc.communicate("go\n", timeout=30)
        took = time.monotonic() - started
    finally:
        server.close()
    assert proc.returncode == 0, err
    assert "3 change(s) to the persisted state were NOT saved to redis://" in err, err
    assert "key='shutdown-test'" in err
    assert took < 10.0  # bounded by durable_timeout, not a hang


def test_an_application_sigterm_handler_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    out = run(worker("shutdown", "own-sigterm", str(path)))
    assert out.stdout.strip() == "True", out.stderr


def test_changes_after_close_stay_in_memory_at_exit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    out = run(worker("shutdown", "after-close", str(db)))
    assert out.returncode == 0, out.stderr
    assert sqlite_state(db)["application"] == {"n": 1}
    assert "NOT saved" not in out.stderr




def test_sigterm_to_a_discord_bot_keeps_its_last_change(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    proc = start(worker("shutdown", "bot", path), cwd=tmp_path)
    try:
        assert proc.stdout is not None
        last = 0
        for line in proc.stdout:
            last = int(line)
            if last >= 60:  # inside a 1 s coalescing window: not written by the writer
                break
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = max([last, *(int(x) for x in rest.split())])
    assert proc.returncode == -signal.SIGTERM, err
    with FileStore(path) as reader:
        stored = reader.load()["application"]["n"]
    assert last <= stored <= last + 1, (last, stored, err)
