"""scripts/bench/panel_kinds.py at a tiny size: it runs, and its checks hold (issue 15)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _spawn import script, script_env

# A script under scripts/ at a tiny size: skipped by `-m "not slow"` while iterating,
# always run by `bash scripts/test.sh full` (CI).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_panel_kinds_benchmark_runs_at_smoke_size() -> None:
    proc = subprocess.run([*script("bench.panel_kinds"),
                           "--panels", "20", "--runs", "1"], capture_output=True, text=True,
                          timeout=300, check=False, env=script_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| view")
            or line.startswith("| dynamic")}
    assert rows["dynamic"][1:3] == ["0", "0"]  # a template restores with no request at all
    assert rows["view"][1:3] == ["0", "20"]  # routes first, then one check per panel
    assert rows["view"][-1] == rows["dynamic"][-1] == "yes"
