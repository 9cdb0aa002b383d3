"""Bot 2 of the layout/dynamic restart test, run as its own OS process.

``python _panels_worker.py spec.json``: loads the Discord world bot 1 left behind into a
fresh API double, restores from the same SQLite file, counts the requests restoring made,
clicks what the spec names, and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import _panels  # noqa: F401  (registers the panel classes, as a bot's cogs would)

from cascadeui import setup_persistence
from cascadeui.persistence import SQLiteBackend
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot, mark_ready


async def main(spec: dict[str, Any], world: dict[str, Any]) -> dict[str, Any]:
    backend = SQLiteBackend(spec["db"])
    out: dict[str, Any] = {}
    async with DiscordDouble() as double:
        double.load(world)

        async def hook(bot: Any) -> None:
            before = double.total_requests
            summary = await setup_persistence(bot, backend=backend, verify="background")
            out["restore_requests"] = double.total_requests - before
            out["dynamic_items"] = summary.dynamic_items
            out["attached"] = summary["restored"]
            out["final"] = await summary.verification

        bot = await logged_in_bot(double, setup_hook=hook)
        mark_ready(bot)
        out["answers"] = []
        for message_id, custom_id, user_id in spec["clicks"]:
            answer = await double.click(bot, message_id, custom_id, user_id=user_id)
            out["answers"].append(None if answer is None else answer["data"].get("content"))
        await bot.close()  # no flush: close itself makes the clicks' changes durable
    await backend.aclose()
    return out


if __name__ == "__main__":
    given = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(main(given, json.loads(Path(given["world"]).read_text())))))
