#!/usr/bin/env python3
"""Power-cut campaign (issue 16): what was acknowledged survives losing every unsynced write.

For each backend (the JSON file adapter, SQLite), a writer process runs under ``strace``
(:mod:`kit.powercut`) and commits generation after generation through the
adapter's whole protocol: journal appends (``save_changes``), compactions (the journal
budget is lowered so one comes every few appends), full saves with ``.bak`` rotation,
``transaction()``, ``save_if_version``, and closing and reopening the store (a new store
appends to a journal it did not write; SQLite checkpoints and deletes its WAL), and once
every ten generations an *echo*: a whole write of the snapshot's very bytes over a journal
after it (generation ``g``'s document is then the snapshot's). Before a call it marks
``start <g>``; once the call returned, ``ack <g>``. The ``store`` mode dispatches durably,
every fourth generation together with the next (two durable waiters at once).
``--big-every N`` makes every Nth generation a document of about 2.4 MB.

Every point between two recorded system calls is a power cut. For each cut, every crash
state POSIX allows (unsynced writes dropped, a prefix of them kept, the next one torn or
zeros; pending directory changes kept or lost in any combination) is written to a fresh
directory and loaded with a fresh adapter. Each state must:

- load, or raise a typed :class:`~cascadeui.errors.PersistenceError` leaving every file
  as it was;
- be exactly the state of one generation ``g`` with ``last ack <= g <= last start``:
  nothing acknowledged lost, nothing torn or mixed;
- take one more commit (``save_changes``) and read it back (a crash state is recoverable);
- for the file: every ``.bak`` generation present is a whole state written earlier.

Full size (the numbers in docs/reliability.md)::

    python -m campaigns.powercut --cuts 1000

Small size (what tests/campaigns/test_powercut.py runs)::

    python -m campaigns.powercut --cuts 40 --gens 12

The last line is ``N cuts, M crash states, K acknowledged changes, L lost``; the line
before it is a JSON summary (``unexpected_warnings``: WARNINGs not in
:data:`EXPECTED_WARNINGS`). Exit status 1 if anything was lost, a check failed or a
WARNING was unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kit.generations import big_every, expected, generation, set_big_every
from kit.plant import planted
from kit.powercut import (
    CrashState,
    crash_states,
    materialise,
    parse_trace,
    record,
)
from kit.spawn import script_command, script_env

from cascadeui._merge import diff
from cascadeui.errors import PersistenceError
from cascadeui.serializer import StateSerializer

BACKENDS = ("file", "sqlite")
NAMES = {"file": "state.json", "sqlite": "state.db"}
#: The journal budget in the writer: a compaction every few appends.
JOURNAL_BUDGET = 1500


# -- the states written ---------------------------------------------------------------------


def store_generation(state: dict[str, Any]) -> int | None:
    """``generation`` for the ``store`` writer: its slice is ``application.pc``."""
    pc = state.get("application", {}).get("pc") if isinstance(state, dict) else None
    if pc is None:
        return 0 if not state.get("application", {}).get("pc") else None
    g = generation({"application": pc})
    return g if g else None


def schedule(g: int, rng: random.Random, backend: str) -> str:
    """Which call commits generation ``g``: mostly appends, the rest of the protocol too."""
    if g == 1:
        return "save"
    roll = rng.random()
    if g % 10 == 0:
        return "reopen"
    if g % 10 == 5 and backend == "file":
        return "tear"
    if roll < 0.12:
        return "save"
    if roll < 0.20:
        return "transaction"
    if roll < 0.26:
        return "cas"
    return "append"


# -- the writer (runs under strace) ---------------------------------------------------------


#: Deliberately broken writers, to show the campaign notices a loss (``--sabotage``).
SABOTAGE = {"file": ("no-fsync", "no-dir-fsync"), "sqlite": ("sync-normal", "sync-off")}


def make_store(backend: str, path: Path, sabotage: str = "", backups: int = 2) -> Any:
    from cascadeui.adapters import FileStore, SQLiteStore

    if backend == "file":
        return FileStore(path, backups=backups, lock_timeout=5.0)
    store = SQLiteStore(path, timeout=5.0)
    # A checkpoint every few commits, so cuts land in checkpoints too (SQLite's default
    # is every 1000 pages). Test-only use of the store's connection.
    with store._connection() as conn:
        conn.execute("PRAGMA wal_autocheckpoint = 3")
        if sabotage:  # NORMAL: WAL commits are not fsynced; OFF: nothing is
            conn.execute(f"PRAGMA synchronous = {sabotage.split('-')[1].upper()}")
    return store


def sabotage_file(kind: str) -> None:
    """Break the JSON file adapter in this (writer) process only."""
    from cascadeui.adapters import _fileio

    if kind == "no-fsync":
        def skip(fd: int) -> None:
            return None

        os.fsync = skip
    elif kind == "no-dir-fsync":
        _fileio.fsync_dir = lambda directory: None


def writer(backend: str, root: Path, gens: int, seed: int, sabotage: str = "") -> None:
    from cascadeui.adapters import _journal as journal

    if sabotage and backend == "file":
        sabotage_file(sabotage)

    journal.JOURNAL_MIN_BYTES = JOURNAL_BUDGET  # should_compact reads it at each call
    marks = os.open("/dev/null", os.O_WRONLY)

    def mark(text: str) -> None:
        os.write(marks, b"PCMARK " + text.encode())

    ser = StateSerializer()
    path = root / NAMES[backend]
    rng = random.Random(seed)
    backups = seed % 3  # 0, 1 or 2 .bak generations
    store = make_store(backend, path, sabotage, backups)
    current, version = store.load_versioned()
    snap = 0  # the generation of the last whole write (the snapshot's bytes, unless compacted)
    for g in range(1, gens + 1):
        kind = schedule(g, rng, backend)
        new = expected(g)
        if kind == "append" and g % 10 == 6 and g - 1 > snap >= 1:
            # An echo: a whole write of the snapshot's very bytes over a journal after it
            # (save(a) over a + journal a -> b). Generation g's document is snapshot's.
            kind, new = "echo", expected(snap)
            mark(f"start {g} echo {snap}")
        else:
            mark(f"start {g} {kind}")
        if kind == "tear":
            # What a writer killed mid-append leaves behind: half a record at the end of
            # the journal and a temp file. The next store must append past the first
            # (rewriting the journal without it) and sweep the second.
            with open(path.with_name(path.name + ".journal"), "ab") as fh:
                fh.write(b'0badc0de {"ops":[[["application","gen"],')
            path.with_name(f".{path.name}.killed.tmp").write_bytes(b'{"half":')
            kind = "reopen"
        if kind == "reopen":
            store.close()
            store = make_store(backend, path, sabotage, backups)
            current, version = store.load_versioned()
            kind = "append"
        if kind == "append":
            result = store.save_changes(diff(current, new), version,
                                        full=lambda new=new: ser.serialize(new))
        elif kind in ("save", "echo"):
            store.save(new)
            result = store.version()
        elif kind == "transaction":
            with store.transaction() as state:
                state.clear()
                state.update(new)
            result = store.version()
        else:
            result = store.save_if_version(new, version)
        if result is None:
            raise SystemExit(f"generation {g}: {kind} found the version moved")
        mark(f"ack {g}")
        if kind in ("save", "transaction", "cas"):
            snap = g
        current, version = new, result
    store.close()


async def store_writer(backend: str, root: Path, gens: int, seed: int) -> None:
    """The store engine's path: ``dispatch(..., durable=True)`` returning is the ack.

    Its writes are journal appends of the changed leaves, compactions, and the closing
    compaction, made from anyio worker threads.
    """
    from cascadeui.adapters import _journal as journal
    from cascadeui.store import StateStore

    journal.JOURNAL_MIN_BYTES = JOURNAL_BUDGET
    marks = os.open("/dev/null", os.O_WRONLY)
    path = root / NAMES[backend]
    store = StateStore()
    await store.enable_persistence(make_store(backend, path, backups=seed % 3),
                                   debounce=0.0, max_delay=0.0, poll_interval=None,
                                   push=False)

    async def one(g: int) -> None:
        os.write(marks, f"PCMARK start {g}".encode())
        await store.dispatch("APPLICATION_SET",
                             {"path": ["pc"], "value": expected(g)["application"]},
                             durable=True)
        os.write(marks, f"PCMARK ack {g}".encode())

    g = 1
    while g <= gens:
        if g % 4 == 2 and g < gens:
            # Two durable waiters at once: each may return only once its own change is
            # stored, not when an earlier write (that holds only g) lands.
            first = asyncio.ensure_future(one(g))
            for _ in range(100_000):  # until g is applied (dispatch awaits before it)
                if store.state.get("application", {}).get("pc", {}).get("gen") == g:
                    break
                await asyncio.sleep(0)
            await asyncio.gather(first, one(g + 1))
            g += 2
        else:
            await one(g)
            g += 1
    await store.close(close_backend=True)


# -- checking crash states ------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    """Every file and its bytes, but the lock file (a locked read creates it)."""
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())
            if p.is_file() and not p.name.endswith(".lock")}


#: The WARNINGs a crash state may give, each for a reason the model allows: a cut between
#: the snapshot's replace and the journal's unlink leaves a journal of the old snapshot,
#: which the next write sets aside. Any other WARNING is a finding (issue 25 item 8).
EXPECTED_WARNINGS = ("does not belong to the snapshot",)


class _Warnings(logging.Handler):
    """Counts the WARNINGs the adapters log while a crash state is checked (not printed)
    and judges each: the unexpected ones are kept (a few) and fail the campaign."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        text = record.getMessage()
        if not any(ok in text for ok in EXPECTED_WARNINGS):
            self.unexpected.append(text[:300])


