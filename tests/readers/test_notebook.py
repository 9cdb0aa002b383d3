"""Execute examples/inspect_state.ipynb in a real IPython kernel (nbclient + ipykernel)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from _spawn import module
from nbclient import NotebookClient

from cascadeui import sync

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "inspect_state.ipynb"
KERNEL = "cascadeui-test"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernelspec that runs this interpreter, and Jupyter dirs private to the test."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [*module("ipykernel_launcher"), "-f", "{connection_file}"],
        "display_name": "cascadeui test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("CASCADEUI_NOTEBOOK_DB", str(tmp_path / "nb.db"))
    return tmp_path


def _text(cell: Any) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def test_the_example_notebook_runs_and_shows_a_snapshot(kernel_env: Path) -> None:
    # CASCADEUI_NOTEBOOK_DB names a bot's store: the notebook only reads it (issue 23).
    bot_db = kernel_env / "nb.db"
    sync.save_state(str(bot_db), {"application": {"guild_prefix": "!"},
                                  "persistent_views": {}})
    original = bot_db.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=120, startup_timeout=60,
                   resources={"metadata": {"path": str(kernel_env)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # 1. a cell that awaits a backend
    assert _text(code[1]) == "{1234567890123456789: 10}"
    # 2. the blocking API inside the kernel's running loop
    assert "'scores': {1234567890123456789: 15}" in _text(code[2])
    assert "'motd': 'hello from a notebook'" in _text(code[2])
    # 3. the snapshot renders as HTML
    html = "".join(o.data.get("text/html", "") for o in code[3].outputs if "data" in o)
    assert "cascadeui snapshot: sqlite" in html
    assert "<details open><summary><code>application</code>" in html
    assert "<td>ticket:1</td><td>TicketPanel</td><td>10</td><td>20</td><td>900</td>" in html
    assert "Snapshot of sqlite" in _text(code[3])  # the plain-text fallback
    # 4. the diff
    diff = _text(code[4])
    assert "~ application.scores.1234567890123456789: 10 -> 15" in diff
    assert "+ application.motd: hello from a notebook" in diff
    # 5. the bot's store is shown, and was never written: the demo went to a scratch store
    assert "guild_prefix" in _text(code[5])
    assert bot_db.read_bytes() == original
    assert sync.load_state(str(bot_db)) == {"application": {"guild_prefix": "!"},
                                            "persistent_views": {}}
