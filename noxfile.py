"""The project's test and check sessions (nox).

``bash scripts/test.sh`` runs the fast ``tests`` session (one Python, no slow campaigns, two
pytest-xdist workers); ``bash scripts/test.sh full`` (what ``.ci/run`` runs) runs every session
below: the whole suite on Python 3.10-3.13, the lowest allowed dependency versions, ruff, the
type checkers, the documentation build and the package checks. ``nox -l`` lists them.

Every test virtualenv gets the project as a built wheel with every extra (so the
``adapters/`` -> ``cascadeui.adapters`` mapping is what gets tested) and the ``test``
dependency group; the development tools (ruff, mypy, pyright, mkdocs, build) come from their
own dependency groups, each in its own session, never in the test virtualenvs.
"""

from __future__ import annotations

import atexit
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent
VERSIONS = ["3.10", "3.11", "3.12", "3.13"]
#: pytest-xdist workers for the fast tests (the slow campaigns always run serially).
WORKERS = os.environ.get("CASCADEUI_TEST_WORKERS", "2")

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.download_python = "never"
nox.options.sessions = ["tests"]
# uv must never fetch an interpreter of its own: only the machine's Pythons are tested.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


def _find_python(version: str) -> Path | None:
    """The interpreter for ``version``: pyenv's newest plain release, else ``pythonX.Y``."""
    try:
        root = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                                   check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    releases = [p for p in (root / "versions").glob(f"{version}.*")
                if p.name.removeprefix(f"{version}.").isdigit()]
    for candidate in sorted(releases, key=lambda p: int(p.name.split(".")[2]), reverse=True):
        if (candidate / "bin" / f"python{version}").is_file():
            return candidate / "bin" / f"python{version}"
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", ""], capture_output=True).returncode == 0:
        return Path(found)
    return None


PYTHONS = {v: p for v in VERSIONS if (p := _find_python(v)) is not None}
# Put each found interpreter's directory first on PATH, where nox and uv look for
# ``pythonX.Y`` (a pyenv shim for a version not selected would fail).
os.environ["PATH"] = os.pathsep.join([*(str(p.parent) for p in PYTHONS.values()),
                                      os.environ.get("PATH", "")])
#: The fast session's Python: the newest found (or the newest supported, reported missing).
NEWEST = max(PYTHONS, key=lambda v: int(v.split(".")[1])) if PYTHONS else VERSIONS[-1]
OLDEST = min(PYTHONS, key=lambda v: int(v.split(".")[1])) if PYTHONS else VERSIONS[0]
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
_built: list[Path] = []


def _group(*names: str) -> tuple[str, ...]:
    return nox.project.dependency_groups(PYPROJECT, *names)


def _wheel(session: nox.Session) -> Path:
    """The project's wheel, built once per nox run from the tree as it is now."""
    if not _built:
        # One directory per nox run (two runs at once must not delete each other's wheel).
        out = ROOT / ".nox" / f"_wheel-{os.getpid()}"
        shutil.rmtree(out, ignore_errors=True)
        atexit.register(shutil.rmtree, out, ignore_errors=True)
        # setuptools builds in ./build and never removes a module deleted or renamed since:
        # a stale build/ would ship modules the tree no longer has.
        shutil.rmtree(ROOT / "build", ignore_errors=True)
        session.run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "--disable-pip-version-check", "-w", str(out), str(ROOT), external=True)
        _built.extend(out.glob("*.whl"))
    return _built[0]


def _install(session: nox.Session, *constraints: str) -> None:
    """The built wheel with every extra, the test group, then the wheel itself again
    (reinstalled, so an unchanged version number never keeps an older build)."""
    wheel = _wheel(session)
    session.install(*constraints, f"{wheel}[all]", *_group("test"))
    session.install("--no-deps", "--force-reinstall", str(wheel))


def _pytest(session: nox.Session, *selection: str) -> None:
    """pytest from the virtualenv's executable (``python -m pytest`` would put the source
    tree first on sys.path and test it instead of the installed wheel)."""
    session.run("pytest", *selection, *session.posargs)


