"""Every public module says what it exports (issue 12): one test per module.

For each importable module of the package (``cascadeui``, ``cascadeui.adapters`` and
their submodules, except ``__main__``): ``__all__`` exists, is a list of unique strings,
every name in it exists, and every public class *defined* in the module is listed (so a
new public class is never exported by accident or forgotten). Public functions may be
helpers (the CLI's commands, the reducers) and need not be listed; names imported from
elsewhere may be re-exported but need not be.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import cascadeui
import cascadeui.adapters


def _modules() -> list[str]:
    names = {"cascadeui", "cascadeui.adapters"}
    for package in (cascadeui, cascadeui.adapters):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":
                names.add(info.name)
    return sorted(names)


MODULES = _modules()


def test_the_walk_finds_the_package() -> None:
    for expected in ("cascadeui.persistence", "cascadeui._targets", "cascadeui.adapters._journal",
                     "cascadeui.adapters._memory_store", "cascadeui.testing.discord_double"):
        assert expected in MODULES


def _defined_here(module: ModuleType) -> list[str]:
    """Public classes whose home is ``module`` (not imported into it)."""
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and inspect.isclass(value)
            and getattr(value, "__module__", None) == module.__name__]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_what_the_module_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, (list, tuple)), f"{name} has no __all__"
    assert all(isinstance(item, str) for item in exported)
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    missing = [item for item in exported if not hasattr(module, item)]
    assert missing == [], f"{name}.__all__ names what the module lacks"
    unlisted = sorted(set(_defined_here(module)) - set(exported))
    assert unlisted == [], f"{name} defines public names that __all__ does not list"
