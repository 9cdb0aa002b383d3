"""Renamed and moved panel classes (issue 22 item 4): ``aliases=`` restores old entries
under the new name, on every backend, and colliding aliases are refused at definition."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio.to_thread
import discord
import pytest
from _panels import CounterPanel
from _registry import kinds, target

from cascadeui import DynamicPanel, PersistentView, setup_persistence, sync
from cascadeui._kinds import class_and_kind, unregister
from cascadeui.actions import APPLICATION_SET, PERSISTENT_VIEW_REGISTERED
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot
from cascadeui.views import get_view_class, registered_views

pytestmark = pytest.mark.anyio


class Poll(PersistentView, aliases=("OldPoll", "polls.Poll")):
    """Once called OldPoll, and before that polls.Poll in another module."""

    @discord.ui.button(label="Vote", custom_id="renamed:vote")
    async def vote(self, interaction: discord.Interaction[Any],
                   button: discord.ui.Button[Any]) -> None:
        votes = int(self.data.get("votes", 0)) + 1
        await self.set_data("votes", votes)
        await interaction.response.send_message(f"{self.state_key}={votes}", ephemeral=True)


class Ballot(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button[Any]],
             template=r"ballot:(?P<id>[0-9]+)", aliases=("OldBallot",)):
    """A dynamic item renamed: its per-class data moves to the new name."""

    def __init__(self, ballot: int) -> None:
        super().__init__(discord.ui.Button(label="b", custom_id=f"ballot:{ballot}"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: re.Match[str]) -> Ballot:
        return cls(int(match["id"]))


@pytest.mark.parametrize("kind", kinds())
async def test_entries_under_an_alias_restore_as_the_class_and_are_rewritten(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    where = target(kind, request, tmp_path)
    async with DiscordDouble() as double:
        guild = double.new_id()
        cid = double.add_channel(guild_id=guild)
        components = Poll(state_key="x").to_components()
        mids = {key: int(double.add_message(cid, components=components)["id"])
                for key in ("a", "b")}
        old = StateStore()  # what an older release of the bot left behind
        await setup_persistence(backend=where, store=old)
        for key, name in (("a", "OldPoll"), ("b", "polls.Poll")):
            await old.dispatch(PERSISTENT_VIEW_REGISTERED, {
                "state_key": key, "class_name": name, "message_id": mids[key],
                "channel_id": cid, "guild_id": guild, "user_id": None})
        await old.dispatch(APPLICATION_SET, {"path": ["panels", "a"], "value": {"votes": 2}})
        await old.dispatch(APPLICATION_SET, {"path": ["dynamic_panels", "OldBallot"],
                                             "value": {"7": {"n": 1}}})
        await old.close(close_backend=True)

        store = StateStore()
        bot = await logged_in_bot(double)
        summary = await setup_persistence(bot, backend=where, store=store, verify="await")
        assert sorted(summary["restored"]) == ["a", "b"]
        views = store.state["persistent_views"]
        assert {views[k]["class_name"] for k in ("a", "b")} == {"Poll"}
        answer = await double.click(bot, mids["a"], "renamed:vote", user_id=5)
        assert answer is not None
        assert answer["data"]["content"] == "a=3"
        assert store.state["application"]["dynamic_panels"] == {"Ballot": {"7": {"n": 1}}}
        await bot.close()
    stored = await anyio.to_thread.run_sync(sync.load_state, where)
    assert {stored["persistent_views"][k]["class_name"] for k in ("a", "b")} == {"Poll"}
    assert stored["application"]["panels"]["a"] == {"votes": 3}
    assert stored["application"]["dynamic_panels"] == {"Ballot": {"7": {"n": 1}}}


def test_aliases_resolve_in_the_one_registry_but_are_not_listed() -> None:
    assert get_view_class("OldPoll") is Poll
    assert class_and_kind("polls.Poll") == class_and_kind("Poll")
    assert "OldPoll" not in registered_views()
    assert "OldPoll" not in list(registered_views())


def test_colliding_aliases_are_refused_at_definition() -> None:
    assert get_view_class("CounterPanel") is CounterPanel
    with pytest.raises(TypeError, match="alias 'CounterPanel' is already taken"):
        class A(PersistentView, aliases=("CounterPanel",)):  # another class's name
            pass
    with pytest.raises(TypeError, match="alias 'OldPoll' is already taken"):
        class B(PersistentView, aliases=("OldPoll",)):  # another class's alias
            pass
    with pytest.raises(TypeError, match="'OldBallot' is an alias of"):
        class OldBallot(PersistentView):  # a class named as another's alias
            pass
    with pytest.raises(TypeError, match="tuple of names"):
        class C(PersistentView, aliases="Old"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="register=False"):
        class D(PersistentView, register=False, aliases=("Old",)):
            pass
    assert get_view_class("A") is None
    assert get_view_class("B") is None


def test_a_reloaded_class_keeps_or_restates_its_aliases() -> None:
    def define(*aliases: str) -> type:
        class Reloaded(PersistentView, aliases=aliases):
            pass
        return Reloaded

    try:
        first = define("Before")
        second = define("Before", "Earlier")  # a module reload: replaces, no collision
        assert get_view_class("Before") is second
        assert get_view_class("Earlier") is second
        assert first is not second
        define()
        assert get_view_class("Before") is None
    finally:
        unregister("Reloaded")
