"""The peer's virtualenv: pycascadeui 2.1.0 with its SQLite and Redis extras, from PyPI.

``python -m bench.peer [--venv .venv-peer] [--check]`` creates (or reuses) the venv
and prints its Python. Both packages import as ``cascadeui``, so the peer always runs in
its own interpreter. The bench-only venv with matplotlib for the chart is made here too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEER_VERSION = "2.1.0"
PEER_REQUIREMENT = f"pycascadeui[sqlite,redis]=={PEER_VERSION}"
DEFAULT_VENV = ROOT / ".venv-peer"
CHART_VENV = ROOT / ".venv-bench"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _installed_version(python: Path, dist: str) -> str | None:
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-I", "-c",
         f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _make_venv(venv: Path, requirements: list[str], timeout: float) -> None:
    py = venv_python(venv)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        check=True, timeout=timeout)


def ensure_peer(venv: Path = DEFAULT_VENV, *, timeout: float = 600) -> Path:
    """Return the peer venv's Python, creating or repairing the venv when needed.

    :raises subprocess.CalledProcessError: pip failed (PyPI unreachable?).
    """
    py = venv_python(venv)
    if _installed_version(py, "pycascadeui") == PEER_VERSION and \
            _installed_version(py, "aiosqlite") and _installed_version(py, "redis"):
        return py
    _make_venv(venv, [PEER_REQUIREMENT], timeout)
    found = _installed_version(py, "pycascadeui")
    if found != PEER_VERSION:
        raise RuntimeError(f"{venv}: pycascadeui {found} installed, wanted {PEER_VERSION}")
    return py


def ensure_chart_python(venv: Path = CHART_VENV, *, timeout: float = 600) -> Path:
    """A bench-only venv with matplotlib (never a dependency of the project)."""
    py = venv_python(venv)
    if _installed_version(py, "matplotlib") is None:
        _make_venv(venv, ["matplotlib"], timeout)
    return py


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--check", action="store_true",
                   help="only report whether the venv holds the peer; install nothing")
    args = p.parse_args(argv)
    py = venv_python(args.venv)
    if args.check:
        version = _installed_version(py, "pycascadeui")
        print(f"{py}: pycascadeui {version or 'absent'}")
        return 0 if version == PEER_VERSION else 1
    t0 = time.monotonic()
    py = ensure_peer(args.venv)
    print(f"{py} (ready in {time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    sys.exit(main())
