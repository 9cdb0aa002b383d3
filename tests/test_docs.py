"""The README and docs say what the code does: commands, links, imports, public names."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_exactly_the_two_setup_commands_and_ci_runs_the_tests() -> None:
    commands = re.findall(r"^    (bash scripts/\S+)$", README, flags=re.M)
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / target).exists(), target


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_code_blocks_parse_and_their_cascadeui_imports_exist(page: Path) -> None:
    for block in _python_blocks(page.read_text()):
        # Examples may use top-level await: they sit in a coroutine in real code.
        tree = ast.parse(f"async def _():\n{_indent(block)}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cascadeui"):
                for alias in node.names:
                    assert _importable(node.module or "", alias.name), (
                        f"{page.name}: from {node.module} import {alias.name}")


def _importable(module: str, name: str) -> bool:
    """What ``from module import name`` finds: an attribute, or else a submodule."""
    if hasattr(importlib.import_module(module), name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return False
    return True


def _indent(block: str) -> str:
    return "".join(f"    {line}\n" for line in block.splitlines())


@pytest.mark.parametrize("module", ["cascadeui", "cascadeui.persistence", "cascadeui.adapters",
                                    "cascadeui.store", "cascadeui.errors", "cascadeui.sync"])
def test_all_lists_only_real_names(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name, None) is not None, f"{module}.{name}"


def test_seed_names_are_public() -> None:
    from cascadeui import setup_persistence
    from cascadeui.persistence import (
        FileStorageBackend,
        RedisBackend,
        SQLiteBackend,
        StateSerializer,
        StorageBackend,
        migrate_storage,
    )
    assert callable(setup_persistence)
    assert callable(migrate_storage)
    assert all(isinstance(c, type) for c in (FileStorageBackend, SQLiteBackend, RedisBackend,
                                               StateSerializer, StorageBackend))


def test_import_creates_no_files_and_installs_no_handlers(tmp_path: Path) -> None:
    code = (
        "import logging, os\n"
        "import cascadeui, cascadeui.persistence, cascadeui.adapters, cascadeui.sync\n"
        "from cascadeui import PersistentView, get_store, setup_persistence, inspect\n"
        "assert os.listdir('.') == [], os.listdir('.')\n"
        "assert logging.getLogger().handlers == []\n"
        "assert all(not logging.getLogger(n).handlers for n in logging.root.manager.loggerDict"
        " if n.startswith('cascadeui'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []
