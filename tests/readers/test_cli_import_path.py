"""``cascadeui migrate-schema --migrations M`` imports M from the working directory
without putting that directory in front of installed modules (issue 21 item 11)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _spawn import console_script, module

from cascadeui import sync

PLANTED = ("from pathlib import Path\n"
           "Path(__file__).with_name('PLANTED_RAN').write_text('yes')\n"
           "raise SystemExit('planted module ran')\n")


@pytest.mark.parametrize("how", ["console-script", "python -m"])
def test_a_planted_module_in_the_working_directory_never_runs(tmp_path: Path,
                                                              how: str) -> None:
    db = tmp_path / "state.db"
    sync.save_state(str(db), {"application": {"motd": "hi"}})
    (tmp_path / "sqlite_utils.py").write_text(PLANTED)
    (tmp_path / "bot_migrations.py").write_text(
        "MIGRATIONS = {1: lambda doc: {**doc, 'application': {'v1': True}}}\n")
    command = ([console_script("cascadeui")] if how == "console-script"
               else module("cascadeui"))
    proc = subprocess.run([*command, "migrate-schema", "state.db", "--to", "1",
                           "--migrations", "bot_migrations", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert not (tmp_path / "PLANTED_RAN").exists(), proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["written"] is True
    assert sync.load_state(str(db))["application"]["v1"] is True


def test_python_m_cascadeui_works_from_the_clone_root(tmp_path: Path) -> None:
    # From the repository root the source tree's cascadeui/ is imported first; it has no
    # adapters/ subpackage (the wheel maps it), so it must find the sibling adapters/.
    repo = Path(__file__).resolve().parents[2]
    db = tmp_path / "state.db"
    sync.save_state(str(db), {"application": {"motd": "hi"}})
    proc = subprocess.run([*module("cascadeui"), "get", str(db), "application.motd"],
                          cwd=repo, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "hi" in proc.stdout
