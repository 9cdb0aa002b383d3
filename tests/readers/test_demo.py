"""The README's main job: ``python -m cascadeui.demo`` run as a user would, in an empty dir."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _spawn import module

from cascadeui.store import get_store, reset_store
from cascadeui.testing.discord_double import IS_COMPONENTS_V2, DiscordDouble, logged_in_bot
from cascadeui.views import unregister_view_class


def test_demo_lifecycle(tmp_path: Path) -> None:
    proc = subprocess.run([*module("cascadeui.demo"), "--dir", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("bot 2: setup_persistence -> "))
    assert ast.literal_eval(summary.split(" -> ", 1)[1]) == {
        "restored": ["poll:lunch", "ticket:alice"], "skipped": [], "failed": [],
        "removed": ["poll:friday"]}
    out = proc.stdout
    assert '"1003": "pizza"' in out.split("data that survived:")[1].splitlines()[0]
    assert "dave clicks sushi on the restored poll:lunch -> pizza 2 / sushi 2" in out
    assert "bob tries to close alice's ticket -> (only you)" in out
    stored = next(line for line in lines if line.startswith("stored in cascadeui.db:"))
    assert '"1004": "sushi"' in stored
    assert '"status": "closed"' in stored
    assert (tmp_path / "cascadeui.db").exists()
    assert f"done; files in {tmp_path}: cascadeui.db, discord_world.json" in out
    assert "Traceback" not in proc.stderr


def test_demo_refuses_a_directory_holding_a_state(tmp_path: Path) -> None:
    (tmp_path / "cascadeui.db").write_bytes(b"a bot's state")
    proc = subprocess.run([*module("cascadeui.demo"), "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "refusing to touch an existing state" in proc.stderr
    assert (tmp_path / "cascadeui.db").read_bytes() == b"a bot's state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cascadeui.db"]


def test_demo_help_prints_help_and_runs_nothing(tmp_path: Path) -> None:
    proc = subprocess.run([*module("cascadeui.demo"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m cascadeui.demo")
    assert "scratch directory" in proc.stdout
    assert "bot 1" not in proc.stdout
    assert not any(tmp_path.iterdir())


def test_demo_script_removes_its_directory() -> None:
    script = (Path(__file__).resolve().parents[2] / "scripts" / "demo.sh").read_text()
    assert "trap 'rm -rf \"$workdir\"' EXIT" in script  # the run itself is the test above
    assert "exec " not in script  # exec would skip the trap


def test_example_bot_runs_against_the_double(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/bot.py: its setup_hook restores, its panels send and answer clicks."""
    spec = importlib.util.spec_from_file_location(
        "example_bot", Path(__file__).resolve().parents[2] / "examples" / "bot.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.chdir(tmp_path)
    reset_store()

    async def run() -> tuple[dict[str, Any] | None, Any]:
        async with DiscordDouble() as double:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            bot = await logged_in_bot(double, bot=module.bot)
            cid = double.add_channel(guild_id=double.new_id())
            panel = module.VotePanel(state_key="poll:1")
            msg = await panel.send(bot.get_partial_messageable(cid), "Lunch?")
            answer = await double.click(bot, msg.id, "poll:yes", user_id=5)
            # A prefix command, delivered as Discord would: it posts the layout panel.
            sent = await double.deliver_message(bot, cid, "!status", author_id=5,
                                              command=True)
            board = await double.wait_for_message(cid, after=sent["id"])
            assert board["flags"] & IS_COMPONENTS_V2
            checked = await double.click(bot, int(board["id"]), "status:check", user_id=5)
            assert checked is not None
            assert checked["data"]["content"] == "Checked 1 times."
            await bot.close()
            return answer, get_store().state["application"]
    try:
        answer, application = asyncio.run(run())
    finally:
        unregister_view_class("VotePanel")
        unregister_view_class("SupportTicket")
        unregister_view_class("StatusBoard")
        reset_store()
    assert answer is not None
    assert answer["data"]["content"] == "Counted. yes 1 / no 0"
    assert application["panels"]["poll:1"]["votes"] == {"5": "yes"}
    assert application["__schema_version__"] == module.SCHEMA_VERSION  # born current
    old = {"application": {"panels": {"p": {"votes": {"5": "y", "6": "n"}}}}}
    assert module.votes_spelled_out(old)["application"]["panels"]["p"]["votes"] == {
        "5": "yes", "6": "no"}
    assert (tmp_path / "cascadeui.db").exists()
