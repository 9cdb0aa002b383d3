"""Layout and dynamic-item panels across a real restart (issue 15's proof).

Bot 1 runs in the test process; bot 2 is a second OS process on the same SQLite file and
a double loaded with the world bot 1 left. A ``PersistentLayoutView`` panel and a
``DynamicPanel`` poll are sent, clicked, restored, clicked again, and their data is
durable; 10,000 dynamic-item panels restore with no Discord request at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from _panels import LayoutCounter, vote_view
from _spawn import worker
from discord.ext import commands

from cascadeui import setup_persistence
from cascadeui.actions import APPLICATION_SET
from cascadeui.persistence import SQLiteBackend
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot

pytestmark = pytest.mark.anyio

MANY = 10_000
ALICE, BOB = 1234567890123456789, 42



async def run_worker(tmp_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    with anyio.fail_after(120):
        proc = await anyio.run_process([*worker("panels"), str(spec_file)],
                                       check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


async def test_layout_and_dynamic_panels_survive_a_restart_in_a_second_process(
        tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    backend = SQLiteBackend(db)
    store = StateStore()
    async with DiscordDouble() as double:
        guild = double.new_id()
        cid = double.add_channel(guild_id=guild)

        async def hook(bot: commands.Bot) -> None:
            await setup_persistence(bot, backend=backend, store=store)

        bot1 = await logged_in_bot(double, setup_hook=hook)
        where = bot1.get_partial_messageable(cid, guild_id=guild)
        layout = await LayoutCounter(state_key="layout", store=store).send(where)
        poll = await where.send("Lunch?", view=vote_view(7))
        assert await double.click(bot1, layout.id, "layout:inc", user_id=ALICE)
        assert await double.click(bot1, poll.id, "vote:7:yes", user_id=ALICE)
        # 10,000 older messages carrying the dynamic buttons, with their votes stored.
        many = [double.add_message(cid, components=vote_view(n).to_components())
                for n in range(1000, 1000 + MANY)]
        votes = {str(n): {"votes": {str(BOB): "no"}} for n in range(1000, 1000 + MANY)}
        await store.dispatch(APPLICATION_SET, {"path": ["dynamic_panels", "VoteButton"],
                                               "value": {**votes, **store.state["application"][
                                                   "dynamic_panels"]["VoteButton"]}})
        await bot1.close()  # no flush: close makes the last change durable
        world = tmp_path / "world.json"
        world.write_text(json.dumps(double.dump()))
    await backend.aclose()

    first, last = int(many[0]["id"]), int(many[-1]["id"])
    out = await run_worker(tmp_path, {"db": db, "world": str(world), "clicks": [
        [layout.id, "layout:inc", BOB], [poll.id, "vote:7:no", BOB],
        [first, "vote:1000:yes", ALICE], [last, f"vote:{999 + MANY}:no", ALICE]]})

    assert out["restore_requests"] == 0  # attach + 10,000 dynamic panels: no request
    assert out["dynamic_items"] == ["VoteButton"]
    assert out["attached"] == ["layout"]
    assert out["final"]["restored"] == ["layout"]  # the one message check, afterwards
    assert out["answers"] == ["layout=2", "poll 7: 1/2 yes", "poll 1000: 1/2 yes",
                              f"poll {999 + MANY}: 0/2 yes"]

    async with SQLiteBackend(db) as raw:
        stored = await raw.load_state()
    assert stored["application"]["panels"]["layout"] == {"count": 2}
    dynamic = stored["application"]["dynamic_panels"]["VoteButton"]
    assert dynamic["7"] == {"votes": {str(ALICE): "yes", str(BOB): "no"}}
    assert dynamic["1000"] == {"votes": {str(BOB): "no", str(ALICE): "yes"}}
    assert len(dynamic) == MANY + 1
    assert stored["persistent_views"]["layout"]["class_name"] == "LayoutCounter"
