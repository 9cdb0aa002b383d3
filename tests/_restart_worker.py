"""Bot 2 of the restart tests, run as its own OS process: ``python _restart_worker.py spec.json``.

It loads the Discord world bot 1 left behind into a fresh API double, starts a bot whose
``setup_hook`` calls ``setup_persistence`` on the same backend as bot 1, clicks the panels
the spec names, makes one last change and closes. It prints one JSON line: the four lists,
the click answers and the owners the restored views came back with.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import _panels  # noqa: F401  (registers the panel classes, as a bot's cogs would)

from cascadeui import PersistentView, get_store, setup_persistence
from cascadeui.actions import APPLICATION_SET
from cascadeui.persistence import backend_from_url
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot, mark_ready


def make_backend(spec: dict[str, Any]) -> Any:
    return backend_from_url(spec["target"])


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    backend = make_backend(spec["backend"])
    out: dict[str, Any] = {}
    async with DiscordDouble() as double:
        double.load(spec["world"])

        async def hook(bot: Any) -> None:
            # The test asserts the final lists: wait for every check (not the default's
            # 1.5 s budget, which a loaded machine may exceed).
            out["result"] = await setup_persistence(bot, backend=backend, verify="await",
                                                    fetch_timeout=spec["fetch_timeout"])

        bot = await logged_in_bot(double, setup_hook=hook)
        mark_ready(bot)
        out["owners"] = {v.state_key: v.user_id for v in bot.persistent_views
                         if isinstance(v, PersistentView)}
        out["answers"] = []
        for message_id, custom_id, user_id in spec["clicks"]:
            answer = await double.click(bot, message_id, custom_id, user_id=user_id)
            out["answers"].append(None if answer is None else {
                "type": answer["type"], "content": answer["data"].get("content"),
                "flags": answer["data"].get("flags", 0)})
        await asyncio.sleep(0.05)  # let the last callback's dispatch finish
        await get_store().dispatch(APPLICATION_SET, {"path": ["last"], "value": "bot2"})
        await bot.close()  # no flush: close itself must make that last change durable
    await backend.aclose()
    return out


if __name__ == "__main__":
    given = json.loads(Path(sys.argv[1]).read_text())
    given["world"] = json.loads(Path(given["world"]).read_text())
    print(json.dumps(asyncio.run(main(given))))
