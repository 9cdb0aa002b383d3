"""The JSON file store's locks under hostile conditions (issue 21, items 6, 8 and 15).

Real processes throughout: ``flock(1)`` holding the state's directory, a cleaner unlinking
``<path>.lock`` every 3 ms under two writers, a thread mutating a dict during a save.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import _spawn
import pytest

from cascadeui._backends import FileStorageBackend
from cascadeui.actions import APPLICATION_SET
from cascadeui.adapters import FileStore
from cascadeui.errors import LockTimeoutError
from cascadeui.store import StateStore

#: Rounds of the lock-file race per run (the proof ran 20: CASCADEUI_LOCK_ROUNDS=20).
ROUNDS = int(os.environ.get("CASCADEUI_LOCK_ROUNDS", "1"))


def _race_once(tmp_path: Path, n: int) -> tuple[int, int]:
    path = tmp_path / "s.json"
    FileStore(path).save({"application": {"n": 1}})
    lock = Path(f"{path}.lock")
    procs = [_spawn.start(_spawn.worker("lock", "count", path, n)) for _ in range(2)]
    unlinked = 0
    try:
        while any(p.poll() is None for p in procs):
            try:
                lock.unlink()
                unlinked += 1
            except FileNotFoundError:
                pass
            time.sleep(0.003)
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert out.split()[0] == "done", err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    return FileStore(path).load()["application"]["n"], unlinked


@pytest.mark.slow
@pytest.mark.timeout(120 + 60 * ROUNDS)
def test_a_cleaner_unlinking_the_lock_file_loses_no_increment(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        where = tmp_path / str(round_)
        where.mkdir()
        total, unlinked = _race_once(where, 150)
        assert unlinked > 20
        assert total == 301, f"round {round_}: {total} of 301"


# -- item 6: nothing the library waits for can be held forever by someone else -------------


@contextlib.contextmanager
def flocked(target: Path) -> Iterator[None]:
    """``flock --exclusive TARGET sleep 120`` (the cron idiom), held until the block ends."""
    proc = subprocess.Popen(["flock", "--exclusive", str(target), "sleep", "120"])
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["flock", "--nonblock", str(target), "true"]).returncode == 0:
            assert time.monotonic() < deadline, "flock(1) never took the lock"
            time.sleep(0.02)
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock(1) (util-linux)")
def test_a_flocked_state_directory_blocks_nothing(tmp_path: Path) -> None:
    bot = tmp_path / "bot"
    bot.mkdir()
    path = bot / "state.json"
    FileStore(path).save({"application": {"n": 0}})
    with flocked(bot):
        started = time.monotonic()
        store = FileStore(path, lock_timeout=1)
        with store.transaction() as state:
            state["application"]["n"] = 1
        version = store.load_versioned()[1]
        assert store.save_changes([(("application", "m"), 2)], version,
                                  full=lambda: "{}") is not None
        assert store.load()["application"] == {"n": 1, "m": 2}
        store.close()
        assert time.monotonic() - started < 1.0


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock(1) (util-linux)")
@pytest.mark.parametrize("held", ["s.json.lock", "s.json.lock.commit"])
def test_every_lock_file_wait_ends_at_lock_timeout(tmp_path: Path, held: str) -> None:
    path = tmp_path / "s.json"
    FileStore(path).save({"application": {"n": 0}})
    with flocked(tmp_path / held):
        store = FileStore(path, lock_timeout=1)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as info, store.transaction() as state:
            state["application"]["n"] = 1
        assert 0.9 < time.monotonic() - started < 3.0
        assert info.value.lock == f"{path}.lock"
        assert info.value.timeout == 1
        store.close()
    assert FileStore(path).load() == {"application": {"n": 0}}


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock(1) (util-linux)")
@pytest.mark.parametrize("held", ["", "s.json.lock"])
def test_a_running_store_closes_in_bounded_time_whatever_is_flocked(
        tmp_path: Path, held: str) -> None:
    path = tmp_path / "s.json"
    store = StateStore()
    elapsed: list[float] = []

    async def start() -> None:
        await store.enable_persistence(FileStorageBackend(path, lock_timeout=1),
                                       retry_initial=0.05, retry_max=0.2)
        await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": 1}, durable=True)

    async def change_and_close() -> None:
        await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": 2})
        started = time.monotonic()
        await asyncio.wait_for(store.close(close_backend=True), 20)
        elapsed.append(time.monotonic() - started)

    loop = asyncio.new_event_loop()  # one loop for both steps (asyncio.Runner: 3.11+)
    try:
        loop.run_until_complete(start())
        with flocked(tmp_path / held if held else tmp_path):
            loop.run_until_complete(change_and_close())
    finally:
        loop.close()
    assert elapsed[0] < 10
    expected = 1 if held else 2  # a held lock file: the last change could not be written
    assert FileStore(path).load()["application"]["n"] == expected


# -- item 15: a state mutated by another thread during a save ------------------------------


def test_a_state_mutated_during_save_names_the_misuse(tmp_path: Path) -> None:
    done = _spawn.run(_spawn.worker("lock", "save", tmp_path / "s.json", 3))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines != ["none"], "the mutating thread never overlapped a save"
    for line in lines:
        assert line.startswith("RuntimeError: the state changed while it was being saved"), line
        assert "another thread mutated it" in line
    stored = FileStore(tmp_path / "s.json").load()  # nothing, or a whole state
    assert stored == {} or stored["application"]["k0"] == {0}


# -- item 7: an older copy of the state put back is loss, not a newer state ----------------


def test_a_rolled_back_state_after_a_compaction_is_loss_and_rewritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """state.json, .journal and .lineage copied aside with ``cp -p`` after j0..j2; the
    store compacts and acknowledges j3..j5; the copies are put back (``cp -p``)."""
    path = tmp_path / "state.json"
    aside = tmp_path / "aside"
    aside.mkdir()
    files = [str(path), f"{path}.journal", f"{path}.lineage"]
    store = StateStore()

    async def acknowledge(*names: str, value: object = None) -> None:
        for name in names:
            await store.dispatch(APPLICATION_SET,
                                 {"path": [name], "value": name if value is None else value})
            assert await store.flush(), f"{name} was not acknowledged"

    def copy(sources: list[str], into: Path) -> None:
        subprocess.run(["cp", "-p", *sources, str(into)], check=True)

    def journal_exists() -> bool:
        return Path(f"{path}.journal").exists()

    async def holds_everything() -> bool:
        with FileStore(path) as probe:
            app = probe.load().get("application", {})
        return (all(app.get(n) == n for n in ("j0", "j1", "j2", "j3", "j4", "j5"))
                and app.get("big") == "x" * 70_000)

    async def main() -> None:
        await store.enable_persistence(FileStorageBackend(path), debounce=0, max_delay=0.05,
                                       retry_initial=0.02, retry_max=0.1, poll_interval=0.05)
        try:
            await acknowledge("j0", "j1", "j2")
            assert journal_exists()
            copy(files, aside)
            await acknowledge("big", value="x" * 70_000)  # past the journal's budget
            assert not journal_exists(), "no compaction happened"
            await acknowledge("j3", "j4", "j5")
            copy([str(aside / Path(f).name) for f in files], tmp_path)
            assert not await holds_everything()
            for _ in range(250):  # the idle store's poll notices within 5 s
                if await holds_everything():
                    break
                await asyncio.sleep(0.02)
            assert await holds_everything(), "the store did not rewrite its state"
            await acknowledge("after")
        finally:
            await store.close(close_backend=True)

    with caplog.at_level(logging.WARNING, logger="cascadeui"):
        asyncio.run(main())
    assert any("generation" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records), caplog.text
    with FileStore(path) as fresh:
        app = fresh.load()["application"]
    assert [n for n in ("j0", "j1", "j2", "j3", "j4", "j5", "after") if app.get(n) != n] == []
