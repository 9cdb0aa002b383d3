"""Bot "hosts" in network namespaces, sharing one state across real network links.

Each host is a Linux network namespace (``ip netns``) joined to this one by a veth pair;
its bot process reaches the servers (a private Redis, a scratch PostgreSQL database, both
on this namespace's loopback) through a :class:`~kit.tcp_proxy.TcpProxy`
listening on this side of its veth. Every host runs a real ``StateStore`` with users that
make durable changes (``dispatch(..., durable=True)``) at a steady rate, plus non-durable
ones, each logged with its outcome.

``--mode partition`` (default): after a warm-up, host 1's veth is set down for
``--partition`` seconds while every host keeps changing state, then set up again; at the
heal the users stop, and the script checks that

- no acknowledged durable change is lost (the backend is read directly at the end);
- durable dispatches on the cut-off host failed visibly (``DurabilityTimeoutError``)
  within their timeout;
- every non-durable change was kept and written after the heal;
- every host converged to the stored state, and how long after the heal.

``--mode latency``: no partition; host 1's proxy adds ``--latency`` seconds each way and
drops its connections every ``--drop-every`` seconds; durable latency per host and the
convergence are reported. Needs root (namespaces); everything it creates is removed.

Full size::

    sudo python -m campaigns.partition --hosts 3 --partition 30 --backends redis,postgres
    sudo python -m campaigns.partition --mode latency --latency 0.05 --drop-every 2

The suite runs both modes small (``tests/campaigns/test_partitions.py``). The last line is
``H hosts, B backends: A acknowledged, L lost, F failed visibly, N non-durable kept, M
missing, converged in C s, U failed unexpectedly``. Exit status 1 on loss, a
change never converged, or a durable call failing visibly where it should not (see
``_unexpected``: on the disturbed host, one that neither waited through the disturbance
nor started before that host's first write after the heal; on another host, any, but on
PostgreSQL in partition mode one waiting while the cut host could hold the table lock).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from kit.plant import planted
from kit.spawn import script_command, script_env

DEFAULT_PG = os.environ.get("CASCADEUI_TEST_POSTGRES_URL",
                            "postgresql://postgres@127.0.0.1:5432/postgres")
#: Seconds the stores give up on a request nobody answers (PostgreSQL's ``connect_timeout``
#: as ``tcp_user_timeout``, Redis's ``socket_timeout``: both 5 s by default).
GIVE_UP_S = 5.0


# -- the bot on one host (a child process inside a namespace) -------------------------------

async def _host(spec: dict[str, Any]) -> None:
    from cascadeui.actions import APPLICATION_SET
    from cascadeui.errors import DurabilityTimeoutError
    from cascadeui.persistence import backend_from_url
    from cascadeui.store import StateStore

    host = spec["host"]
    log = open(spec["log"], "a", buffering=1)  # noqa: SIM115, ASYNC230 (once, before the run)

    def emit(**rec: Any) -> None:
        log.write(json.dumps(rec) + "\n")

    store = StateStore()
    await store.enable_persistence(backend_from_url(spec["url"]), retry_initial=0.05,
                                   retry_max=spec["retry_max"], poll_interval=0.25,
                                   durable_timeout=spec["durable_timeout"])
    stop = asyncio.Event()
    emit(kind="ready", t=time.monotonic())

    async def user(u: int) -> None:
        i = 0
        while not stop.is_set():
            key, t0 = f"d{u}-{i}", time.monotonic()
            try:
                await store.dispatch(APPLICATION_SET, {"path": [host, key], "value": i},
                                     durable=True)
                emit(kind="ack", key=key, value=i, t=t0, dt=time.monotonic() - t0)
            except DurabilityTimeoutError:
                emit(kind="fail", key=key, t=t0, dt=time.monotonic() - t0)
            i += 1
            await asyncio.sleep(spec["interval"])

    async def casual() -> None:
        j = 0
        while not stop.is_set():
            await store.dispatch(APPLICATION_SET, {"path": [host, f"n{j}"], "value": j})
            emit(kind="sent", key=f"n{j}", value=j, t=time.monotonic())
            j += 1
            await asyncio.sleep(0.1)

    async def digests() -> None:
        last = None
        while True:
            digest = _digest(store.state["application"])
            if digest != last:
                emit(kind="digest", d=digest, t=time.monotonic())
                last = digest
            await asyncio.sleep(0.02)

    loop = asyncio.get_running_loop()
    tasks = [asyncio.ensure_future(user(u)) for u in range(spec["users"])]
    tasks.append(asyncio.ensure_future(casual()))
    watcher = asyncio.ensure_future(digests())
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "stop":
            stop.set()
            await asyncio.gather(*tasks)
            emit(kind="stopped", t=time.monotonic())
        elif line.strip() == "exit":
            break
    stop.set()
    await asyncio.gather(*tasks)
    watcher.cancel()
    flushed = await store.flush()
    # The final state itself: when a host did not converge, the report names what differs.
    emit(kind="closed", flushed=flushed, t=time.monotonic(), app=store.state["application"])
    await store.close(close_backend=True)
    log.close()


def _digest(app: Any) -> str:
    return hashlib.sha1(json.dumps(app, sort_keys=True, default=str).encode()).hexdigest()


# -- namespaces ------------------------------------------------------------------------------

def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


class Hosts:
    """``n`` namespaces, host k at 10.<net>.k.2 behind a veth whose near end is 10.<net>.k.1."""

    def __init__(self, n: int) -> None:
        tag = os.getpid() % 10_000
        self.net, self._claim = _claim_net()
        self.names = [f"cui{tag}h{k}" for k in range(1, n + 1)]
        self.veths = [f"cui{tag}v{k}" for k in range(1, n + 1)]

    def near(self, k: int) -> str:
        return f"10.{self.net}.{k}.1"

    def up(self) -> None:
        for k, (ns, veth) in enumerate(zip(self.names, self.veths, strict=True), start=1):
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            _ip("link", "set", f"{veth}p", "netns", ns)
            _ip("addr", "add", f"{self.near(k)}/24", "dev", veth)
            _ip("link", "set", veth, "up")
            _ip("addr", "add", f"10.{self.net}.{k}.2/24", "dev", f"{veth}p", ns=ns)
            _ip("link", "set", f"{veth}p", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)

    def cut(self, k: int) -> None:
        _ip("link", "set", self.veths[k - 1], "down")

    def heal(self, k: int) -> None:
        _ip("link", "set", self.veths[k - 1], "up")

    def down(self) -> None:
        for ns, veth in zip(self.names, self.veths, strict=True):
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("netns", "del", ns)  # takes the veth pair with it
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("link", "del", veth)
        self._claim.close()  # the network is free for another run


def _claim_net() -> tuple[int, IO[str]]:
    """A network 10.N.0.0/16 (N in 200-249) that no other run on this machine uses, and
    the lock file that claims it until closed (or this process dies).

    Two runs on one network (two campaigns at once, as parallel test sessions start them)
    gave two routes to 10.N.k.0/24: one host's connections went out the other run's link
    and timed out. N already on a link (a run killed before its clean-up) is skipped.
    """
    used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                          check=True, timeout=20).stdout
    for i in range(50):
        net = 200 + (os.getpid() + i) % 50
        if f" 10.{net}." in used:
            continue
        claim = open(Path(tempfile.gettempdir()) / f"cascadeui-partition-net-{net}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            claim.close()
            continue
        return net, claim
    raise RuntimeError("every network 10.200-249.0.0/16 is in use by another run")


@contextlib.contextmanager
def _hosts(n: int) -> Iterator[Hosts]:
    hosts = Hosts(n)
    try:
        hosts.up()
        yield hosts
    finally:
        hosts.down()


# -- the orchestrator ------------------------------------------------------------------------

@contextlib.contextmanager
def _server(kind: str, redis_url: str | None) -> Iterator[tuple[str, int, str]]:
    """(host, port, URL template with {host} and {port}) of a fresh state on ``kind``."""
    if kind == "redis":
        if redis_url:
            port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
            yield "127.0.0.1", port, f"redis://{{host}}:{{port}}/0?key=cui:part:{os.getpid()}"
            return
        from kit.redis_server import RedisServer

        with RedisServer() as server:
            yield "127.0.0.1", server.port, "redis://{host}:{port}/0?key=cui:part"
        return
    from urllib.parse import urlsplit

    from kit.postgres_server import scratch_database

    with scratch_database(DEFAULT_PG, prefix="cascadeui_part_") as url:
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        yield (parts.hostname or "127.0.0.1", parts.port or 5432,
               f"postgresql://{user}{{host}}:{{port}}{parts.path}?table=cascadeui_state")


def _run_backend(args: argparse.Namespace, kind: str, hosts: Hosts,
                 workdir: Path) -> dict[str, Any]:
    from kit.tcp_proxy import TcpProxy

    from cascadeui.persistence import backend_from_url

    with _server(kind, args.redis_url) as (shost, sport, template), \
            contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(TcpProxy((shost, sport), listen_host=hosts.near(k)))
                   for k in range(1, len(hosts.names) + 1)]
        procs, logs = [], []
        for k, (ns, proxy) in enumerate(zip(hosts.names, proxies, strict=True), start=1):
            log = workdir / f"{kind}-h{k}.jsonl"
            spec = {"host": f"h{k}", "log": str(log), "users": args.users,
                    "interval": 1.0 / args.rate, "durable_timeout": args.durable_timeout,
                    "retry_max": args.retry_max,
                    "url": template.format(host=hosts.near(k), port=proxy.port)}
            spec_path = workdir / f"{kind}-h{k}.json"
            spec_path.write_text(json.dumps(spec))
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns,
                 *script_command("campaigns.partition", "--host", str(spec_path))],
                stdin=subprocess.PIPE, text=True, env=script_env()))
            logs.append(log)
        try:
            _wait_ready(logs, procs, 60)
            time.sleep(args.warmup)
            t_event, t_heal = _disturb(args, hosts, proxies)
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            _settle(args, logs, lambda: asyncio.run(_load(backend_from_url(
                template.format(host=shost, port=sport)))))
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("exit\n")
                proc.stdin.flush()
            for proc in procs:
                proc.wait(120)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        reader = backend_from_url(template.format(host=shost, port=sport))
        final = asyncio.run(_load(reader))
    return _analyse(args, kind, [_read(log) for log in logs], final, t_event, t_heal)


def _disturb(args: argparse.Namespace, hosts: Hosts, proxies: list[Any]) -> tuple[float, float]:
    """Cut (partition mode) or slow down (latency mode) host 1; (start, end) monotonic."""
    t0 = time.monotonic()
    if args.mode == "partition":
        hosts.cut(1)
        time.sleep(args.partition)
        hosts.heal(1)
        return t0, time.monotonic()
    proxies[0].latency = args.latency
    deadline = t0 + args.duration
    next_drop = t0 + args.drop_every
    while (now := time.monotonic()) < deadline:
        time.sleep(max(0.0, min(next_drop, deadline) - now))
        if time.monotonic() >= next_drop:
            proxies[0].drop_connections()
            next_drop += args.drop_every
    proxies[0].latency = 0.0
    return t0, time.monotonic()


def _settle(args: argparse.Namespace, logs: list[Path],
            stored: Callable[[], dict[str, Any]]) -> None:
    """Wait ``--settle`` s, then (``--settle-max`` s in all) until every host's last state
    is the stored one: on a loaded machine a healed host can take longer to catch up, and
    stopping it earlier would report a convergence that was only not waited for."""
    time.sleep(args.settle)
    deadline = time.monotonic() + max(0.0, args.settle_max - args.settle)
    while time.monotonic() < deadline:
        final = _digest(stored())
        try:
            lasts = [[r["d"] for r in _read(log) if r["kind"] == "digest"] for log in logs]
        except json.JSONDecodeError:  # a line being written
            lasts = []
        if lasts and all(d and d[-1] == final for d in lasts):
            return
        time.sleep(0.5)


async def _load(backend: Any) -> dict[str, Any]:
    try:
        state = await backend.load_state()
    finally:
        await backend.aclose()
    return dict(state.get("application", {}))


def _wait_ready(logs: list[Path], procs: list[subprocess.Popen[str]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(log.exists() and '"ready"' in log.read_text() for log in logs):
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a host process exited before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError("the hosts did not start")
        time.sleep(0.1)


def _read(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def _analyse(args: argparse.Namespace, kind: str, records: list[list[dict[str, Any]]],
             final: dict[str, Any], t_event: float, t_heal: float) -> dict[str, Any]:
    acked = lost = kept = missing = 0
    lost_keys: list[str] = []
    fails: list[dict[str, Any]] = []
    per_host = []
    final_digest = _digest(final)
    converged_at = []
    for k, recs in enumerate(records, start=1):
        host = f"h{k}"
        stored = final.get(host, {})
        acks = [r for r in recs if r["kind"] == "ack"]
        acked += len(acks)
        gone = [r["key"] for r in acks if stored.get(r["key"]) != r["value"]]
        lost += len(gone)
        lost_keys += [f"{host}.{key}" for key in gone][:20]
        sent = [r for r in recs if r["kind"] == "sent"]
        kept += sum(1 for r in sent if stored.get(r["key"]) == r["value"])
        missing += sum(1 for r in sent if stored.get(r["key"]) != r["value"])
        host_fails = [r for r in recs if r["kind"] == "fail"]
        fails += [{**r, "host": host} for r in host_fails]
        during = [r["dt"] for r in acks if t_event <= r["t"] <= t_heal]
        outside = [r["dt"] for r in acks if not t_event <= r["t"] <= t_heal]
        digests = [r for r in recs if r["kind"] == "digest"]
        last = digests[-1] if digests else None
        if last is not None and last["d"] == final_digest:
            converged_at.append(last["t"])  # its last change reached the final state
        per_host.append({
            "host": host, "acked": len(acks), "failed": len(host_fails), "sent": len(sent),
            "p50_ms": _pct(outside, 0.5), "p99_ms": _pct(outside, 0.99),
            "p50_ms_during": _pct(during, 0.5), "p99_ms_during": _pct(during, 0.99),
            "last_change_after_heal_s": round(last["t"] - t_heal, 3) if last else None,
            **({} if last is not None and last["d"] == final_digest
               else {"differs": _differs(recs, final)})})
    converged = len(converged_at) == len(records)
    max_fail = max((r["dt"] for r in fails), default=0.0)
    landed = [r["t"] + r["dt"] for r in records[0] if r["kind"] == "ack"]
    back = min((t for t in landed if t >= t_heal), default=None)
    unexpected = _unexpected(args, kind, fails, t_event, t_heal, back)
    return {
        "backend": kind, "mode": args.mode, "hosts": len(records), "acked": acked,
        "lost": lost, "lost_keys": lost_keys, "failed_visibly": len(fails),
        "failed_outside_cut_host": sum(1 for r in fails if r["host"] != "h1"),
        "failed_unexpectedly": len(unexpected) + planted("failure"),
        "unexpected_failures": [f"{r['host']}.{r['key']}: started {r['t'] - t_event:+.2f} s "
                                f"from the disturbance's start, failed after {r['dt']:.2f} s"
                                for r in unexpected[:10]],
        "max_fail_s": round(max_fail, 2), "non_durable_kept": kept,
        "non_durable_missing": missing, "converged": converged,
        "converged_after_heal_s": round(max(converged_at) - t_heal, 3) if converged else None,
        "first_write_after_heal_s": round(back - t_heal, 3) if back is not None else None,
        "per_host": per_host,
    }


def _unexpected(args: argparse.Namespace, kind: str, fails: list[dict[str, Any]],
                t_event: float, t_heal: float, back: float | None) -> list[dict[str, Any]]:
    """The durable calls that failed visibly where they should not have.

    Expected: on the disturbed host (h1), a call waiting during the disturbance, or one
    started after it but before h1's first write after the heal landed (TCP notices the
    heal only at its next retransmission of a request the cut swallowed, at the latest
    when the store gives up on it: 5 s, then ``--retry-max``). In partition mode on
    PostgreSQL, a call of another host waiting while the cut host may still hold the
    table lock (until the server ends its session, IDLE_IN_WRITE_MS after the cut).
    Any other visible failure is a finding.
    """
    from cascadeui.adapters._postgres_session import IDLE_IN_WRITE_MS

    recovered = t_heal + GIVE_UP_S + args.retry_max
    if back is not None:
        recovered = min(recovered, back)
    locked_until = t_event + IDLE_IN_WRITE_MS / 1000
    lock_held = kind == "postgres" and args.mode == "partition"

    def expected(r: dict[str, Any]) -> bool:
        waiting = r["t"] + r["dt"] >= t_event
        if r["host"] == "h1":
            return waiting and r["t"] < recovered
        return lock_held and waiting and r["t"] <= locked_until

    return [r for r in fails if not expected(r)]


def _differs(recs: list[dict[str, Any]], final: dict[str, Any]) -> list[str]:
    """Evidence for a host that did not converge: where its state at close differs from
    the stored one (the first 10 key paths)."""
    closed = [r for r in recs if r["kind"] == "closed"]
    if not closed:
        return ["the host never closed"]
    mine: dict[str, Any] = closed[-1]["app"]
    paths = sorted(f"{h}.{k}" for h in {*mine, *final}
                   for k in {*mine.get(h, {}), *final.get(h, {})}
                   if mine.get(h, {}).get(k, "-") != final.get(h, {}).get(k, "-"))
    return [f"{p}: host {_at(mine, p)}, stored {_at(final, p)}" for p in paths[:10]] or [
        "none at close (it caught up after its last digest)"]


def _at(app: dict[str, Any], path: str) -> Any:
    host, key = path.split(".", 1)
    return app.get(host, {}).get(key, "absent")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("partition", "latency"), default="partition")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--backends", default="redis,postgres")
    p.add_argument("--users", type=int, default=5, help="durable users per host")
    p.add_argument("--rate", type=float, default=10.0, help="changes per second per user")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--partition", type=float, default=30.0)
    p.add_argument("--duration", type=float, default=20.0, help="latency mode: seconds")
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--drop-every", type=float, default=2.0)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--settle-max", type=float, default=30.0,
                   help="wait up to this long in all for every host to converge")
    p.add_argument("--durable-timeout", type=float, default=2.5)
    p.add_argument("--retry-max", type=float, default=0.5)
    p.add_argument("--redis-url", default=None, help="use this Redis (its port) instead")
    p.add_argument("--keep", type=Path, default=None, help="write the hosts' logs here")
    p.add_argument("--host", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.host:
        asyncio.run(_host(json.loads(Path(args.host).read_text())))
        return 0
    if os.geteuid() != 0:
        p.error("network namespaces need root")
    reports = []
    with tempfile.TemporaryDirectory(prefix="cascadeui-partition-") as tmp, \
            _hosts(args.hosts) as hosts:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for kind in [b.strip() for b in args.backends.split(",") if b.strip()]:
            reports.append(_run_backend(args, kind, hosts, workdir))
    print(json.dumps(reports, indent=2))
    acked = sum(r["acked"] for r in reports)
    lost = sum(r["lost"] for r in reports) + planted("loss")
    unexpected = sum(r["failed_unexpectedly"] for r in reports)
    worst = max(float("inf") if r["converged_after_heal_s"] is None
                else r["converged_after_heal_s"] for r in reports)
    print(f"{args.hosts} hosts, {len(reports)} backends: {acked} acknowledged, {lost} lost, "
          f"{sum(r['failed_visibly'] for r in reports)} failed visibly, "
          f"{sum(r['non_durable_kept'] for r in reports)} non-durable kept, "
          f"{sum(r['non_durable_missing'] for r in reports)} missing, converged in "
          f"{worst:.2f} s, {unexpected} failed unexpectedly")
    ok = not lost and not unexpected and all(r["converged"] for r in reports) and not any(
        r["non_durable_missing"] for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
