"""Private servers that die with the run that started them, and a sweep of what a crashed
or timed-out run left behind (issue 23).

- :func:`die_with_parent` is a ``preexec_fn``: the child gets SIGKILL when the thread that
  started it ends (Linux ``PR_SET_PDEATHSIG``), so a SIGKILLed pytest leaves no server.
- :func:`owned_tempdir` names a server's temp dir after the process that made it
  (``cascadeui-redis-<pid>-...``), and :func:`sweep_stale_servers` kills the servers whose
  maker is gone and removes their dirs; :func:`stale_database` does the same test for a
  scratch database's name (``cascadeui_test_<pid>_...``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["die_with_parent", "owned_tempdir", "stale_database", "sweep_stale_servers"]

_PR_SET_PDEATHSIG = 1
#: Temp dirs of private servers: ``cascadeui-<kind>-<pid>-<random>``.
_OWNED = re.compile(r"^cascadeui-(?:redis|pg)-(\d+)-")


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child die with the calling thread, or None where that
    cannot hold (not Linux, or not the main thread: the signal follows the starting thread,
    and a worker thread may end long before the run does)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not \
            threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return preexec


def owned_tempdir(kind: str) -> Path:
    """A new temp dir for a ``kind`` ("redis" or "pg") server, named after this process."""
    return Path(tempfile.mkdtemp(prefix=f"cascadeui-{kind}-{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process: alive
        return True
    return True


def stale_database(name: str, prefix: str = "cascadeui_test_") -> bool:
    """Whether a scratch database named ``name`` (``<prefix><pid>_<random>``) belongs to a
    run that is gone."""
    found = re.match(rf"^{re.escape(prefix)}(\d+)_", name)
    return found is not None and not _alive(int(found.group(1)))


def sweep_stale_servers() -> list[str]:
    """Kill the private servers whose starting process is gone and remove their temp dirs.

    :returns: the temp dirs swept (for a log line).
    """
    root = Path(tempfile.gettempdir())
    stale = [d for d in root.glob("cascadeui-*-*-*")
             if (m := _OWNED.match(d.name)) and not _alive(int(m.group(1)))]
    if not stale:
        return []
    names = [str(d) for d in stale]
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            if any(name in cmdline for name in names):
                os.kill(int(proc.name), signal.SIGKILL)
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    return names
