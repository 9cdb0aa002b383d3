"""Forking from a spawner worker that imported cascadeui once (``tests/_*_worker.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def fork(job: Callable[..., object], *args: Any, report: Callable[[str], object]) -> int:
    """Run ``job(*args)`` in a forked child, which exits 0, or 1 after ``report``ing
    ``error PID EXC``; returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            job(*args)
        except BaseException as exc:  # the child's outcome is its exit code and report
            report(f"error {os.getpid()} {exc!r}")
            code = 1
        os._exit(code)
    return pid
