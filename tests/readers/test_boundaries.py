"""Module boundaries of the package, checked by parsing it (issue 20, item 3).

- No import cycle among the modules of ``cascadeui/`` and ``adapters/``, counting imports
  inside functions and under ``TYPE_CHECKING``: a module that needs another's object at
  run time takes it as a ``Protocol`` (``_engine.Host``, ``_shutdown.Covered``).
- No module reads another module's private attributes (``obj._name`` where ``_name`` is
  not defined in the reading module; ``self``/``cls``/``super()`` are the module's own).
  What a module needs of another is a public method or property.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Source folder -> the import name it is installed as.
PACKAGES = {ROOT / "cascadeui": "cascadeui", ROOT / "adapters": "cascadeui.adapters"}
#: Underscore names that are public API by design: namedtuple methods.
NAMEDTUPLE = {"_replace", "_asdict", "_fields", "_make"}
#: Private attributes of other packages that nothing public offers, and why they are read.
FOREIGN = {
    ("cascadeui/views.py", "_has_children"): "discord.py: a decorated item's kind",
    ("cascadeui/views.py", "_state"): "discord.py: a message's connection state",
    ("cascadeui/testing/discord_double.py", "_connection"): "discord.py: the bot's state",
    # A plain discord.Client has no add_listener: its gateway dispatch is extended.
    ("cascadeui/_lifecycle.py", "_connection"): "discord.py: a Client's gateway dispatch",
    ("cascadeui/testing/discord_double.py", "_handle_ready"): "discord.py: the READY hook",
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its text (functions included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    found.add(target)
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def private_reads(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """``(line, attribute)`` of every ``obj._name`` whose ``_name`` this module does not
    define (as a function, class, assignment or ``self``/``cls`` attribute)."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in ("self", "cls")):
            own.add(node.attr)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") or node.attr in own or node.attr in NAMEDTUPLE:
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            continue
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super":
            continue
        yield node.lineno, node.attr


def test_no_import_cycle_counting_function_level_imports() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["cascadeui.store"] >= {"cascadeui._engine"}  # the parse sees imports
    assert import_cycles(graph) == []


def test_no_module_reads_another_modules_private_attributes() -> None:
    found = []
    for path in _modules().values():
        where = path.relative_to(ROOT).as_posix()
        for line, attr in private_reads(ast.parse(path.read_text())):
            if (where, attr) not in FOREIGN:
                found.append(f"{where}:{line}: .{attr}")
    assert found == []


@pytest.mark.parametrize(("source", "expected"), [
    ("def f(store):\n    return store._generation\n", [(2, "_generation")]),
    ("class A:\n    def f(self, other):\n        self._x = 1\n        return other._x\n", []),
    ("def f(p):\n    return p._replace(a=1), super()._y\n", []),
])
def test_the_private_read_rule_catches_what_it_is_for(
        source: str, expected: list[tuple[int, str]]) -> None:
    assert list(private_reads(ast.parse(source))) == expected


def test_the_cycle_rule_catches_what_it_is_for() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"x": {"y"}, "y": set()}) == []


def test_a_function_level_import_counts(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    from .other import thing\n    return thing\n")
    modules = {"pkg.m": tmp_path / "m.py", "pkg.other": tmp_path / "other.py"}
    assert _imports("pkg.m", tmp_path / "m.py", modules) == {"pkg.other"}


#: The layers of docs/architecture.md ("What each module may import"): a module imports
#: modules of its own layer or of lower ones, never of a higher one. Every module of
#: ``adapters/`` is layer 2 (``cascadeui.adapters*``).
LAYERS = {
    0: {"errors", "_merge", "_entries", "_kinds", "_shutdown", "_distribution",
        "testing", "testing.discord_double"},
    1: {"serializer", "actions"},
    2: set(),  # cascadeui.adapters and its modules
    3: {"_backends", "_persist_state", "testing.conformance"},
    4: {"_targets", "_engine", "persistence", "migrations"},
    5: {"store"},
    6: {"_panel_data", "_lifecycle", "views", "dynamic", "_verify", "_attach", "_expiry",
        "_late"},
    7: {"_restore", "sync", "_inspection", "_doctor"},
    8: {"cli", "demo", "__main__", ""},  # "": the package itself (cascadeui/__init__.py)
}


def _layer(module: str) -> int:
    if module == "cascadeui.adapters" or module.startswith("cascadeui.adapters."):
        return 2
    short = module.removeprefix("cascadeui").removeprefix(".")
    found = [layer for layer, names in LAYERS.items() if short in names]
    assert found, f"{module} has no layer: add it to LAYERS and docs/architecture.md"
    return found[0]


def test_every_module_imports_only_its_own_layer_or_lower() -> None:
    modules = _modules()
    upward = [f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
              for name, path in modules.items()
              for target in sorted(_imports(name, path, modules))
              if _layer(target) > _layer(name)]
    assert upward == []


def test_the_architecture_page_names_every_layer() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    for layer, names in LAYERS.items():
        line = next((ln for ln in text.splitlines() if ln.startswith(f"| {layer} |")), "")
        assert line, f"docs/architecture.md has no row for layer {layer}"
        missing = [n for n in names if n and f"`{n}`" not in line]
        assert missing == [], f"layer {layer} row lacks {missing}"
