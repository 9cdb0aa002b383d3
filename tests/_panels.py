"""Panel classes shared by the view, restore and restart tests (and the restart worker)."""

from __future__ import annotations

from typing import Any

import discord

from cascadeui import PersistentView

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
