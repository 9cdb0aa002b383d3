"""Restores that know about shards, and the fast default start (issue 14).

Real discord.py bots (``AutoShardedBot`` and ``Client`` with ``shard_id``) against the
local Discord API double; the multi-process case runs ``scripts/campaigns/cluster_restore.py`` at a
small size: real cluster processes restoring from one SQLite file (and one Redis key) at
once under the double's global rate limit.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import discord
import pytest
from _panels import CounterPanel
from _spawn import script, script_env
from discord.ext import commands

from cascadeui import setup_persistence
from cascadeui._restore import RestoreSummary, panel_shard
from cascadeui.persistence import FileStorageBackend
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]



def guild_on(shard: int, shard_count: int, k: int = 1) -> int:
    return ((1_000_000 * shard_count * k + shard) << 22) | 3


async def seed(double: DiscordDouble, path: Path, panels: dict[str, int | None],
               ) -> dict[str, int]:
    """One message per panel in a channel of its guild (None: a DM channel)."""
    row = {"type": 1, "components": [
        {"type": 2, "style": 1, "label": "+1", "custom_id": "counter:inc"}]}
    registry: dict[str, Any] = {}
    mids: dict[str, int] = {}
    for key, guild in panels.items():
        cid = double.add_channel(guild_id=guild)
        mid = int(double.add_message(cid, components=[row])["id"])
        mids[key] = mid
        registry[key] = {"class_name": CounterPanel.__name__, "message_id": str(mid),
                         "channel_id": str(cid),
                         "guild_id": None if guild is None else str(guild), "user_id": None}
    backend = FileStorageBackend(path)
    assert await backend.save_state({"application": {}, "persistent_views": registry})
    await backend.aclose()
    return mids


async def restore(double: DiscordDouble, bot: commands.Bot, path: Path,
                  **kwargs: Any) -> RestoreSummary:
    seen: dict[str, RestoreSummary] = {}

    async def hook(target: commands.Bot) -> None:
        seen["s"] = await setup_persistence(target, file_path=path, store=StateStore(),
                                            **kwargs)

    await logged_in_bot(double, bot=bot, setup_hook=hook)
    return seen["s"]


def sharded_bot(shard_ids: list[int], shard_count: int) -> commands.AutoShardedBot:
    return commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.none(),
                                   help_command=None, shard_ids=shard_ids,
                                   shard_count=shard_count)


def routed(bot: discord.Client) -> set[str]:
    return {v.state_key for v in bot.persistent_views
            if isinstance(v, CounterPanel) and not v.is_finished()}


def test_panel_shard_follows_discords_formula() -> None:
    assert panel_shard({"guild_id": str(guild_on(3, 4))}, 4) == 3
    assert panel_shard({"guild_id": guild_on(1, 8)}, 8) == 1
    assert panel_shard({"guild_id": None}, 4) == 0  # DM panels: shard 0
    assert panel_shard({"guild_id": "not-an-id"}, 4) == 0  # malformed: one owner still
    assert panel_shard(["not", "a", "dict"], 4) == 0


async def test_a_cluster_restores_only_its_shards_panels(tmp_path: Path) -> None:
    panels = {f"s{shard}-{i}": guild_on(shard, 4, i + 1) for shard in range(4) for i in range(3)}
    panels["dm"] = None
    async with DiscordDouble() as double:
        mids = await seed(double, tmp_path / "s.json", panels)
        double.delete_message(mids["s1-0"])
        bot = sharded_bot([1, 2], 4)
        try:
            summary = await restore(double, bot, tmp_path / "s.json", rate_limit=None)
            mine = {k for k in panels if k.startswith(("s1-", "s2-"))}
            assert sorted(summary["restored"]) == sorted(mine - {"s1-0"})
            assert summary["removed"] == ["s1-0"]
            assert summary["failed"] == summary["skipped"] == []
            assert sorted(summary.other_shards) == sorted(set(panels) - mine)
            assert routed(bot) == mine - {"s1-0"}
            fetched = {k for k, mid in mids.items() if double.message_fetches[mid]}
            assert fetched == mine  # other shards' messages are never fetched
            stored = (await FileStorageBackend(tmp_path / "s.json").load_state())
            assert set(stored["persistent_views"]) == set(panels) - {"s1-0"}  # others kept
        finally:
            await bot.close()
        shard0 = sharded_bot([0], 4)
        try:
            summary = await restore(double, shard0, tmp_path / "s.json", rate_limit=None)
            assert "dm" in summary["restored"]  # DM panels belong to shard 0
        finally:
            await shard0.close()


async def test_a_client_with_shard_id_and_an_unsharded_bot(tmp_path: Path) -> None:
    panels = {"a": guild_on(0, 2), "b": guild_on(1, 2)}
    async with DiscordDouble() as double:
        await seed(double, tmp_path / "s.json", panels)
        client = commands.Bot(command_prefix="!", intents=discord.Intents.none(),
                              help_command=None, shard_id=1, shard_count=2)
        try:
            summary = await restore(double, client, tmp_path / "s.json", rate_limit=None)
            assert summary["restored"] == ["b"]
            assert summary.other_shards == ["a"]
        finally:
            await client.close()
        # shard_count None (Discord decides at connect) or every shard: all panels.
        every = sharded_bot([0, 1], 2)
        try:
            summary = await restore(double, every, tmp_path / "s.json", rate_limit=None)
            assert sorted(summary["restored"]) == ["a", "b"]
            assert summary.other_shards == []
        finally:
            await every.close()


async def test_the_pacing_budget_is_shared_by_shard_fraction(tmp_path: Path) -> None:
    panels = {f"p{i}": guild_on(0, 4, i + 1) for i in range(6)}
    async with DiscordDouble() as double:
        await seed(double, tmp_path / "s.json", panels)
        bot = sharded_bot([0], 4)  # a quarter of the shards: a quarter of 20/s = 5/s
        try:
            started = time.monotonic()
            summary = await restore(double, bot, tmp_path / "s.json", rate_limit=20,
                                    verify="await")
            elapsed = time.monotonic() - started
            assert len(summary["restored"]) == 6
            assert elapsed >= 5 / 5 - 0.05  # six starts spaced 1/5 s apart
        finally:
            await bot.close()
        bot = sharded_bot([0], 4)
        try:
            started = time.monotonic()
            await restore(double, bot, tmp_path / "s.json", rate_limit=20, rate_share=1.0,
                          verify="await")
            assert time.monotonic() - started < 5 / 5  # the whole budget when asked
        finally:
            await bot.close()


async def test_the_default_start_returns_within_its_budget(tmp_path: Path) -> None:
    panels = {"fast": guild_on(0, 1), "slow": guild_on(0, 1, 2), "gone": guild_on(0, 1, 3)}
    async with DiscordDouble() as double:
        mids = await seed(double, tmp_path / "s.json", panels)
        double.delay("message", mids["slow"], 3.0)
        double.delete_message(mids["gone"])
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.none(),
                           help_command=None)
        try:
            started = time.monotonic()
            summary = await restore(double, bot, tmp_path / "s.json", verify_budget=0.5)
            assert time.monotonic() - started < 2.5
            # What is known is reported; the unchecked panel routes and is named.
            assert sorted(summary["restored"]) == ["fast", "slow"]
            assert summary["removed"] == ["gone"]
            assert summary.unverified == ["slow"]
            assert summary.verification is not None
            assert not summary.verification.done()
            assert routed(bot) == {"fast", "slow"}  # the gone panel is unrouted already
            final = await asyncio.wait_for(summary.verification, 10)
            assert sorted(final["restored"]) == ["fast", "slow"]
            assert final["removed"] == ["gone"]
        finally:
            await bot.close()


async def test_bad_shard_and_budget_arguments_are_refused(tmp_path: Path) -> None:
    async with DiscordDouble() as double:
        await seed(double, tmp_path / "s.json", {})
        for kwargs in ({"rate_share": 0}, {"rate_share": 1.5}, {"verify_budget": -1},
                       {"verify": "later"}):
            bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
            try:
                with pytest.raises(ValueError, match=next(iter(kwargs))):
                    await restore(double, bot, tmp_path / "s.json", **kwargs)
            finally:
                await bot.close()
        bot = sharded_bot([5], 4)
        try:
            with pytest.raises(ValueError, match="shard_count=4"):
                await restore(double, bot, tmp_path / "s.json")
        finally:
            await bot.close()


def run_clusters(*args: str) -> dict[str, Any]:
    proc = subprocess.run(script("campaigns.cluster_restore", *args), capture_output=True,
                          text=True, timeout=300, check=False, env=script_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].endswith("0 duplicate fetches, 0 lost entries, 0 HTTP 429"), lines[-1]
    report: dict[str, Any] = json.loads("\n".join(lines[:-1]))
    return report


@pytest.mark.slow
def test_four_clusters_restore_at_once_from_one_sqlite_file() -> None:
    report = run_clusters("--panels", "96", "--clusters", "4", "--deleted", "8",
                          "--latency", "0.01")
    assert report["clusters_routing_wrong"] == 0
    assert report["fetches"] == 96
    assert report["unfetched"] == 0
    assert report["not_purged"] == []
    assert report["deleted"] == 12
    assert report["http_429"] == 0
    assert sum(c["restored"] + c["removed"] for c in report["per_cluster"]) == 96


@pytest.mark.slow
def test_two_clusters_restore_at_once_from_one_redis_key(redis_url: str) -> None:
    report = run_clusters("--panels", "40", "--clusters", "2", "--deleted", "5",
                          "--latency", "0.01", "--backend", "redis", "--redis-url", redis_url)
    assert report["clusters_routing_wrong"] == 0
    assert report["duplicate_fetches"] == 0
    assert report["lost_entries"] == []
    assert report["not_purged"] == []
