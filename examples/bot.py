"""A real bot whose panels survive restarts: ``DISCORD_TOKEN=... python examples/bot.py``.

Commands (message content intent needed for the prefix): ``!poll <question>`` posts a poll
anyone may vote on; ``!ticket`` posts a ticket only its author may close; ``!status``
posts a Components V2 status board (a ``PersistentLayoutView``). Stop the bot, start it
again: old buttons still answer and the votes are still there. State lives in
``cascadeui.db`` (SQLite) next to where you run it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import discord
from discord.ext import commands

from cascadeui import PersistentLayoutView, PersistentView, setup_persistence
from cascadeui.persistence import SQLiteBackend

log = logging.getLogger("example-bot")


def votes_spelled_out(doc: dict[str, Any]) -> dict[str, Any]:
    """Schema version 1: the first release stored votes as "y"/"n"; spell them out.

    Runs once, at the first start of this release, under the write lock, with the old
    document kept as a backup (docs/migrations.md).
    """
    for data in doc["application"].get("panels", {}).values():
        votes = data.get("votes") if isinstance(data, dict) else None
        if isinstance(votes, dict):
            data["votes"] = {user: {"y": "yes", "n": "no"}.get(v, v)
                             for user, v in votes.items()}
    return doc


SCHEMA_VERSION = 1
MIGRATIONS = {1: votes_spelled_out}


class VotePanel(PersistentView):
    """Yes/no poll; one vote per user, kept in the panel's data."""

    async def _vote(self, interaction: discord.Interaction[Any], choice: str) -> None:
        votes = dict(self.data.get("votes", {}))
        votes[str(interaction.user.id)] = choice
        await self.set_data("votes", votes)
        tally = list(votes.values())
        await interaction.response.send_message(
            f"Counted. yes {tally.count('yes')} / no {tally.count('no')}", ephemeral=True)

    @discord.ui.button(label="Yes", style=discord.ButtonStyle.success, custom_id="poll:yes")
    async def yes(self, interaction: discord.Interaction[Any],
                  button: discord.ui.Button[Any]) -> None:
        await self._vote(interaction, "yes")

    @discord.ui.button(label="No", style=discord.ButtonStyle.danger, custom_id="poll:no")
    async def no(self, interaction: discord.Interaction[Any],
                 button: discord.ui.Button[Any]) -> None:
        await self._vote(interaction, "no")


class SupportTicket(PersistentView):
    """Only the member who opened it may close it, also after a restart."""

    owner_only = True

    @discord.ui.button(label="Close", custom_id="ticket:close")
    async def close_ticket(self, interaction: discord.Interaction[Any],
                           button: discord.ui.Button[Any]) -> None:
        await self.set_data("status", "closed")
        await interaction.response.edit_message(content="Ticket closed.", view=None)
        await self.exit()

    async def on_restore(self, bot: discord.Client) -> None:
        log.info("ticket %s is back (owner %s)", self.state_key, self.user_id)


class StatusBoard(PersistentLayoutView):
    """A Components V2 layout: text, a container, and a row whose button counts checks."""

    title = discord.ui.TextDisplay("## Status board")
    box = discord.ui.Container(discord.ui.TextDisplay("Everything is running."),
                               accent_colour=discord.Colour.green())
    row = discord.ui.ActionRow()

    @row.button(label="Checked", style=discord.ButtonStyle.primary, custom_id="status:check")
    async def check(self, interaction: discord.Interaction[Any],
                    button: discord.ui.Button[Any]) -> None:
        checks = int(self.data.get("checks", 0)) + 1
        await self.set_data("checks", checks)
        await interaction.response.send_message(f"Checked {checks} times.", ephemeral=True)


class PanelBot(commands.Bot):
    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents)

    async def setup_hook(self) -> None:
        # After loading cogs (none here), so every panel class is registered.
        summary = await setup_persistence(self, backend=SQLiteBackend("cascadeui.db"),
                                          version=SCHEMA_VERSION, migrations=MIGRATIONS)
        log.info("restored %s", {k: len(v) for k, v in summary.items()})


bot = PanelBot()


@bot.command()
async def poll(ctx: commands.Context[PanelBot], *, question: str) -> None:
    """Post a poll; its state key is unique per channel and message of the command."""
    await VotePanel(state_key=f"poll:{ctx.channel.id}:{ctx.message.id}").send(
        ctx.channel, f"**Poll:** {question}")


@bot.command()
async def ticket(ctx: commands.Context[PanelBot]) -> None:
    """Open (or move) the author's ticket: one per member, re-sending detaches the old one."""
    await SupportTicket(state_key=f"ticket:{ctx.author.id}", user_id=ctx.author.id).send(
        ctx.channel, f"Ticket for {ctx.author.mention}")


@bot.command()
async def status(ctx: commands.Context[PanelBot]) -> None:
    """Post the channel's status board (a Components V2 layout: no message content)."""
    await StatusBoard(state_key=f"status:{ctx.channel.id}").send(ctx.channel)


def main() -> None:
    token = os.environ.get("DISCORD_TOKEN")
    if not token:
        sys.exit("set DISCORD_TOKEN to run this bot (try `python -m cascadeui.demo` "
                 "for a token-free demo)")
    bot.run(token, log_level=logging.INFO)


if __name__ == "__main__":
    main()
