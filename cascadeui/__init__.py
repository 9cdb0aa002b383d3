"""cascadeui: one state store for discord.py bots, persisted to JSON, SQLite or Redis.

``await setup_persistence(bot, backend=SQLiteBackend("cascadeui.db"))`` in ``setup_hook``
restores the state and re-attaches every :class:`PersistentView`, so old buttons answer.
Importing this package creates no files and installs no logging handlers.
"""

from __future__ import annotations

from .inspection import inspect
from .restore import setup_persistence
from .store import StateStore, get_store
from .views import PersistentView

__version__ = "0.1.0"

__all__ = [
    "PersistentView", "StateStore", "__version__", "get_store", "inspect", "setup_persistence",
]
