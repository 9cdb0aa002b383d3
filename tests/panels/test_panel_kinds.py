"""The one panel-kind abstraction and its registry (issue 20 item 6), and panel defects.

Two toy kinds are added here, in this one module and nowhere else, and restored end to
end with the real discord.py client against the Discord API double: one routed per
class, one rebuilt per registry entry (whose messages restore checks and purges when
gone). Also: one registry for every kind, decorated selects without ``custom_id``
refused at definition (issue 23 item 5), ``register=False`` classes refused at
``send()``/``respond()`` (issue 23 item 6), and DynamicPanel data keys that never merge
two items' data (issue 21 item 10).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import discord
import pytest
from discord.ext import commands

from cascadeui import (
    DynamicPanel,
    PanelData,
    PersistentLayoutView,
    PersistentView,
    setup_persistence,
)
from cascadeui._kinds import KindMember, PanelKind, lookup, unregister
from cascadeui.dynamic import _encode_data_key, get_dynamic_class, registered_dynamic_items
from cascadeui.errors import UnregisteredPanelError
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot
from cascadeui.views import _VIEW_KIND, get_view_class, registered_views

pytestmark = pytest.mark.anyio
ALICE, BOB = 1234567890123456789, 42


async def count_click(panel: PanelData, interaction: discord.Interaction[Any],
                      name: str) -> None:
    """A toy panel's button: count the click in the panel's data and say the count."""
    count = int(panel.data.get("count", 0)) + 1
    await panel.set_data("count", count)
    await interaction.response.send_message(f"{name}={count}", ephemeral=True)


# -- a toy kind, defined here and nowhere else --------------------------------------------


class BoardKind(PanelKind):
    """One view per class, routed on every message by its custom_ids (``bot.add_view``
    without a message id); its data is per class, under ``application["boards"]``."""

    name = "board"
    data_root = "boards"

    def definition_problems(self, cls: type) -> Iterator[str]:
        yield from _VIEW_KIND.definition_problems(cls)  # a kind may reuse another's check

    def route_class(self, bot: Any, cls: type, store: Any) -> bool:
        bot.add_view(cls(store=store))
        return True


class BoardPanel(KindMember, PanelData, discord.ui.View, register=False):
    """The toy kind's base: every subclass is a board."""

    panel_kind = BoardKind()

    def __init__(self, *, store: StateStore | None = None) -> None:
        super().__init__(timeout=None)
        self._store = store

    def _data_path(self) -> list[str]:
        return [self.panel_kind.data_root, type(self).__name__]


@pytest.fixture
def tally() -> Iterator[type[BoardPanel]]:
    class Tally(BoardPanel):
        @discord.ui.button(label="+1", custom_id="tally:inc")
        async def inc(self, interaction: discord.Interaction[Any],
                      button: discord.ui.Button[Any]) -> None:
            await count_click(self, interaction, "count")

    try:
        yield Tally
    finally:
        unregister("Tally")


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with DiscordDouble() as started:
        yield started


async def test_a_toy_kind_defined_in_one_module_restores_end_to_end(
        double: DiscordDouble, tally: type[BoardPanel], tmp_path: Path) -> None:
    assert lookup("Tally") is tally
    assert "Tally" not in registered_views()
    assert "Tally" not in registered_dynamic_items()
    guild = double.new_id()
    cid = double.add_channel(guild_id=guild)
    path = tmp_path / "state.json"
    store1 = StateStore()
    bot1 = await logged_in_bot(double)
    try:
        first = await setup_persistence(bot1, file_path=path, store=store1)
        assert first.routed_classes["board"] == ["Tally"]
        where = bot1.get_partial_messageable(cid, guild_id=guild)
        message = await where.send("tally", view=tally(store=store1))
        answer = await double.click(bot1, message.id, "tally:inc", user_id=ALICE)
        assert answer is not None
        assert answer["data"]["content"] == "count=1"
    finally:
        await bot1.close()  # closes store1: the click is durable

    store2 = StateStore()
    bot2 = await logged_in_bot(double)
    try:
        before = double.total_requests
        summary = await setup_persistence(bot2, file_path=path, store=store2, verify="await")
        assert double.total_requests == before  # routed by class: no request
        assert summary.routed_classes["board"] == ["Tally"]
        assert "Tally" not in summary.dynamic_items
        answer = await double.click(bot2, message.id, "tally:inc", user_id=BOB)
        assert answer is not None
        assert answer["data"]["content"] == "count=2"
    finally:
        await bot2.close()
    assert json.loads(path.read_text())["application"]["boards"] == {"Tally": {"count": 2}}


