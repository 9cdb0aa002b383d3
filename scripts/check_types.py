"""Pyright's two checks, run by the nox ``types`` session after mypy --strict.

1. ``pyright`` in standard mode over ``cascadeui`` and ``adapters`` (``[tool.pyright]`` in
   pyproject.toml): no error.
2. ``pyright --verifytypes cascadeui`` on the installed package (run outside the source tree,
   so the wheel's ``cascadeui.adapters`` is what gets verified): at least
   :data:`MIN_COMPLETENESS` of the public symbols fully typed.

Usage (from the repository root, with an interpreter that has pyright: the ``types``
dependency group): ``.venv-nox/bin/nox -s types``, or ``.nox/types/bin/python
scripts/check_types.py`` once that session has made its virtualenv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MIN_COMPLETENESS = 0.98
ROOT = Path(__file__).resolve().parents[1]


def _pyright(args: list[str], cwd: Path) -> dict[str, Any]:
    """Run pyright with this interpreter's environment and return its JSON report."""
    bindir = Path(sys.executable).parent
    # pyright finds site-packages through the `python` on PATH: make it this virtualenv's.
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "VIRTUAL_ENV": str(bindir.parent)}
    done = subprocess.run([str(bindir / "pyright"), "--outputjson", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"pyright {' '.join(args)} failed (exit {done.returncode}):\n"
                 f"{done.stdout}\n{done.stderr}")
    return report


def _where(diag: dict[str, Any]) -> str:
    line = diag.get("range", {}).get("start", {}).get("line", -1) + 1
    return f"{diag.get('file', '?')}:{line}"


def main() -> int:
    failed = False
    standard = _pyright([], ROOT)
    errors = [d for d in standard["generalDiagnostics"] if d["severity"] == "error"]
    for diag in errors:
        print(f"{_where(diag)}: {diag['message']}", file=sys.stderr)
    print(f"pyright (standard mode): {len(errors)} errors")
    failed |= bool(errors)

    with tempfile.TemporaryDirectory() as outside:
        verify = _pyright(["--verifytypes", "cascadeui", "--ignoreexternal"], Path(outside))
    completeness = verify["typeCompleteness"]
    score = float(completeness["completenessScore"])
    known = completeness["exportedSymbolCounts"]
    total = known["withKnownType"] + known["withAmbiguousType"] + known["withUnknownType"]
    print(f"pyright --verifytypes cascadeui: {score:.1%} of {total} public symbols fully "
          f"typed (at least {MIN_COMPLETENESS:.0%} required)")
    if score < MIN_COMPLETENESS:
        failed = True
        for symbol in completeness["symbols"]:
            if not symbol.get("isTypeKnown", True) or symbol.get("isTypeAmbiguous", False):
                why = "; ".join(f"{_where(d)}: {d['message']}" for d in symbol["diagnostics"])
                print(f"  not fully typed: {symbol['name']}: {why}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