WARNINGS = _Warnings()


def check_state(backend: str, root: Path, mode: str = "adapter") -> dict[str, Any]:
    """Load one materialised crash state and try one more commit on it."""
    before_warnings = WARNINGS.count
    try:
        out = _check_state(backend, root, mode)
    finally:
        out_warned = WARNINGS.count > before_warnings
    out["warned"] = out_warned
    return out


def _check_state(backend: str, root: Path, mode: str) -> dict[str, Any]:
    ser = StateSerializer()
    gen_of = store_generation if mode == "store" else generation
    path = root / NAMES[backend]
    before = _files(root)
    store = make_store(backend, path) if backend == "file" else None
    try:
        if store is None:
            store = make_store(backend, path)
        state, version = store.load_versioned()
    except PersistenceError as exc:
        if store is not None:
            store.close()
        kept = backend != "file" or _files(root) == before
        return {"result": "refused", "error": f"{type(exc).__name__}: {exc}", "kept": kept}
    except Exception as exc:  # an untyped error is a finding
        return {"result": "untyped", "error": f"{type(exc).__name__}: {exc}"}
    g = gen_of(state)
    out: dict[str, Any] = {"result": "loaded", "gen": g}
    if backend == "file":
        baks = []
        for bak in sorted(root.glob(NAMES["file"] + ".bak*")):
            if bak.name.endswith(".tmp"):
                continue
            try:
                baks.append(gen_of(ser.deserialize(bak.read_bytes())))
            except PersistenceError:
                baks.append(None)
        out["baks"] = baks
    # One more commit, the way the store engine makes it, and a fresh read of it.
    try:
        after = {**state, "recovered": {"by": "powercut"}}
        new_version = store.save_changes(diff(state, after), version,
                                         full=lambda: ser.serialize(after))
        store.close()
        with make_store(backend, path) as again:
            reread = again.load()
        out["recovered"] = new_version is not None and reread == after
    except Exception as exc:
        out["recovered"] = False
        out["recover_error"] = f"{type(exc).__name__}: {exc}"
    return out


