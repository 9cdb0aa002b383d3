"""cascadeui: one state store for discord.py bots, persisted to JSON, SQLite, Redis or
PostgreSQL (the distribution ``cascadeui-persistence``).

``await setup_persistence(bot, backend=SQLiteBackend("cascadeui.db"))`` in ``setup_hook``
restores the state and re-attaches every :class:`PersistentView`, so old buttons answer.
Importing this package creates no files and installs no logging handlers.

The top-level names are imported on first use, so ``import cascadeui.adapters`` in a
script, a worker process or the CLI does not pay for importing discord.py. Importing it
logs a WARNING when upstream CascadeUI's ``pycascadeui`` is installed too (same import name).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._distribution import warn_if_upstream_installed

if TYPE_CHECKING:
    from ._doctor import check_panels
    from ._inspection import inspect
    from ._lifecycle import PanelEvent
    from ._panel_data import PanelData
    from ._restore import RestoreSummary, panel_shard, setup_persistence
    from .dynamic import DynamicPanel
    from .store import StateStore, get_store
    from .views import PersistentLayoutView, PersistentView

__version__ = "0.1.0"

__all__ = [
    "DynamicPanel", "PanelData", "PanelEvent", "PersistentLayoutView", "PersistentView",
    "RestoreSummary", "StateStore", "__version__", "check_panels", "get_store", "inspect",
    "panel_shard", "setup_persistence",
]

_LAZY = {
    "DynamicPanel": ".dynamic",
    "check_panels": "._doctor",
    "PanelData": "._panel_data",
    "PanelEvent": "._lifecycle",
    "PersistentLayoutView": ".views",
    "RestoreSummary": "._restore",
    "PersistentView": ".views",
    "StateStore": ".store",
    "get_store": ".store",
    "inspect": "._inspection",
    "panel_shard": "._restore",
    "setup_persistence": "._restore",
}


class _CloneAdapters(importlib.abc.MetaPathFinder):
    """Finds ``cascadeui.adapters`` in a clone's top-level ``adapters/`` (issue 23).

    The wheel installs the repository's ``adapters/`` as ``cascadeui/adapters``. In a clone,
    ``python -m cascadeui`` run from its root imports this source tree, whose ``cascadeui/``
    has no ``adapters`` subpackage. This finder comes last on ``sys.meta_path`` and answers
    for that one name only, so an installed or editable package is always found first.
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != "cascadeui.adapters":
            return None
        return importlib.machinery.PathFinder.find_spec("cascadeui.adapters", [self.root])


def _find_adapters_in_a_clone() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "adapters")) and \
            os.path.isfile(os.path.join(root, "adapters", "__init__.py")) and \
            not any(isinstance(f, _CloneAdapters) for f in sys.meta_path):
        sys.meta_path.append(_CloneAdapters(root))


_find_adapters_in_a_clone()
warn_if_upstream_installed()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cascadeui' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
