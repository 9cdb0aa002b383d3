"""Issue 11's targets for durable dispatches, side by side with the raw media in one run.

For every (state size, backend, concurrent users) cell a fresh worker process
(``w_durable.py``) first times the medium's own small commit (a 4 KB append + fsync; a
one-row INSERT + COMMIT in WAL with ``synchronous=FULL``; one RPUSH), then has the users
make small changes, each awaited until durable, and reports the dispatch-to-durable
latency (p50/p99), the durable changes per second and the event loop's worst stall. The
summary compares each figure with its target::

    python -m bench.durable                 # 10KB,1MB,10MB x 1,10,100 users
    python -m bench.durable --smoke         # tiny: tests/campaigns/test_bench_smoke.py

Targets (issue 11): >= 20,000 durable changes/s with 100 users, at every size and backend;
p99 <= 10 ms with 100 users; with 1 user, p99 <= 3x the raw medium's small commit (its
median, in the same worker); worst loop stall <= 10 ms. A private redis-server on a free
loopback port is started and stopped here (``--redis-aof``: ``appendfsync always``).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import BACKENDS, size_bytes, write_json  # noqa: E402
from run import ROOT, Runner  # noqa: E402

#: Target figures of issue 11.
MIN_THROUGHPUT_100 = 20_000.0
MAX_P99_100_MS = 10.0
MAX_P99_1_OVER_RAW = 3.0
MAX_STALL_MS = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes and counts")
    p.add_argument("--sizes", default="10KB,1MB,10MB")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--users", default="1,10,100")
    p.add_argument("--actions", default="1=2000,10=10000,100=40000",
                   help="durable changes per cell, by number of users")
    p.add_argument("--reps", type=int, default=1, help="runs per cell")
    p.add_argument("--raw-reps", type=int, default=300, help="raw small commits per cell")
    p.add_argument("--api", choices=["auto", "durable", "flush"], default="auto",
                   help="auto: dispatch(durable=True) when the store has it, else "
                        "dispatch() + flush()")
    p.add_argument("--gc", default="default",
                   help="'default', 'freeze' or both ('default,freeze', run side by side): "
                        "freeze calls gc.freeze() once the state is loaded, as a bot can at "
                        "start, so the cyclic collector no longer scans the state")
    p.add_argument("--redis-url", default=None, help="a Redis to use instead of a private one")
    p.add_argument("--redis-aof", action="store_true",
                   help="the private redis-server runs with appendonly yes, appendfsync always")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.users, args.actions, args.raw_reps = "10KB", "1,10", "1=20,10=50", 10
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in args.sizes:
        size_bytes(s)  # raises on a bad size
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in args.backends if b not in BACKENDS]
    if bad:
        p.error(f"unknown backend(s) {bad}; choose from {list(BACKENDS)}")
    args.users = [int(u) for u in args.users.split(",") if u.strip()]
    args.gc = [g.strip() for g in args.gc.split(",") if g.strip()]
    if set(args.gc) - {"default", "freeze"}:
        p.error(f"--gc: choose from default, freeze (not {args.gc})")
    args.actions_map = {}
    for item in filter(None, args.actions.split(",")):
        users, _, n = item.partition("=")
        args.actions_map[int(users)] = int(n)
    return args


def _redis(args: argparse.Namespace) -> Any:
    """A context manager yielding the Redis URL (None: no server binary)."""
    import contextlib

    from common import private_redis

    if args.redis_url or not args.redis_aof:
        return private_redis(args.redis_url)

    @contextlib.contextmanager
    def aof() -> Any:
        from kit.redis_server import RedisServer, find_server_binary

        binary = find_server_binary()
        if binary is None:
            yield None
            return
        with RedisServer(binary, appendonly=True, fsync_always=True) as server:
            yield server.url
    return aof()


def verdicts(row: dict[str, Any]) -> list[str]:
    """The targets this cell misses (empty: all met)."""
    missed = []
    if row["users"] == 100:
        if row["durable_per_s"] < MIN_THROUGHPUT_100:
            missed.append("throughput")
        if row["p99_ms"] > MAX_P99_100_MS:
            missed.append("p99")
    if row["users"] == 1 and row["p99_over_raw"] > MAX_P99_1_OVER_RAW:
        missed.append("p99/raw")
    if row["stall_ms"] > MAX_STALL_MS:
        missed.append("stall")
    if row["failures"] or row["mismatches"]:
        missed.append("LOST/FAILED")
    return missed


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell: medians over its runs."""
    cells: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}
    for rec in records:
        if rec.get("ok"):
            p = rec["params"]
            gc_mode = "freeze" if p.get("gc_freeze") else "default"
            cells.setdefault((p["backend"], p["size"], p["users"], gc_mode), []).append(
                rec["result"])
    rows = []
    for (backend, size, users, gc_mode), res in cells.items():
        med = statistics.median
        row = {
            "backend": backend, "size": size, "users": users, "gc": gc_mode,
            "runs": len(res),
            "api": res[0]["api"], "changes": res[0]["changes"],
            "durable_per_s": med(r["durable_per_s"] for r in res),
            "cpu_us": med(r["cpu_us_per_change"] for r in res),
            "p50_ms": med(r["latency"]["p50_ms"] for r in res),
            "p99_ms": med(r["latency"]["p99_ms"] for r in res),
            "stall_ms": max(r["stall"]["worst_ms"] for r in res),
            "stall_cpu_ms": max(r["stall"]["worst_cpu_bound_ms"] for r in res),
            "gc_worst_ms": max(r["gc"]["worst_ms"] for r in res),
            "gc_gen2": sum(r["gc"]["gen2_runs"] for r in res),
            "changes_per_write": med(r["changes_per_write"] or 0 for r in res),
            "raw_what": res[0]["raw"]["what"],
            "raw_p50_ms": med(r["raw"]["p50_ms"] for r in res),
            "raw_p99_ms": med(r["raw"]["p99_ms"] for r in res),
            "failures": sum(r["failures"] for r in res),
            "mismatches": sum(not r["durable_equals_memory"] for r in res),
        }
        # Per run, then the median: the raw commit was timed in the same worker.
        row["p99_over_raw"] = med(r["latency"]["p99_ms"] / r["raw"]["p50_ms"] for r in res)
        row["p99_over_raw_p99"] = med(r["latency"]["p99_ms"] / r["raw"]["p99_ms"] for r in res)
        row["missed"] = verdicts(row)
        rows.append(row)
    order = {b: i for i, b in enumerate(BACKENDS)}
    rows.sort(key=lambda r: (order.get(r["backend"], 9), size_bytes(r["size"]), r["users"],
                             r["gc"]))
    return rows


