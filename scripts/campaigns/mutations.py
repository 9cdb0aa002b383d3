"""Mutation harness (issue 25 item 1): does each campaign see the bugs it exists to catch?

Each mutation is a known-bad change, a search/replace on one file of a scratch copy of
the package (``cascadeui/`` with ``adapters/`` in it as ``cascadeui.adapters``). The
copy is put first on ``PYTHONPATH`` for the campaign that should see the bug, and that
campaign runs at the size the suite runs it. "Seen" means the campaign's exit status was
not 0 (issue 25 item 8: a campaign exits non-zero on loss). The unmutated package runs
first: a campaign that fails without a mutation makes every row meaningless.

The last line is ``<M> mutations, <S> seen``; the exit status is 1 unless every row was
seen. ``--only NAME[,NAME]`` runs a subset; ``--list`` prints the names; ``--check``
only applies every mutation (their text is still in the code).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kit.spawn import SCRIPTS, script_command, script_env

REPO = SCRIPTS.parent


@dataclass(frozen=True)
class Campaign:
    """One campaign run at the suite's size."""

    name: str
    argv: tuple[str, ...]


POWERCUT_FILE = Campaign("powercut file", ("campaigns.powercut", "--cuts", "60", "--gens", "12",
                                           "--backend", "file"))
POWERCUT_BIG = Campaign("powercut file, big documents", (
    "campaigns.powercut", "--cuts", "60", "--gens", "12", "--backend", "file",
    "--big-every", "5"))
POWERCUT_SQLITE = Campaign("powercut sqlite", ("campaigns.powercut", "--cuts", "80", "--gens",
                                               "6", "--backend", "sqlite"))
POWERCUT_STORE = Campaign("powercut store", ("campaigns.powercut", "--cuts", "40", "--gens", "8",
                                             "--mode", "store"))
LATENCY = Campaign("partition latency", (
    "campaigns.partition", "--hosts", "2", "--users", "3", "--warmup", "1.5", "--settle", "3",
    "--mode", "latency", "--duration", "4", "--latency", "0.05", "--drop-every", "1",
    "--backends", "redis"))


@dataclass(frozen=True)
class Mutation:
    """A known-bad change: replace ``old`` (found exactly once) by ``new`` in ``path``."""

    name: str
    path: str
    old: str
    new: str
    campaign: Campaign


MUTATIONS = [
    Mutation("no fsync of a journal append", "adapters/_journal_file.py",
             "                    view = view[os.write(fd, view):]\n                os.fsync(fd)",
             "                    view = view[os.write(fd, view):]\n                pass",
             POWERCUT_FILE),
    Mutation("no directory fsync after rename or create", "adapters/_fileio.py",
             "    if durable:\n        fsync_dir(target.parent)\n    return sums",
             "    return sums", POWERCUT_FILE),
    Mutation("no directory fsync after unlink", "adapters/_file_store.py",
             "                # of the old one (save(a) over a + journal a -> b), a power cut that"
             " kept\n                # the journal would apply it again and load b (issue 16,"
             " test_powercut).\n                _fileio.fsync_dir(self.path.parent)",
             "                pass", POWERCUT_FILE),
    Mutation("no temp-file fsync", "adapters/_fileio.py",
             "            if durable:\n                os.fsync(fh.fileno())",
             "            pass", POWERCUT_FILE),
    Mutation("no temp-file fsync above 1 MiB", "adapters/_fileio.py",
             "            if durable:\n                os.fsync(fh.fileno())",
             "            if durable and fh.tell() < 1 << 20:\n"
             "                os.fsync(fh.fileno())",
             POWERCUT_BIG),
    Mutation("journal deleted before the snapshot is replaced", "adapters/_file_store.py",
             "                digest = _fileio.put(self.path, data, like=self.path, before=before)",
             "                with contextlib.suppress(FileNotFoundError):\n"
             "                    os.unlink(self.journal_path)\n"
             "                digest = _fileio.put(self.path, data, like=self.path, before=before)",
             POWERCUT_FILE),
    Mutation("SQLite synchronous=OFF", "adapters/_sqlite_store.py",
             'conn.execute("PRAGMA synchronous = FULL")',
             'conn.execute("PRAGMA synchronous = OFF")', POWERCUT_SQLITE),
    Mutation("SQLite synchronous=NORMAL", "adapters/_sqlite_store.py",
             'conn.execute("PRAGMA synchronous = FULL")',
             'conn.execute("PRAGMA synchronous = NORMAL")', POWERCUT_SQLITE),
    Mutation("durable waiter woken before its write", "cascadeui/_persist_state.py",
             "        self.durable_waiters.append((generation, waiter, deadline))\n"
             "        self.demand = True",
             "        self.durable_waiters.append((generation, waiter, deadline))\n"
             "        self.demand = True\n        _settle(waiter, True)", POWERCUT_STORE),
    Mutation("durable waiter woken by an earlier write", "cascadeui/_persist_state.py",
             "        for target, durable, deadline in self.durable_waiters:\n"
             "            if target > generation:",
             "        for target, durable, deadline in self.durable_waiters:\n"
             "            if target > generation + 1:", POWERCUT_STORE),
    Mutation("merge lets ours win", "cascadeui/_merge.py",
             "    merged = dict(theirs)\n    for key in", "    merged = dict(ours)\n    for key in",
             LATENCY),
    Mutation("version moved without its base", "cascadeui/_persist_state.py",
             "        led.base, led.durable = theirs, dict(theirs)\n"
             '        return {"state": result.merged',
             "        led.durable = dict(theirs)\n"
             '        return {"state": result.merged', LATENCY),
]


