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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _registry import kinds
from _registry import target as registry_target
from _spawn import start, worker

from cascadeui.adapters import FileStore
from cascadeui.persistence import backend_from_url

INCREMENTS = int(os.environ.get("CASCADEUI_MP_INCREMENTS", "200"))
KILLS = int(os.environ.get("CASCADEUI_KILLS", "20"))
#: Several OS processes share the medium.
KINDS = kinds("multiprocess")


def adapter(target: tuple[str, str]) -> Any:
    """A fresh adapter on the target's medium, in this process."""
    return backend_from_url(target[1]).store



class Spawner:
    """Drives the spawner subprocess line by line, with bounded waits."""

    def __init__(self, target: str) -> None:
        self.proc = start(worker("fork", target), stdin=True)
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
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, the backend's path or URL)."""
    return request.param, registry_target(request.param, request, tmp_path)


@pytest.fixture
def spawner(target: tuple[str, str]) -> Iterator[Spawner]:
    sp = Spawner(target[1])
    yield sp
    sp.close()


def test_four_processes_increment_exactly(target: tuple[str, str],
                                          spawner: Spawner) -> None:
    spawner.ask(f"increment 4 {INCREMENTS}")
    assert spawner.read("done") == ["0"] * 4
    with adapter(target) as store:
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


def test_sigkill_while_saving_never_leaves_a_torn_state(target: tuple[str, str],
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
        with adapter(target) as store:
            seq = _check_complete(store.load())
        assert seq > last  # the newest committed state, never an older one
        last = seq
    if target[0] == "file":
        with FileStore(target[1]) as store:
            _check_complete(store.serializer.deserialize(
                Path(f"{target[1]}.bak").read_bytes()))
