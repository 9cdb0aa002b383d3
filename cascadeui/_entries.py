"""Panel registry entries: the one check of what ``setup_persistence`` can restore.

``state["persistent_views"]`` maps a state key to an entry
``{"class_name", "message_id", "channel_id", "guild_id", "user_id", ...}``. Restoring
(:mod:`cascadeui._restore`), ``cascadeui verify`` and ``cascadeui set`` all judge an entry
with :func:`entry_identity`, so a tool never passes an entry a bot's start reports as
failed. No discord.py import: the CLI uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["entry_identity", "entry_problem", "parse_id"]

_SNOWFLAKE = re.compile(r"[1-9][0-9]{0,19}")
_MAX_ID = 2**64 - 1


def parse_id(value: Any, *, optional: bool) -> int | None:
    """A snowflake from a stored entry (decimal string or int); ValueError when it is not."""
    if value is None and optional:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an id")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _SNOWFLAKE.fullmatch(value):
        number = int(value)
    else:
        raise ValueError(f"{value!r} is not an id")
    if not 0 < number <= _MAX_ID:
        raise ValueError(f"{value!r} is out of the snowflake range")
    return number


def entry_identity(entry: Any) -> dict[str, Any]:
    """The checked ids of a registry entry (``message_id``, ``channel_id``, ``guild_id``,
    ``user_id``).

    :raises ValueError: the entry is not restorable; the message names what is wrong.
    """
    if not isinstance(entry, Mapping):
        raise ValueError(f"entry is a {type(entry).__name__}, not a dict")
    if not isinstance(entry.get("class_name"), str):
        raise ValueError("class_name is missing or not a string")
    ids: dict[str, Any] = {}
    for name, optional in (("message_id", False), ("channel_id", False),
                           ("guild_id", True), ("user_id", True)):
        try:
            ids[name] = parse_id(entry.get(name), optional=optional)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return ids


def entry_problem(entry: Any) -> str | None:
    """What makes ``entry`` unrestorable, or None when restore accepts it."""
    try:
        entry_identity(entry)
    except ValueError as exc:
        return str(exc)
    return None
