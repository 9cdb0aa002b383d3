"""The one way the suite starts child processes (issue 20): workers, modules, scripts.

A child runs this interpreter (the virtualenv with the installed package) from the test's
working directory, never the source tree first on ``sys.path`` (conftest moves the session
out of the repository). Programs a child runs live in files: a worker module
``tests/_<name>_worker.py`` (:func:`worker`), a package module (:func:`module`) or a
script module of ``scripts/`` (:func:`script`, with :func:`script_env`, from ``kit.spawn``);
no inline ``python -c`` program, and no other module names the interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from kit.spawn import script_command, script_env

__all__ = ["PYTHON", "REPO", "TESTS", "console_script", "module", "run", "script", "script_env",
           "start", "worker"]

#: The tests/ directory (worker modules live here) and the repository root.
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
#: This interpreter, for the rare caller that must name it (a Jupyter kernel spec).
PYTHON = sys.executable


def worker(name: str, *args: object) -> list[str]:
    """The command line running worker module ``tests/_<name>_worker.py`` with ``args``."""
    path = TESTS / f"_{name}_worker.py"
    assert path.is_file(), f"no worker module {path}"
    return [PYTHON, str(path), *map(str, args)]


def module(name: str, *args: object) -> list[str]:
    """The command line running ``python -m name`` with ``args``."""
    return [PYTHON, "-m", name, *map(str, args)]


def script(name: str, *args: object) -> list[str]:
    """The command line running script module ``name`` of ``scripts/`` (``campaigns.crash``,
    ``bench.storage``) with ``args``; run it with ``env=script_env()``."""
    return script_command(name, *map(str, args), python=PYTHON)


def console_script(name: str) -> str:
    """The path of an installed console script (``cascadeui``) beside this interpreter."""
    return str(Path(PYTHON).with_name(name))


def run(argv: list[str], *, timeout: float = 120.0, check: bool = False,
        text: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run ``argv`` to its end, output captured (text unless ``text=False``)."""
    return subprocess.run(argv, capture_output=True, text=text, timeout=timeout, check=check,
                          **kwargs)


def start(argv: list[str], *, stdin: bool = False, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``argv`` with its stdout and stderr piped (and stdin when ``stdin``), as text,
    line-buffered; the caller waits for it or kills it."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else None, text=True,
                            bufsize=1, **kwargs)
