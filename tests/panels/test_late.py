"""Late registration (issue 22 item 5): a panel class of any kind defined after
``setup_persistence`` (a cog loaded later, an extension reloaded) restores its stored
panels at once, idempotently; a class still unknown at the end of the start is one
WARNING naming it and the fix, whatever its kind."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import anyio
import discord
import pytest
from discord.ext import commands

from cascadeui import DynamicPanel, PanelEvent, PersistentView, setup_persistence
from cascadeui._kinds import register_class, unregister
from cascadeui.actions import APPLICATION_SET, PERSISTENT_VIEW_REGISTERED
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot

pytestmark = pytest.mark.anyio

BUTTON = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "go",
                                      "custom_id": "late:go"}]}]
DYNAMIC = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "t",
                                       "custom_id": "latetally:9"}]}]


def load_cog() -> tuple[type, type]:
    """What ``bot.load_extension`` would run: the cog module's panel classes."""

    class LateTicket(PersistentView, aliases=("OldLateTicket",)):
        @discord.ui.button(label="go", custom_id="late:go")
        async def go(self, interaction: discord.Interaction[Any],
                     button: discord.ui.Button[Any]) -> None:
            await interaction.response.send_message(f"ticket {self.state_key}",
                                                    ephemeral=True)

    class LateTally(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=r"latetally:(?P<n>[0-9]+)"):
        def __init__(self, n: int) -> None:
            super().__init__(discord.ui.Button(label="t", custom_id=f"latetally:{n}"))

        @classmethod
        async def from_custom_id(cls, interaction: discord.Interaction[Any],
                                 item: discord.ui.Item[Any], match: re.Match[str],
                                 ) -> LateTally:
            return cls(int(match["n"]))

        async def callback(self, interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_message(f"tally {dict(self.data)}",
                                                    ephemeral=True)

    return LateTicket, LateTally


async def test_a_cog_loaded_after_the_start_restores_its_panels_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with DiscordDouble() as double:
        cid = double.add_channel(guild_id=double.new_id())
        old = int(double.add_message(cid, components=BUTTON)["id"])
        new = int(double.add_message(cid, components=BUTTON)["id"])
        tally = int(double.add_message(cid, components=DYNAMIC)["id"])
        store = StateStore()
        for key, name, mid in (("t-old", "OldLateTicket", old), ("t-new", "LateTicket", new)):
            await store.dispatch(PERSISTENT_VIEW_REGISTERED, {
                "state_key": key, "class_name": name, "message_id": mid, "channel_id": cid,
                "guild_id": None, "user_id": None})
        await store.dispatch(APPLICATION_SET, {"path": ["dynamic_panels", "LateTally"],
                                               "value": {"9": {"votes": 4}}})
        bot: commands.Bot = await logged_in_bot(double)
        restored: list[str] = []
        arrived = asyncio.Event()

        async def on_restored(event: PanelEvent) -> None:
            restored.append(event.state_key)
            arrived.set()

        bot.add_listener(on_restored, "on_cascadeui_panel_restored")
        with caplog.at_level(logging.WARNING):
            summary = await setup_persistence(bot, backend=str(tmp_path / "s.db"),
                                              store=store, verify="await")
        assert sorted(summary["skipped"]) == ["t-new", "t-old"]
        warned = {r.getMessage().split("'")[1]: r.getMessage() for r in caplog.records
                  if "is not registered" in r.getMessage()}
        assert set(warned) == {"LateTicket", "OldLateTicket", "LateTally"}  # every kind
        assert "load the cog" in warned["LateTally"]
        assert "aliases=" in warned["OldLateTicket"]
        assert await double.click(bot, new, "late:go", user_id=1, timeout=0.3) is None
        assert await double.click(bot, tally, "latetally:9", user_id=1, timeout=0.3) is None

        try:
            ticket, _tally = load_cog()
            with anyio.fail_after(5):
                while len(restored) < 2:
                    arrived.clear()
                    await arrived.wait()
            assert sorted(restored) == ["t-new", "t-old"]
            answer = await double.click(bot, new, "late:go", user_id=1)
            assert answer is not None
            assert answer["data"]["content"] == "ticket t-new"
            answer = await double.click(bot, old, "late:go", user_id=1)
            assert answer is not None
            assert answer["data"]["content"] == "ticket t-old"
            answer = await double.click(bot, tally, "latetally:9", user_id=1)
            assert answer is not None
            assert answer["data"]["content"] == "tally {'votes': 4}"
            # The entry under the alias is rewritten to the class's name.
            assert store.state["persistent_views"]["t-old"]["class_name"] == "LateTicket"
            fetches = sum(double.message_fetches.values())
            assert fetches == 2

            register_class(ticket, ticket.panel_kind)  # registering again: idempotent
            await asyncio.sleep(0.2)
            assert sum(double.message_fetches.values()) == fetches
            assert sorted(restored) == ["t-new", "t-old"]
        finally:
            unregister("LateTicket")
            unregister("LateTally")
            await bot.close()
