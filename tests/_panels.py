"""Panel classes shared by the view, restore and restart tests (and the restart worker)."""

from __future__ import annotations

import re
from typing import Any

import discord

from cascadeui import DynamicPanel, PersistentLayoutView, PersistentView

#: on_restore calls seen in this process: (state_key, bot was ready)
HOOK_CALLS: list[tuple[str, bool]] = []


class CounterPanel(PersistentView):
    """Anyone may click; the count lives in the panel's data and survives restarts."""

    @discord.ui.button(label="+1", custom_id="counter:inc")
    async def inc(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]
                  ) -> None:
        count = int(self.data.get("count", 0)) + 1
        await self.set_data("count", count)
        await interaction.response.edit_message(content=f"{self.state_key}={count}", view=self)


class OwnerPanel(PersistentView):
    """Only its owner may toggle it; others get an ephemeral refusal."""

    owner_only = True

    @discord.ui.button(label="Toggle", custom_id="owner:toggle")
    async def toggle(self, interaction: discord.Interaction[Any],
                     button: discord.ui.Button[Any]) -> None:
        on = not self.data.get("on", False)
        await self.set_data("on", on)
        await interaction.response.edit_message(content=f"{self.state_key} on={on}", view=self)


class HookPanel(PersistentView):
    """Records its on_restore call and whether the bot was ready then."""

    @discord.ui.button(label="Ping", custom_id="hook:ping")
    async def ping(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]
                   ) -> None:
        await interaction.response.defer()

    async def on_restore(self, bot: discord.Client) -> None:
        HOOK_CALLS.append((self.state_key, bot.is_ready()))


class FailingHookPanel(HookPanel):
    """Its on_restore raises: startup must not notice."""

    async def on_restore(self, bot: discord.Client) -> None:
        raise RuntimeError("hook exploded")


class BrokenPanel(PersistentView):
    """Cannot be rebuilt: from_registry raises (a constructor error after a restart)."""

    @discord.ui.button(label="x", custom_id="broken:x")
    async def x(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]
                ) -> None:
        await interaction.response.defer()

    @classmethod
    def from_registry(cls, state_key: str, **identity: Any) -> BrokenPanel:
        raise RuntimeError("config for this panel is gone")


class LayoutCounter(PersistentLayoutView):
    """A Components V2 counter: a text, a container holding a section, a row of buttons."""

    title = discord.ui.TextDisplay("Counter")
    box = discord.ui.Container(discord.ui.Section(
        discord.ui.TextDisplay("Reset the count"),
        accessory=discord.ui.Button(label="Reset", custom_id="layout:reset")))
    row = discord.ui.ActionRow()

    @row.button(label="+1", custom_id="layout:inc")
    async def inc(self, interaction: discord.Interaction[Any],
                  button: discord.ui.Button[Any]) -> None:
        count = int(self.data.get("count", 0)) + 1
        await self.set_data("count", count)
        await interaction.response.send_message(f"{self.state_key}={count}", ephemeral=True)


class VoteButton(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button[Any]],
                 template=r"vote:(?P<poll>[0-9]+):(?P<choice>yes|no)"):
    """A vote button stamped on any number of messages; the votes are per poll."""

    key_groups = ("poll",)

    def __init__(self, poll: int, choice: str) -> None:
        super().__init__(discord.ui.Button(label=choice, custom_id=f"vote:{poll}:{choice}"))
        self.poll, self.choice = poll, choice

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: re.Match[str]) -> VoteButton:
        return cls(int(match["poll"]), match["choice"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        votes = dict(self.data.get("votes", {}))
        votes[str(interaction.user.id)] = self.choice
        await self.set_data("votes", votes)
        yes = sum(1 for v in votes.values() if v == "yes")
        await interaction.response.send_message(f"poll {self.poll}: {yes}/{len(votes)} yes",
                                                ephemeral=True)


def vote_view(poll: int) -> discord.ui.View:
    """The message a poll is posted with: two dynamic buttons, no per-message registration."""
    return discord.ui.View(timeout=None).add_item(VoteButton(poll, "yes")).add_item(
        VoteButton(poll, "no"))
