"""How one of the scripts (a benchmark, a campaign, a worker of theirs) starts another.

Every script is a module of ``scripts/`` (``bench.storage``, ``campaigns.crash``) run with
``python -m``, so it finds ``kit``, ``bench`` and ``campaigns`` as packages: from
``scripts/`` as the working directory, or anywhere with ``scripts/`` on ``PYTHONPATH``, which
:func:`script_env` adds. Never the repository root: its ``cascadeui/`` would shadow the
installed package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SCRIPTS", "script_command", "script_env"]

#: The ``scripts/`` directory (the parent of this package).
SCRIPTS = Path(__file__).resolve().parents[1]


def script_command(module: str, *args: str, python: str | None = None) -> list[str]:
    """``[python, "-m", module, *args]``: the argv that runs a script module (with
    :func:`script_env`'s environment) under ``python`` (default: this interpreter)."""
    return [python or sys.executable, "-m", module, *args]


def script_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``scripts/`` first on
    ``PYTHONPATH``, so a child started by :func:`script_command` imports the scripts."""
    env = dict(os.environ if base is None else base)
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS), *([rest] if rest else [])])
    return env