# -- a second toy kind: one panel per registry entry, built by the kind itself -------------


class NoteKind(PanelKind):
    """Message-bound: restore rebuilds one note per registry entry, routes it to its
    message with ``bot.add_view`` and checks the message, as for any such kind."""

    name = "note"
    data_root = "notes"
    message_bound = True

    def build(self, cls: type, state_key: str, entry: Any, ids: Any, store: Any,
              upgrades: dict[str, dict[str, Any]]) -> NotePanel:
        assert issubclass(cls, NotePanel)
        return cls(state_key=state_key, store=store, message_id=ids["message_id"],
                   channel_id=ids["channel_id"])


class NotePanel(KindMember, PanelData, discord.ui.View, register=False):
    """The second toy kind's base: a view that records its own registry entry."""

    panel_kind = NoteKind()
    restore_error: BaseException | None = None

    def __init__(self, *, state_key: str, store: StateStore, message_id: int | None = None,
                 channel_id: int | None = None) -> None:
        super().__init__(timeout=None)
        self.state_key, self._store = state_key, store
        self.message_id, self.channel_id = message_id, channel_id

    def _data_path(self) -> list[str]:
        return [self.panel_kind.data_root, self.state_key]

    async def on_restore(self, bot: Any) -> None:
        pass

    async def post(self, where: discord.PartialMessageable) -> discord.Message:
        message = await where.send("note", view=self)
        self.message_id, self.channel_id = message.id, where.id
        await self.store.dispatch("PERSISTENT_VIEW_REGISTERED", {
            "state_key": self.state_key, "class_name": type(self).__name__,
            "message_id": str(message.id), "channel_id": str(where.id),
            "guild_id": None, "user_id": None})
        return message


@pytest.fixture
def sticky() -> Iterator[type[NotePanel]]:
    class Sticky(NotePanel):
        @discord.ui.button(label="+1", custom_id="sticky:inc")
        async def inc(self, interaction: discord.Interaction[Any],
                      button: discord.ui.Button[Any]) -> None:
            await count_click(self, interaction, self.state_key)

    try:
        yield Sticky
    finally:
        unregister("Sticky")


async def test_a_message_bound_toy_kind_is_rebuilt_checked_and_purged_by_restore(
        double: DiscordDouble, sticky: type[NotePanel], tmp_path: Path) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    path = tmp_path / "state.json"
    store1 = StateStore()
    bot1 = await logged_in_bot(double)
    try:
        await setup_persistence(bot1, file_path=path, store=store1)
        where = bot1.get_partial_messageable(cid)
        kept = await sticky(state_key="kept", store=store1).post(where)
        gone = await sticky(state_key="gone", store=store1).post(where)
        assert await double.click(bot1, kept.id, "sticky:inc", user_id=ALICE)
    finally:
        await bot1.close()
    double.delete_message(gone.id)  # deleted while the bot was down

    store2 = StateStore()
    bot2 = await logged_in_bot(double)
    try:
        summary = await setup_persistence(bot2, file_path=path, store=store2, verify="await")
        assert summary["restored"] == ["kept"]
        assert summary["removed"] == ["gone"]
        assert sorted(store2.state["persistent_views"]) == ["kept"]
        assert "note" not in summary.routed_classes  # routed per entry, not per class
        answer = await double.click(bot2, kept.id, "sticky:inc", user_id=BOB)
        assert answer is not None
        assert answer["data"]["content"] == "kept=2"
    finally:
        await bot2.close()
    assert json.loads(path.read_text())["application"]["notes"] == {"kept": {"count": 2}}


