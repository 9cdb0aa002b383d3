"""A bot that sees its panel's message deleted, then is killed: ``python
_deletion_kill_worker.py TARGET``.

It starts its own API double, a bot with ``setup_persistence`` on TARGET, sends two
panels, delivers MESSAGE_DELETE for one, and prints ``removed`` the moment the bot gets
``cascadeui_panel_removed``; then it waits to be killed (SIGKILL: no close, no flush).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from _panels import CounterPanel

from cascadeui import setup_persistence
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot


async def main(target: str) -> None:
    async with DiscordDouble() as double:
        cid = double.add_channel(guild_id=double.new_id())
        store = StateStore()

        async def hook(bot: Any) -> None:
            await setup_persistence(bot, backend=target, store=store, verify="await")

        bot = await logged_in_bot(double, setup_hook=hook)
        removed = asyncio.Event()

        async def on_removed(event: Any) -> None:
            print("removed", event.state_key, flush=True)
            removed.set()

        bot.add_listener(on_removed, "on_cascadeui_panel_removed")
        channel = bot.get_partial_messageable(cid)
        gone = await CounterPanel(state_key="gone", store=store).send(channel)
        await CounterPanel(state_key="kept", store=store).send(channel)
        await CounterPanel(state_key="gone", store=store).set_data("count", 1)
        double.deliver_message_delete(bot, gone.id)
        await removed.wait()
        await asyncio.sleep(3600)  # killed here


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
