"""What the built sdist and wheel hold, checked (the nox ``package`` session runs this).

- The wheel has the package, ``cascadeui.adapters`` (mapped from ``adapters/``), ``py.typed``,
  the licence, and what a user's own tests need (the Discord API double), but none of the
  project's campaign machinery (power-cut simulator, TCP proxy, server launchers: they live
  in ``scripts/kit``) and no tests.
- The sdist ships no test suite (a partial one cannot run), and builds the same wheel.

Usage: ``python scripts/check_package.py dist/NAME-X.tar.gz dist/NAME-X-py3-none-any.whl``.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Must be in the wheel.
WHEEL_NEEDS = ["cascadeui/__init__.py", "cascadeui/py.typed", "cascadeui/adapters/__init__.py",
               "cascadeui/testing/conformance.py",
               "cascadeui/testing/__init__.py", "cascadeui/testing/discord_double.py"]
#: Must not be in either archive: campaign machinery and the suite (by name fragment).
NEVER = ["powercut.py", "tcp_proxy.py", "redis_server.py", "postgres_server.py",
         "redis_topologies.py", "conftest.py", "/tests/", "scripts/"]


def _modules(names: list[str], prefix: str) -> set[str]:
    return {n[len(prefix):] for n in names
            if n.startswith(prefix) and n.endswith(".py") and "/" not in n[len(prefix):]}


def check_wheel(path: str) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    problems = [f"wheel lacks {need}" for need in WHEEL_NEEDS if need not in names]
    # Exactly the tree's modules (a stale build/ directory ships renamed ones too).
    for package, source in (("cascadeui/", ROOT / "cascadeui"), ("cascadeui/adapters/",
                                                                   ROOT / "adapters")):
        tree = {p.name for p in source.glob("*.py")}
        problems += [f"wheel ships {package}{m}, which the tree does not have"
                     for m in sorted(_modules(names, package) - tree)]
        problems += [f"wheel lacks {package}{m}" for m in sorted(tree - _modules(names, package))]
    if not any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE")
               for n in names):
        problems.append("wheel lacks the LICENSE")
    problems += [f"wheel ships {n}" for n in names
                 if any(bad in f"/{n}" for bad in NEVER)]
    return problems


def check_sdist(path: str) -> list[str]:
    with tarfile.open(path) as archive:
        names = [n.split("/", 1)[1] for n in archive.getnames() if "/" in n]
    problems = [f"sdist lacks {need}" for need in ("setup.cfg", "pyproject.toml", "LICENSE",
                                                  "README.md", "adapters/__init__.py")
                if need not in names]
    problems += [f"sdist ships {n}" for n in names if any(bad in f"/{n}" for bad in NEVER)]
    return problems


def main(paths: list[str]) -> int:
    problems: list[str] = []
    for path in paths:
        if path.endswith(".whl"):
            problems += check_wheel(path)
        elif path.endswith(".tar.gz"):
            problems += check_sdist(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"check_package: {len(paths)} archives, {len(problems)} problems")
    return 1 if problems or not paths else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