async def test_an_entry_naming_a_class_routed_kind_is_kept_and_reported_failed(
        double: DiscordDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    store = StateStore()
    await store.dispatch("PERSISTENT_VIEW_REGISTERED", {
        "state_key": "odd", "class_name": "PairButton", "message_id": "123",
        "channel_id": str(cid), "guild_id": None, "user_id": None})
    bot = await logged_in_bot(double)
    try:
        with caplog.at_level(logging.WARNING, logger="cascadeui._restore"):
            summary = await setup_persistence(bot, file_path=tmp_path / "s.json",
                                              store=store, verify="await")
        assert summary["failed"] == ["odd"]
        assert "PairButton" in summary.dynamic_items
        assert "odd" in store.state["persistent_views"]
        assert any("PairButton is a dynamic panel" in r.getMessage() for r in caplog.records)
    finally:
        await bot.close()
        for cls in registered_dynamic_items().values():
            cls.bind_store(None)


def test_the_toy_kind_gets_its_definition_checked_and_shares_the_one_registry(
        tally: type[BoardPanel]) -> None:
    with pytest.raises(TypeError, match=r"go \('Go'\) has no explicit custom_id"):
        class Careless(BoardPanel):
            @discord.ui.button(label="Go")
            async def go(self, interaction: discord.Interaction[Any],
                         button: discord.ui.Button[Any]) -> None:
                pass
    assert lookup("Careless") is None
    with pytest.raises(TypeError, match="'Tally' is already registered"):
        class Tally(PersistentView):  # another kind cannot take a board's stored name
            pass
    assert get_view_class("Tally") is None
    assert lookup("Tally") is tally


# -- issue 23 item 5: decorated selects without custom_id ----------------------------------


def test_a_decorated_select_without_custom_id_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"pick \('Choose'\) has no explicit custom_id"):
        class CarelessSelect(PersistentView):
            @discord.ui.select(placeholder="Choose",
                               options=[discord.SelectOption(label="a")])
            async def pick(self, interaction: discord.Interaction[Any],
                           select: discord.ui.Select[Any]) -> None:
                pass
    with pytest.raises(TypeError, match=r"who has no explicit custom_id"):
        class CarelessUserSelect(PersistentView):
            @discord.ui.select(cls=discord.ui.UserSelect)
            async def who(self, interaction: discord.Interaction[Any],
                          select: discord.ui.UserSelect[Any]) -> None:
                pass
    with pytest.raises(TypeError, match=r"pick \('Pick'\) has no explicit custom_id"):
        class CarelessRowSelect(PersistentLayoutView):
            row = discord.ui.ActionRow()

            @row.select(placeholder="Pick", options=[discord.SelectOption(label="a")])
            async def pick(self, interaction: discord.Interaction[Any],
                           select: discord.ui.Select[Any]) -> None:
                pass
    assert get_view_class("CarelessSelect") is None
    assert get_view_class("CarelessUserSelect") is None
    assert get_view_class("CarelessRowSelect") is None

    class CarefulSelect(PersistentView):
        @discord.ui.select(custom_id="careful:pick", options=[discord.SelectOption(label="a")])
        async def pick(self, interaction: discord.Interaction[Any],
                       select: discord.ui.Select[Any]) -> None:
            pass
    try:
        assert get_view_class("CarefulSelect") is CarefulSelect
    finally:
        unregister("CarefulSelect")


# -- issue 23 item 6: a register=False class is refused at send()/respond() -----------------


