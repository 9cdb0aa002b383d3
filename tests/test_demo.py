"""The README's main job: ``python -m cascadeui.demo`` run as a user would, in an empty dir."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def test_demo_lifecycle(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cascadeui.demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("bot 2: setup_persistence -> "))
    assert ast.literal_eval(summary.split(" -> ", 1)[1]) == {
        "restored": ["poll:lunch", "ticket:alice"], "skipped": [], "failed": [],
        "removed": ["poll:friday"]}
    out = proc.stdout
    assert '"1003": "pizza"' in out.split("data that survived:")[1].splitlines()[0]
    assert "dave clicks sushi on the restored poll:lunch -> pizza 2 / sushi 2" in out
    assert "bob tries to close alice's ticket -> (only you)" in out
    stored = next(line for line in lines if line.startswith("stored in cascadeui.db:"))
    assert '"1004": "sushi"' in stored
    assert '"status": "closed"' in stored
    assert (tmp_path / "cascadeui.db").exists()
    assert "Traceback" not in proc.stderr
