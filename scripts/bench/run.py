"""The benchmark suite: this project against pycascadeui 2.1.0 and the raw limits.

Run it with our venv's Python::

    python -m bench.run --sizes 10KB,1MB --reps 3
    python -m bench.run --smoke          # tiny sizes: the scripts work

Every measurement is one worker process (``worker.py``) per (implementation, workload,
size, backend), ours with this venv's Python and the peer with ``.venv-peer``'s (made by
``peer.py`` from PyPI). A/B pairs alternate their order; the summary gives medians,
min/max and the median of the per-pair ratios. Results go to ``<out>/results.json``,
``<out>/summary.md`` and, with matplotlib from a bench-only venv, ``<out>/chart.png``.
A private redis-server on a free loopback port is started and stopped by this script.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer as peer_env  # noqa: E402
from common import BACKENDS, private_redis, size_bytes, write_json  # noqa: E402

ROOT = HERE.parents[1]
OURS_PYTHON = Path(sys.executable)
ALL_WORKLOADS = ("raw", "dispatch", "mp", "restart")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and counts, one rep: checks that the scripts work")
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    p.add_argument("--sizes", default="10KB,1MB")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--reps", type=int, default=3, help="A/B pairs per configuration")
    p.add_argument("--actions", type=int, default=1000)
    p.add_argument("--peer-actions", default="10MB=200",
                   help="per-size action counts for the peer, e.g. 1MB=500,10MB=50")
    p.add_argument("--no-peer", action="store_true", help="measure ours and raw only")
    p.add_argument("--peer-venv", type=Path, default=peer_env.DEFAULT_VENV)
    p.add_argument("--raw-reps", type=int, default=10)
    p.add_argument("--panels", default="100,1000,10000")
    p.add_argument("--channels", type=int, default=50)
    p.add_argument("--restart-modes", default="latency,ratelimit,background")
    p.add_argument("--restart-backend", default="sqlite")
    p.add_argument("--peer-max-panels", type=int, default=1000,
                   help="skip peer restarts above this (it makes 2 serial requests/panel)")
    p.add_argument("--latency", type=float, default=0.025)
    p.add_argument("--rate-limit", type=int, default=50)
    p.add_argument("--procs", default="1,2,4,8")
    p.add_argument("--per-proc", type=int, default=200)
    p.add_argument("--redis-url", default=os.environ.get("CASCADEUI_BENCH_REDIS_URL"))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--chart", choices=["auto", "yes", "no"], default="auto",
                   help="auto: draw when matplotlib's bench venv exists or can be made")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
    p.add_argument("--jobs", type=int, default=None,
                   help="workers run at once (default 1; 3 with --smoke). Timings are only "
                        "meaningful with 1")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.reps, args.actions, args.raw_reps = "2KB", 1, 10, 2
        args.panels, args.channels, args.procs, args.per_proc = "10", 5, "2", 5
        args.restart_modes = "ratelimit"
        args.jobs = 3 if args.jobs is None else args.jobs
        args.rate_limit = max(args.rate_limit, 1000)
        args.timeout = min(args.timeout, 120)
        if args.chart == "auto":
            args.chart = "no"
    args.jobs = args.jobs or 1
    args.workloads = _csv(args.workloads, ALL_WORKLOADS)
    args.backends = _csv(args.backends, BACKENDS)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in args.sizes:
        size_bytes(s)  # raises on a bad size
    args.panels = [int(n) for n in args.panels.split(",") if n.strip()]
    args.procs = [int(n) for n in args.procs.split(",") if n.strip()]
    args.restart_modes = _csv(args.restart_modes, ("latency", "ratelimit", "background"))
    args.peer_actions_map = {}
    for item in filter(None, args.peer_actions.split(",")):
        size, _, n = item.partition("=")
        args.peer_actions_map[size.strip()] = int(n)
    if args.reps < 1:
        p.error("--reps must be >= 1")
    return args


def _csv(text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"unknown value(s) {bad}; choose from {list(allowed)}")
    return items


# -- running workers ---------------------------------------------------------------------


class Runner:
    def __init__(self, args: argparse.Namespace, out: Path, redis_url: str | None,
                 peer_python: Path | None) -> None:
        self.args = args
        self.out = out
        self.redis_url = redis_url
        self.pythons = {"ours": OURS_PYTHON, "raw": OURS_PYTHON, "peer": peer_python}
        self.records: list[dict[str, Any]] = []
        self.count = 0
        self._lock = threading.Lock()

    def worker(self, impl: str, workload: str, **params: Any) -> dict[str, Any]:
        python = self.pythons[impl]
        if python is None:
            raise RuntimeError(f"no interpreter for {impl}")
        with self._lock:
            self.count += 1
            number = self.count
        tag = f"{number:03d}-{workload}-{impl}-" + "-".join(
            f"{v}" for v in params.values() if not isinstance(v, Path))
        workdir = Path(tempfile.mkdtemp(prefix="cascadeui-bench-"))
        result_path = self.out / "runs" / f"{tag}.json"
        log_path = self.out / "logs" / f"{tag}.log"
        cmd = [str(python), str(HERE / "worker.py"), "--workload", workload, "--impl", impl,
               "--workdir", str(workdir), "--out", str(result_path),
               "--key-prefix", f"cascadeui-bench:{os.getpid()}:{number}"]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        for name, value in params.items():
            cmd += [f"--{name.replace('_', '-')}", str(value)]
        t0 = time.monotonic()
        label = f"  [{number}] {workload} {impl} " + " ".join(
            f"{k}={v}" for k, v in params.items() if k != "api_setup")
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=self.args.timeout,
                                      check=False)
            if result_path.exists():
                record = json.loads(result_path.read_text())
            else:
                record = {"ok": False, "error": f"worker exited {proc.returncode} "
                                                f"without a result (see {log_path})"}
        except subprocess.TimeoutExpired:
            record = {"ok": False, "error": f"timed out after {self.args.timeout:g}s"}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        record.update({"workload": workload, "impl": impl, "params": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()
            if k != "api_setup"}})
        record.setdefault("result", None)
        self.records.append(record)
        status = "ok" if record.get("ok") else f"FAILED: {record.get('error')}"
        print(f"{label} ({time.monotonic() - t0:.1f}s) {status}", flush=True)
        return record

    @contextlib.contextmanager
    def double(self, panels: int, rate_limit: int) -> Iterator[dict[str, Any]]:
        """The API double in its own process (our venv), seeded with ``panels`` messages."""
        tmp = Path(tempfile.mkdtemp(prefix="cascadeui-bench-double-"))
        setup, stats = tmp / "setup.json", tmp / "stats.json"
        proc = subprocess.Popen(
            [str(OURS_PYTHON), str(HERE / "double_server.py"), "--latency",
             str(self.args.latency), "--rate-limit", str(rate_limit), "--panels", str(panels),
             "--channels", str(self.args.channels), "--setup", str(setup), "--stats",
             str(stats), "--max-seconds", str(self.args.timeout + 60)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        info: dict[str, Any] = {"setup": setup}
        try:
            deadline = time.monotonic() + 120
            while not setup.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"the API double did not start: {err[-2000:]}")
                time.sleep(0.05)
            yield info
        finally:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if stats.exists():
                info["stats"] = json.loads(stats.read_text())
            if proc.stderr:
                proc.stderr.close()
            shutil.rmtree(tmp, ignore_errors=True)


def pair_orders(reps: int, impls: list[str]) -> Iterator[list[str]]:
    """A/B alternation: ours first on even reps, the other first on odd ones."""
    for rep in range(reps):
        yield list(impls) if rep % 2 == 0 else list(reversed(impls))


# -- the plan ----------------------------------------------------------------------------


Step = Callable[[], Any]


def run_raw(r: Runner) -> list[Step]:
    return [functools.partial(r.worker, "raw", "raw", size=size, reps=r.args.raw_reps)
            for size in r.args.sizes]


def run_dispatch(r: Runner, impls: list[str]) -> list[Step]:
    a = r.args
    steps: list[Step] = []
    for size in a.sizes:
        for backend in a.backends:
            if backend == "redis" and not r.redis_url:
                continue
            for order in pair_orders(a.reps, impls):
                for impl in order:
                    n = a.actions
                    if impl == "peer":
                        n = a.peer_actions_map.get(size, n)
                    steps.append(functools.partial(
                        r.worker, impl, "dispatch", backend=backend, size=size, actions=n))
    return steps


def run_mp(r: Runner) -> list[Step]:
    a = r.args
    steps: list[Step] = []
    for backend in a.backends:
        if backend == "redis" and not r.redis_url:
            continue
        for procs in a.procs:
            for order in pair_orders(a.reps, ["ours", "raw"]):
                for impl in order:
                    steps.append(functools.partial(
                        r.worker, impl, "mp", backend=backend, procs=procs,
                        per_proc=a.per_proc))
    return steps


def _restart_once(r: Runner, impl: str, mode: str, panels: int, limit: int) -> None:
    with r.double(panels, limit) as info:
        rec = r.worker(impl, "restart", backend=r.args.restart_backend, mode=mode,
                       panels=panels, api_setup=info["setup"])
    stats = info.get("stats") or {}
    if rec.get("result") is not None:
        rec["result"]["requests"] = stats.get("total", 0) - 2
        rec["result"]["rate_limited"] = stats.get("rate_limited", 0)
        rec["result"]["requests_by_route"] = stats.get("requests", {})
        rec["result"]["rate_limit"] = limit or None


def run_restart(r: Runner, impls: list[str]) -> list[Step]:
    a = r.args
    steps: list[Step] = []
    for mode in a.restart_modes:
        limit = a.rate_limit if mode in ("ratelimit", "background") else 0
        for panels in a.panels:
            for order in pair_orders(a.reps, impls):
                for impl in order:
                    if impl == "peer" and (mode == "background" or panels > a.peer_max_panels):
                        continue
                    steps.append(functools.partial(_restart_once, r, impl, mode, panels,
                                                   limit))
    return steps


# -- summary -----------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def _group(records: list[dict[str, Any]], workload: str) -> dict[tuple[Any, ...], list[Any]]:
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for rec in records:
        if rec["workload"] != workload:
            continue
        p = rec["params"]
        key = (rec["impl"], p.get("backend"), p.get("size"), p.get("procs"), p.get("mode"),
               p.get("panels"))
        groups.setdefault(key, []).append(rec)
    return groups


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"dispatch": [], "mp": [], "restart": [], "raw": [],
                               "failures": []}
    for rec in records:
        if not rec.get("ok"):
            summary["failures"].append({"workload": rec["workload"], "impl": rec["impl"],
                                        "params": rec["params"], "error": rec.get("error")})
    for key, recs in sorted(_group(records, "dispatch").items(), key=str):
        res = [x["result"] for x in recs if x.get("ok")]
        if not res:
            continue
        summary["dispatch"].append({
            "impl": key[0], "backend": key[1], "size": key[2], "runs": len(res),
            "actions": res[0]["actions"],
            "us_per_action": _stats([x["us_per_action"] for x in res]),
            "actions_per_s": _stats([x["actions_per_s"] for x in res]),
            "worst_stall_ms": _stats([x["lateness"]["worst_ms"] for x in res]),
            "p99_stall_ms": _stats([x["lateness"]["p99_ms"] for x in res]),
            "saves": _stats([x["saves"] or x.get("adapter_writes", 0) for x in res]),
            "failed_saves": sum(x["failed_saves"] for x in res),
            "mismatches": sum(1 for x in res if not x["durable_equals_memory"]),
            "peak_over_state": _stats([x["peak_over_state"] for x in res]),
            "state_mb": statistics.median(x["state_rss"] for x in res) / 1e6,
        })
    summary["dispatch_ratios"] = _pair_ratios(records)
    for key, recs in sorted(_group(records, "mp").items(), key=str):
        res = [x["result"] for x in recs if x.get("ok")]
        if res:
            summary["mp"].append({
                "impl": key[0], "backend": key[1], "procs": key[3],
                "tx_per_s": _stats([x["tx_per_s"] for x in res]),
                "lost_updates": sum(x["lost_updates"] for x in res)})
    for key, recs in sorted(_group(records, "restart").items(), key=str):
        res = [x["result"] for x in recs if x.get("ok")]
        if res:
            summary["restart"].append({
                "impl": key[0], "mode": key[4], "panels": key[5],
                "returned_s": _stats([x.get("returned_s") for x in res]),
                "routed_s": _stats([x.get("routed_s") for x in res]),
                "complete_s": _stats([x.get("complete_s") for x in res]),
                "requests": _stats([x.get("requests") for x in res]),
                "rate_limited": _stats([x.get("rate_limited") for x in res]),
                "counts": res[-1].get("returned_counts")})
    for rec in records:
        if rec["workload"] == "raw" and rec.get("ok"):
            summary["raw"].append({"size": rec["params"]["size"], **rec["result"]})
    return summary


def _pair_ratios(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (size, backend): consecutive ours/peer runs form pairs; ratio = peer / ours."""
    by_cfg: dict[tuple[str, str], dict[str, list[float]]] = {}
    for rec in records:
        if rec["workload"] != "dispatch" or not rec.get("ok"):
            continue
        cfg = (rec["params"]["size"], rec["params"]["backend"])
        by_cfg.setdefault(cfg, {}).setdefault(rec["impl"], []).append(
            rec["result"]["us_per_action"])
    out = []
    for (size, backend), impls in sorted(by_cfg.items()):
        ours, peer = impls.get("ours", []), impls.get("peer", [])
        ratios = [p / o for o, p in zip(ours, peer, strict=False) if o > 0]
        if ratios:
            out.append({"size": size, "backend": backend, "pairs": len(ratios),
                        "speedup": _stats(ratios)})
    return out


