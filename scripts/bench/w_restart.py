"""Workload 3: restart with N registered panels against the local Discord API double.

The double runs in its own process (``double_server.py``, started by the orchestrator)
with 25 ms of latency per request and, in ``--mode ratelimit``, Discord's global limit of
50 requests per second. This worker seeds the backend with N ``persistent_views`` entries
(the seed's layout, shared by both implementations), defines the panel class, logs a real
``commands.Bot`` in, and in ``setup_hook`` calls ``setup_persistence(bot, backend=...)``:

- ``returned_s``: until the call returns;
- ``routed_s``: until discord.py routes clicks for every restored panel (each message id
  is in the bot's view store), polled every 2 ms by a task on the same loop;
- ``complete_s``: for ours, until every message check's result is known
  (``await summary.verification``, which the default ``verify="auto"`` may leave running
  after the call returns); for the peer, equal to ``returned_s``.

Ours runs with ``rate_limit=None`` in ``--mode latency`` (the double has no global limit
there), with its defaults (``verify="auto"`` with its 1.5 s budget, the 45/s pacer) in
``--mode ratelimit``, and with ``verify="background"`` in ``--mode background`` (see
``_restore_kwargs``).

The request count comes from the double (login's two requests excluded).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from typing import Any

LOGIN_REQUESTS = 2  # GET users/@me, GET oauth2/applications/@me


def _backend(impl: str, kind: str, workdir: str, url: str | None, key: str) -> Any:
    if impl == "ours":
        from cascadeui.persistence import FileStorageBackend, RedisBackend, SQLiteBackend

        if kind == "json":
            return FileStorageBackend(os.path.join(workdir, "restart.json"))
        if kind == "sqlite":
            return SQLiteBackend(os.path.join(workdir, "restart.db"))
        return RedisBackend(url or "", key=key)
    from cascadeui.persistence import FileStorageBackend

    if kind == "json":
        return FileStorageBackend(os.path.join(workdir, "restart.json"))
    if kind == "sqlite":
        from cascadeui.persistence import SQLiteBackend

        return SQLiteBackend(os.path.join(workdir, "restart.db"))
    from cascadeui.persistence import RedisBackend

    return RedisBackend(url=url or "", key=key)


async def _close_backend(backend: Any) -> None:
    for name in ("aclose", "close"):
        fn = getattr(backend, name, None)
        if fn is not None:
            result = fn()
            if inspect.isawaitable(result):
                await result
            return


def _panel_class(impl: str, button_id: str) -> type:
    import discord

    from cascadeui import PersistentView

    class BenchPanel(PersistentView):  # type: ignore[misc, valid-type]
        @discord.ui.button(label="Click", custom_id=button_id)
        async def click(self, interaction: discord.Interaction[Any],
                        button: discord.ui.Button[Any]) -> None:
            await interaction.response.defer()

    return BenchPanel


def _routed(bot: Any) -> int:
    views = bot._connection._view_store._views
    return sum(1 for message_id in views if message_id is not None)


async def _watch(bot: Any, expected: int, t0: float, deadline: float) -> float | None:
    while time.perf_counter() < deadline:
        if _routed(bot) >= expected:
            return time.perf_counter() - t0
        await asyncio.sleep(0.002)
    return None


def _restore_kwargs(impl: str, mode: str) -> dict[str, Any]:
    """Our keyword arguments per mode (the peer has none of them).

    - ``latency``: the double has no global limit, so pacing is off (``rate_limit=None``):
      this mode measures the concurrent path itself;
    - ``ratelimit``: the defaults, i.e. ``verify="auto"`` (return within
      ``DEFAULT_VERIFY_BUDGET``, finish in the background) and the pacer at
      ``DEFAULT_RATE_LIMIT`` (45/s, under Discord's 50/s);
    - ``background``: ``verify="background"`` with the default pacer.
    """
    if impl != "ours":
        if mode == "background":
            raise RuntimeError("the background mode exists in ours only")
        return {}
    if mode == "latency":
        return {"rate_limit": None}
    if mode == "background":
        return {"verify": "background"}
    return {}


async def _complete(summary: Any, deadline: float) -> Any:
    """Wait for the background check's full result: ``summary.verification`` (ours)."""
    task = getattr(summary, "verification", None)
    if task is None:
        return None
    return await asyncio.wait_for(task, max(0.1, deadline - time.perf_counter()))


async def _run(args: Any) -> dict[str, Any]:
    import discord
    from discord.ext import commands

    from cascadeui import setup_persistence

    setup = args.setup
    discord.http.Route.BASE = setup["base_url"]
    panels = setup["panels"]
    key = f"{args.key_prefix}:restart:{args.impl}:{os.getpid()}"
    seed_backend = _backend(args.impl, args.backend, args.workdir, args.redis_url, key)
    seed = {"application": {}, "persistent_views": {
        p["state_key"]: {"class_name": "BenchPanel", "message_id": p["message_id"],
                         "channel_id": p["channel_id"], "guild_id": p["guild_id"],
                         "user_id": None} for p in panels}}
    if not await seed_backend.save_state(seed):
        raise RuntimeError("could not seed the backend")
    await _close_backend(seed_backend)
    _panel_class(args.impl, setup["button"])
    extra = _restore_kwargs(args.impl, args.mode)
    backend = _backend(args.impl, args.backend, args.workdir, args.redis_url, key)
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none(), help_command=None)
    out: dict[str, Any] = {"panels": len(panels), "mode": args.mode,
                           "kwargs": dict(extra)}
    deadline = time.perf_counter() + args.timeout_s
    holder: dict[str, Any] = {}

    async def hook() -> None:
        t0 = time.perf_counter()
        holder["t0"] = t0
        holder["watch"] = asyncio.get_running_loop().create_task(
            _watch(bot, len(panels), t0, deadline))
        summary = await setup_persistence(bot, backend=backend, **extra)
        out["returned_s"] = time.perf_counter() - t0
        holder["summary"] = summary
        out["returned_counts"] = {k: len(summary[k]) for k in
                                  ("restored", "skipped", "failed", "removed")}

    bot.setup_hook = hook  # type: ignore[method-assign]
    try:
        await bot.login("bench-token")
        routed = await holder["watch"]
        out["routed_s"] = routed
        if args.impl == "ours":
            full = await _complete(holder["summary"], deadline)
            out["complete_s"] = time.perf_counter() - holder["t0"]
            if isinstance(full, dict):
                out["complete_counts"] = {k: len(v) for k, v in full.items()
                                          if isinstance(v, list)}
        else:
            out["complete_s"] = out["returned_s"]
    finally:
        await bot.close()
        if args.impl == "ours":
            from cascadeui.store import get_store

            await get_store().close()
        else:
            await _close_backend(backend)
    return out


def run(args: Any) -> dict[str, Any]:
    args.timeout_s = getattr(args, "timeout_s", 1200.0)
    with open(args.api_setup) as fh:  # the double's setup file
        args.setup = json.load(fh)
    return asyncio.run(_run(args))
