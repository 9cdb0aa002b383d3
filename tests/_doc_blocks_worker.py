"""Run the ```python blocks of one Markdown page (see tests/readers/test_docs.py for the rules).

Usage: ``python tests/_doc_blocks_worker.py PAGE.md`` from the directory the blocks should use as
their working directory (test_docs runs it in a fresh temp dir, one process per page).
Exit 0 when every block ran; otherwise the failing block's page line and traceback go to
stderr and the exit code is 1.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# An optional HTML comment right before the fence (blank lines allowed between), then the
# fence (possibly indented inside a list item) and its body up to the closing fence.
_BLOCK = re.compile(
    r"(?:<!--\s*(?P<kind>no-run|doc-setup)\b:?(?P<note>.*?)-->\s*\n)?"
    r"(?P<indent>[ \t]*)```python\n(?P<code>.*?)^[ \t]*```",
    flags=re.S | re.M)

# What every page starts with: the usual imports and a logged-in bot against the local
# Discord API double, so blocks that send panels or need a bot run without Discord.
PRELUDE = """
import discord
from discord.ext import commands
from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot, mark_ready
double = DiscordDouble()
await double.start()
guild_id = double.new_id()
channel_id = double.add_channel(guild_id=guild_id)
bot = await logged_in_bot(double)
mark_ready(bot)
guild = discord.Object(id=guild_id)
channel = bot.get_partial_messageable(channel_id, guild_id=guild_id)
"""

# Close every bot and double the blocks made (a block may rebind ``bot``), then the store.
TEARDOWN = """
import gc
from cascadeui.store import get_store
try:
    await get_store().close()
except ValueError:  # the store runs on cascadeui.sync's own loop, which closes it at exit
    pass
for _obj in gc.get_objects():
    if isinstance(_obj, discord.Client) and not _obj.is_closed():
        await _obj.close()
for _obj in gc.get_objects():
    if isinstance(_obj, DiscordDouble):
        await _obj.close()
"""


@dataclass
class Block:
    """One fenced block: its code, the page line it starts on, and its marker if any."""

    code: str
    line: int
    kind: str | None
    note: str


def blocks(text: str) -> list[Block]:
    """Every ```python block of ``text`` with the marker comment right before it."""
    found = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        found.append(Block(textwrap.dedent(match["code"]), line, match["kind"],
                           (match["note"] or "").strip()))
    return found


def _run(loop: asyncio.AbstractEventLoop, source: str, name: str, ns: dict[str, Any]) -> None:
    code = compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)  # a coroutine when the block uses top-level await
    if asyncio.iscoroutine(result):
        loop.run_until_complete(result)


def main(page: Path) -> int:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    ns: dict[str, Any] = {"__name__": "__docs__"}
    _run(loop, PRELUDE, "<prelude>", ns)
    status = 0
    try:
        for block in blocks(page.read_text(encoding="utf-8")):
            if block.kind == "no-run":
                continue
            if block.kind == "doc-setup":
                _run(loop, textwrap.dedent(block.note), f"{page}:{block.line}:doc-setup", ns)
            # Line numbers in tracebacks are the page's own.
            source = "\n" * (block.line - 1) + block.code
            try:
                _run(loop, source, str(page), ns)
            except BaseException:
                print(f"{page.name}:{block.line}: the block starting here failed",
                      file=sys.stderr)
                traceback.print_exc()
                status = 1
                break
    finally:
        _run(loop, TEARDOWN, "<teardown>", ns)
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
