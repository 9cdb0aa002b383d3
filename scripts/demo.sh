#!/usr/bin/env bash
# The main job: a self-contained demo on the embedded default backends (no token, no server).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CASCADEUI_DEMO_VENV:-.venv-demo}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check '.[sqlite]'
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall .
cd "$(mktemp -d)"
exec "$OLDPWD/$venv/bin/python" -m cascadeui.demo "$@"