def _fmt(stat: dict[str, float] | None, unit: str = "", digits: int = 1) -> str:
    if not stat:
        return "n/a"
    med, lo, hi = stat["median"], stat["min"], stat["max"]
    if stat["n"] == 1:
        return f"{med:,.{digits}f}{unit}"
    return f"{med:,.{digits}f}{unit} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def markdown(summary: dict[str, Any], command: str) -> str:
    lines = [f"Command: `{command}`", ""]
    if summary["dispatch"]:
        lines += ["**Workloads 1, 2, 5: dispatch until durable** (median (min-max) over runs)",
                  "",
                  "| impl | backend | size | actions | us/action | actions/s | worst stall ms "
                  "| p99 stall ms | saves | failed saves | durable != memory | peak RSS / state |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for d in summary["dispatch"]:
            peak = _fmt(d["peak_over_state"], "x", 2) if d["state_mb"] >= 1 else "n/a"
            lines.append(
                f"| {d['impl']} | {d['backend']} | {d['size']} | {d['actions']} "
                f"| {_fmt(d['us_per_action'], '', 0)} | {_fmt(d['actions_per_s'], '', 1)} "
                f"| {_fmt(d['worst_stall_ms'])} | {_fmt(d['p99_stall_ms'])} "
                f"| {_fmt(d['saves'], '', 0)} | {d['failed_saves']} "
                f"| {d['mismatches']}/{d['runs']} | {peak} |")
        lines.append("")
    if summary["dispatch_ratios"]:
        lines += ["**Per-pair speed-up (peer us/action / ours us/action)**", "",
                  "| size | backend | pairs | speed-up |", "|---|---|---|---|"]
        for r in summary["dispatch_ratios"]:
            lines.append(f"| {r['size']} | {r['backend']} | {r['pairs']} "
                         f"| {_fmt(r['speedup'], 'x', 1)} |")
        lines.append("")
    if summary["raw"]:
        lines += ["**Workload 6: raw limits** (median ms per operation)", "",
                  "| size | doc bytes | json dumps | json dump+write+fsync+replace "
                  "| write+fsync+replace only | sqlite3 upsert+commit | redis SET | 4 KB fsync |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in summary["raw"]:
            redis_ms = f"{r['redis_set']['median_ms']:.2f}" if "redis_set" in r else "n/a"
            lines.append(
                f"| {r['size']} | {r['doc_bytes']:,} | {r['json_dumps_ms']:.2f} "
                f"| {r['json_replace']['median_ms']:.2f} "
                f"| {r['json_write_only']['median_ms']:.2f} "
                f"| {r['sqlite_upsert']['median_ms']:.2f} | {redis_ms} "
                f"| {r['fsync_4k']['median_ms']:.2f} |")
        lines.append("")
    if summary["mp"]:
        lines += ["**Workload 4: read-modify-write increments across processes** "
                  "(committed/s)", "",
                  "| backend | procs | raw primitive | ours (adapter transaction()) "
                  "| ours / raw | lost updates |", "|---|---|---|---|---|---|"]
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for m in summary["mp"]:
            rows.setdefault((m["backend"], m["procs"]), {})[m["impl"]] = m
        for (backend, procs), row in sorted(rows.items()):
            raw, ours = row.get("raw"), row.get("ours")
            ratio = (f"{ours['tx_per_s']['median'] / raw['tx_per_s']['median']:.0%}"
                     if raw and ours else "n/a")
            lost = sum(x["lost_updates"] for x in row.values())
            lines.append(f"| {backend} | {procs} "
                         f"| {_fmt(raw['tx_per_s'] if raw else None, '', 0)} "
                         f"| {_fmt(ours['tx_per_s'] if ours else None, '', 0)} "
                         f"| {ratio} | {lost} |")
        lines.append("")
    if summary["restart"]:
        lines += ["**Workload 3: restart against the API double**", "",
                  "| impl | mode | panels | call returns s | all panels route s "
                  "| full result s | requests | 429s | restored/failed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in summary["restart"]:
            c = r.get("counts") or {}
            lines.append(
                f"| {r['impl']} | {r['mode']} | {r['panels']:,} "
                f"| {_fmt(r['returned_s'], '', 2)} | {_fmt(r['routed_s'], '', 2)} "
                f"| {_fmt(r['complete_s'], '', 2)} | {_fmt(r['requests'], '', 0)} "
                f"| {_fmt(r['rate_limited'], '', 0)} "
                f"| {c.get('restored', '?')}/{c.get('failed', '?')} |")
        lines.append("")
    if summary["failures"]:
        lines += ["**Runs that failed**", ""]
        for f in summary["failures"]:
            lines.append(f"- {f['workload']} {f['impl']} {f['params']}: {f['error']}")
        lines.append("")
    return "\n".join(lines)


def draw_chart(r: Runner, summary: dict[str, Any], path: Path) -> str | None:
    mode = r.args.chart
    if mode == "no" or not summary["dispatch"]:
        return None
    py = peer_env.venv_python(peer_env.CHART_VENV)
    try:
        if mode == "yes" or not py.exists():
            py = peer_env.ensure_chart_python()
    except (subprocess.SubprocessError, OSError) as exc:
        return f"no chart: {exc}"
    data = path.with_suffix(".data.json")
    write_json(data, summary["dispatch"])
    proc = subprocess.run([str(py), str(HERE / "chart.py"), str(data), str(path)],
                          capture_output=True, text=True, timeout=300, check=False)
    data.unlink(missing_ok=True)
    return None if proc.returncode == 0 else f"chart failed: {proc.stderr[-1000:]}"


def main(argv: list[str] | None = None) -> int:
    # SIGTERM unwinds like Ctrl-C, so the private redis-server and the double are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    command = "python -m bench.run " + " ".join(
        sys.argv[1:] if argv is None else argv)
    impls = ["ours"] if args.no_peer else ["ours", "peer"]
    print(f"plan: workloads={args.workloads} sizes={args.sizes} backends={args.backends} "
          f"reps={args.reps} impls={impls}", flush=True)
    if args.dry_run:
        return 0
    out = (args.out or ROOT / "bench-results" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    peer_python = None
    if not args.no_peer and ({"dispatch", "restart"} & set(args.workloads)):
        t0 = time.monotonic()
        peer_python = peer_env.ensure_peer(args.peer_venv)
        print(f"peer: {peer_python} ready in {time.monotonic() - t0:.1f}s", flush=True)
    started = time.time()
    with private_redis(args.redis_url) as redis_url:
        if redis_url is None:
            print("no redis-server binary: the Redis backend is skipped", flush=True)
        r = Runner(args, out, redis_url, peer_python)
        steps: list[Step] = []
        if "raw" in args.workloads:
            steps += run_raw(r)
        if "dispatch" in args.workloads:
            steps += run_dispatch(r, impls)
        if "mp" in args.workloads:
            steps += run_mp(r)
        if "restart" in args.workloads:
            steps += run_restart(r, impls)
        if args.jobs > 1:
            # Only for --smoke-style checks: parallel runs disturb each other's timings.
            with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
                for future in [pool.submit(step) for step in steps]:
                    future.result()
        else:
            for step in steps:
                step()
    summary = summarize(r.records)
    report = markdown(summary, command)
    chart_note = draw_chart(r, summary, out / "chart.png")
    if chart_note:
        report += f"\n{chart_note}\n"
    write_json(out / "results.json", {
        "command": command, "started": started, "finished": time.time(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "summary": summary, "runs": r.records})
    (out / "summary.md").write_text(report)
    print(report)
    print(f"results: {out}")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
