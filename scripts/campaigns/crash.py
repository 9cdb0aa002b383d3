#!/usr/bin/env python3
"""SIGKILL campaign (issue 7, "Crashes"): nothing acknowledged is ever lost.

For the JSON file and SQLite, each round forks a writer process that loads the state,
then saves generation after generation as fast as it can, and SIGKILLs it at a random
moment. Two writers exist:

- ``adapter``: ``FileStore``/``SQLiteStore`` ``save()`` and ``transaction()`` directly;
- ``store``: a :class:`~cascadeui.store.StateStore` with persistence enabled, dispatching
  ``APPLICATION_SET`` and ``PERSISTENT_VIEW_REGISTERED`` and awaiting ``flush()``: its
  writes are mostly change-journal appends (the padding changes every ``PAD_EVERY``
  generations only), so a kill lands in appends, compactions and full writes.

Before a save the writer writes ``S <n>`` to a pipe, and ``A <n>`` once the save returned
success (``flush()`` returned True): the pipe keeps what the writer wrote even after
SIGKILL, so after each kill the campaign knows exactly the last acknowledged generation.
It then loads the state with a fresh adapter and checks that:

- the load succeeds (no error, no fallback needed for the main copy) and the state is
  *complete and valid*: it equals ``expected(n)`` exactly for the generation ``n`` it names;
- it is never older than the last acknowledged save (``n >= last ack``) nor than the
  previous round's state, and never newer than the last attempted one;
- for the file store, every backup generation present is valid too and not newer.

For Redis the server is the victim: a private ``redis-server`` (appendonly yes,
appendfsync always) is SIGKILLed at a random moment while a writer saves; the writer is
killed too (so its lock lease may be left behind), the server restarts on the same port
and directory, and the same checks run. Prints one JSON line per campaign and a summary.

For PostgreSQL (``--backends postgres``, not in the default set) the writer is SIGKILLed
mid-transaction every round, and on every third round the server too: a private
``postgres`` (initdb + postgres from PATH) is SIGKILLed (crash recovery on restart) and
started again. Without the binaries, a scratch database on
``CASCADEUI_TEST_POSTGRES_URL`` or 127.0.0.1:5432 is used and only writers are killed.

Full size (the numbers in docs/reliability.md)::

    python -m campaigns.crash --kills 200

Small size (what tests/campaigns/test_reliability_crash.py runs)::

    python -m campaigns.crash --kills 6 --size 8000

PostgreSQL::

    python -m campaigns.crash --kills 60 --backends postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kit.plant import planted
from kit.redis_server import RedisServer, durable_redis

from cascadeui._backends import AsyncBackend
from cascadeui.adapters import FileStore, RedisStore, SQLiteStore
from cascadeui.errors import PersistenceError
from cascadeui.serializer import StateSerializer
from cascadeui.store import StateStore

BACKENDS = ("file", "sqlite", "redis")
SABOTAGE = ""  # --sabotage: a deliberately broken file writer (self-test of the campaign)
MODES = ("adapter", "store")
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))


# -- the states written ------------------------------------------------------------------


#: The padding changes every PAD_EVERY generations only, like a bot's bulk data: the
#: store's other writes are small changes, so its change journal takes appends (and is
#: compacted at least every PAD_EVERY generations, when the padding changes).
PAD_EVERY = 50


def expected_app(n: int, size: int) -> dict[str, Any]:
    """Generation ``n`` of the application slice: every field derives from ``n``."""
    digest = hashlib.sha256(f"gen-{n}".encode()).hexdigest()
    pad = hashlib.sha256(f"pad-{n // PAD_EVERY}".encode()).hexdigest()
    return {"n": n, "digest": digest, "when": _EPOCH + timedelta(seconds=n),
            "tags": {n, n + 1, n + 2}, "by_user": {10**17 + i: f"{digest[i]}{n}" for i in range(8)},
            "pair": (n, digest[:4]), "pad": (pad * (size // 64 + 1))[:size]}


def expected_state(n: int, size: int) -> dict[str, Any]:
    return {"application": {"campaign": expected_app(n, size)}}


def generation(state: dict[str, Any]) -> int:
    """The generation a loaded state names (0 for a fresh store)."""
    app = state.get("application", {})
    if not app:
        return 0
    return int(app["campaign"]["n"])


def check_state(state: dict[str, Any], size: int, mode: str) -> tuple[int, str | None]:
    """(generation, problem or None): the state must be exactly some generation."""
    try:
        n = generation(state)
    except (KeyError, TypeError, ValueError) as exc:
        return -1, f"state names no generation: {exc!r}"
    if n == 0:
        return 0, None if not state.get("application") else "empty campaign slice"
    if state["application"]["campaign"] != expected_app(n, size):
        return n, f"generation {n} is not exactly what was written"
    if mode == "store":
        views = state.get("persistent_views", {})
        try:  # the registry keeps snowflakes as decimal strings
            ids = [int(v["message_id"]) for v in views.values()]
        except (KeyError, TypeError, ValueError) as exc:
            return n, f"persistent_views entry without a message id: {exc!r}"
        if not ids or max(ids) not in (n, n + 1) or any(not 0 < i <= n + 1 for i in ids):
            return n, f"persistent_views inconsistent with generation {n}: {ids}"
    return n, None


# -- the writer (runs in the forked child until it is killed) ----------------------------


def make_adapter(backend: str, where: str, key: str) -> Any:
    if backend == "file":
        return FileStore(where, backups=2, lock_timeout=5.0)
    if backend == "sqlite":
        return SQLiteStore(where, timeout=5.0)
    if backend == "postgres":
        from cascadeui.adapters import PostgresStore

        return PostgresStore(where, table=key, timeout=5.0, connect_timeout=2.0)
    return RedisStore(where, key=key, lock_timeout=1.0, socket_timeout=1.0)


def sabotaged_writer(kind: str, where: str, size: int, out: int) -> None:
    """Broken writers that prove the campaign detects loss (``--sabotage``, tests only).

    ``inplace`` rewrites the JSON file in place without a temp file or fsync; ``early-ack``
    acknowledges a generation before saving it.
    """
    ser = StateSerializer()
    store = FileStore(where, backups=0)
    n = generation(store.load())
    os.write(out, b"R\n")
    while True:
        n += 1
        os.write(out, f"S {n}\n".encode())
        data = ser.serialize(expected_state(n, size)).encode()
        if kind == "early-ack":
            os.write(out, f"A {n}\n".encode())
            time.sleep(0.002)
            store.save(expected_state(n, size))
            continue
        with open(where, "wb") as fh:
            for i in range(0, len(data), 4096):
                fh.write(data[i:i + 4096])
                fh.flush()
        os.write(out, f"A {n}\n".encode())


def adapter_writer(backend: str, where: str, key: str, size: int, out: int) -> None:
    store = make_adapter(backend, where, key)
    while True:
        try:
            n = generation(store.load())
            break
        except PersistenceError:  # Redis still loading its AOF after a restart
            time.sleep(0.02)
    os.write(out, b"R\n")
    while True:
        n += 1
        os.write(out, f"S {n}\n".encode())
        try:
            if n % 3 == 0:
                with store.transaction() as state:
                    state.clear()
                    state.update(expected_state(n, size))
            else:
                store.save(expected_state(n, size))
        except PersistenceError:
            time.sleep(0.005)  # Redis down: the save failed and is not acknowledged
            continue
        os.write(out, f"A {n}\n".encode())


async def store_writer(backend: str, where: str, key: str, size: int, out: int) -> None:
    store = StateStore()
    adapter = make_adapter(backend, where, key)
    while True:
        try:
            await store.enable_persistence(AsyncBackend(adapter), debounce=0.0, max_delay=0.0,
                                           retry_initial=0.01, retry_max=0.05)
            break
        except PersistenceError:
            await asyncio.sleep(0.02)
    n = generation(store.state)
    os.write(out, b"R\n")
    while True:
        n += 1
        os.write(out, f"S {n}\n".encode())
        await store.dispatch("APPLICATION_SET", {"path": ["campaign"],
                                                 "value": expected_app(n, size)})
        await store.dispatch("PERSISTENT_VIEW_REGISTERED", {
            "state_key": f"panel:{n % 5}", "class_name": "Panel", "message_id": n,
            "channel_id": 1, "guild_id": 2, "user_id": 3})
        if await store.flush():
            os.write(out, f"A {n}\n".encode())


def run_writer(backend: str, mode: str, where: str, key: str, size: int, out: int) -> None:
    import logging

    logging.disable(logging.CRITICAL)  # failed saves while Redis is down are expected
    try:
        if SABOTAGE:
            sabotaged_writer(SABOTAGE, where, size, out)
        elif mode == "adapter":
            adapter_writer(backend, where, key, size, out)
        else:
            asyncio.run(store_writer(backend, where, key, size, out))
    except BaseException as exc:  # report it; never fall back into the parent's code
        try:
            os.write(out, f"E {type(exc).__name__}: {exc}\n".encode()[:4000])
        finally:
            os._exit(3)
    os._exit(0)


# -- one round ---------------------------------------------------------------------------


class Pipe:
    """The read end of a writer's report pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.lines: list[str] = []

    def _take(self, chunk: bytes) -> None:
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        self.lines += [d.decode() for d in done]

    def wait_for(self, prefix: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return False
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return False
            self._take(chunk)
        return True

    def drain(self) -> None:
        while True:
            chunk = os.read(self.fd, 65536)  # the writer is dead: EOF comes
            if not chunk:
                break
            self._take(chunk)
        os.close(self.fd)

    def last(self, tag: str) -> int:
        return max((int(line[2:]) for line in self.lines if line.startswith(f"{tag} ")),
                   default=0)


def spawn(backend: str, mode: str, where: str, key: str, size: int) -> tuple[int, Pipe]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer
        os.close(r)
        run_writer(backend, mode, where, key, size, w)
    os.close(w)
    return pid, Pipe(r)


@contextlib.contextmanager
def postgres_target() -> Iterator[tuple[Any, str]]:
    """(a private server or None, the URL of a scratch database on it), cleaned up after."""
    from kit.postgres_server import (
        DEFAULT_URL,
        PostgresServer,
        find_binaries,
        scratch_database,
    )

    with contextlib.ExitStack() as stack:
        server = None
        if find_binaries() is not None:
            server = stack.enter_context(PostgresServer())
            admin = server.url
        else:
            admin = os.environ.get("CASCADEUI_TEST_POSTGRES_URL", DEFAULT_URL)
        yield server, stack.enter_context(scratch_database(admin))


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def verify(backend: str, where: str, key: str, size: int, mode: str) -> tuple[int, list[str]]:
    problems: list[str] = []
    store = make_adapter(backend, where, key)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                state = store.load()
                break
            except PersistenceError as exc:
                if backend not in ("redis", "postgres") or time.monotonic() > deadline:
                    return -1, [f"load failed after the kill: {exc}"]
                time.sleep(0.02)  # the restarted server is loading its AOF
    finally:
        store.close()
    n, problem = check_state(state, size, mode)
    if problem:
        problems.append(problem)
    if backend == "file":
        for bak in FileStore(where, backups=2).backup_paths():
            if not bak.exists():
                continue
            try:
                text = bak.read_bytes()
                m, problem = check_state(StateSerializer().deserialize(text), size, mode)
            except PersistenceError as exc:
                problems.append(f"backup {bak.name} unreadable: {exc}")
                continue
            if problem or m > n:
                problems.append(f"backup {bak.name}: {problem or f'newer ({m}) than main ({n})'}")
    return n, problems


def campaign(backend: str, mode: str, kills: int, size: int, max_delay: float,
             rnd: random.Random, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    key = f"cascadeui-crash:{os.getpid()}:{mode}"
    redis: RedisServer | None = None
    pg: Any = None  # a private PostgresServer, the victim every third round
    scope = contextlib.ExitStack()
    if backend == "postgres":
        pg, where = scope.enter_context(postgres_target())
        key = f"crash_{mode}"
    elif backend == "redis":
        redis = durable_redis(workdir / f"redis-{mode}")
        redis.workdir.mkdir()
        redis.start()
        where = redis.url
    else:
        where = str(workdir / (f"{mode}.json" if backend == "file" else f"{mode}.db"))
    floor = 0
    acked_total = in_flight = behind = 0
    problems: list[str] = []
    rounds = 0
    try:
        for rnd_i in range(kills):
            pid, pipe = spawn(backend, mode, where, key, size)
            try:
                if not pipe.wait_for("R", 60):
                    pipe.drain()
                    problems.append(f"round {rnd_i}: writer never became ready: {pipe.lines}")
                    break
                time.sleep(rnd.uniform(0, max_delay))
                if redis is not None:
                    redis.kill()  # the victim; the writer sees errors for a moment
                    time.sleep(rnd.uniform(0, 0.02))
                if pg is not None and rnd_i % 3 == 2:
                    pg.kill()
                    time.sleep(rnd.uniform(0, 0.02))
            finally:
                kill(pid)
            pipe.drain()
            errors = [line for line in pipe.lines if line.startswith("E ")]
            if errors:
                problems.append(f"round {rnd_i}: writer crashed by itself: {errors}")
            if redis is not None:
                redis.start()
            if pg is not None and not pg.running:
                pg.start()
            acked, attempted = pipe.last("A"), pipe.last("S")
            acked_total += sum(1 for line in pipe.lines if line.startswith("A "))
            in_flight += attempted > acked
            n, found = verify(backend, where, key, size, mode)
            rounds += 1
            need = max(floor, acked)
            if n < need:
                found.append(f"generation {n} is older than the last acknowledged {need}")
            if n > max(attempted, floor):
                found.append(f"generation {n} was never attempted (last {attempted})")
            behind += n < attempted
            problems += [f"round {rnd_i}: {p}" for p in found]
            floor = max(floor, n)
            if len(problems) > 20:
                break
    finally:
        if redis is not None:
            redis.kill()
        scope.close()
    leftovers = sorted(p.name for p in workdir.iterdir()
                       if p.name.endswith(".tmp") or ".corrupt-" in p.name)
    lost = sum("older than" in p or "load failed" in p for p in problems)
    return {"backend": backend, "mode": mode, "kills": rounds, "acked_saves": acked_total,
            "killed_mid_save": in_flight, "last_generation": floor,
            "unacked_save_not_durable": behind, "lost": lost,
            "problems": problems, "leftover_files": len(leftovers),
            "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs per campaign")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--size", type=int, default=65536, help="bytes of padding per state")
    parser.add_argument("--max-delay", type=float, default=0.15,
                        help="kill within this many seconds of the writer being ready")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--sabotage", choices=("inplace", "early-ack"), default="",
                        help="self-test: a broken file writer the campaign must catch")
    args = parser.parse_args(argv)
    global SABOTAGE
    SABOTAGE = args.sabotage
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rnd = random.Random(seed)
    results = []
    base = Path(tempfile.mkdtemp(prefix="cascadeui-crash-", dir=args.workdir))
    try:
        for backend in args.backends.split(","):
            for mode in args.modes.split(","):
                workdir = base / f"{backend}-{mode}"
                workdir.mkdir()
                result = campaign(backend, mode, args.kills, args.size, args.max_delay, rnd,
                                  workdir)
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary = {"summary": True, "seed": seed, "kills": sum(r["kills"] for r in results),
               "acked_saves": sum(r["acked_saves"] for r in results),
               "lost": sum(r["lost"] for r in results) + planted("loss"),
               "problems": sum(len(r["problems"]) for r in results) + planted("loss")}
    print(json.dumps(summary), flush=True)
    ok = summary["problems"] == 0 and all(r["kills"] == args.kills for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
