"""The README's main job: panels that survive a bot restart, with their data.

Run ``python -m cascadeui.demo``; it needs no token and no server, and works in a scratch
directory of its own (removed afterwards; ``--dir DIR`` uses DIR, which must hold no state,
and keeps it), so a bot's ``cascadeui.db`` in the current directory is never touched.
Bot 1 talks to a local Discord API double (:mod:`cascadeui.testing.discord_double`), sends
two panels, users click, bot 1 shuts down. While it is down a moderator deletes one panel's
message. Bot 2 is a second OS process with a fresh store: ``setup_persistence`` restores
the state from ``cascadeui.db`` (SQLite, the embedded default), re-attaches the live panels
and purges the deleted one; a click on a restored panel still works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import discord

from cascadeui import PersistentView, get_store, setup_persistence
from cascadeui.persistence import SQLiteBackend
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot, mark_ready

__all__ = ["PollPanel", "TicketPanel", "main"]

DB_FILE = "cascadeui.db"
WORLD_FILE = "discord_world.json"
ALICE, BOB, CAROL, DAVE = 1001, 1002, 1003, 1004
NAMES = {ALICE: "alice", BOB: "bob", CAROL: "carol", DAVE: "dave"}


class PollPanel(PersistentView):
    """A public poll: votes are kept per user in the panel's data."""

    async def _vote(self, interaction: discord.Interaction[Any], choice: str) -> None:
        votes = dict(self.data.get("votes", {}))
        votes[str(interaction.user.id)] = choice
        await self.set_data("votes", votes)
        await interaction.response.edit_message(content=self.summary(), view=self)

    def summary(self) -> str:
        votes = list(self.data.get("votes", {}).values())
        return f"pizza {votes.count('pizza')} / sushi {votes.count('sushi')}"

    @discord.ui.button(label="Pizza", custom_id="poll:pizza")
    async def pizza(self, interaction: discord.Interaction[Any],
                    button: discord.ui.Button[Any]) -> None:
        await self._vote(interaction, "pizza")

    @discord.ui.button(label="Sushi", custom_id="poll:sushi")
    async def sushi(self, interaction: discord.Interaction[Any],
                    button: discord.ui.Button[Any]) -> None:
        await self._vote(interaction, "sushi")


class TicketPanel(PersistentView):
    """A support ticket only its owner may close, before and after a restart."""

    owner_only = True

    @discord.ui.button(label="Close ticket", custom_id="ticket:close")
    async def close_ticket(self, interaction: discord.Interaction[Any],
                           button: discord.ui.Button[Any]) -> None:
        await self.set_data("status", "closed")
        await interaction.response.edit_message(content="ticket closed", view=self)


def _say(text: str) -> None:
    print(text, flush=True)


async def _click(double: DiscordDouble, bot: discord.Client, message_id: int, custom_id: str,
                 user: int) -> str:
    answer = await double.click(bot, message_id, custom_id, user_id=user)
    if answer is None:
        return "no answer"
    data = answer["data"]
    return f"{'(only you) ' if data.get('flags', 0) & 64 else ''}{data.get('content')}"


async def bot1(workdir: Path) -> None:
    """Send panels, let users click, shut down; then Discord changes while it is down."""
    async with DiscordDouble() as double:
        guild = double.new_id()
        lunch, support = (double.add_channel(guild_id=guild, name=n)
                          for n in ("lunch", "support"))

        backend = SQLiteBackend(workdir / DB_FILE)

        async def hook(bot: Any) -> None:
            summary = await setup_persistence(bot, backend=backend)
            _say(f"bot 1: setup_persistence -> {summary}")

        bot = await logged_in_bot(double, setup_hook=hook)
        mids = {}
        for key, panel, channel in (
                ("poll:lunch", PollPanel(state_key="poll:lunch"), lunch),
                ("poll:friday", PollPanel(state_key="poll:friday"), lunch),
                ("ticket:alice", TicketPanel(state_key="ticket:alice", user_id=ALICE), support)):
            message = await panel.send(bot.get_partial_messageable(channel, guild_id=guild),
                                       key)
            mids[key] = message.id
        _say(f"bot 1: sent 3 panels: {', '.join(mids)}")
        for user, button in ((ALICE, "poll:pizza"), (BOB, "poll:sushi"), (CAROL, "poll:pizza")):
            result = await _click(double, bot, mids["poll:lunch"], button, user)
            _say(f"  {NAMES[user]} clicks {button.split(':')[1]} on poll:lunch -> {result}")
        await bot.close()
        await backend.aclose()
        _say("bot 1: closed (its last change is already durable: close() flushes)")
        double.delete_message(mids["poll:friday"])
        _say("meanwhile a moderator deletes the poll:friday message")
        (workdir / WORLD_FILE).write_text(json.dumps({"world": double.dump(), "ids": mids}))


