"""A fixture of panel misuse for the doctor (imported only by ``cascadeui doctor
--module _bad_panels`` in a child process, never by the suite itself)."""

from __future__ import annotations

import re
from typing import Any

import discord

from cascadeui import DynamicPanel, PersistentView


class TimedPanel(PersistentView):
    """A timeout on a persistent panel."""

    timeout = 180.0

    @discord.ui.button(label="a", custom_id="bad:timed")
    async def a(self, interaction: discord.Interaction[Any],
                button: discord.ui.Button[Any]) -> None:
        await interaction.response.defer()


class LongIdPanel(PersistentView):
    """A custom_id over Discord's 100 characters."""

    @discord.ui.button(label="b", custom_id="bad:" + "x" * 120)
    async def b(self, interaction: discord.Interaction[Any],
                button: discord.ui.Button[Any]) -> None:
        await interaction.response.defer()


class ClashPanel(PersistentView):
    """A custom_id a dynamic template matches too."""

    @discord.ui.button(label="c", custom_id="ticket:42")
    async def c(self, interaction: discord.Interaction[Any],
                button: discord.ui.Button[Any]) -> None:
        await interaction.response.defer()


class _Item(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button[Any]],
            template=r"unused:(?P<n>[0-9]{1,5})", register=False):
    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label="i", custom_id=f"unused:{n}"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: re.Match[str]) -> Any:
        return cls(1)


class UnboundedTicket(_Item, template=r"ticket:(?P<n>.+)"):
    """A template that can exceed 100 characters (and matches ClashPanel's id)."""


class TwinA(_Item, template=r"twin:(?P<n>[0-9]{1,5})"):
    """Two templates alike: a click goes to either."""


class TwinB(_Item, template=r"twin:(?P<n>[0-9]{1,5})"):
    """The other twin."""
