"""The README and docs say what the code does: commands, links, imports, public names.

Every ```python block of README.md and docs/*.md is executed, not just parsed
(:func:`test_code_blocks_run`), so the docs cannot drift from the code. The rules, for
anyone writing docs:

- One fresh process per page (``tests/_doc_blocks_worker.py``), its working directory an empty
  temp dir: relative paths such as ``"cascadeui.db"`` or ``"bot_state.json"`` are created
  there. The page's blocks run in page order in one shared namespace, like one session, and
  top-level ``await`` works (they run on one asyncio event loop per page).
- Already defined for every block (the prelude in ``tests/_doc_blocks_worker.py``): ``discord``,
  ``commands`` (``discord.ext.commands``), ``DiscordDouble``, ``logged_in_bot``,
  ``mark_ready``, and a running local Discord API double with a logged-in, ready bot:
  ``double``, ``bot``, ``guild_id``/``guild`` (a ``discord.Object``), ``channel_id`` and
  ``channel`` (a messageable for that channel). Sending a panel, clicking it, delivering a
  command: all run against the double, no token, no network.
- Names a block needs that the reader should not see go in a hidden setup comment right
  before the fence, executed first (top-level await allowed)::

      <!-- doc-setup:
      from cascadeui import sync
      sync.save_state("bot_state.json", {"application": {"scores": {}}})
      -->

- A block that cannot run (the body of a method, something needing a real Redis at a URL
  or a sharded gateway) is marked right before its fence with a reason::

      <!-- no-run: the body of a button callback -->

  It is still parsed and its ``cascadeui`` imports checked. Keep the marker rare: prefer a
  doc-setup comment, or a block that runs; :func:`test_no_run_markers_are_rare_and_say_why`
  holds the count down.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from _spawn import run, worker

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_the_setup_commands_and_ci_runs_the_full_one() -> None:
    commands = re.findall(r"^    (bash scripts/.+)$", README, flags=re.M)
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh",
                        "bash scripts/test.sh full"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()
    assert "bash scripts/test.sh full" in (ROOT / ".ci" / "run").read_text()


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


@pytest.mark.parametrize("page", [p for p in [ROOT / "README.md", *DOCS]
                                  if "```python" in p.read_text()], ids=lambda p: p.name)
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    done = run(worker("doc_blocks", page), cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]


def test_the_backend_walkthrough_passes_the_contract(pytester: pytest.Pytester) -> None:
    """docs/writing-a-backend.md's adapter, run against ``AdapterContract`` as the page says."""
    page = (ROOT / "docs" / "writing-a-backend.md").read_text()
    module = re.findall(r"<!-- contract-module -->\n```python\n(.*?)```", page, flags=re.S)
    assert len(module) == 2  # the adapter, then the test class
    pytester.makepyfile(test_directory_store="\n".join(module))
    result = pytester.runpytest_subprocess("-q", "-rs", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 18
    out = result.stdout.str()
    for group in ("loadsave", "transaction", "cas", "locks"):
        assert f"::test_{group}_" not in out  # no group it implements was skipped
    assert "DirectoryStore has no change journal" in out


def test_no_run_markers_are_rare_and_say_why() -> None:
    blocks = 0
    marked: list[str] = []
    for page in [ROOT / "README.md", *DOCS]:
        text = page.read_text()
        blocks += len(_python_blocks(text))
        for reason in re.findall(r"<!--\s*no-run\b:?(.*?)-->", text, flags=re.S):
            assert reason.strip(), f"{page.name}: a no-run marker without a reason"
            marked.append(f"{page.name}: {reason.strip()}")
    assert len(marked) * 5 <= blocks, f"more than one block in five is not run: {marked}"


def test_readme_install_lines_name_real_extras() -> None:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = set(cfg["options.extras_require"])
    named = set(re.findall(r"pip install [^\n]*?\[([a-z]+)\]", README))
    assert {"sqlite", "redis", "postgres", "all", "dev"} <= named
    assert named <= extras, named - extras
    assert "pip install pycascadeui" not in README.replace("`pip install pycascadeui`", "")


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
    done = run(worker("probe", "import-clean"), cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


MKDOCS_YML = (ROOT / "mkdocs.yml").read_text()


def test_the_site_nav_has_the_migrations_page_and_wide_tables_scroll() -> None:
    """Issue 23: the migrations page was only reachable by search, and the wide tables of
    the Panels and Scripts pages were cut off at the theme's 800px column."""
    nav = MKDOCS_YML.split("\nnav:\n", 1)[1]
    assert re.search(r"^  - [^:\n]+: migrations\.md$", nav, flags=re.M)
    sheets = re.findall(r"^extra_css:\n((?:  - \S+\n)+)", MKDOCS_YML, flags=re.M)
    css = (ROOT / "docs" / "css" / "extra.css").read_text()
    assert "  - css/extra.css\n" in sheets[0]
    assert re.search(r"\.rst-content table \{[^}]*overflow-x: auto", css)
    assert re.search(r"\.rst-content table code \{[^}]*white-space: normal", css)
    for page in ("panels.md", "sync.md"):
        assert "\n|---" in (ROOT / "docs" / page).read_text()  # they still hold tables


def test_code_is_highlighted_at_build_time_without_a_cdn() -> None:
    """Issue 23: the readthedocs theme loads highlight.js and its CSS from cdnjs unless
    ``highlightjs`` is off; Pygments (pymdownx.highlight) marks the code up at build time and
    the hook writes its CSS, so the built site needs no third-party host."""
    theme = re.findall(r"^theme:\n((?:[ ].*\n)+)", MKDOCS_YML, flags=re.M)[0]
    assert re.search(r"^  highlightjs: false$", theme, flags=re.M)
    assert re.search(r"^  - pymdownx\.highlight:\n      use_pygments: true$", MKDOCS_YML,
                     flags=re.M)
    assert "\n  - pymdownx.superfences\n" in MKDOCS_YML
    assert "\n  - fenced_code\n" not in MKDOCS_YML  # superfences replaces it
    assert "  - css/pygments.css" in MKDOCS_YML
    hooks = (ROOT / "scripts" / "docs_hooks.py").read_text()
    assert '"css/pygments.css"' in hooks
    assert "get_style_defs" in hooks
    assert not re.search(r"^extra_javascript:", MKDOCS_YML, flags=re.M)
    assert not re.search(r"^\s*-\s*['\"]?https?://", MKDOCS_YML, flags=re.M)
