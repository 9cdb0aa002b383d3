"""cascadeui: one state store for discord.py bots, persisted to JSON, SQLite or Redis.

``await setup_persistence(bot, backend=SQLiteBackend("cascadeui.db"))`` in ``setup_hook``
restores the state and re-attaches every :class:`PersistentView`, so old buttons answer.
Importing this package creates no files and installs no logging handlers.
"""

from __future__ import annotations

from .store import StateStore, get_store

__version__ = "0.1.0"

__all__ = ["StateStore", "__version__", "get_store"]