def judge(res: dict[str, Any], acked: int, started: int,
          echoes: dict[int, int] | None = None) -> str | None:
    """None if the state is acceptable after a cut between ``acked`` and ``started``.

    ``echoes`` maps a generation whose document is an earlier one's (an echo) to that
    earlier one: the document of ``s`` stands for ``s`` and for every echo of it.
    """
    if res["result"] == "untyped":
        return f"untyped error: {res['error']}"
    if res["result"] == "refused":
        if not res["kept"]:
            return f"refused and changed the files: {res['error']}"
        if acked:
            return f"refused with {acked} generations acknowledged: {res['error']}"
        return None
    g = res["gen"]
    if g is None:
        return "the state is no generation that was written (torn or mixed)"
    fits = [e for e, s in (echoes or {}).items() if s == g and acked <= e <= started]
    if fits:
        g = fits[0]
    if g < acked:
        return f"lost acknowledged generations: loaded {g}, acknowledged {acked}"
    if g > started:
        return f"loaded generation {g}, never started (last start {started})"
    if not res.get("recovered"):
        return f"cannot commit after the cut: {res.get('recover_error', 'reread differs')}"
    for b in res.get("baks", []):
        if b is None or b > started:
            return f"a backup is not a whole written generation: {res['baks']}"
    return None


