"""PersistentLayoutView and DynamicPanel against real discord.py and the API double (issue 15).

Also: custom_id refused at class definition, the unknown-class WARNING, entry migrations
run at restore, the double's Components V2 rules and delivered messages.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from _panels import CounterPanel, LayoutCounter, VoteButton, vote_view
from discord.ext import commands

from cascadeui import DynamicPanel, PersistentLayoutView, PersistentView, setup_persistence
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import IS_COMPONENTS_V2, DiscordDouble, logged_in_bot
from cascadeui.views import get_view_class, unregister_view_class

pytestmark = pytest.mark.anyio
VOTER, OTHER = 1234567890123456789, 42



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


# -- refused at definition ---------------------------------------------------------------


def test_a_decorated_button_without_custom_id_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"anonymous \('Go'\) has no explicit custom_id"):
        class Careless(PersistentView):
            @discord.ui.button(label="Go")
            async def anonymous(self, interaction: discord.Interaction[Any],
                                button: discord.ui.Button[Any]) -> None:
                pass
    assert get_view_class("Careless") is None


def test_a_nested_layout_button_without_custom_id_is_refused_when_defined() -> None:
    with pytest.raises(TypeError, match=r"Button 'Deep' in box has no explicit custom_id"):
        class CarelessLayout(PersistentLayoutView):
            box = discord.ui.Container(discord.ui.Section(
                discord.ui.TextDisplay("t"), accessory=discord.ui.Button(label="Deep")))
    with pytest.raises(TypeError, match=r"go \('Row'\) has no explicit custom_id"):
        class CarelessRow(PersistentLayoutView):
            row = discord.ui.ActionRow()

            @row.button(label="Row")
            async def go(self, interaction: discord.Interaction[Any],
                         button: discord.ui.Button[Any]) -> None:
                pass
    assert get_view_class("CarelessLayout") is None
    assert get_view_class("CarelessRow") is None


def test_link_buttons_and_base_classes_are_not_refused() -> None:
    class Links(PersistentLayoutView):
        row = discord.ui.ActionRow(discord.ui.Button(label="docs", url="https://example.com"))

    class Base(PersistentView, register=False):  # checked in its registered subclasses
        @discord.ui.button(label="Later")
        async def later(self, interaction: discord.Interaction[Any],
                        button: discord.ui.Button[Any]) -> None:
            pass
    try:
        assert get_view_class("Links") is Links
    finally:
        unregister_view_class("Links")


async def test_check_persistent_walks_items_added_at_run_time() -> None:
    class Built(PersistentLayoutView, register=False):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.add_item(discord.ui.Container(discord.ui.ActionRow(
                discord.ui.Button(label="ok", custom_id="built:ok"),
                discord.ui.Button(label="Nested"))))

    with pytest.raises(ValueError, match=r"Built: component Button 'Nested'.*custom_id"):
        Built(state_key="b").check_persistent()


def test_a_dynamic_panel_key_group_must_be_captured() -> None:
    with pytest.raises(TypeError, match="key_groups names 'nope'"):
        class Wrong(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=r"w:(?P<id>[0-9]+)"):
            key_groups = ("nope",)


# -- layout panels -----------------------------------------------------------------------


async def test_a_layout_panel_is_sent_as_components_v2_clicked_and_refuses_content(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, bot, cid = world
    store = StateStore()
    panel = LayoutCounter(state_key="L", store=store)
    with pytest.raises(ValueError, match="TextDisplay"):
        await panel.send(channel(bot, double, cid), "text is refused")
    assert double.requests["POST channels/{channel_id}/messages"] == 0
    message = await panel.send(channel(bot, double, cid))
    stored = double.message(message.id)
    assert stored is not None
    assert stored["flags"] & IS_COMPONENTS_V2
    assert [c["type"] for c in stored["components"]] == [10, 17, 1]
    assert store.state["persistent_views"]["L"]["class_name"] == "LayoutCounter"
    for expected in (1, 2):
        answer = await double.click(bot, message.id, "layout:inc", user_id=OTHER)
        assert answer is not None
        assert answer["data"]["content"] == f"L={expected}"
    assert panel.data == {"count": 2}


async def test_resending_a_layout_panel_disables_the_old_controls_and_keeps_its_text(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, bot, cid = world
    store = StateStore()
    first = await LayoutCounter(state_key="L", store=store).send(channel(bot, double, cid))
    await LayoutCounter(state_key="L", store=store).send(channel(bot, double, cid))
    old = double.message(first.id)
    assert old is not None
    assert old["flags"] & IS_COMPONENTS_V2
    buttons = [c for c in _walk(old["components"]) if c["type"] == 2]
    assert buttons
    assert all(b.get("disabled") for b in buttons)
    assert any(c.get("content") == "Counter" for c in _walk(old["components"]))


def _walk(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in components:
        out.append(c)
        out += _walk(c.get("components") or [])
        if isinstance(c.get("accessory"), dict):
            out += _walk([c["accessory"]])
    return out


# -- restore: layouts, dynamic items, unknown classes, entry migrations -----------------


async def test_restore_routes_layout_and_dynamic_panels_and_dynamic_costs_no_request(
        world: tuple[DiscordDouble, commands.Bot, int], tmp_path: Any) -> None:
    double, bot1, cid = world
    store1 = StateStore()
    await setup_persistence(bot1, file_path=tmp_path / "s.json", store=store1)
    layout = await LayoutCounter(state_key="L", store=store1).send(channel(bot1, double, cid))
    polls = [await channel(bot1, double, cid).send(f"poll {n}", view=vote_view(n))
             for n in (1, 2)]
    assert await double.click(bot1, polls[0].id, "vote:1:yes", user_id=VOTER)
    assert await double.click(bot1, layout.id, "layout:inc", user_id=VOTER)
    assert store1.state["application"]["dynamic_panels"] == {
        "VoteButton": {"1": {"votes": {str(VOTER): "yes"}}}}
    await bot1.close()

    store2 = StateStore()
    bot2 = await logged_in_bot(double)
    try:
        before = double.total_requests
        summary = await setup_persistence(bot2, file_path=tmp_path / "s.json", store=store2,
                                          verify="background")
        assert double.total_requests == before  # attach and dynamic routing: no request
        assert "VoteButton" in summary.dynamic_items
        await summary.verification
        answer = await double.click(bot2, polls[0].id, "vote:1:no", user_id=OTHER)
        assert answer is not None
        assert answer["data"]["content"] == "poll 1: 1/2 yes"
        answer = await double.click(bot2, polls[1].id, "vote:2:yes", user_id=OTHER)
        assert answer is not None
        assert answer["data"]["content"] == "poll 2: 1/1 yes"
        answer = await double.click(bot2, layout.id, "layout:inc", user_id=OTHER)
        assert answer is not None
        assert answer["data"]["content"] == "L=2"
    finally:
        await bot2.close()
    VoteButton.bind_store(None)


async def test_an_unregistered_class_is_a_warning_naming_the_class_and_the_fix(
        world: tuple[DiscordDouble, commands.Bot, int], tmp_path: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    _double, bot, cid = world
    store = StateStore()
    await store.dispatch("PERSISTENT_VIEW_REGISTERED", {
        "state_key": "gone", "class_name": "NotLoadedPanel", "message_id": "123",
        "channel_id": str(cid), "guild_id": None, "user_id": None})
    with caplog.at_level(logging.INFO, logger="cascadeui._restore"):
        summary = await setup_persistence(bot, file_path=tmp_path / "s.json", store=store)
    assert summary["skipped"] == ["gone"]
    record = next(r for r in caplog.records if "NotLoadedPanel" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert "load the cog" in record.getMessage()


class TicketV2(PersistentView):
    """Version 2 stores its topic in args; version 0 entries had none."""

    version = 2

    def __init__(self, *, state_key: str, topic: str = "?", **kwargs: Any) -> None:
        super().__init__(state_key=state_key, **kwargs)
        self.topic = topic

    def registry_args(self) -> dict[str, Any]:
        return {"topic": self.topic}

    @classmethod
    def migrate_entry(cls, entry: dict[str, Any], from_version: int) -> dict[str, Any]:
        entry.setdefault("args", {})["topic"] = f"migrated from {from_version}"
        return entry

    @discord.ui.button(label="topic", custom_id="ticketv2:topic")
    async def show(self, interaction: discord.Interaction[Any],
                   button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_message(self.topic, ephemeral=True)


async def test_a_panel_class_migrates_its_stored_entries_at_restore(
        world: tuple[DiscordDouble, commands.Bot, int], tmp_path: Any) -> None:
    double, bot, cid = world
    store = StateStore()
    old = double.add_message(cid, content="old ticket")
    new = await TicketV2(state_key="new", topic="billing", store=store).send(
        channel(bot, double, cid))
    assert store.state["persistent_views"]["new"]["args"] == {"topic": "billing"}
    assert store.state["persistent_views"]["new"]["version"] == 2
    await store.dispatch("PERSISTENT_VIEW_REGISTERED", {
        "state_key": "old", "class_name": "TicketV2", "message_id": old["id"],
        "channel_id": str(cid), "guild_id": None, "user_id": None})
    await store.dispatch("PERSISTENT_VIEW_REGISTERED", {
        "state_key": "future", "class_name": "TicketV2", "message_id": old["id"],
        "channel_id": str(cid), "guild_id": None, "user_id": None, "version": 3})
    bot2 = await logged_in_bot(double)
    try:
        summary = await setup_persistence(bot2, file_path=tmp_path / "s.json", store=store)
        assert sorted(summary["restored"]) == ["new", "old"]
        assert summary["failed"] == ["future"]  # stored by newer code: kept, not guessed
        entry = store.state["persistent_views"]["old"]
        assert entry["version"] == 2
        assert entry["args"] == {"topic": "migrated from 0"}
        answer = await double.click(bot2, int(old["id"]), "ticketv2:topic", user_id=OTHER)
        assert answer is not None
        assert answer["data"]["content"] == "migrated from 0"
        answer = await double.click(bot2, new.id, "ticketv2:topic", user_id=OTHER)
        assert answer is not None
        assert answer["data"]["content"] == "billing"
    finally:
        await bot2.close()


# -- the double: Components V2 rules and delivered messages ------------------------------


async def test_the_double_enforces_components_v2_rules(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, _bot, cid = world
    url = f"{double.base_url}/channels/{cid}/messages"
    text = {"type": 10, "content": "hi"}
    cases = [
        ({"flags": IS_COMPONENTS_V2, "content": "x", "components": [text]}, 400),
        ({"components": [text]}, 400),  # a layout component without the flag
        ({"flags": IS_COMPONENTS_V2, "components": [text]}, 200),
        ({"content": "x", "components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "b", "custom_id": "c"}]}]}, 200),
    ]
    async with aiohttp.ClientSession() as http:
        for body, status in cases:
            async with http.post(url, json=body) as resp:
                assert resp.status == status, body
                data = await resp.json()
            if status == 400:
                assert data["code"] == 50035
            else:
                assert all(isinstance(c["id"], int) for c in _walk(data["components"]))
        mid = data["id"]
        v2 = (await (await http.post(url, json=cases[2][0])).json())["id"]
        async with http.patch(f"{url}/{v2}", json={"components": []}) as resp:
            assert resp.status == 400  # an empty V2 message
        async with http.patch(f"{url}/{v2}", json={"flags": 0, "components": [text]}) as resp:
            assert resp.status == 200  # the flag cannot be dropped: still V2
            assert (await resp.json())["flags"] & IS_COMPONENTS_V2
        assert mid


async def test_a_delivered_message_runs_a_prefix_command_that_sends_a_layout_panel(
        ) -> None:
    store = StateStore()
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none(), help_command=None)

    @bot.command()
    async def counter(ctx: commands.Context[commands.Bot]) -> None:
        await LayoutCounter(state_key=f"c:{ctx.message.id}", store=store).send(ctx.channel)

    async with DiscordDouble() as double:
        cid = double.add_channel(guild_id=double.new_id())
        await logged_in_bot(double, bot=bot)
        try:
            sent = await double.deliver_message(bot, cid, "!counter", author_id=VOTER,
                                              command=True)
            reply = await double.wait_for_message(cid, after=sent["id"])
            assert reply["flags"] & IS_COMPONENTS_V2
            assert f"c:{sent['id']}" in store.state["persistent_views"]
            answer = await double.click(bot, int(reply["id"]), "layout:inc", user_id=VOTER)
            assert answer is not None
            assert answer["data"]["content"] == f"c:{sent['id']}=1"
        finally:
            await bot.close()


def test_data_key_is_the_captured_ids() -> None:
    assert VoteButton(7, "yes").data_key == "7"
    assert re.fullmatch(VoteButton.__discord_ui_compiled_template__, "vote:7:no")
    assert CounterPanel  # the shared module still registers the classic panels


async def test_a_delivered_command_that_fails_raises_its_error() -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none(), help_command=None)

    @bot.command()
    async def boom(ctx: commands.Context[commands.Bot]) -> None:
        raise RuntimeError("boom")

    async with DiscordDouble() as double:
        cid = double.add_channel()
        await logged_in_bot(double, bot=bot)
        try:
            with pytest.raises(commands.CommandInvokeError, match="boom"):
                await double.deliver_message(bot, cid, "!boom", author_id=VOTER, command=True)
        finally:
            await bot.close()


class OwnedBoard(PersistentLayoutView):
    """An owner-only layout: the shared owner check applies to LayoutView panels too."""

    owner_only = True
    row = discord.ui.ActionRow()

    @row.button(label="Mine", custom_id="ownedboard:mine")
    async def mine(self, interaction: discord.Interaction[Any],
                   button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_message("yours", ephemeral=True)


async def test_an_owner_only_layout_refuses_others_and_delete_data_forgets_a_poll(
        world: tuple[DiscordDouble, commands.Bot, int]) -> None:
    double, bot, cid = world
    store = StateStore()
    message = await OwnedBoard(state_key="o", user_id=VOTER, store=store).send(
        channel(bot, double, cid))
    refused = await double.click(bot, message.id, "ownedboard:mine", user_id=OTHER)
    assert refused is not None
    assert refused["data"]["content"] == "This panel belongs to someone else."
    allowed = await double.click(bot, message.id, "ownedboard:mine", user_id=VOTER)
    assert allowed is not None
    assert allowed["data"]["content"] == "yours"
    vote = VoteButton(9, "yes")
    vote.bind_store(store)
    try:
        await vote.set_data("votes", {"1": "yes"})
        assert store.state["application"]["dynamic_panels"]["VoteButton"]["9"] == {
            "votes": {"1": "yes"}}
        await VoteButton(9, "no").delete_data()  # same poll, same data key
        assert "9" not in store.state["application"]["dynamic_panels"]["VoteButton"]
    finally:
        VoteButton.bind_store(None)
