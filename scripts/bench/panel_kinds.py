"""A panel per message vs a template: what restoring N of each costs (issue 15).

For N messages already in the Discord API double, each carrying a vote control, and their
data in a SQLite file, a fresh bot runs ``setup_persistence`` once per kind:

- ``view``: N ``PersistentView`` panels, one registry entry each: rebuilt and
  ``add_view``-ed per message, then one message check per panel (``GET`` each message);
- ``dynamic``: one ``DynamicPanel`` class stamped on N messages: ``add_dynamic_items``.

It reports, per kind and as medians over ``--runs`` runs (each in a fresh process state):
seconds until every panel routes clicks (the call's return with ``verify="background"``),
Discord requests made until then, requests made in all, seconds until the message checks
end (unpaced against the double: with Discord's limit, ``N / 45`` seconds more), and that a
click on the last message is answered with its data.

    python -m bench.panel_kinds --panels 10000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import discord

from cascadeui import DynamicPanel, PersistentView, setup_persistence
from cascadeui.adapters import SQLiteStore
from cascadeui.dynamic import unregister_dynamic_class
from cascadeui.store import StateStore
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot
from cascadeui.views import unregister_view_class


class BenchVote(PersistentView):
    """The per-message kind: its data under its state key."""

    @discord.ui.button(label="yes", custom_id="benchvote:yes")
    async def yes(self, interaction: discord.Interaction[Any],
                  button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_message(f"{self.data.get('votes', 0)}", ephemeral=True)


class BenchVoteItem(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=r"benchdyn:(?P<poll>[0-9]+)"):
    """The template kind: its data under the poll id its custom_id carries."""

    def __init__(self, poll: int) -> None:
        super().__init__(discord.ui.Button(label="yes", custom_id=f"benchdyn:{poll}"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: re.Match[str]
                             ) -> BenchVoteItem:
        return cls(int(match["poll"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_message(f"{self.data.get('votes', 0)}", ephemeral=True)


def _world(double: DiscordDouble, kind: str, n: int) -> tuple[dict[str, Any], list[int], int]:
    """N messages in one channel and the persisted document that goes with them."""
    channel = double.add_channel(guild_id=double.new_id())
    mids: list[int] = []
    views: dict[str, Any] = {}
    panels: dict[str, Any] = {}
    for i in range(n):
        if kind == "view":
            components = [{"type": 1, "components": [{"type": 2, "style": 2, "label": "yes",
                                                      "custom_id": "benchvote:yes"}]}]
        else:
            components = discord.ui.View(timeout=None).add_item(
                BenchVoteItem(i)).to_components()
        mid = int(double.add_message(channel, components=components)["id"])
        mids.append(mid)
        if kind == "view":
            views[f"v{i}"] = {"class_name": "BenchVote", "message_id": str(mid),
                              "channel_id": str(channel), "guild_id": None, "user_id": None}
            panels[f"v{i}"] = {"votes": i}
        else:
            panels[str(i)] = {"votes": i}
    app = {"panels": panels} if kind == "view" else {
        "dynamic_panels": {"BenchVoteItem": panels}}
    return {"application": app, "persistent_views": views}, mids, channel


async def _one(kind: str, n: int, directory: Path) -> dict[str, Any]:
    db = directory / f"{kind}.db"
    db.unlink(missing_ok=True)
    async with DiscordDouble() as double:
        doc, mids, _ = _world(double, kind, n)
        with SQLiteStore(db) as raw:
            raw.save(doc)
        bot = await logged_in_bot(double)
        store = StateStore()
        gc.collect()
        before = double.total_requests
        started = time.perf_counter()
        summary = await setup_persistence(bot, backend=_backend(db), store=store,
                                          verify="background", rate_limit=None)
        routed = time.perf_counter() - started
        at_return = double.total_requests - before
        if summary.verification is not None:
            await summary.verification
        checked = time.perf_counter() - started
        custom_id = "benchvote:yes" if kind == "view" else f"benchdyn:{n - 1}"
        answer = await double.click(bot, mids[-1], custom_id, user_id=42, timeout=30)
        total = double.total_requests - before - 1  # minus the click's callback
        await bot.close()
    ok = answer is not None and answer["data"].get("content") == str(n - 1)
    return {"routed_s": routed, "requests_at_return": at_return, "requests": total,
            "checked_s": checked, "click_ok": ok}


def _backend(db: Path) -> Any:
    from cascadeui.persistence import SQLiteBackend

    return SQLiteBackend(db)


async def _main(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("view", "dynamic"):
            runs = [await _one(kind, args.panels, Path(tmp)) for _ in range(args.runs)]
            med = {key: statistics.median(r[key] for r in runs)
                   for key in ("routed_s", "requests_at_return", "requests", "checked_s")}
            rows.append((kind, med, all(r["click_ok"] for r in runs)))
    unregister_view_class("BenchVote")
    unregister_dynamic_class("BenchVoteItem")
    print(f"panels: {args.panels}, runs: {args.runs} (medians)\n")
    print("| kind | every panel routes after | requests until then | requests in all | "
          "checks end after (unpaced) | checks at Discord's 45/s | click answered |")
    print("|---|---|---|---|---|---|---|")
    for kind, med, ok in rows:
        paced = med["requests"] / 45 if med["requests"] else 0.0
        print(f"| {kind} | {med['routed_s']:.3f} s | {med['requests_at_return']:.0f} | "
              f"{med['requests']:.0f} | {med['checked_s']:.3f} s | {paced:.0f} s | "
              f"{'yes' if ok else 'NO'} |")
    return 0 if all(ok for _, _, ok in rows) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panels", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
