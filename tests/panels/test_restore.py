"""setup_persistence against the real discord.py client and the local API double."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import _panels
import discord
import pytest
from _panels import BrokenPanel, CounterPanel, FailingHookPanel, HookPanel, OwnerPanel
from discord.ext import commands

from cascadeui import setup_persistence
from cascadeui._restore import (
    _TASKS,
    DEFAULT_FILE,
    PERSISTENCE_VERIFIED,
    RESTORE_FAILED,
    RestoreSummary,
)
from cascadeui.actions import APPLICATION_SET, PERSISTENT_VIEW_REGISTERED
from cascadeui.errors import StateCorruptedError
from cascadeui.persistence import FileStorageBackend, SQLiteBackend
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot, mark_ready

pytestmark = pytest.mark.anyio

GET_MESSAGE = "GET channels/{channel_id}/messages/{message_id}"



@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with DiscordDouble() as d:
        yield d


async def start_bot(double: DiscordDouble, store: StateStore, **kwargs: Any,
                    ) -> tuple[commands.Bot, dict[str, list[str]]]:
    """A bot that calls setup_persistence in its setup_hook, like a real one.

    The checks are awaited (``verify="await"``) unless a test says otherwise: these tests
    assert the final lists, which the default ``"auto"`` may leave to the background on a
    loaded machine (the default's own tests are in test_shards.py).
    """
    kwargs.setdefault("verify", "await")
    out: dict[str, list[str]] = {}

    async def hook(bot: commands.Bot) -> None:
        out.update(await setup_persistence(bot, store=store, **kwargs))

    bot = await logged_in_bot(double, setup_hook=hook)
    return bot, out


async def send(double: DiscordDouble, bot: commands.Bot, panel: Any, channel_id: int) -> int:
    """Send ``panel`` to a channel of the double; return the message id."""
    channel = bot.get_partial_messageable(channel_id,
                                          guild_id=double.channels[channel_id].guild_id)
    return int((await panel.send(channel, panel.state_key)).id)


async def test_four_lists_purge_and_one_request_per_panel(
        double: DiscordDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    guild = double.new_id()
    # discord.py sends one request at a time per channel bucket (no rate-limit headers
    # here), so the 500 (retried by discord.py) and the slow panel get channels of their own.
    ch, gone_ch, locked_ch, ch500, slow_ch = (double.add_channel(guild_id=guild)
                                              for _ in range(5))
    path = tmp_path / "state.db"
    store1 = StateStore()
    bot1, first = await start_bot(double, store1, backend=SQLiteBackend(path))
    assert first == {"restored": [], "skipped": [], "failed": [], "removed": []}
    mids: dict[str, int] = {}
    specs = [("live-1", CounterPanel, ch), ("live-2", OwnerPanel, ch),
             ("msg-deleted", CounterPanel, ch), ("chan-deleted", CounterPanel, gone_ch),
             ("forbidden", CounterPanel, locked_ch), ("unavailable", CounterPanel, ch),
             ("error-500", CounterPanel, ch500), ("slow", CounterPanel, slow_ch),
             ("broken", BrokenPanel, ch)]
    for key, cls, cid in specs:
        panel = cls(state_key=key, user_id=7, store=store1)
        mids[key] = await send(double, bot1, panel, cid)
    assert await double.click(bot1, mids["live-1"], "counter:inc", user_id=8) is not None
    # Entries that cannot be restored as they are, written by hand or by an older version.
    await store1.dispatch(PERSISTENT_VIEW_REGISTERED, {
        "state_key": "unknown-class", "class_name": "NeverDefinedPanel", "message_id": "11",
        "channel_id": str(ch), "guild_id": None, "user_id": None})
    malformed = {"no-ids": {"class_name": "CounterPanel"},
                 "text-id": {"class_name": "CounterPanel", "message_id": "12ab",
                             "channel_id": str(ch)},
                 "not-a-dict": ["CounterPanel", 1, 2],
                 "bool-id": {"class_name": "CounterPanel", "message_id": True,
                             "channel_id": str(ch)},
                 "huge-id": {"class_name": "CounterPanel", "message_id": str(2**64),
                             "channel_id": str(ch)}}
    store1.register_reducer("TEST_SET_VIEWS",
                            lambda action, state: {**state, "persistent_views": action["payload"]})
    views = {**store1.state["persistent_views"], **malformed}
    await store1.dispatch("TEST_SET_VIEWS", views)
    await bot1.close()

    # The world changes while the bot is down.
    double.delete_message(mids["msg-deleted"])
    double.delete_channel(gone_ch)
    double.fail("channel", locked_ch, 403)
    double.fail("message", mids["unavailable"], 503)
    double.fail("message", mids["error-500"], 500)  # discord.py retries 500s: a timeout
    double.delay("message", mids["slow"], 1.0)
    before = dict(double.requests)

    store2 = StateStore()
    started = time.monotonic()
    bot2, result = await start_bot(double, store2, backend=SQLiteBackend(path),
                                   fetch_timeout=0.3)
    elapsed = time.monotonic() - started
    try:
        assert set(result) == {"restored", "skipped", "failed", "removed"}
        assert sorted(result["restored"]) == ["live-1", "live-2"]
        assert result["skipped"] == ["unknown-class"]
        assert sorted(result["removed"]) == ["chan-deleted", "msg-deleted"]
        assert sorted(result["failed"]) == sorted(
            ["forbidden", "unavailable", "error-500", "slow", "broken", *malformed])
        assert elapsed < 3.0
        # One direct message fetch per checkable panel, never a channel fetch.
        gets = double.requests[GET_MESSAGE] - before.get(GET_MESSAGE, 0)
        assert gets == 2 + 2 + 4  # restored + removed + (403, 503, 500, slow)
        assert double.requests["GET channels/{channel_id}"] == 0
        # Identity came back, and clicks route to the restored views. Panels whose check
        # failed stay routed (their message may be fine); gone ones were unrouted.
        restored = {v.state_key: v for v in bot2.persistent_views}
        assert set(restored) == {"live-1", "live-2", "forbidden", "unavailable", "error-500",
                                 "slow"}
        store_ = bot2._connection._view_store
        assert not store_.is_message_tracked(mids["msg-deleted"])
        assert not store_.is_message_tracked(mids["chan-deleted"])
        assert restored["live-2"].user_id == 7
        assert restored["live-2"].message_id == mids["live-2"]
        answer = await double.click(bot2, mids["live-1"], "counter:inc", user_id=9)
        assert answer is not None
        assert answer["data"]["content"] == "live-1=2"
        assert store2.state["application"]["panels"]["live-1"]["count"] == 2
    finally:
        await bot2.close()
    # The purge is durable; transient failures and unknown classes are kept.
    async with SQLiteBackend(path) as raw:
        stored = await raw.load_state()
    kept = set(stored["persistent_views"])
    assert "msg-deleted" not in kept
    assert "chan-deleted" not in kept
    assert {"forbidden", "unavailable", "error-500", "slow", "broken", "unknown-class",
            *malformed} <= kept
    assert stored["application"]["panels"]["live-1"]["count"] == 2
    assert set(stored) <= {"application", "persistent_views"}


async def test_data_only_without_bot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"application": {"prefix": "?"}, "persistent_views": {}}))
    store = StateStore()
    result = await setup_persistence(file_path=path, store=store)
    assert result == {"restored": [], "skipped": [], "failed": [], "removed": []}
    assert store.state["application"] == {"prefix": "?"}
    await store.close()


async def test_default_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = StateStore()
    await setup_persistence(store=store)
    await store.dispatch(APPLICATION_SET, {"path": ["x"], "value": 1})
    assert await store.flush()
    await store.close()
    assert DEFAULT_FILE == "cascadeui_state.json"
    assert json.loads((tmp_path / DEFAULT_FILE).read_text())["application"]["x"] == 1


async def test_argument_errors(tmp_path: Path) -> None:
    store = StateStore()
    with pytest.raises(TypeError, match="backend="):
        await setup_persistence(FileStorageBackend(tmp_path / "a.json"),  # type: ignore[arg-type]
                                store=store)
    with pytest.raises(TypeError, match="setup_hook"):
        await setup_persistence(object(), store=store)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        await setup_persistence(file_path=tmp_path / "a.json",
                                backend=FileStorageBackend(tmp_path / "b.json"), store=store)
    with pytest.raises(ValueError, match="concurrency"):
        await setup_persistence(file_path=tmp_path / "a.json", store=store, concurrency=0)
    with pytest.raises(ValueError, match="rate_limit"):
        await setup_persistence(file_path=tmp_path / "a.json", store=store, rate_limit=0)
    with pytest.raises(ValueError, match="verify"):
        await setup_persistence(file_path=tmp_path / "a.json", store=store,
                                verify="later")  # type: ignore[arg-type]
    assert store.backend is None
    assert not _names(tmp_path)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_load_error_propagates_and_enables_nothing(double: DiscordDouble,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b'{"application": {"panels": ')  # truncated, and no backup
    store = StateStore()
    await store.dispatch(APPLICATION_SET, {"path": ["kept"], "value": True})
    with pytest.raises(StateCorruptedError):
        await start_bot(double, store, file_path=path)
    assert store.backend is None
    assert store.state["application"] == {"kept": True}
    assert path.read_bytes() == b'{"application": {"panels": '


async def test_twice_is_harmless(double: DiscordDouble, tmp_path: Path) -> None:
    ch = double.add_channel(guild_id=double.new_id())
    store = StateStore()
    backend = FileStorageBackend(tmp_path / "s.json")
    bot, _ = await start_bot(double, store, backend=backend)
    try:
        panel = CounterPanel(state_key="p", store=store)
        mid = await send(double, bot, panel, ch)
        gets = double.requests[GET_MESSAGE]
        again = await setup_persistence(bot, backend=backend, store=store)
        third = await setup_persistence(bot, file_path=tmp_path / "other.json", store=store)
        assert again == third == {"restored": ["p"], "skipped": [], "failed": [],
                                  "removed": []}
        assert double.requests[GET_MESSAGE] == gets  # the live panel needed no request
        assert [v.state_key for v in bot.persistent_views] == ["p"]
        assert store.backend is backend
        assert await double.click(bot, mid, "counter:inc", user_id=1) is not None
        assert panel.data["count"] == 1
    finally:
        await bot.close()
    assert not (tmp_path / "other.json").exists()
    await backend.aclose()


async def test_bounded_concurrency(tmp_path: Path) -> None:
    async with DiscordDouble() as double:
        chans = [double.add_channel(guild_id=1) for _ in range(4)]
        store = StateStore()
        backend = FileStorageBackend(tmp_path / "s.json")
        bot, _ = await start_bot(double, store, backend=backend)
        for i in range(24):
            panel = CounterPanel(state_key=f"p{i}", store=store)
            await send(double, bot, panel, chans[i % 4])
        await bot.close()
        double.latency, double.max_in_flight = 0.03, 0
        before = double.total_requests
        bot2, result = await start_bot(double, StateStore(), backend=backend, concurrency=4,
                                       rate_limit=None)
        await bot2.close()
        await backend.aclose()
        assert len(result["restored"]) == 24
        assert double.max_in_flight == 4
        # login (2) + one GET per panel
        assert double.total_requests - before == 2 + 24


async def test_on_restore_after_ready_and_failures_reported(
        double: DiscordDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ch = double.add_channel(guild_id=double.new_id())
    backend = FileStorageBackend(tmp_path / "s.json")
    store = StateStore()
    bot, _ = await start_bot(double, store, backend=backend)
    for key, cls in (("hook", HookPanel), ("boom", FailingHookPanel)):
        panel = cls(state_key=key, store=store)
        await send(double, bot, panel, ch)
    await bot.close()

    _panels.HOOK_CALLS.clear()
    store2 = StateStore()
    reported: list[dict[str, Any]] = []
    store2.subscribe(lambda state, action: reported.append(action["payload"]),
                     action_types=[RESTORE_FAILED])
    bot2, result = await start_bot(double, store2, backend=backend)
    try:
        assert sorted(result["restored"]) == ["boom", "hook"]
        await asyncio.sleep(0.05)
        assert _panels.HOOK_CALLS == []  # not on the setup_hook path: the bot is not ready
        with caplog.at_level(logging.ERROR, logger="cascadeui._restore"):
            mark_ready(bot2)
            for _ in range(100):
                if reported and _panels.HOOK_CALLS:
                    break
                await asyncio.sleep(0.01)
        assert _panels.HOOK_CALLS == [("hook", True)]
        boom = next(v for v in bot2.persistent_views if v.state_key == "boom")
        assert isinstance(boom.restore_error, RuntimeError)
        assert reported == [{"state_key": "boom", "class_name": "FailingHookPanel",
                             "error": "RuntimeError: hook exploded"}]
        assert "on_restore of panel 'boom'" in caplog.text
    finally:
        await bot2.close()
    await backend.aclose()


async def test_restored_view_answers_only_its_owner(double: DiscordDouble,
                                                    tmp_path: Path) -> None:
    ch = double.add_channel(guild_id=double.new_id())
    backend = FileStorageBackend(tmp_path / "s.json")
    store = StateStore()
    bot, _ = await start_bot(double, store, backend=backend)
    panel = OwnerPanel(state_key="mine", user_id=1234567890123456789, store=store)
    mid = await send(double, bot, panel, ch)
    await bot.close()

    store2 = StateStore()
    bot2, result = await start_bot(double, store2, backend=backend)
    try:
        assert result["restored"] == ["mine"]
        refused = await double.click(bot2, mid, "owner:toggle", user_id=42)
        assert refused is not None
        assert refused["type"] == 4
        assert refused["data"]["flags"] & 64  # ephemeral refusal
        assert "on" not in store2.state["application"].get("panels", {}).get("mine", {})
        accepted = await double.click(bot2, mid, "owner:toggle", user_id=1234567890123456789)
        assert accepted is not None
        assert accepted["type"] == 7
        assert store2.state["application"]["panels"]["mine"]["on"] is True
    finally:
        await bot2.close()
    await backend.aclose()


# -- attach first, verify later, paced ------------------------------------------------------


async def seed(double: DiscordDouble, path: Path, keys: list[str], channels: list[int],
               ) -> dict[str, int]:
    """Messages in the double and their registry entries in a JSON file, as bot 1 would
    have left them; returns state_key -> message id."""
    mids: dict[str, int] = {}
    entries: dict[str, Any] = {}
    for i, key in enumerate(keys):
        cid = channels[i % len(channels)]
        mid = int(double.add_message(cid, content=key)["id"])
        mids[key] = mid
        entries[key] = {"class_name": "CounterPanel", "message_id": str(mid),
                        "channel_id": str(cid), "guild_id": None, "user_id": None}
    async with FileStorageBackend(path) as backend:
        assert await backend.save_state({"application": {}, "persistent_views": entries})
    return mids


async def stored_keys(path: Path) -> set[str]:
    async with FileStorageBackend(path) as backend:
        return set((await backend.load_state())["persistent_views"])


def tracked(bot: discord.Client, message_id: int) -> bool:
    return bool(bot._connection._view_store.is_message_tracked(message_id))


async def test_clicks_route_before_messages_are_checked(double: DiscordDouble,
                                                         tmp_path: Path) -> None:
    chans = [double.add_channel(guild_id=double.new_id()) for _ in range(3)]
    path = tmp_path / "s.json"
    mids = await seed(double, path, ["slow", "gone", "ok"], chans)
    double.delay("message", mids["slow"], 0.8)
    double.delete_message(mids["gone"])
    store = StateStore()
    verified: list[Any] = []
    store.subscribe(lambda state, action: verified.append(action["payload"]),
                    action_types=[PERSISTENCE_VERIFIED])
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none(), help_command=None)
    out: dict[str, list[str]] = {}

    async def hook(b: commands.Bot) -> None:
        out.update(await setup_persistence(b, file_path=path, store=store, fetch_timeout=5,
                                           verify="await"))

    login = asyncio.get_running_loop().create_task(
        logged_in_bot(double, bot=bot, setup_hook=hook))
    try:
        for _ in range(200):  # every panel is routed before any message check answers
            if all(tracked(bot, mid) for mid in mids.values()):
                break
            await asyncio.sleep(0.005)
        assert all(tracked(bot, mid) for mid in mids.values())
        # The slow panel's message fetch is still pending: its click routes anyway.
        answer = await double.click(bot, mids["slow"], "counter:inc", user_id=5)
        assert answer is not None
        assert answer["data"]["content"] == "slow=1"
        assert not login.done()
        await login
        assert sorted(out["restored"]) == ["ok", "slow"]
        assert out["removed"] == ["gone"]
        assert not tracked(bot, mids["gone"])  # unrouted once Discord said it is gone
        assert tracked(bot, mids["slow"])
        assert verified == [{"restored": out["restored"], "skipped": [], "failed": [],
                             "removed": ["gone"]}]
        assert await stored_keys(path) == {"slow", "ok"}  # the purge is durable
    finally:
        if not login.done():
            login.cancel()
        await bot.close()
    assert store.state["application"]["panels"]["slow"]["count"] == 1


async def test_pacer_stays_under_the_global_rate_limit(tmp_path: Path) -> None:
    async with DiscordDouble(global_rate_limit=100) as double:
        chans = [double.add_channel(guild_id=1) for _ in range(6)]
        path = tmp_path / "s.json"
        await seed(double, path, [f"p{i}" for i in range(120)], chans)
        started = time.monotonic()
        bot, result = await start_bot(double, StateStore(), file_path=path, rate_limit=90,
                                      verify="await")
        elapsed = time.monotonic() - started
        await bot.close()
        assert len(result["restored"]) == 120
        assert double.rate_limited == 0
        assert double.requests[GET_MESSAGE] == 120
        assert elapsed >= 119 / 90 - 0.05  # the starts really were spaced 1/90 s apart
        # The same restore unpaced: the double does punish a burst (so 0 above means something).
        bot, result = await start_bot(double, StateStore(), file_path=path, rate_limit=None,
                                      verify="await")
        await bot.close()
        assert len(result["restored"]) == 120
        assert double.rate_limited > 0


async def test_background_mode_returns_at_once_and_reports_later(
        tmp_path: Path) -> None:
    async with DiscordDouble(latency=0.02) as double:
        chans = [double.add_channel(guild_id=1) for _ in range(3)]
        path = tmp_path / "s.json"
        keys = [f"p{i}" for i in range(30)]
        mids = await seed(double, path, keys, chans)
        double.delete_message(mids["p3"])
        double.delete_channel(chans[1])  # p1, p4, ..., p28: Unknown Channel
        double.fail("message", mids["p5"], 403)
        gone = sorted(k for i, k in enumerate(keys) if i == 3 or i % 3 == 1)
        store = StateStore()
        actions: list[Any] = []
        store.subscribe(lambda state, action: actions.append(action["payload"]),
                        action_types=[PERSISTENCE_VERIFIED])
        seen: dict[str, Any] = {}

        async def hook(bot: commands.Bot) -> None:
            t0 = time.monotonic()
            summary = await setup_persistence(bot, file_path=path, store=store,
                                              verify="background", rate_limit=200)
            seen["elapsed"] = time.monotonic() - t0
            seen["gets"] = double.requests[GET_MESSAGE]
            seen["routed"] = all(tracked(bot, mid) for mid in mids.values())
            seen["summary"] = summary

        bot = await logged_in_bot(double, setup_hook=hook)
        try:
            summary = seen["summary"]
            assert isinstance(summary, RestoreSummary)
            assert set(summary) == {"restored", "skipped", "failed", "removed"}
            assert sorted(summary["restored"]) == sorted(keys)  # everything attached
            assert summary["removed"] == summary["failed"] == summary["skipped"] == []
            assert seen["gets"] == 0  # returned before the first check was sent
            assert seen["routed"]
            assert summary.verification is not None
            assert not summary.verification.done()
            assert actions == []
            final = await asyncio.wait_for(summary.verification, 10)
            assert sorted(final["removed"]) == gone
            assert final["failed"] == ["p5"]
            assert sorted(final["restored"]) == sorted(set(keys) - set(gone) - {"p5"})
            assert actions == [final]
            assert double.requests[GET_MESSAGE] == 30
            assert not any(tracked(bot, mids[k]) for k in gone)
            assert tracked(bot, mids["p5"])  # a 403 keeps its routing and its entry
            assert await stored_keys(path) == set(keys) - set(gone)
            assert summary["removed"] == []  # the returned summary stays what was known
        finally:
            await bot.close()


async def test_background_check_is_cancelled_when_the_bot_closes(tmp_path: Path) -> None:
    async with DiscordDouble() as double:
        chan = double.add_channel(guild_id=1)
        path = tmp_path / "s.json"
        mids = await seed(double, path, ["a", "b"], [chan])
        double.delete_message(mids["b"])
        double.delay("channel", chan, 5.0)
        seen: dict[str, RestoreSummary] = {}

        async def hook(bot: commands.Bot) -> None:
            seen["s"] = await setup_persistence(bot, file_path=path, store=StateStore(),
                                                verify="background")

        bot = await logged_in_bot(double, setup_hook=hook)
        task = seen["s"].verification
        assert task is not None
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await bot.close()
        assert time.monotonic() - started < 2
        assert task.cancelled()
        assert not [t for t in _TASKS if getattr(t, "cascadeui_bot", None) is bot]
        assert await stored_keys(path) == {"a", "b"}  # nothing purged by a cut-short check


async def test_message_checks_log_their_progress(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # A long check of many panels says how far it is (issue 23: 10,000 panels ran about
    # 220 s without a word); the interval is shortened so that 40 checks at 100/s show it.
    from cascadeui import _verify

    monkeypatch.setattr(_verify, "PROGRESS_EVERY", 0.1)
    caplog.set_level(logging.INFO, logger="cascadeui._verify")
    async with DiscordDouble() as double:
        chans = [double.add_channel(guild_id=1) for _ in range(2)]
        path = tmp_path / "s.json"
        mids = await seed(double, path, [f"p{i}" for i in range(40)], chans)
        double.delete_message(mids["p7"])
        bot, result = await start_bot(double, StateStore(), file_path=path, rate_limit=100,
                                      verify="await")
        await bot.close()
    assert result["removed"] == ["p7"]
    lines = [r.getMessage() for r in caplog.records if r.name == "cascadeui._verify"]
    assert lines[0] == "checking the messages of 40 restored panels, at most 100/s (about 0 s)"
    assert any(line.startswith("checked ") and " of 40 panel messages (" in line
               for line in lines[1:-1])
    assert lines[-1].startswith("checked all 40 panel messages in ")
    assert lines[-1].endswith("(39 restored, 1 removed, 0 unreachable)")
