#!/usr/bin/env bash
# The test commands (sessions in noxfile.py, run by nox from its own virtualenv .venv-nox):
#
#   bash scripts/test.sh [PYTEST ARGS]       the fast path: one Python (the newest of
#                                            3.10-3.13 found), no slow campaigns, two
#                                            pytest-xdist workers; a few minutes
#   bash scripts/test.sh full [PYTEST ARGS]  everything (what .ci/run runs): the whole suite
#                                            on Python 3.10-3.13, the lowest allowed
#                                            dependency versions, ruff, mypy --strict and
#                                            pyright, mkdocs build --strict, package checks
#
# PYTEST ARGS go to every pytest run, e.g. `bash scripts/test.sh tests/store -x`. Any other
# nox invocation works the same way: `.venv-nox/bin/nox -l`, `.venv-nox/bin/nox -s full-3.11`.
# Interpreters: pyenv's (`pyenv root`/versions/3.X.*), else python3.X on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

find_bootstrap() {  # a Python >= 3.10 to run nox with
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11 python3.10 \
                     "$(pyenv root 2>/dev/null || echo ~/.pyenv)"/versions/3.1[0-3].*/bin/python3; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
            echo "$candidate"; return
        fi
    done
    echo "test.sh: no Python 3.10 or newer found (pyenv install 3.12)" >&2
    exit 1
}

venv=.venv-nox
if [ ! -x "$venv/bin/nox" ]; then
    "$(find_bootstrap)" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install -q --disable-pip-version-check 'nox[uv]>=2025.2'
fi

# The power-cut simulator (tests/campaigns/test_powercut.py) records system calls with strace: a
# small Debian package, installed here when it is missing and we may (root, apt-get).
if ! command -v strace >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq strace >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq strace >/dev/null; }
fi

if [ "${1:-}" = full ]; then
    shift
    exec "$venv/bin/nox" -s full lowest lint types docs package -- "$@"
fi
exec "$venv/bin/nox" -s tests -- "$@"