def markdown(rows: list[dict[str, Any]], failures: list[str], command: str) -> str:
    lines = [f"Command: `{command}`", "",
             "| backend | size | users | GC | durable changes | changes/s | CPU us/change "
             "| p50 ms | p99 ms "
             "| worst stall ms (CPU-bound) | worst GC pause ms (gen-2 runs) | changes/write "
             "| raw commit p50 / p99 ms "
             "| p99 / raw p50 | lost | targets missed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['size']} | {r['users']} | {r['gc']} | {r['changes']:,} "
            f"| {r['durable_per_s']:,.0f} | {r['cpu_us']:.0f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} "
            f"| {r['stall_ms']:.1f} ({r['stall_cpu_ms']:.1f}) "
            f"| {r['gc_worst_ms']:.1f} ({r['gc_gen2']}) | {r['changes_per_write']:.1f} "
            f"| {r['raw_p50_ms']:.2f} / {r['raw_p99_ms']:.2f} | {r['p99_over_raw']:.1f}x "
            f"| {r['failures'] + r['mismatches']} | {', '.join(r['missed']) or '-'} |")
    lines.append("")
    lines.append("Raw small commits: " + "; ".join(
        sorted({f"{r['backend']}: {r['raw_what']}" for r in rows})) + ".")
    lines.append(f"API: {', '.join(sorted({r['api'] for r in rows}))}. Worst stall: the "
                 "1 ms ticker's worst lateness; in brackets the part the process's own CPU "
                 "time over that tick can explain (the rest is the machine running others). "
                 "CPU us/change: this process's CPU time (all threads) per durable change; "
                 "1,000,000 / it is what one free core allows. GC: the longest run of "
                 "Python's cyclic collector (it holds the GIL) and how many full (gen-2) "
                 "runs fell in the timed part.")
    if failures:
        lines += ["", "**Runs that failed**", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    command = "python -m bench.durable " + " ".join(
        sys.argv[1:] if argv is None else argv)
    out = (args.out or ROOT / "bench-results" / ("durable-" + time.strftime("%Y%m%d-%H%M%S"))
           ).resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    started = time.time()
    with _redis(args) as redis_url:
        runner = Runner(args, out, redis_url, None)
        for size in args.sizes:
            for backend in args.backends:
                if backend == "redis" and not redis_url:
                    print("no redis-server binary: the Redis backend is skipped", flush=True)
                    continue
                for users in args.users:
                    for _ in range(args.reps):
                        for gc_mode in args.gc:
                            runner.worker("ours", "durable", backend=backend, size=size,
                                          users=users,
                                          actions=args.actions_map.get(users, 1000),
                                          reps=args.raw_reps, api=args.api,
                                          gc_freeze=int(gc_mode == "freeze"))
    rows = summarize(runner.records)
    failures = [f"{r['params']}: {r.get('error')}" for r in runner.records if not r.get("ok")]
    report = markdown(rows, failures, command)
    write_json(out / "results.json", {"command": command, "started": started,
                                      "finished": time.time(), "rows": rows,
                                      "runs": runner.records})
    (out / "summary.md").write_text(report)
    print(report)
    print(f"results: {out}")
    lost = any(r["failures"] or r["mismatches"] for r in rows)
    return 1 if failures or lost else 0


if __name__ == "__main__":
    sys.exit(main())
