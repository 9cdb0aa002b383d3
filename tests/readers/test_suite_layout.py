"""The test suite's own conventions, checked (issue 12): what a newcomer can rely on.

- ``anyio_backend`` is defined once, in ``conftest.py`` (asyncio); a module that runs
  under both loops parametrizes it, and only such a module defines its own.
- Every adapter in ``cascadeui.adapters`` is an entry of ``_registry.BACKENDS``, so the
  conformance class (``test_conformance.py``) and every suite whose traits apply run on it.
  No module keeps its own list of backend names: it asks ``_registry.kinds(traits)``.
- Scripts run at a tiny size (benchmark smoke, campaigns) are marked ``slow``: skipped by
  ``-m "not slow"`` while iterating, always run by ``bash scripts/test.sh full`` (CI).
- Child processes start through ``_spawn`` (worker modules ``tests/_<name>_worker.py``,
  package modules, script modules of ``scripts/``): no ``python -c`` program.
- The no-blocking guard (``conftest.no_blocking_on_loop``) is on for every module; only
  the modules listed here opt a whole module out, each with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from _registry import BACKENDS

import cascadeui.adapters as adapters_module
from cascadeui.adapters import BaseStore

TESTS = Path(__file__).resolve().parents[1]
#: The folders test modules live in, by layer (issue 20); shared helpers stay in tests/.
LAYERS = ("adapters", "store", "panels", "readers", "campaigns")
#: Modules that opt out of the no-blocking guard as a whole, and why.
WHOLE_MODULE_BLOCKING = {
    "test_medium_loss.py": "damages the media through adapters on the loop on purpose "
                           "(to be moved to worker threads like test_store_journal.py)",
}


def _modules() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def test_test_modules_live_in_their_layers_folder() -> None:
    """Every test module sits in one layer folder; names stay unique (rootdir imports)."""
    modules = _modules()
    assert len(modules) >= 50
    assert {p.parent.name for p in modules} == set(LAYERS)
    assert all(p.parent.parent == TESTS for p in modules)
    assert len({p.name for p in modules}) == len(modules)
    assert not list(TESTS.rglob("__init__.py"))


def test_anyio_backend_is_defined_once() -> None:
    own = [p for p in _modules() if re.search(r"^def anyio_backend\(", p.read_text(),
                                                   re.M)]
    for path in own:  # only modules that run under both loops (a parametrized fixture)
        assert re.search(r"def anyio_backend\((request|combo)", path.read_text()), path.name
    assert "def anyio_backend() -> str:" in (TESTS / "conftest.py").read_text()


def test_every_adapter_is_in_the_contract_suite() -> None:
    concrete = {name.removesuffix("Store").lower() for name in adapters_module.__all__
                if isinstance(getattr(adapters_module, name), type)
                and issubclass(getattr(adapters_module, name), BaseStore)
                and getattr(adapters_module, name) is not BaseStore}
    assert concrete == {"file", "sqlite", "redis", "postgres", "memory"}
    assert set(BACKENDS) == concrete


#: Backend names, as the registry spells them and as the JSON one used to be spelled.
BACKEND_NAMES = {"file", "json", "sqlite", "redis", "postgres", "memory"}
#: Literals naming several backends that are not a list of backends to run, and why.
NOT_A_BACKEND_LIST = {
    "test_docs.py": "the pip extras named after backends",
    "test_suite_layout.py": "the registry checked against the adapters",
    # A campaign script chooses its backends and names them in its output (scripts/).
    "test_bench_push_smoke.py": "the benchmark script's output",
    "test_bench_smoke.py": "the benchmark scripts' output",
    "test_bench_storage_smoke.py": "the benchmark script's output",
    "test_powercut.py": "the power-cut campaign's output",
    "test_reliability_crash.py": "the crash campaigns' output",
}


def _backend_lists(path: Path) -> list[int]:
    """Lines of ``path`` with a list, tuple, set or dict literal naming two backends or more."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        items = node.keys if isinstance(node, ast.Dict) else (
            node.elts if isinstance(node, ast.List | ast.Tuple | ast.Set) else [])
        names = [i.value for i in items if isinstance(i, ast.Constant) and i.value in BACKEND_NAMES]
        if len(names) >= 2:
            found.append(node.lineno)
    return found


def test_no_backend_list_is_kept_outside_the_registry() -> None:
    """A new backend is one registry entry: every suite asks the registry for its kinds."""
    kept = {f"{p.relative_to(TESTS)}:{line}" for p in TESTS.rglob("*.py")
            if p.name != "_registry.py" and p.name not in NOT_A_BACKEND_LIST
            for line in _backend_lists(p)}
    assert not kept, f"use _registry.kinds(traits) instead of a hand-kept list: {sorted(kept)}"
    assert all(_backend_lists(next(TESTS.rglob(name))) for name in NOT_A_BACKEND_LIST)


def test_no_test_module_imports_another() -> None:
    """Only tests/ itself is importable from every folder: shared code lives in tests/_*.py."""
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith("test_")], (path.name, names)


def test_child_processes_start_through_the_spawn_helper() -> None:
    """``_spawn`` alone names the interpreter; a child runs a file, never a ``-c`` program."""
    for path in TESTS.rglob("*.py"):
        if path.name in ("_spawn.py", "test_suite_layout.py"):
            continue
        text = path.read_text()
        assert "sys.executable" not in text, f"{path.name}: use _spawn.worker/module/script"
        assert '"-c"' not in text, f"{path.name}: make the program a tests/_<name>_worker.py"
        assert "from kit.spawn" not in text, f"{path.name}: import script/script_env from _spawn"
    workers = sorted(p.name for p in TESTS.glob("_*_worker.py"))
    assert len(workers) >= 10
    for name in workers:
        assert (TESTS / name).read_text().startswith('"""'), f"{name}: say what it runs"


def test_script_smoke_tests_are_marked_slow() -> None:
    smoke = [p for p in _modules() if "smoke" in p.name or p.name == "test_reliability_crash.py"]
    assert len(smoke) >= 4
    for path in smoke:
        assert "pytestmark = pytest.mark.slow" in path.read_text(), path.name


def test_the_blocking_guard_is_on_everywhere() -> None:
    opted_out = [p.name for p in _modules()
                 if re.search(r"^pytestmark = .*allow_blocking", p.read_text(), re.M)]
    assert sorted(opted_out) == sorted(WHOLE_MODULE_BLOCKING)