def scratch_package(root: Path) -> Path:
    """A copy of the package as it is installed (``adapters/`` as ``cascadeui.adapters``)."""
    pkg = root / "pkg"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "adapters.pyi")
    shutil.copytree(REPO / "cascadeui", pkg / "cascadeui", ignore=ignore)
    shutil.copytree(REPO / "adapters", pkg / "cascadeui" / "adapters", ignore=ignore)
    return pkg


def mutate(pkg: Path, mutation: Mutation) -> None:
    """Apply ``mutation`` to the scratch copy; refuse one whose text is not found once."""
    rel = Path(mutation.path)
    target = pkg / "cascadeui" / rel if rel.parts[0] == "adapters" else pkg / rel
    text = target.read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise SystemExit(f"mutation {mutation.name!r}: its text occurs {found} times in "
                         f"{mutation.path} (the code moved: update the mutation)")
    target.write_text(text.replace(mutation.old, mutation.new))


def run(campaign: Campaign, pkg: Path, timeout: float) -> tuple[int, str]:
    """Run ``campaign`` against the package at ``pkg``: its exit status and last line."""
    env = script_env()
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS), str(pkg)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        out = subprocess.run(script_command(*campaign.argv), capture_output=True, text=True,
                             timeout=timeout, check=False, env=env, cwd=pkg.parent)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:g} s"
    lines = (out.stdout.strip() or out.stderr.strip() or "(no output)").splitlines()
    return out.returncode, lines[-1][:120]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated mutation names (default: all)")
    ap.add_argument("--list", action="store_true", help="print the mutation names")
    ap.add_argument("--check", action="store_true",
                    help="only check that every mutation still applies to the code")
    ap.add_argument("--timeout", type=float, default=400.0, help="seconds per campaign run")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(m.name)
        return 0
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {m.name for m in MUTATIONS}
    if unknown:
        ap.error(f"unknown mutation(s) {sorted(unknown)}")
    chosen = [m for m in MUTATIONS if not wanted or m.name in wanted]
    if args.check:
        with tempfile.TemporaryDirectory(prefix="cascadeui-mutations-") as tmp:
            for n, mutation in enumerate(chosen):
                mutate(scratch_package(Path(tmp) / f"m{n}"), mutation)
        print(f"{len(chosen)} mutations apply")
        return 0
    with tempfile.TemporaryDirectory(prefix="cascadeui-mutations-") as tmp:
        clean = scratch_package(Path(tmp) / "clean")
        for campaign in dict.fromkeys(m.campaign for m in chosen):
            rc, last = run(campaign, clean, args.timeout)
            print(f"baseline | {campaign.name} | exit {rc} | {last}", flush=True)
            if rc != 0:
                print(f"{campaign.name} fails without a mutation: no row can be judged")
                return 2
        seen = 0
        print("mutation | campaign | loss seen | exit | seconds | last line")
        for mutation in chosen:
            root = Path(tmp) / f"m{MUTATIONS.index(mutation)}"
            pkg = scratch_package(root)
            mutate(pkg, mutation)
            started = time.monotonic()
            rc, last = run(mutation.campaign, pkg, args.timeout)
            took = time.monotonic() - started
            seen += rc != 0
            print(f"{mutation.name} | {mutation.campaign.name} | "
                  f"{'yes' if rc != 0 else 'NO'} | {rc} | {took:.0f} | {last}", flush=True)
            shutil.rmtree(root, ignore_errors=True)
    print(f"{len(chosen)} mutations, {seen} seen")
    return 0 if seen == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
