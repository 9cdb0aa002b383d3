"""Real restarts: bot 1 in this process, bot 2 in a second OS process, same backend.

One test per backend checks a whole mix of panels at once (live, deleted message, deleted
channel, 403, 503, unknown class), clicks on restored panels, ownership, the durability
of the last change before each close, and that transient slices never reach storage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import discord
import pytest
from _panels import CounterPanel, OwnerPanel
from _registry import kinds, target
from _spawn import worker
from discord.ext import commands

from cascadeui import PersistentView, setup_persistence
from cascadeui.actions import APPLICATION_SET
from cascadeui.persistence import backend_from_url
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot

pytestmark = pytest.mark.anyio

OWNER, STRANGER = 1234567890123456789, 42


class RetiredPanel(PersistentView):
    """Exists in bot 1 only: bot 2 never imports it, so its panel is skipped and kept."""

    @discord.ui.button(label="old", custom_id="retired:old")
    async def old(self, interaction: discord.Interaction[Any],
                  button: discord.ui.Button[Any]) -> None:
        await interaction.response.defer()



def backend_spec(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """What both bots open: the backend's path or URL (bot 2 is another process)."""
    return {"target": target(kind, request, tmp_path)}


def make_backend(spec: dict[str, Any]) -> Any:
    return backend_from_url(spec["target"])


@pytest.mark.parametrize("kind", kinds("multiprocess"))
async def test_restart_in_a_second_process(kind: str, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    spec = backend_spec(kind, tmp_path, request)
    backend = make_backend(spec)
    store = StateStore()
    async with DiscordDouble() as double:
        guild = double.new_id()
        ch, gone_ch, locked_ch = (double.add_channel(guild_id=guild) for _ in range(3))

        async def hook(bot: commands.Bot) -> None:
            await setup_persistence(bot, backend=backend, store=store)

        bot1 = await logged_in_bot(double, setup_hook=hook)
        mids: dict[str, int] = {}
        for key, panel, cid in [
                ("c1", CounterPanel(state_key="c1", store=store), ch),
                ("c2", CounterPanel(state_key="c2", store=store), ch),
                ("own", OwnerPanel(state_key="own", user_id=OWNER, store=store), ch),
                ("gone-msg", CounterPanel(state_key="gone-msg", store=store), ch),
                ("gone-chan", CounterPanel(state_key="gone-chan", store=store), gone_ch),
                ("locked", CounterPanel(state_key="locked", store=store), locked_ch),
                ("flaky", CounterPanel(state_key="flaky", store=store), ch),
                ("retired", RetiredPanel(state_key="retired", store=store), ch)]:
            sent = await panel.send(bot1.get_partial_messageable(cid, guild_id=guild), key)
            mids[key] = sent.id
        for _ in range(2):
            assert await double.click(bot1, mids["c1"], "counter:inc", user_id=7) is not None
        assert await double.click(bot1, mids["own"], "owner:toggle", user_id=OWNER)
        # A transient slice changes: it must never be written.
        store.register_reducer("TEST_TRANSIENT", lambda a, s: {**s, "views": {"live": 1},
                                                               "sessions": {"s": 1}})
        await store.dispatch("TEST_TRANSIENT")
        await store.dispatch(APPLICATION_SET, {"path": ["last"], "value": "bot1"})
        await bot1.close()  # no flush: close itself makes the last change durable

        # Discord while the bot is down.
        double.delete_message(mids["gone-msg"])
        double.delete_channel(gone_ch)
        double.fail("channel", locked_ch, 403)
        double.fail("message", mids["flaky"], 503)
        world = tmp_path / "world.json"
        world.write_text(json.dumps(double.dump()))
    await backend.aclose()

    clicks = [[mids["c1"], "counter:inc", 9], [mids["own"], "owner:toggle", STRANGER],
              [mids["own"], "owner:toggle", OWNER], [mids["c2"], "counter:inc", 9]]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"backend": spec, "world": str(world), "clicks": clicks,
                                     "fetch_timeout": 5.0}))
    with anyio.fail_after(60):
        proc = await anyio.run_process([*worker("restart"), str(spec_file)],
                                       check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])

    result = out["result"]
    assert sorted(result) == ["failed", "removed", "restored", "skipped"]
    assert sorted(result["restored"]) == ["c1", "c2", "own"]
    assert result["skipped"] == ["retired"]
    assert sorted(result["failed"]) == ["flaky", "locked"]
    assert sorted(result["removed"]) == ["gone-chan", "gone-msg"]
    # Panels whose check failed (403, 503) stay routed: their message may be fine.
    assert out["owners"] == {"c1": None, "c2": None, "own": OWNER, "flaky": None,
                             "locked": None}
    c1, refused, toggled, c2 = out["answers"]
    assert c1 == {"type": 7, "content": "c1=3", "flags": 0}  # bot 1's two clicks survived
    assert refused["type"] == 4
    assert refused["flags"] & 64
    assert toggled["content"] == "own on=False"  # bot 1 left it on
    assert c2["content"] == "c2=1"

    async with make_backend(spec) as raw:
        stored = await raw.load_state()
    assert set(stored) <= {"application", "persistent_views"}  # no transient slice
    assert set(stored["persistent_views"]) == {"c1", "c2", "own", "locked", "flaky", "retired"}
    assert stored["application"]["panels"] == {"c1": {"count": 3}, "c2": {"count": 1},
                                               "own": {"on": False}}
    assert stored["application"]["last"] == "bot2"
    assert stored["persistent_views"]["own"]["user_id"] == str(OWNER)