def run_trace(backend: str, work: Path, gens: int, seed: int, limit: int,
              budget: int, findings: list[dict[str, Any]],
              cache: dict[str, dict[str, Any]], sabotage: str = "",
              mode: str = "adapter") -> dict[str, int]:
    """Record one writer run, then check the crash states of up to ``budget`` cuts."""
    root = work / f"{backend}-{seed}"
    root.mkdir()
    trace = work / f"{backend}-{seed}.trace"
    argv = script_command("campaigns.powercut", "--worker", backend,
                          "--root", str(root), "--gens", str(gens), "--seed", str(seed))
    if sabotage:
        argv += ["--sabotage", sabotage]
    argv += ["--mode", mode, "--big-every", str(big_every())]
    out = record(argv, trace, env=script_env())
    if out.returncode != 0:
        raise SystemExit(f"writer failed: {out.stderr.decode()[-2000:]}")
    ops = parse_trace(trace.read_text(), root)
    trace.unlink()
    # A cut after ops[i] stands for any moment before the next file operation, so the
    # marks written in between count: (last ack, last start) as of that next operation.
    marks_at: list[tuple[int, int]] = [(0, 0)] * len(ops)
    acked = started = 0
    last = -1
    echoes: dict[int, int] = {}
    for i, op in enumerate(ops):
        if op.kind == "mark" and op.text.startswith("start "):
            started = max(started, int(op.text.split()[1]))
            if op.text.split()[2:3] == ["echo"]:
                echoes[started] = int(op.text.split()[3])
        elif op.kind == "mark" and op.text.startswith("ack "):
            acked = max(acked, int(op.text.split()[1]))  # concurrent waiters: any order
        if op.kind != "mark":
            last = i
        if last >= 0:
            marks_at[last] = (acked, started)
    counts = {"cuts": 0, "states": 0, "checks": 0, "acked": acked, "lost": 0,
              "refused": 0, "warned": 0}
    state_dir = work / "state"
    for i, states in crash_states(ops, limit=limit, seed=seed):
        if counts["cuts"] >= budget:
            break
        counts["cuts"] += 1
        ack, start = marks_at[i]
        for st in states:
            key = st.key()
            res = cache.get(key)
            if res is None:
                res = cache[key] = _check(backend, st, state_dir, mode)
                counts["states"] += 1
                counts["warned"] += res["warned"]
            counts["checks"] += 1
            problem = judge(res, ack, start, echoes)
            if res["result"] == "refused":
                counts["refused"] += 1
            if problem is not None:
                counts["lost"] += 1
                if len(findings) < 20:
                    findings.append({"backend": backend, "seed": seed, "cut": i,
                                     "acked": ack, "started": start, "problem": problem,
                                     "how": st.how, "files": [e[0] for e in st.entries]})
    shutil.rmtree(root, ignore_errors=True)
    return counts


