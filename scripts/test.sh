#!/usr/bin/env bash
# The whole test suite on a fresh machine: builds its own virtualenv, installs the project
# as a wheel (so the adapters/ -> cascadeui.adapters mapping is what gets tested) with every
# extra, lints, type-checks, and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CASCADEUI_TEST_VENV:-.venv-test}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check '.[dev]'
# Always test the tree as it is now, even when the version number did not change.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall .
# The power-cut simulator (tests/test_powercut.py) records system calls with strace: a
# small Debian package, installed here when it is missing and we may (root, apt-get).
if ! command -v strace >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq strace >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq strace >/dev/null; }
fi
"$venv/bin/ruff" check cascadeui adapters tests scripts
"$venv/bin/mypy"
# Run pytest from its own executable, not `python -m pytest`: the latter would put the
# source tree first on sys.path and test it instead of the installed package.
exec "$venv/bin/pytest" "$@"
