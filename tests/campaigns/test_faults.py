"""Fault campaign (issue 7, "Faults").

- Disk full (ENOSPC), read-only (EROFS), permission denied (EACCES) and EIO, injected at
  the system-call boundary only for the adapter's own files in ``tmp_path`` (this machine
  runs the suite as root, so a chmod-ed directory would not refuse anything): the save
  returns False with a log naming the file and the reason, the main file and every
  backup keep their bytes, no temp file is left, and the next good save catches up, also
  through a store that kept dispatching.
- Lock timeouts and stale locks: a real process holds the file lock, the SQLite write
  lock or the Redis lease, then is SIGKILLed: a typed error while it lives, recovery
  after its death, never a hang.
- A Redis outage while a store keeps dispatching: ``scripts/campaigns/fault.py`` at a
  small size (a private redis-server, SIGKILLed and restarted on the same port).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from _faults import disk, failing, is_exactly, is_journal, is_lock, is_rotation, is_temp
from _registry import kinds
from _spawn import script, script_env, worker

from cascadeui._backends import AsyncBackend, FileStorageBackend
from cascadeui.adapters import FileStore, PostgresStore, RedisStore, SQLiteStore
from cascadeui.errors import LockTimeoutError, PersistenceError, StorageUnavailableError
from cascadeui.store import StateStore

REPO = Path(__file__).resolve().parents[2]

# -- system-call fault injection -----------------------------------------------------------


FAULTS: dict[str, tuple[str, int, Callable[[Path], Callable[[str], bool]]]] = {
    # name: (system call, errno, which file)
    "enospc-fsync-temp": ("fsync", errno.ENOSPC, lambda p: is_temp(p.name)),
    "eio-fsync-temp": ("fsync", errno.EIO, lambda p: is_temp(p.name)),
    "enospc-create-temp": ("open", errno.ENOSPC, lambda p: is_temp(p.name)),
    "eacces-create-temp": ("open", errno.EACCES, lambda p: is_temp(p.name)),
    "erofs-create-temp": ("open", errno.EROFS, lambda p: is_temp(p.name)),
    "erofs-replace-main": ("replace", errno.EROFS, is_exactly),
    "eacces-replace-main": ("replace", errno.EACCES, is_exactly),
    "erofs-lock": ("open", errno.EROFS, is_lock),
    "eacces-lock": ("open", errno.EACCES, is_lock),
    "erofs-rotate": ("link,open,replace", errno.EROFS, is_rotation),
    "enospc-rotate": ("link,open", errno.ENOSPC, is_rotation),
}

#: Faults on the change journal's own files (the store's appends; a plain save has none).
JOURNAL_FAULTS = {
    "erofs-replace-journal": ("replace", errno.EROFS, is_journal),
    "eio-fsync-journal": ("fsync", errno.EIO, is_journal),
}


def gen(i: int) -> dict[str, Any]:
    return {"application": {"gen": i, "tags": set(range(i)), "blob": "x" * 5000}}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_disk_faults_keep_every_file_and_catch_up(
        fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    call, code, which = FAULTS[fault]
    path = tmp_path / "state.json"

    async def main() -> None:
        backend = FileStorageBackend(path, backups=2, lock_timeout=2.0)
        for i in range(3):
            assert await backend.save_state(gen(i))
        before = disk(tmp_path)
        assert set(before) == {"state.json", "state.json.bak", "state.json.bak.1",
                               "state.json.lineage"}
        with caplog.at_level(logging.ERROR, logger="cascadeui"), \
                failing(monkeypatch, call, code, which(path)) as refused:
            assert await backend.save_state(gen(10)) is False
            with pytest.raises(StorageUnavailableError) as info:
                backend.store.save(gen(11))
            assert await backend.load_state() == gen(2)  # reads still work
        assert refused, "the fault never fired"
        after = disk(tmp_path)
        if call == "replace":
            # Only the final rename refused (a fault no real filesystem produces alone):
            # the backups rotated, but no version is lost and the main file is intact.
            assert after["state.json"] == before["state.json"]
            assert after["state.json.bak"] in (before["state.json"], before["state.json.bak"])
        else:
            assert after == before, "a failed save changed the main file or a backup"
        reason = os.strerror(code)
        assert reason in str(info.value)
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(reason in m and str(path) in m for m in logged), logged
        # The fault is gone: the next save catches up and rotates normally.
        assert await backend.save_state(gen(12))
        assert await backend.load_state() == gen(12)
        with FileStore(Path(f"{path}.bak"), backups=0) as bak:
            assert bak.load() == gen(2)
        await backend.aclose()

    anyio.run(main)


# The store's first write is whole; later ones append to the change journal: creating it
# (a temp file replaced into place) or, once it exists, appending (write + fsync).
@pytest.mark.parametrize("fault", ["enospc-fsync-temp", "erofs-replace-journal",
                                   "eio-fsync-journal", "eacces-lock"])
def test_store_keeps_dispatching_through_disk_faults(
        fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    call, code, which = {**FAULTS, **JOURNAL_FAULTS}[fault]
    path = tmp_path / "state.json"
    logging.getLogger("cascadeui").setLevel(logging.CRITICAL)  # the expected retries

    async def main() -> None:
        store = StateStore()
        await store.enable_persistence(FileStorageBackend(path), debounce=0.01,
                                       max_delay=0.05, retry_initial=0.02, retry_max=0.1)
        await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": 0})
        assert await store.flush()
        if fault == "eio-fsync-journal":  # the journal exists: the faults hit appends
            await store.dispatch("APPLICATION_SET", {"path": ["m"], "value": 1})
            assert await store.flush()
            assert os.path.exists(f"{path}.journal")  # noqa: ASYNC240
        with failing(monkeypatch, call, code, which(path)) as refused:
            for i in range(1, 40):
                await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": i})
                await anyio.sleep(0.005)
            assert await store.flush() is False
            assert store.last_write_error is not None
            assert store.state["application"]["n"] == 39
        assert refused
        with FileStore(path) as reader:
            assert reader.load()["application"]["n"] == 0  # nothing half-written
        # Healed: the background writer lands the latest state by itself.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with FileStore(path) as reader:
                if reader.load().get("application", {}).get("n") == 39:
                    break
            await anyio.sleep(0.02)
        with FileStore(path) as reader:
            assert reader.load()["application"]["n"] == 39
        assert await store.flush()
        await store.close()

    try:
        anyio.run(main)
    finally:
        logging.getLogger("cascadeui").setLevel(logging.NOTSET)


def test_no_temp_files_left_after_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    with FileStore(path) as store:
        for call, code, which in FAULTS.values():
            store.save(gen(1))
            store.save(gen(1))
            with failing(monkeypatch, call, code, which(path)), \
                    pytest.raises(PersistenceError):
                store.save(gen(2))
        store.save(gen(3))
        assert store.load() == gen(3)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


# -- lock timeouts and stale locks from dead processes -------------------------------------


@contextmanager
def holder(kind: str, where: str, key: str = "", lease: float = 0.0,
           ) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*worker("lock_holder"), kind, where, key, str(lease)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the child exits (EOF) if it cannot lock
        assert line.strip() == "locked", proc.stderr.read() if proc.stderr else line
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    try:
        result: Any = fn()
    except PersistenceError as exc:
        result = exc
    return result, time.monotonic() - t0


@pytest.fixture(params=kinds("multiprocess"))
def lock_case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str, Any]:
    """(kind, location, key, a fresh store with a short lock timeout)."""
    if request.param == "file":
        where = str(tmp_path / "state.json")
        return "file", where, "", lambda: FileStore(where, lock_timeout=0.3)
    if request.param == "sqlite":
        where = str(tmp_path / "state.db")
        return "sqlite", where, "", lambda: SQLiteStore(where, timeout=0.3)
    if request.param == "postgres":
        url, table = request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_table")
        return "postgres", url, table, lambda: PostgresStore(url, table=table, timeout=0.3)
    url, key = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_key")
    return "redis", url, key, lambda: RedisStore(url, key=key, lock_timeout=0.3)


async def facade_save(adapter: Any, state: dict[str, Any]) -> bool:
    async with AsyncBackend(adapter) as backend:
        return await backend.save_state(state)


def test_lock_held_by_live_process_then_sigkilled(lock_case: tuple[str, str, str, Any]) -> None:
    kind, where, key, make = lock_case
    lease = 1.0
    with make() as store:
        store.save({"application": {"v": 1}})
        with holder(kind, where, key, lease) as proc:
            result, took = timed(lambda: store.save({"application": {"v": 2}}))
            assert isinstance(result, LockTimeoutError), result
            assert took < 3.0
            assert result.timeout == pytest.approx(0.3)
            assert result.lock
            result, took = timed(lambda: anyio.run(facade_save, make(),
                                                   {"application": {"v": 3}}))
            assert result is False
            assert took < 3.0
            assert store.load() == {"application": {"v": 1}}  # readers are never blocked
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        # The holder died holding the lock: recovered at once (flock, SQLite) or when
        # its lease ends (Redis), never a hang, and its uncommitted change is gone.
        deadline = time.monotonic() + lease + 3.0
        while True:
            result, took = timed(lambda: store.save({"application": {"v": 4}}))
            if result is None or time.monotonic() > deadline:
                break
            assert isinstance(result, LockTimeoutError), result
        assert result is None, f"no recovery after the holder died: {result}"
        assert store.load() == {"application": {"v": 4}}


def test_stale_lock_file_from_dead_process(tmp_path: Path) -> None:
    where = tmp_path / "state.json"
    with holder("file", str(where)) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with FileStore(where, lock_timeout=0.5) as store:
        result, took = timed(lambda: store.save({"ok": 1}))
        assert result is None
        assert took < 1.0
        with store.transaction() as state:
            assert state == {"ok": 1}


# -- Redis outage (the full-size campaign is scripts/campaigns/fault.py) --------------------


@pytest.mark.slow
def test_redis_outage_campaign_small() -> None:
    out = subprocess.run(
        [*script("campaigns.fault"), "--outage", "2.5",
         "--retry-max", "0.4", "--before", "0.3"],
        capture_output=True, text=True, timeout=120, check=False, env=script_env())
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    if summary["problems"]:
        pytest.fail(f"outage campaign problems: {summary['problems']}")
    assert summary["lost"] == 0
    assert summary["dispatched"] > 50
    detail = summary["detail"][0]
    assert 2 <= detail["attempts_during_outage"] <= 20
    assert detail["retry_delays"][:3] == [0.05, 0.1, 0.2]
    assert max(detail["retry_delays"]) <= 0.4
    assert detail["flush_while_down_s"] < 2.0
    assert out.returncode == 0, out.stderr


def test_sqlite_append_waits_for_the_write_lock_and_readers_never_wait(tmp_path: Path) -> None:
    """save_changes takes the same write lock as every full write; a held one is a typed
    error with nothing written, reads of the snapshot and its journal go on, and the
    holder's SIGKILL frees it at once."""
    where = str(tmp_path / "state.db")
    with SQLiteStore(where, timeout=0.3) as store:
        store.save({"application": {"v": 1}})
        assert store.save_changes([(("application", "w"), 1)], 1, full=lambda: "x") == 2
        with holder("sqlite", where) as proc:
            result, took = timed(lambda: store.save_changes(
                [(("application", "w"), 2)], 2, full=lambda: "x"))
            assert isinstance(result, LockTimeoutError), result
            assert took < 3.0
            assert store.load_versioned() == ({"application": {"v": 1, "w": 1}}, 2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert store.save_changes([(("application", "w"), 3)], 2, full=lambda: "x") == 3
        assert store.load() == {"application": {"v": 1, "w": 3}}
