"""PersistentView: construction rules, the class registry, send/respond/exit against the double."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from _panels import CounterPanel, OwnerPanel
from discord.ext import commands

from cascadeui import PersistentView
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot
from cascadeui.views import get_view_class, registered_views, unregister_view_class


@pytest.fixture
async def world() -> AsyncIterator[tuple[DiscordDouble, commands.Bot, int]]:
    async with DiscordDouble() as double:
        bot = await logged_in_bot(double)
        try:
            yield double, bot, double.add_channel(guild_id=double.new_id())
        finally:
            await bot.close()


def channel(bot: commands.Bot, double: DiscordDouble, cid: int) -> discord.PartialMessageable:
    return bot.get_partial_messageable(cid, guild_id=double.channels[cid].guild_id)


# -- construction and the registry (no event loop needed) ------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("key", [None, "", 42])
async def test_state_key_required(key: Any) -> None:
    with pytest.raises(ValueError, match="state_key"):
        CounterPanel(state_key=key)


@pytest.mark.anyio
async def test_timeout_forced_none() -> None:
    assert CounterPanel(state_key="k").timeout is None
    with pytest.raises(ValueError, match="never times out"):
        CounterPanel(state_key="k", timeout=30)


def test_duplicate_class_name_fails_at_definition() -> None:
    with pytest.raises(TypeError, match=r"already registered by _panels\.CounterPanel"):
        type("CounterPanel", (PersistentView,), {"__module__": "elsewhere"})
    assert registered_views()["CounterPanel"] is CounterPanel


def test_redefinition_of_the_same_class_replaces_it() -> None:
    def define() -> type[PersistentView]:
        class ReloadedPanel(PersistentView):
            pass
        return ReloadedPanel

    first, second = define(), define()  # same module and qualified name: a reload
    try:
        assert first is not second
        assert get_view_class("ReloadedPanel") is second
    finally:
        unregister_view_class("ReloadedPanel")
    assert get_view_class("ReloadedPanel") is None


def test_register_false_and_lookup_only_by_registry() -> None:
    class AbstractBase(PersistentView, register=False):
        pass

    assert "AbstractBase" not in registered_views()
    # A stored name selects among registered classes only: nothing is imported by name.
    for name in ("os.system", "PersistentView", "discord.ui.View", 3, None):
        assert get_view_class(name) is None
    with pytest.raises(TypeError):
        registered_views()["Evil"] = AbstractBase  # type: ignore[index]


# -- sending -------------------------------------------------------------------------------


class NoCustomId(PersistentView, register=False):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_item(discord.ui.Button(label="Vote", custom_id="ok"))
        self.add_item(discord.ui.Button(label="Anonymous"))


pytestmark = pytest.mark.anyio


async def test_send_validates_custom_ids_and_refuses_ephemeral(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, bot, cid = world
    store = StateStore()
    with pytest.raises(ValueError, match=r"Button 'Anonymous'.*custom_id"):
        await NoCustomId(state_key="n", store=store).send(channel(bot, double, cid))
    with pytest.raises(ValueError, match="ephemeral"):
        await CounterPanel(state_key="e", store=store).send(channel(bot, double, cid),
                                                            ephemeral=True)
    assert store.state["persistent_views"] == {}
    assert double.requests["POST channels/{channel_id}/messages"] == 0


async def test_send_records_identity_as_decimal_strings(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, bot, cid = world
    store = StateStore()
    owner = 1234567890123456789
    panel = OwnerPanel(state_key="p", user_id=owner, store=store)
    message = await panel.send(channel(bot, double, cid), "hello")
    entry = store.state["persistent_views"]["p"]
    assert entry == {"class_name": "OwnerPanel", "message_id": str(message.id),
                     "channel_id": str(cid), "guild_id": str(double.channels[cid].guild_id),
                     "user_id": str(owner)}
    assert (panel.message_id, panel.channel_id, panel.user_id) == (message.id, cid, owner)
    answer = await double.click(bot, message.id, "owner:toggle", user_id=owner)
    assert answer is not None
    assert answer["type"] == 7
    assert panel.data == {"on": True}


async def test_resend_detaches_the_old_message_even_if_gone(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, bot, cid = world
    store = StateStore()
    first = CounterPanel(state_key="k", store=store)
    m1 = await first.send(channel(bot, double, cid))
    second = CounterPanel(state_key="k", store=store)
    m2 = await second.send(channel(bot, double, cid))
    old = double.message(m1.id)
    assert old is not None
    assert old["components"] == []
    assert first.is_finished()
    assert not second.is_finished()
    assert store.state["persistent_views"]["k"]["message_id"] == str(m2.id)
    # Old message deleted meanwhile: the re-send still succeeds.
    double.delete_message(m2.id)
    third = CounterPanel(state_key="k", store=store)
    m3 = await third.send(channel(bot, double, cid))
    assert store.state["persistent_views"]["k"]["message_id"] == str(m3.id)
    assert double.message(m3.id) is not None
    assert double.message(m3.id)["components"]  # type: ignore[index]


async def test_exit_unregisters_only_its_own_entry(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, bot, cid = world
    store = StateStore()
    old = CounterPanel(state_key="k", store=store)
    await old.send(channel(bot, double, cid))
    new = CounterPanel(state_key="k", store=store)
    await new.send(channel(bot, double, cid))
    await old.exit()  # a stale copy: the replacement stays registered
    assert "k" in store.state["persistent_views"]
    await new.exit()
    assert store.state["persistent_views"] == {}
    assert new.is_finished()
    with pytest.raises(ValueError, match="finished"):
        await new.send(channel(bot, double, cid))


class Launcher(PersistentView):
    """Answers a click by sending an owner-only panel to the clicker."""

    @discord.ui.button(label="Open", custom_id="launcher:open")
    async def open(self, interaction: discord.Interaction[Any],
                   button: discord.ui.Button[Any]) -> None:
        self.sent = await OwnerPanel(state_key=f"own:{interaction.user.id}",
                                     store=self.store).respond(interaction, "yours")


async def test_respond_records_the_clicker_as_owner(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, bot, cid = world
    store = StateStore()
    launcher = Launcher(state_key="launcher", store=store)
    m = await launcher.send(channel(bot, double, cid))
    answer = await double.click(bot, m.id, "launcher:open", user_id=555)
    assert answer is not None
    assert answer["type"] == 4
    for _ in range(200):  # the callback is answered first, then the panel is recorded
        if "own:555" in store.state["persistent_views"]:
            break
        await asyncio.sleep(0.01)
    entry = store.state["persistent_views"]["own:555"]
    assert entry["user_id"] == "555"
    assert entry["channel_id"] == str(cid)
    assert entry["message_id"] == str(launcher.sent.id)
    assert double.message(launcher.sent.id) is not None
    with pytest.raises(ValueError, match="ephemeral"):
        await OwnerPanel(state_key="x", store=store).respond(
            None, ephemeral=True)  # type: ignore[arg-type]
