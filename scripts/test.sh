#!/usr/bin/env bash
# The whole test suite on a fresh machine, on every supported Python (3.10 to 3.13).
#
# For each version found it builds its own virtualenv (.venv-test-3.X), installs the project
# as a wheel (so the adapters/ -> cascadeui.adapters mapping is what gets tested) with every
# extra, and runs pytest. Once, in the first version's virtualenv, it also runs the checks
# that do not depend on the interpreter: ruff, mypy --strict, pyright (standard mode and
# --verifytypes) and `mkdocs build --strict`. Extra arguments go to every pytest run.
#
# Interpreters: pyenv's (`pyenv root`/versions/3.X.*) when pyenv is there, else python3.X on
# PATH. A version that is not found is reported and skipped; no version at all is a failure.
# CASCADEUI_TEST_PYTHONS="3.11" (a space-separated list) runs only those versions, e.g. while
# iterating on one test file.
set -euo pipefail
cd "$(dirname "$0")/.."
versions="${CASCADEUI_TEST_PYTHONS:-3.10 3.11 3.12 3.13}"
pip_q=(-m pip install -q --disable-pip-version-check)

find_python() {  # the interpreter for version $1, or nothing
    local root candidate
    if root="$(pyenv root 2>/dev/null)"; then
        # Plain releases only (3.13.1, not 3.13.1t or 3.13-dev), the newest first.
        for candidate in $(ls -d "$root/versions/$1".* 2>/dev/null \
                           | grep -E "/$1\.[0-9]+\$" | sort -V -r); do
            if [ -x "$candidate/bin/python" ]; then echo "$candidate/bin/python"; return; fi
        done
    fi
    # On PATH, only an interpreter that runs (a pyenv shim for a missing version does not).
    candidate="$(command -v "python$1" 2>/dev/null)" || return 0
    if "$candidate" -c "" >/dev/null 2>&1; then echo "$candidate"; fi
}

pythons=()
for version in $versions; do
    python="$(find_python "$version")"
    if [ -n "$python" ]; then
        pythons+=("$version=$python")
    else
        echo "test.sh: WARNING: no Python $version found (pyenv or python$version on PATH): skipped" >&2
    fi
done
if [ ${#pythons[@]} -eq 0 ]; then
    echo "test.sh: no Python among $versions found; install one (pyenv install 3.11)" >&2
    exit 1
fi

# The power-cut simulator (tests/campaigns/test_powercut.py) records system calls with strace: a
# small Debian package, installed here when it is missing and we may (root, apt-get).
if ! command -v strace >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq strace >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq strace >/dev/null; }
fi

checked=""
failed=()
for entry in "${pythons[@]}"; do
    version="${entry%%=*}"
    venv=".venv-test-$version"
    echo "== Python $version (${entry#*=}) in $venv" >&2
    if [ ! -x "$venv/bin/python" ]; then
        "${entry#*=}" -m venv "$venv"
    fi
    "$venv/bin/python" "${pip_q[@]}" --upgrade pip
    extras="dev"
    if [ -z "$checked" ]; then extras="dev,docs"; fi
    "$venv/bin/python" "${pip_q[@]}" ".[$extras]"
    # Always test the tree as it is now, even when the version number did not change.
    "$venv/bin/python" "${pip_q[@]}" --no-deps --force-reinstall .
    if [ -z "$checked" ]; then
        checked="$version"
        "$venv/bin/ruff" check cascadeui adapters tests scripts
        "$venv/bin/mypy"
        "$venv/bin/python" scripts/check_types.py
        "$venv/bin/mkdocs" build --strict --quiet --site-dir "$venv/site"
    fi
    # Run pytest from its own executable, not `python -m pytest`: the latter would put the
    # source tree first on sys.path and test it instead of the installed package.
    "$venv/bin/pytest" "$@" || failed+=("$version")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "test.sh: pytest failed on Python ${failed[*]}" >&2
    exit 1
fi
