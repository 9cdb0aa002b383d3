"""System-call fault injection for the adapters' own files (issue 7), shared by the fault
campaign (tests/campaigns/test_faults.py) and the journal tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@contextmanager
def failing(monkeypatch: pytest.MonkeyPatch, calls: str, code: int,
            hit: Callable[[str], bool]) -> Iterator[list[str]]:
    """Make each ``os.<call>`` in ``calls`` ("open,link") fail with ``code`` for the paths
    ``hit`` selects; every other call goes through.

    Yields the list of paths that were refused (so a test proves the fault fired).
    """
    refused: list[str] = []
    reals = {call: getattr(os, call) for call in calls.split(",")}

    def make(call: str) -> Callable[..., Any]:
        real = reals[call]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            first = args[0] if args else ""
            target = _fd_path(first) if isinstance(first, int) else os.fspath(first)
            second = os.fspath(args[1]) if call in ("replace", "rename", "link") else ""
            if hit(target) or (second and hit(second)):
                refused.append(second or target)
                raise OSError(code, os.strerror(code), target)
            return real(*args, **kwargs)

        return wrapper

    for call in reals:
        monkeypatch.setattr(os, call, make(call))
    try:
        yield refused
    finally:
        for call, real in reals.items():
            monkeypatch.setattr(os, call, real)


def is_temp(name: str) -> Callable[[str], bool]:
    return lambda p: os.path.basename(p).startswith(f".{name}.") and p.endswith(".tmp")


def is_exactly(path: Path) -> Callable[[str], bool]:
    return lambda p: p == str(path)


def is_journal(path: Path) -> Callable[[str], bool]:
    return lambda p: p == f"{path}.journal"


def is_lock(path: Path) -> Callable[[str], bool]:
    return lambda p: p == f"{path}.lock"


def is_rotation(path: Path) -> Callable[[str], bool]:
    return lambda p: p.startswith(f"{path}.bak")


def disk(tmp: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tmp.iterdir())
            if p.is_file() and not p.name.endswith((".lock", ".lock.commit"))}
