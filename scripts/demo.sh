#!/usr/bin/env bash
# The main job: a self-contained demo on the embedded default backends (no token, no server).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CASCADEUI_DEMO_VENV:-.venv-demo}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
rm -rf build  # setuptools' build dir keeps modules renamed since: never ship those
"$venv/bin/python" -m pip install -q --disable-pip-version-check '.[sqlite]'
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall .
python="$PWD/$venv/bin/python"
# A scratch directory, removed afterwards (CASCADEUI_DEMO_KEEP=1 keeps it to look at).
workdir="$(mktemp -d -t cascadeui-demo.XXXXXX)"
if [ -z "${CASCADEUI_DEMO_KEEP:-}" ]; then
    trap 'rm -rf "$workdir"' EXIT
fi
cd "$workdir"
"$python" -m cascadeui.demo --dir "$workdir" "$@"
if [ -n "${CASCADEUI_DEMO_KEEP:-}" ]; then
    echo "demo files kept in $workdir"
else
    echo "removed the demo directory $workdir (CASCADEUI_DEMO_KEEP=1 keeps it)"
fi