def _strace_hint(session: nox.Session) -> None:
    if shutil.which("strace") is None:
        session.warn("strace is missing: the power-cut tests need it (apt-get install strace)")


@nox.session(python=NEWEST)
def tests(session: nox.Session) -> None:
    """The fast path: one Python, without the slow campaigns, on two xdist workers."""
    _install(session)
    _strace_hint(session)
    _pytest(session, "-m", "not slow", "-n", WORKERS)


@nox.session(python=VERSIONS)
def full(session: nox.Session) -> None:
    """The whole suite on one Python: the fast tests in parallel, then the slow ones serially
    (campaigns and benchmark smoke runs time themselves and start their own servers)."""
    _install(session)
    _strace_hint(session)
    _pytest(session, "-m", "not slow", "-n", WORKERS)
    _pytest(session, "-m", "slow")


def minimums() -> list[str]:
    """``name==X`` for every ``name>=X`` among the runtime requirements and every extra's
    (setup.cfg), for this platform: the lowest versions the project allows."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [*cfg["options"]["install_requires"].splitlines(),
             *cfg["options.extras_require"]["all"].splitlines()]
    pins: list[str] = []
    for line in lines:
        if not line.strip() or line.strip().startswith("#"):
            continue
        req = Requirement(line.strip())
        if req.marker is not None and not req.marker.evaluate():
            continue
        lowest = [s.version for s in req.specifier if s.operator == ">="]
        if lowest:
            pins.append(f"{req.name}=={lowest[0]}")
    return pins


@nox.session(python=OLDEST)
def lowest(session: nox.Session) -> None:
    """The fast tests with every runtime dependency at the lowest version setup.cfg allows,
    on the oldest Python (proves the declared lower bounds)."""
    pins = minimums()
    # Not session.create_tmp(): that points TMPDIR into the clone, where the unprivileged
    # postgres account of a private PostgreSQL cannot reach a `mktemp -d` clone's folder.
    constraints = Path(session.virtualenv.location) / "minimums.txt"
    constraints.write_text("\n".join(pins) + "\n")
    session.log(f"lowest allowed versions: {', '.join(pins)}")
    _install(session, "-c", str(constraints))
    session.run("python", "-c", "import importlib.metadata as m, sys; "
                "[print(n, m.version(n)) for n in sys.argv[1:]]",
                *(pin.split("==")[0] for pin in pins), silent=False)
    _pytest(session, "-m", "not slow", "-n", WORKERS)


@nox.session(python=NEWEST)
def lint(session: nox.Session) -> None:
    """ruff over the package, the adapters, the tests and the scripts."""
    session.install(*_group("lint"))
    session.run("ruff", "check", "cascadeui", "adapters", "tests", "scripts", "noxfile.py")


@nox.session(python=NEWEST)
def types(session: nox.Session) -> None:
    """mypy --strict, then pyright (standard mode and --verifytypes: scripts/check_types.py)."""
    wheel = _wheel(session)
    session.install(f"{wheel}[all]", *_group("types"))
    session.install("--no-deps", "--force-reinstall", str(wheel))
    session.run("mypy")
    session.run("python", "scripts/check_types.py")


@nox.session(python=NEWEST)
def docs(session: nox.Session) -> None:
    """The documentation site: ``mkdocs build --strict`` (its API pages import the package)."""
    session.install(f"{_wheel(session)}[all]", *_group("docs"))
    session.install("--no-deps", "--force-reinstall", str(_wheel(session)))
    site = Path(session.create_tmp()) / "site"
    session.run("mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site))


@nox.session(python=NEWEST)
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel and check what they hold (twine, check-wheel-contents,
    scripts/check_package.py)."""
    session.install(*_group("package"))
    out = Path(session.create_tmp()) / "dist"
    shutil.rmtree(out, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(out), str(ROOT))
    dists = sorted(str(p) for p in out.iterdir())
    session.run("twine", "check", "--strict", *dists)
    session.run("check-wheel-contents", *(d for d in dists if d.endswith(".whl")))
    session.run("python", "scripts/check_package.py", *dists)
