"""A panel's life (issue 22): deletions seen live remove the entry and the data, durably,
with an event, on every backend; an outage removes nothing; the 404 purge removes data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import _spawn
import anyio.to_thread
import discord
import pytest
from _panels import CounterPanel
from _registry import build, kinds, target
from discord.ext import commands

from cascadeui import setup_persistence, sync
from cascadeui._lifecycle import PANEL_REMOVED, PanelEvent
from cascadeui.actions import APPLICATION_SET, EXPIRY_KEY, PANEL_EVENTS, Action, State
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot

pytestmark = pytest.mark.anyio


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with DiscordDouble() as d:
        yield d


class Seen:
    """The life-cycle events a bot received (``on_cascadeui_*``) and the store's copies."""

    def __init__(self, bot: commands.Bot, store: StateStore) -> None:
        self.bot_events: list[PanelEvent] = []
        self.store_events: list[PanelEvent] = []
        self.raw_deletes: list[int] = []  # the bot's own listener still runs
        self.arrived = asyncio.Event()
        for name in ("restored", "removed", "unreachable"):
            bot.add_listener(self._record, f"on_cascadeui_panel_{name}")
        bot.add_listener(self._raw, "on_raw_message_delete")
        store.subscribe(self._from_store, action_types=[PANEL_EVENTS])

    async def _record(self, event: PanelEvent) -> None:
        self.bot_events.append(event)
        self.arrived.set()

    async def _raw(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.raw_deletes.append(payload.message_id)

    def _from_store(self, state: State, action: Action) -> None:
        self.store_events.extend(action["payload"]["events"])
        self.arrived.set()

    def removed(self) -> dict[str, str]:
        return {e.state_key: e.reason for e in self.bot_events if e.event == PANEL_REMOVED}

    async def until_removed(self, count: int, within: float = 1.0) -> float:
        """Seconds until ``count`` removed events arrived (the issue: within a second)."""
        started = time.monotonic()
        with anyio.fail_after(within):
            while len(self.removed()) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return time.monotonic() - started


async def start(double: DiscordDouble, store: StateStore, backend: Any, **kwargs: Any,
                ) -> commands.Bot:
    async def hook(bot: commands.Bot) -> None:
        await setup_persistence(bot, backend=backend, store=store, verify="await", **kwargs)

    return await logged_in_bot(double, setup_hook=hook)


async def send(double: DiscordDouble, bot: commands.Bot, store: StateStore, key: str,
               channel_id: int) -> int:
    panel = CounterPanel(state_key=key, store=store)
    where = bot.get_partial_messageable(channel_id,
                                        guild_id=double.channels[channel_id].guild_id)
    mid = int((await panel.send(where, key)).id)
    await panel.set_data("count", 1)
    return mid


def routed(bot: commands.Bot) -> set[str]:
    return {v.state_key for v in bot.persistent_views if hasattr(v, "state_key")}


@pytest.mark.parametrize("kind", kinds())
async def test_each_deletion_event_removes_entry_and_data_durably_with_an_event(
        double: DiscordDouble, request: pytest.FixtureRequest, tmp_path: Path,
        kind: str) -> None:
    guild, other, flaky = double.new_id(), double.new_id(), double.new_id()
    main, side = double.add_channel(guild_id=guild), double.add_channel(guild_id=guild)
    thread = double.add_channel(guild_id=guild, parent_id=main)
    elsewhere = double.add_channel(guild_id=other)
    outage = double.add_channel(guild_id=flaky)
    dm = double.add_channel()
    store = StateStore()
    bot = await start(double, store, build(kind, request, tmp_path))
    seen = Seen(bot, store)
    for g in (guild, other, flaky):
        double.deliver_guild(bot, g)
    mids = {key: await send(double, bot, store, key, cid) for key, cid in [
        ("msg", main), ("bulk-1", main), ("bulk-2", main), ("keep", main), ("chan", side),
        ("thread", thread), ("guild", elsewhere), ("outage", outage), ("dm", dm)]}

    double.deliver_message_delete(bot, mids["msg"])
    took = await seen.until_removed(1)
    # Durable at the event: a reader of the medium (a kill now) no longer finds it.
    stored = await anyio.to_thread.run_sync(sync.load_state,
                                            target(kind, request, tmp_path))
    assert "msg" not in stored["persistent_views"]
    assert "msg" not in stored["application"]["panels"]
    assert took < 1.0
    double.deliver_message_delete(bot, mids["bulk-1"], mids["bulk-2"])
    double.deliver_channel_delete(bot, side)
    double.deliver_channel_delete(bot, thread)
    double.deliver_guild_remove(bot, other)
    double.deliver_guild_remove(bot, flaky, unavailable=True)  # an outage: nothing goes
    double.deliver_message_delete(bot, mids["dm"])
    await seen.until_removed(7)
    await asyncio.sleep(0.05)  # nothing else arrives

    assert seen.removed() == {"msg": "message_deleted", "bulk-1": "message_deleted",
                              "bulk-2": "message_deleted", "dm": "message_deleted",
                              "chan": "channel_deleted", "thread": "channel_deleted",
                              "guild": "guild_removed"}
    assert sorted(e.state_key for e in seen.store_events) == sorted(seen.removed())
    event = next(e for e in seen.bot_events if e.state_key == "guild")
    assert (event.class_name, event.message_id, event.channel_id, event.guild_id) == (
        "CounterPanel", mids["guild"], elsewhere, other)
    assert seen.raw_deletes == [mids["msg"], mids["dm"]]
    assert set(store.state["persistent_views"]) == {"keep", "outage"}
    assert set(store.state["application"]["panels"]) == {"keep", "outage"}
    assert routed(bot) == {"keep", "outage"}
    stored = await anyio.to_thread.run_sync(sync.load_state,
                                            target(kind, request, tmp_path))
    assert set(stored["persistent_views"]) == {"keep", "outage"}
    assert set(stored["application"]["panels"]) == {"keep", "outage"}
    await bot.close()


async def test_track_deletions_false_leaves_panels_to_the_next_start(
        double: DiscordDouble, tmp_path: Path) -> None:
    guild = double.new_id()
    cid = double.add_channel(guild_id=guild)
    store = StateStore()
    bot = await start(double, store, str(tmp_path / "s.db"), track_deletions=False)
    seen = Seen(bot, store)
    mid = await send(double, bot, store, "p", cid)
    double.deliver_message_delete(bot, mid)
    await asyncio.sleep(0.1)
    assert seen.raw_deletes == [mid]
    assert seen.removed() == {}
    assert "p" in store.state["persistent_views"]
    await bot.close()

    # The next start's check finds it gone: entry *and* data purged, with an event.
    store2 = StateStore()
    bot2 = await logged_in_bot(double)
    seen2 = Seen(bot2, store2)
    summary = await setup_persistence(bot2, backend=str(tmp_path / "s.db"), store=store2,
                                      verify="await")
    assert summary["removed"] == ["p"]
    assert seen2.removed() == {"p": "not_found"}
    assert store2.state["persistent_views"] == {}
    assert "p" not in store2.state["application"].get("panels", {})
    await bot2.close()


async def test_a_plain_client_without_listeners_gets_removals_too(
        double: DiscordDouble, tmp_path: Path) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    store = StateStore()
    client = discord.Client(intents=discord.Intents.none())
    await client.login("double-token")
    own: list[int] = []

    @client.event
    async def on_raw_message_delete(payload: discord.RawMessageDeleteEvent) -> None:
        own.append(payload.message_id)

    await setup_persistence(client, backend=str(tmp_path / "s.json"), store=store)
    removed: list[PanelEvent] = []
    arrived = asyncio.Event()

    def got(state: State, action: Action) -> None:
        removed.extend(action["payload"]["events"])
        arrived.set()

    store.subscribe(got, action_types=[PANEL_EVENTS])
    panel = CounterPanel(state_key="p", store=store)
    message = await panel.send(client.get_partial_messageable(cid))
    double.deliver_message_delete(client, message.id)
    with anyio.fail_after(1):
        await arrived.wait()
    assert own == [message.id]
    assert [(e.state_key, e.reason) for e in removed] == [("p", "message_deleted")]
    assert store.state["persistent_views"] == {}
    await client.close()


async def test_a_resent_panel_is_not_removed_by_its_old_message_deletion(
        double: DiscordDouble, tmp_path: Path) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    store = StateStore()
    bot = await start(double, store, str(tmp_path / "s.json"))
    seen = Seen(bot, store)
    old = await send(double, bot, store, "p", cid)
    new = await send(double, bot, store, "p", cid)
    double.deliver_message_delete(bot, old)
    await asyncio.sleep(0.1)
    assert seen.removed() == {}
    assert store.state["persistent_views"]["p"]["message_id"] == str(new)
    assert "p" in routed(bot)
    await bot.close()


async def restart(double: DiscordDouble, backend: Any, **kwargs: Any,
                  ) -> tuple[commands.Bot, StateStore, Seen, dict[str, list[str]]]:
    """A new bot on the stored state; the checks awaited; its events recorded."""
    store = StateStore()
    bot = await logged_in_bot(double)
    seen = Seen(bot, store)
    summary = await setup_persistence(bot, backend=backend, store=store, verify="await",
                                      **kwargs)
    return bot, store, seen, dict(summary)


@pytest.mark.parametrize("kind", kinds())
async def test_lost_access_is_kept_aged_cleared_and_removed_after_the_ttl(
        double: DiscordDouble, request: pytest.FixtureRequest, tmp_path: Path,
        kind: str) -> None:
    guild = double.new_id()
    locked, flaky, fine = (double.add_channel(guild_id=guild) for _ in range(3))
    where = target(kind, request, tmp_path)
    store = StateStore()
    bot = await start(double, store, where)
    mids = {key: await send(double, bot, store, key, cid)
            for key, cid in [("locked", locked), ("flaky", flaky), ("fine", fine)]}
    await bot.close()

    double.fail("channel", locked, 403)
    double.fail("message", mids["flaky"], 503)
    bot, store, seen, summary = await restart(double, where)
    assert sorted(summary["failed"]) == ["flaky", "locked"]
    assert summary["removed"] == []
    views = store.state["persistent_views"]
    first = views["locked"]["unreachable_since"]
    assert "unreachable_since" in views["flaky"]
    assert "unreachable_since" not in views["fine"]
    assert routed(bot) == {"locked", "flaky", "fine"}  # lost access is not deletion
    unreachable = {e.state_key: e for e in seen.bot_events
                   if e.event == "cascadeui_panel_unreachable"}
    assert set(unreachable) == {"locked", "flaky"}
    assert unreachable["locked"].reason == "unreachable"
    assert unreachable["locked"].unreachable_since is not None
    assert {e.state_key for e in seen.bot_events
            if e.event == "cascadeui_panel_restored"} == {"fine"}
    await bot.close()

    double.heal()
    double.fail("channel", locked, 403)  # still locked; the 503 is over
    bot, store, seen, summary = await restart(double, where)
    views = store.state["persistent_views"]
    assert views["locked"]["unreachable_since"] == first  # aged, not reset
    assert "unreachable_since" not in views["flaky"]  # reachable again: cleared
    assert sorted(summary["restored"]) == ["fine", "flaky"]
    await bot.close()

    bot, store, seen, summary = await restart(double, where,
                                              unreachable_ttl=timedelta(seconds=0))
    assert summary["removed"] == ["locked"]
    assert seen.removed() == {"locked": "unreachable_expired"}
    assert "locked" not in store.state["persistent_views"]
    assert "locked" not in store.state["application"]["panels"]
    assert routed(bot) == {"flaky", "fine"}
    await bot.close()
    stored = await anyio.to_thread.run_sync(sync.load_state, where)
    assert set(stored["persistent_views"]) == {"flaky", "fine"}
    assert set(stored["application"]["panels"]) == {"flaky", "fine"}


async def test_unreachable_ttl_none_never_removes_and_bad_values_are_refused(
        double: DiscordDouble, tmp_path: Path) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    where = str(tmp_path / "s.db")
    store = StateStore()
    bot = await start(double, store, where)
    await send(double, bot, store, "p", cid)
    await bot.close()
    double.fail("channel", cid, 403)
    for _ in range(2):
        bot, store, _, summary = await restart(double, where, unreachable_ttl=None)
        assert summary["failed"] == ["p"]
        await bot.close()
    with pytest.raises(ValueError, match="unreachable_ttl"):
        await setup_persistence(backend=where, store=StateStore(), unreachable_ttl=-1)


class Shortlived(CounterPanel):
    """Every panel of this class lives a tenth of a second."""

    ttl = timedelta(seconds=0.1)


@pytest.mark.parametrize("kind", kinds())
async def test_an_expired_panel_is_disabled_on_its_message_then_removed(
        double: DiscordDouble, request: pytest.FixtureRequest, tmp_path: Path,
        kind: str) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    where = target(kind, request, tmp_path)
    store = StateStore()
    bot = await start(double, store, where, sweep_interval=0.05)
    seen = Seen(bot, store)
    channel = bot.get_partial_messageable(cid)
    by_class = await Shortlived(state_key="class-ttl", store=store).send(channel)
    by_send = await CounterPanel(state_key="send-ttl", store=store).send(channel, ttl=0.1)
    forever = await CounterPanel(state_key="forever", store=store).send(channel)
    assert "expires_at" in store.state["persistent_views"]["send-ttl"]
    assert "expires_at" not in store.state["persistent_views"]["forever"]
    await seen.until_removed(2, within=2.0)
    assert seen.removed() == {"class-ttl": "expired", "send-ttl": "expired"}
    for message in (by_class, by_send):
        payload = double.message(message.id)
        assert payload is not None
        buttons = [c for row in payload["components"] for c in row["components"]]
        assert buttons
        assert all(b.get("disabled") for b in buttons)
    payload = double.message(forever.id)
    assert payload is not None
    assert not payload["components"][0]["components"][0].get("disabled")
    assert set(store.state["persistent_views"]) == {"forever"}
    assert routed(bot) == {"forever"}
    stored = await anyio.to_thread.run_sync(sync.load_state, where)
    assert set(stored["persistent_views"]) == {"forever"}
    await bot.close()


async def test_a_panel_that_expired_while_the_bot_was_down_is_swept_at_start(
        double: DiscordDouble, tmp_path: Path) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    where = str(tmp_path / "s.db")
    store = StateStore()
    bot = await start(double, store, where, sweep_interval=3600)
    message = await CounterPanel(state_key="p", store=store).send(
        bot.get_partial_messageable(cid), ttl=0.05)
    await bot.close()
    await asyncio.sleep(0.1)
    bot, store, seen, _ = await restart(double, where, sweep_interval=3600)
    await seen.until_removed(1)
    assert seen.removed() == {"p": "expired"}
    payload = double.message(message.id)
    assert payload is not None
    assert payload["components"][0]["components"][0]["disabled"]
    await bot.close()
    with pytest.raises(ValueError, match="ttl"):
        await CounterPanel(state_key="q", store=store).send(
            bot.get_partial_messageable(cid), ttl=0)


@pytest.mark.parametrize("kind", kinds("multiprocess"))
def test_a_kill_right_after_a_deletion_event_leaves_no_entry_behind(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    where = target(kind, request, tmp_path)
    with _spawn.start(_spawn.worker("deletion_kill", where), cwd=tmp_path) as child:
        assert child.stdout is not None
        line = child.stdout.readline()
        child.kill()  # SIGKILL at the event: no close, no flush
        _, err = child.communicate(timeout=30)
    assert line.split() == ["removed", "gone"], err
    stored = sync.load_state(where)
    assert set(stored["persistent_views"]) == {"kept"}
    assert "gone" not in stored["application"].get("panels", {})


async def test_exit_by_code_is_a_removed_event_with_reason_deleted(
        double: DiscordDouble, tmp_path: Path) -> None:
    cid = double.add_channel(guild_id=double.new_id())
    store = StateStore()
    bot = await start(double, store, str(tmp_path / "s.json"))
    seen = Seen(bot, store)
    panel = CounterPanel(state_key="p", store=store)
    await panel.send(bot.get_partial_messageable(cid))
    await panel.exit()
    await seen.until_removed(1)
    assert seen.removed() == {"p": "deleted"}
    assert [(e.state_key, e.reason) for e in seen.store_events] == [("p", "deleted")]
    await bot.close()


@pytest.mark.parametrize("kind", kinds())
async def test_application_data_with_a_ttl_is_deleted_by_the_sweeper(
        double: DiscordDouble, request: pytest.FixtureRequest, tmp_path: Path,
        kind: str) -> None:
    where = target(kind, request, tmp_path)
    store = StateStore()
    bot = await start(double, store, where, sweep_interval=0.05)
    await store.dispatch(APPLICATION_SET, {"path": ["cooldowns", "7"], "value": 1,
                                           "ttl": 0.1})
    await store.dispatch(APPLICATION_SET, {"path": ["cooldowns", "8"], "value": 2,
                                           "ttl": 0.1})
    await store.dispatch(APPLICATION_SET, {"path": ["cooldowns", "8"], "value": 3})  # kept
    await store.dispatch(APPLICATION_SET, {"path": ["kept"], "value": True})
    assert list(store.state["application"][EXPIRY_KEY]) == ['["cooldowns", "7"]']
    swept = asyncio.Event()
    store.subscribe(lambda state, action: swept.set()
                    if "7" not in state["application"]["cooldowns"] else None)
    with anyio.fail_after(2):  # the sweeper runs every 0.05 s
        await swept.wait()
    await store.flush()
    stored = await anyio.to_thread.run_sync(sync.load_state, where)
    assert stored["application"]["cooldowns"] == {"8": 3}
    assert stored["application"]["kept"] is True
    assert not stored["application"].get(EXPIRY_KEY)
    with pytest.raises(ValueError, match="ttl"):
        await store.dispatch(APPLICATION_SET, {"path": ["x"], "value": 1, "ttl": 0})
    await bot.close()


async def test_a_cluster_removes_only_its_own_shards_panels(
        double: DiscordDouble, tmp_path: Path) -> None:
    mine, theirs = ((1000 * 2 + shard) << 22 for shard in (1, 0))  # shards 1 and 0 of 2
    cids = {g: double.add_channel(guild_id=g) for g in (mine, theirs)}
    where = str(tmp_path / "s.db")
    store = StateStore()
    bot = await start(double, store, where)  # one process wrote both panels
    for g in (mine, theirs):
        await send(double, bot, store, str(g), cids[g])
    await bot.close()

    shard1 = commands.Bot(command_prefix="!", intents=discord.Intents.none(),
                          help_command=None, shard_id=1, shard_count=2)
    store = StateStore()
    await logged_in_bot(double, bot=shard1)
    seen = Seen(shard1, store)
    summary = await setup_persistence(shard1, backend=where, store=store, verify="await")
    assert summary.other_shards == [str(theirs)]
    for g in (mine, theirs):
        double.deliver_guild(shard1, g)
        double.deliver_guild_remove(shard1, g)  # shard 0's guild: not this process's
    await seen.until_removed(1)
    await asyncio.sleep(0.05)
    assert seen.removed() == {str(mine): "guild_removed"}
    assert set(store.state["persistent_views"]) == {str(theirs)}
    await shard1.close()