def _check(backend: str, st: CrashState, state_dir: Path, mode: str) -> dict[str, Any]:
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir()
    materialise(st, state_dir)
    return check_state(backend, state_dir, mode)


def campaign(backend: str, cuts: int, gens: int, seed: int, limit: int,
             work: Path, sabotage: str = "", mode: str = "adapter") -> dict[str, Any]:
    findings: list[dict[str, Any]] = []
    cache: dict[str, dict[str, Any]] = {}
    total = {"cuts": 0, "states": 0, "checks": 0, "acked": 0, "lost": 0, "refused": 0,
             "warned": 0, "traces": 0}
    t0 = time.monotonic()
    n = 0
    while total["cuts"] < cuts:
        counts = run_trace(backend, work, gens, seed + n, limit, cuts - total["cuts"],
                           findings, cache, sabotage, mode)
        n += 1
        total["traces"] += 1
        for k, v in counts.items():
            total[k] += v
    return {"backend": backend, "mode": mode, **total, "seconds": round(time.monotonic() - t0, 1),
            "findings": findings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", type=int, default=1000, help="power cuts per backend")
    ap.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    ap.add_argument("--gens", type=int, default=40, help="generations per recorded run")
    ap.add_argument("--limit", type=int, default=24, help="crash states per cut at most")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--sabotage", default="",
                    choices=("", *SABOTAGE["file"], *SABOTAGE["sqlite"]),
                    help="break the writer on purpose (self-test: the campaign must see loss)")
    ap.add_argument("--mode", choices=("adapter", "store"), default="adapter",
                    help="adapter: the adapters' calls; store: a StateStore's durable dispatches")
    ap.add_argument("--big-every", type=int, default=0,
                    help="every Nth generation is a document of about 2.4 MB (0: none)")
    ap.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    set_big_every(args.big_every)
    if args.worker:
        if args.mode == "store":
            asyncio.run(store_writer(args.worker, Path(args.root), args.gens, args.seed))
        else:
            writer(args.worker, Path(args.root), args.gens, args.seed, args.sabotage)
        return 0
    # The adapters' WARNINGs (a stale journal set aside, a backup loaded) are counted per
    # crash state ("warned"), not printed thousands of times.
    log = logging.getLogger("cascadeui")
    log.addHandler(WARNINGS)
    log.propagate = False
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    if args.sabotage:
        backends = tuple(b for b in backends if args.sabotage in SABOTAGE[b])
    results = []
    # Crash states are written and loaded thousands of times: on a tmpfs their fsyncs
    # cost nothing (the recording does not depend on the file system it runs on).
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="cascadeui-powercut-", dir=shm) as tmp:
        for backend in backends:
            res = campaign(backend, args.cuts, args.gens, args.seed, args.limit, Path(tmp),
                           args.sabotage, args.mode)
            results.append(res)
            print(json.dumps(res), flush=True)
    summary = {k: sum(r[k] for r in results)
               for k in ("cuts", "states", "checks", "acked", "lost", "refused", "warned")}
    summary["lost"] += planted("loss")
    unexpected = len(WARNINGS.unexpected) + planted("warning")
    for text in WARNINGS.unexpected[:5]:
        print(f"unexpected WARNING: {text}", file=sys.stderr)
    print(json.dumps({"summary": True, **summary, "unexpected_warnings": unexpected}))
    print(f"{summary['cuts']} cuts, {summary['states']} crash states, "
          f"{summary['acked']} acknowledged changes, {summary['lost']} lost")
    return 1 if summary["lost"] or unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
