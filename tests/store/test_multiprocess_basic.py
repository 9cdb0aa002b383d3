"""Real processes against one store (issue 2): no lost update, no torn state after SIGKILL.

A spawner subprocess imports cascadeui once and ``fork``s the worker processes (forking a
fresh single-threaded interpreter is safe, and it saves an import of discord.py per
worker). The test kills workers by pid with SIGKILL. Sizes: ``CASCADEUI_MP_INCREMENTS``
(default 200 per process, 4 processes) and ``CASCADEUI_KILLS`` (default 20 per backend).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import open_adapter

from cascadeui.adapters import FileStore, RedisStore

INCREMENTS = int(os.environ.get("CASCADEUI_MP_INCREMENTS", "200"))
KILLS = int(os.environ.get("CASCADEUI_KILLS", "20"))
KINDS = ["file", "sqlite", "redis"]

SPAWNER = r'''
import hashlib, os, sys
import redis, sqlite_utils  # imported once here, not in every forked worker
from cascadeui.adapters import FileStore, RedisStore, SQLiteStore
from cascadeui.errors import LockTimeoutError

kind, where, key = sys.argv[1], sys.argv[2], sys.argv[3]

def say(line):
    # One write() per line: the parent and its forked savers share this pipe, and
    # print() may write the text and its newline separately ("forked 18781ready 18781").
    os.write(1, (line + "\n").encode())

def open_store():
    if kind == "file":
        return FileStore(where, lock_timeout=60)
    if kind == "sqlite":
        return SQLiteStore(where, timeout=60)
    return RedisStore(where, key=key, lock_timeout=60)

def increment(n):
    store = open_store()
    for _ in range(n):
        with store.transaction() as st:
            st["counter"] = st.get("counter", 0) + 1
            st.setdefault("pids", set()).add(os.getpid())
    store.close()

def save_loop(seq):
    store = open_store()
    if kind == "redis":
        store.lock_timeout = 0.2  # a killed writer's lease ends quickly
    announced = False
    while True:
        seq += 1
        payload = "x" * (1000 + (seq * 7919) % 60000)
        digest = hashlib.sha256(f"{seq}:{payload}".encode()).hexdigest()
        try:
            store.save({"seq": seq, "payload": payload, "digest": digest,
                        "ids": {seq: (seq,)}})
        except LockTimeoutError:
            continue
        if not announced:
            say(f"ready {os.getpid()}")
            announced = True

def fork(job, *args):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            job(*args)
        except BaseException as exc:
            say(f"error {os.getpid()} {exc!r}")
            code = 1
        os._exit(code)
    return pid

for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "increment":
        procs, n = int(args[0]), int(args[1])
        pids = [fork(increment, n) for _ in range(procs)]
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
        say("done " + " ".join(map(str, codes)))
    elif cmd == "saver":
        pid = fork(save_loop, int(args[0]))
        say(f"forked {pid}")
    elif cmd == "reap":
        pid = int(args[0])
        say(f"reaped {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}")
'''


class Spawner:
    """Drives the spawner subprocess line by line, with bounded waits."""

    def __init__(self, kind: str, where: str, key: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SPAWNER, kind, where, key], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.children: set[int] = set()
        self.pending: list[str] = []

    def ask(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self, prefix: str) -> list[str]:
        """The next line starting with ``prefix`` (a forked worker's lines may interleave)."""
        assert self.proc.stdout is not None
        for i, line in enumerate(self.pending):
            if line.startswith(prefix):
                del self.pending[i]
                return line.split()[1:]
        while True:
            line = self.proc.stdout.readline()  # the pytest timeout bounds a hung worker
            if line.startswith(prefix):
                return line.split()[1:]
            if not line or line.startswith("error"):
                if self.proc.poll() is not None and self.proc.stderr:
                    line += self.proc.stderr.read()
                raise AssertionError(f"expected {prefix!r}, got {line!r}")
            self.pending.append(line)

    def close(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    kind = request.param
    if kind == "file":
        yield kind, str(tmp_path / "state.json"), "-"
    elif kind == "sqlite":
        yield kind, str(tmp_path / "state.db"), "-"
    else:
        key = request.getfixturevalue("redis_key")
        yield kind, request.getfixturevalue("redis_url"), key
        with RedisStore(request.getfixturevalue("redis_url"), key=key) as store:
            store._client.delete(key, store.version_key, store.lock_key)


@pytest.fixture
def spawner(target: tuple[str, str, str]) -> Iterator[Spawner]:
    sp = Spawner(*target)
    yield sp
    sp.close()


def test_four_processes_increment_exactly(target: tuple[str, str, str],
                                          spawner: Spawner) -> None:
    spawner.ask(f"increment 4 {INCREMENTS}")
    assert spawner.read("done") == ["0"] * 4
    with open_adapter(*target) as store:
        state = store.load()
        assert state["counter"] == 4 * INCREMENTS
        assert len(state["pids"]) == 4
        if target[0] != "file":
            assert store.version() == 4 * INCREMENTS


def _check_complete(state: dict[str, Any]) -> int:
    import hashlib

    seq = state["seq"]
    payload = state["payload"]
    assert len(payload) == 1000 + (seq * 7919) % 60000
    assert state["digest"] == hashlib.sha256(f"{seq}:{payload}".encode()).hexdigest()
    assert state["ids"] == {seq: (seq,)}
    return int(seq)


def test_sigkill_while_saving_never_leaves_a_torn_state(target: tuple[str, str, str],
                                                        spawner: Spawner) -> None:
    rng = random.Random(1234)
    last = 0
    for _ in range(KILLS):
        spawner.ask(f"saver {last}")
        (pid_text,) = spawner.read("forked")
        pid = int(pid_text)
        spawner.children.add(pid)
        assert spawner.read("ready") == [pid_text]  # it has committed at least once
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(pid, signal.SIGKILL)
        spawner.ask(f"reap {pid}")
        assert spawner.read("reaped") == [str(-signal.SIGKILL)]
        spawner.children.discard(pid)
        with open_adapter(*target) as store:
            seq = _check_complete(store.load())
        assert seq > last  # the newest committed state, never an older one
        last = seq
    if target[0] == "file":
        with FileStore(target[1]) as store:
            _check_complete(store.serializer.deserialize(
                Path(f"{target[1]}.bak").read_bytes()))
