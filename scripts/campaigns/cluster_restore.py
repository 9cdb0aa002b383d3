"""Clustered restore: N bot processes, each an ``AutoShardedBot`` for its own shards,
restore from one shared backend at once against one local Discord API double.

The double runs in this process with Discord's global limit (50 requests per second by
default, shared by every cluster as it is by one bot token); each cluster is a real OS
process running a real ``discord.py`` bot whose ``setup_hook`` calls
``setup_persistence(bot, backend=...)`` with the defaults. The panels are spread over
guilds on every shard, with a few messages deleted beforehand. The script checks, and
prints as JSON:

- every cluster routes exactly the panels of its own shards;
- no message is fetched twice (each panel is checked by exactly one cluster);
- no registry entry is lost: afterwards the registry holds every panel but the deleted;
- how many HTTP 429 answers the double gave (the goal is 0), and how long it took.

Full size (about 4 minutes at 45 checks per second)::

    python -m campaigns.cluster_restore --panels 10000 --clusters 4

The suite runs it with a few dozen panels (``tests/panels/test_shards.py``). The last line is
``N clusters, P panels, F fetches, R duplicate fetches, L lost entries, Q HTTP 429``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kit.plant import planted
from kit.spawn import script_command, script_env

SHARDS_PER_CLUSTER = 2
GUILD_BASE = 4_000_000  # guild ids (GUILD_BASE * k + shard) << 22 | 7 live on `shard`
BUTTON = "cluster:click"


def _guild(shard: int, shard_count: int, k: int) -> int:
    return ((GUILD_BASE * shard_count * (k + 1) + shard) << 22) | 7


def _backend(spec: dict[str, Any]) -> Any:
    from cascadeui.persistence import RedisBackend, SQLiteBackend

    if spec["kind"] == "sqlite":
        return SQLiteBackend(spec["path"])
    return RedisBackend(spec["url"], key=spec["key"])


# -- one cluster (a child process) ----------------------------------------------------------

async def _cluster(spec: dict[str, Any]) -> dict[str, Any]:
    import discord
    from discord.ext import commands

    from cascadeui import PersistentView, setup_persistence
    from cascadeui.store import get_store

    class ClusterPanel(PersistentView):
        @discord.ui.button(label="Click", custom_id=BUTTON)
        async def click(self, interaction: discord.Interaction[Any],
                        button: discord.ui.Button[Any]) -> None:
            await interaction.response.defer()

    discord.http.Route.BASE = spec["base_url"]
    backend = _backend(spec["backend"])
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.none(),
                                  help_command=None, shard_ids=spec["shard_ids"],
                                  shard_count=spec["shard_count"])
    out: dict[str, Any] = {"shard_ids": spec["shard_ids"]}
    held: dict[str, Any] = {}

    async def hook() -> None:
        print("ready", flush=True)  # logged in: wait until every cluster is
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        t0 = time.perf_counter()
        summary = await setup_persistence(bot, backend=backend)
        out["returned_s"] = time.perf_counter() - t0
        out["returned"] = {k: len(v) for k, v in summary.items()}
        out["other_shards"] = len(summary.other_shards)
        held["summary"] = summary
        held["t0"] = t0

    bot.setup_hook = hook  # type: ignore[method-assign]
    try:
        await bot.login("cluster-token")
        summary = held["summary"]
        final = await summary.verification
        out["complete_s"] = time.perf_counter() - held["t0"]
        out["final"] = final
        out["routed"] = sorted(v.state_key for v in bot.persistent_views
                               if isinstance(v, PersistentView) and not v.is_finished())
    finally:
        await bot.close()
        await get_store().close()
        await backend.aclose()
    return out


# -- the orchestrator ------------------------------------------------------------------------

async def _seed(args: argparse.Namespace, double: Any, shard_count: int,
                ) -> tuple[dict[str, Any], dict[str, int], set[str]]:
    """Channels and messages on every shard; the registry; the panels whose message is gone."""
    row = {"type": 1, "components": [
        {"type": 2, "style": 1, "label": "Click", "custom_id": BUTTON}]}
    channels = []
    for i in range(args.channels):
        shard = i % shard_count
        guild = _guild(shard, shard_count, i // shard_count)
        channels.append((double.add_channel(guild_id=guild, name=f"c{i}"), guild))
    registry: dict[str, Any] = {}
    owner: dict[str, int] = {}
    gone: set[str] = set()
    for n in range(args.panels):
        cid, guild = channels[n % len(channels)]
        msg = double.add_message(cid, content=f"panel {n}", components=[row])
        key = f"panel-{n}"
        registry[key] = {"class_name": "ClusterPanel", "message_id": str(msg["id"]),
                         "channel_id": str(cid), "guild_id": str(guild), "user_id": None}
        owner[key] = (guild >> 22) % shard_count
        if args.deleted and n % args.deleted == 0:
            double.delete_message(int(msg["id"]))
            gone.add(key)
    return registry, owner, gone


async def _run(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    from cascadeui.testing.discord_double import DiscordDouble

    shard_count = args.clusters * SHARDS_PER_CLUSTER
    backend_spec: dict[str, Any] = (
        {"kind": "sqlite", "path": os.path.join(workdir, "cluster.db")}
        if args.backend == "sqlite" else
        {"kind": "redis", "url": args.redis_url, "key": f"cascadeui:cluster:{os.getpid()}"})
    async with DiscordDouble(latency=args.latency,
                             global_rate_limit=args.rate_limit or None) as double:
        registry, owner, gone = await _seed(args, double, shard_count)
        seed = _backend(backend_spec)
        if not await seed.save_state({"application": {}, "persistent_views": registry}):
            raise RuntimeError("could not seed the backend")
        await seed.aclose()
        procs = []
        env = script_env()
        for c in range(args.clusters):
            spec = {"base_url": double.base_url, "backend": backend_spec,
                    "shard_count": shard_count,
                    "shard_ids": list(range(c * SHARDS_PER_CLUSTER,
                                            (c + 1) * SHARDS_PER_CLUSTER))}
            path = Path(workdir, f"cluster-{c}.json")
            path.write_text(json.dumps(spec))  # noqa: ASYNC240 (a few bytes, before the run)
            procs.append(await asyncio.create_subprocess_exec(
                *script_command("campaigns.cluster_restore", "--worker", str(path)), env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))
        for proc in procs:  # every cluster logged in and waiting
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"a cluster did not start: {line!r}")
        await asyncio.sleep(1.1)  # the logins' requests leave the double's 1 s window
        before = double.total_requests
        t0 = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        results = []
        for proc in procs:
            stdout, _ = await asyncio.wait_for(proc.communicate(), args.timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"a cluster failed with exit code {proc.returncode}")
            results.append(json.loads(stdout.decode().strip().splitlines()[-1]))
        elapsed = time.perf_counter() - t0
        fetches = dict(double.message_fetches)
        requests = double.total_requests - before
        limited = double.rate_limited
        check = _backend(backend_spec)
        stored = (await check.load_state())["persistent_views"]
        await check.aclose()
    return _report(args, shard_count, registry, owner, gone, results, fetches, stored,
                   elapsed=elapsed, requests=requests, limited=limited)


def _report(args: argparse.Namespace, shard_count: int, registry: dict[str, Any],
            owner: dict[str, int], gone: set[str], results: list[dict[str, Any]],
            fetches: dict[int, int], stored: dict[str, Any], *, elapsed: float,
            requests: int, limited: int) -> dict[str, Any]:
    wrong_routing = 0
    for res in results:
        mine = {k for k, s in owner.items() if s in res["shard_ids"]}
        if set(res["routed"]) != mine - gone:
            wrong_routing += 1
    duplicates = sum(n - 1 for n in fetches.values() if n > 1)
    lost = sorted(set(registry) - gone - set(stored))
    lost += ["(planted)"] * planted("loss")
    not_purged = sorted(gone & set(stored))
    return {
        "clusters": args.clusters, "shard_count": shard_count, "panels": args.panels,
        "deleted": len(gone), "fetches": sum(fetches.values()), "duplicate_fetches": duplicates,
        "unfetched": len(registry) - len(fetches), "clusters_routing_wrong": wrong_routing,
        "lost_entries": lost, "not_purged": not_purged, "http_429": limited,
        "requests": requests, "elapsed_s": round(elapsed, 2),
        "returned_s": [round(r["returned_s"], 3) for r in results],
        "complete_s": [round(r["complete_s"], 2) for r in results],
        "per_cluster": [{k: len(v) for k, v in r["final"].items()} for r in results],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--panels", type=int, default=10_000)
    p.add_argument("--clusters", type=int, default=4)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--deleted", type=int, default=50, help="delete every Nth message (0: none)")
    p.add_argument("--latency", type=float, default=0.025)
    p.add_argument("--rate-limit", type=int, default=50, help="the double's global limit")
    p.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    p.add_argument("--redis-url", default="")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        print(json.dumps(asyncio.run(_cluster(spec))))
        return 0
    if args.backend == "redis" and not args.redis_url:
        p.error("--backend redis needs --redis-url")
    with tempfile.TemporaryDirectory(prefix="cascadeui-cluster-") as workdir:
        report = asyncio.run(_run(args, workdir))
    print(json.dumps(report, indent=2))
    print(f"{report['clusters']} clusters, {report['panels']} panels, {report['fetches']} "
          f"fetches, {report['duplicate_fetches']} duplicate fetches, "
          f"{len(report['lost_entries'])} lost entries, {report['http_429']} HTTP 429")
    ok = (not report["duplicate_fetches"] and not report["lost_entries"]
          and not report["clusters_routing_wrong"] and not report["not_purged"]
          and not report["unfetched"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
