"""The local Discord API double in its own process, seeded with N panel messages.

Runs in our venv (``cascadeui.testing``) so that either implementation's bot, in its own
interpreter, can talk to it over loopback. Prints nothing; writes ``--setup`` (base URL,
the panels) once serving, and ``--stats`` (request counts) when its standard input closes
or after ``--max-seconds``, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_json

GUILD_ID = 1_300_000_000_000_000_500
BUTTON_ID = "bench:click"


async def serve(args: argparse.Namespace) -> None:
    from cascadeui.testing.discord_double import DiscordDouble

    double = DiscordDouble(latency=args.latency, global_rate_limit=args.rate_limit or None)
    await double.start()
    channels = [double.add_channel(guild_id=GUILD_ID, name=f"panels-{i}")
                for i in range(args.channels)]
    row = {"type": 1, "components": [
        {"type": 2, "style": 1, "label": "Click", "custom_id": BUTTON_ID}]}
    panels: list[dict[str, Any]] = []
    for i in range(args.panels):
        cid = channels[i % len(channels)]
        msg = double.add_message(cid, content=f"panel {i}", components=[row])
        panels.append({"state_key": f"panel-{i}", "message_id": str(msg["id"]),
                       "channel_id": str(cid), "guild_id": str(GUILD_ID)})
    write_json(args.setup, {"base_url": double.base_url, "panels": panels,
                            "button": BUTTON_ID})
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    def on_stdin() -> None:
        if not sys.stdin.buffer.read1(4096) and not closed.done():  # type: ignore[attr-defined]
            closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        await asyncio.wait_for(closed, args.max_seconds)
    except asyncio.TimeoutError:
        pass
    finally:
        loop.remove_reader(sys.stdin.fileno())
        write_json(args.stats, {"requests": dict(double.requests),
                                "total": double.total_requests,
                                "rate_limited": double.rate_limited})
        await double.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--latency", type=float, default=0.025)
    p.add_argument("--rate-limit", type=int, default=0)
    p.add_argument("--panels", type=int, default=100)
    p.add_argument("--channels", type=int, default=50)
    p.add_argument("--setup", required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--max-seconds", type=float, default=1800)
    asyncio.run(serve(p.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
