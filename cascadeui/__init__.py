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
import os
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


def _find_adapters_in_a_clone() -> None:
    """Let ``cascadeui.adapters`` import from a clone's source tree too (issue 23).

    The wheel installs the repository's top-level ``adapters/`` as ``cascadeui/adapters``.
    In a clone, ``python -m cascadeui`` run from its root imports this tree, whose
    ``cascadeui/`` has no ``adapters`` subpackage: the repository root then joins the
    package's search path, so the sibling ``adapters/`` is found under the same name.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "adapters")) and \
            os.path.isfile(os.path.join(root, "adapters", "__init__.py")):
        __path__.append(root)


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