class NeverSent(PersistentView, register=False):
    @discord.ui.button(label="x", custom_id="neversent:x")
    async def x(self, interaction: discord.Interaction[Any],
                button: discord.ui.Button[Any]) -> None:
        await interaction.response.defer()


class SentChild(NeverSent):
    """A registered subclass of a register=False base is sent normally."""


class Opener(PersistentView):
    """Answers a click by sending a NeverSent panel with respond()."""

    @discord.ui.button(label="open", custom_id="opener:open")
    async def open(self, interaction: discord.Interaction[Any],
                   button: discord.ui.Button[Any]) -> None:
        try:
            await NeverSent(state_key="ns-respond", store=self.store).respond(interaction)
        except UnregisteredPanelError as exc:
            await interaction.response.send_message(f"refused {exc.class_name}",
                                                    ephemeral=True)


async def test_a_register_false_class_is_refused_at_send_and_respond(
        double: DiscordDouble) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    bot: commands.Bot = await logged_in_bot(double)
    store = StateStore()
    try:
        where = bot.get_partial_messageable(cid)
        posts = double.requests["POST channels/{channel_id}/messages"]
        with pytest.raises(UnregisteredPanelError, match="register=False") as caught:
            await NeverSent(state_key="ns", store=store).send(where)
        assert isinstance(caught.value, TypeError)
        assert "no restart could rebuild it" in str(caught.value)
        assert double.requests["POST channels/{channel_id}/messages"] == posts
        assert "ns" not in store.state["persistent_views"]
        await SentChild(state_key="child", store=store).send(where)
        assert store.state["persistent_views"]["child"]["class_name"] == "SentChild"
        opener = await Opener(state_key="opener", store=store).send(where)
        answer = await double.click(bot, opener.id, "opener:open", user_id=ALICE)
        assert answer is not None
        assert answer["data"]["content"] == "refused NeverSent"
        assert "ns-respond" not in store.state["persistent_views"]
    finally:
        await bot.close()


# -- issue 21 item 10: DynamicPanel data keys are one-to-one -------------------------------


class PairButton(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button[Any]],
                 template=r"rtpair:(?P<a>[^/]+)/(?P<b>[^/]+)"):
    def __init__(self, a: str, b: str) -> None:
        super().__init__(discord.ui.Button(label="pair", custom_id=f"rtpair:{a}/{b}"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: re.Match[str]) -> PairButton:
        return cls(match["a"], match["b"])


class OneGroup(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button[Any]],
               template=r"one:(?P<id>.+)"):
    def __init__(self, ident: str) -> None:
        super().__init__(discord.ui.Button(label="one", custom_id=f"one:{ident}"))


async def test_dynamic_data_keys_never_merge_two_items_data() -> None:
    store = StateStore()
    PairButton.bind_store(store)
    try:
        left, right = PairButton("x:y", "z"), PairButton("x", "y:z")
        assert left.data_key != right.data_key
        await left.set_data("owner", "left")
        await right.set_data("owner", "right")
        assert left.data == {"owner": "left"}
        assert right.data == {"owner": "right"}
        # values without ":" or "\" keep the key they always had
        assert PairButton("7", "yes").data_key == "7:yes"
        assert OneGroup("a:b\\c").data_key == "a:b\\c"  # one group: the value as it is
    finally:
        PairButton.bind_store(None)
    assert get_dynamic_class("PairButton") is PairButton


def test_the_data_key_encoding_is_one_to_one() -> None:
    samples = ["", "a", ":", "\\", "\\:", ":\\", "a:b", "a\\", "\\N", "N"]
    pairs = [(a, b) for a in [*samples, None] for b in [*samples, None]]
    keys = {_encode_data_key((a, b)) for a, b in pairs}
    assert len(keys) == len(pairs)
    assert _encode_data_key(("x:y", "z")) == "x\\:y:z"
    assert _encode_data_key(("x", "y:z")) == "x:y\\:z"
    assert _encode_data_key(("only:one",)) == "only:one"