async def bot2(workdir: Path) -> None:
    """A fresh process and store: restore, show what survived, click a restored panel."""
    saved = json.loads((workdir / WORLD_FILE).read_text())
    mids = saved["ids"]
    async with DiscordDouble() as double:
        double.load(saved["world"])
        backend = SQLiteBackend(workdir / DB_FILE)

        async def hook(bot: Any) -> None:
            # verify="await": the summary shows every check's outcome however loaded the
            # machine is (the default waits at most verify_budget seconds, then goes on).
            summary = await setup_persistence(bot, backend=backend, verify="await")
            _say(f"bot 2: setup_persistence -> {summary}")

        bot = await logged_in_bot(double, setup_hook=hook)
        mark_ready(bot)
        state = get_store().state
        _say(f"bot 2: registry after restore: {sorted(state['persistent_views'])}")
        _say(f"bot 2: data that survived: {json.dumps(state['application']['panels'])}")
        result = await _click(double, bot, mids["poll:lunch"], "poll:sushi", DAVE)
        _say(f"  dave clicks sushi on the restored poll:lunch -> {result}")
        result = await _click(double, bot, mids["ticket:alice"], "ticket:close", BOB)
        _say(f"  bob tries to close alice's ticket -> {result}")
        result = await _click(double, bot, mids["ticket:alice"], "ticket:close", ALICE)
        _say(f"  alice closes her ticket -> {result}")
        await bot.close()
        await backend.aclose()
    async with SQLiteBackend(workdir / DB_FILE) as check:
        stored = await check.load_state()
    _say(f"stored in {DB_FILE}: {json.dumps(stored['application']['panels'])}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cascadeui.demo",
        description="Panels that survive a bot restart, on a local Discord API double (no "
                    "token, no server). Runs in a fresh scratch directory, removed "
                    "afterwards, so no existing state is touched.")
    parser.add_argument("--dir", metavar="DIR", type=Path,
                        help="run in DIR instead (created if missing, kept afterwards); "
                             f"refused when it already holds {DB_FILE} or {WORLD_FILE}")
    parser.add_argument("--bot2", metavar="DIR", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m cascadeui.demo`` and ``cascadeui demo``.

    :raises SystemExit: 1 when ``--dir`` already holds a state (nothing is touched).
    """
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.bot2 is not None:
        asyncio.run(bot2(args.bot2))
        return
    if args.dir is None:
        with tempfile.TemporaryDirectory(prefix="cascadeui-demo-") as scratch:
            _run(Path(scratch))
        _say(f"removed the scratch directory {scratch} (--dir DIR keeps the files)")
        return
    taken = [name for name in (DB_FILE, WORLD_FILE) if (args.dir / name).exists()]
    if taken:
        raise SystemExit(f"cascadeui demo: {args.dir} already holds {', '.join(taken)}; "
                         "refusing to touch an existing state (pick an empty directory, "
                         "or run without --dir for a scratch one)")
    args.dir.mkdir(parents=True, exist_ok=True)
    _run(args.dir.resolve())


def _run(workdir: Path) -> None:
    """Bot 1 in this process, bot 2 in a new one, both in ``workdir``."""
    _say(f"demo directory: {workdir}")
    asyncio.run(bot1(workdir))
    _say("restarting: bot 2 runs in a new process")
    done = subprocess.run([sys.executable, "-m", "cascadeui.demo", "--bot2", str(workdir)],
                          cwd=workdir, check=False, timeout=120)
    if done.returncode != 0:
        raise SystemExit(done.returncode)
    _say(f"done; files in {workdir}: {', '.join(sorted(p.name for p in workdir.iterdir()))}")


if __name__ == "__main__":
    main()
