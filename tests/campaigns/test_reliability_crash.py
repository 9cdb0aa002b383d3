"""SIGKILL campaign at a small size (issue 7, "Crashes"); full size: scripts/campaigns/crash.py.

Real writer processes (the adapters directly, and a StateStore dispatching and flushing)
are SIGKILLed at random moments for the JSON file and SQLite; for Redis a private
redis-server (appendonly, appendfsync always) is SIGKILLed and restarted. After every kill
the state must load, be exactly one generation that was written, and be no older than the
last save the writer saw succeed. The campaign is also run against deliberately broken
writers, to prove it notices loss when there is some.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _spawn import script, script_env

# A script under scripts/ at a tiny size: skipped by `-m "not slow"` while iterating,
# always run by `bash scripts/test.sh full` (CI).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def run_campaign(*args: str, timeout: float = 240) -> tuple[int, list[dict[str, Any]], str]:
    out = subprocess.run(script("campaigns.crash", *args), capture_output=True,
                         text=True, timeout=timeout, check=False, env=script_env())
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return out.returncode, lines, out.stderr


def test_kill_campaign_every_backend_and_writer() -> None:
    kills = 4
    rc, lines, err = run_campaign("--kills", str(kills), "--size", "8000", "--max-delay", "0.1")
    campaigns = [c for c in lines if not c.get("summary")]
    assert {(c["backend"], c["mode"]) for c in campaigns} == {
        (b, m) for b in ("file", "sqlite", "redis") for m in ("adapter", "store")}, err
    for c in campaigns:
        where = f"{c['backend']}/{c['mode']}"
        assert c["problems"] == [], where
        assert c["lost"] == 0, where
        assert c["kills"] == kills, where
        if c["backend"] != "redis":  # a Redis writer may spend a short round on a dead lease
            assert c["acked_saves"] > 0, f"{where}: the writer never acknowledged a save"
        # Temp files of killed writers are swept by the next writer: only the last kill's
        # (its document temp file and its backup link) may remain.
        assert c["leftover_files"] <= 2, where
    assert sum(c["acked_saves"] for c in campaigns if c["backend"] == "redis") > 0
    # Kills really land while a save is in flight (not only between saves).
    assert sum(c["killed_mid_save"] for c in campaigns) >= len(campaigns) * kills // 2
    summary = lines[-1]
    assert summary["summary"] is True
    assert summary["lost"] == 0
    assert summary["kills"] == kills * 6
    assert rc == 0, err


def test_campaign_catches_a_writer_that_acknowledges_too_early() -> None:
    rc, lines, _ = run_campaign("--kills", "4", "--backends", "file", "--modes", "adapter",
                                "--sabotage", "early-ack", "--size", "4000", "--seed", "5")
    assert lines[-1]["lost"] > 0
    assert rc == 1


def test_campaign_catches_a_writer_that_writes_in_place() -> None:
    rc, lines, _ = run_campaign("--kills", "12", "--backends", "file", "--modes", "adapter",
                                "--sabotage", "inplace", "--size", "200000", "--seed", "5",
                                "--max-delay", "0.2")
    assert lines[-1]["problems"] > 0
    assert rc == 1




def test_durable_users_lose_nothing_acknowledged_under_sigkill() -> None:
    """Issue 11: 50 users making durable changes, the bot SIGKILLed (Redis: the server too).

    The default (coalesced, not durable) bot in the same run loses what it acknowledged:
    that proves the campaign sees a loss when there is one.
    """
    kills = 2
    out = subprocess.run(
        [*script("campaigns.durable"), "--kills", str(kills), "--sizes", "10KB",
         "--modes", "durable,default", "--max-run", "0.25"],
        capture_output=True, text=True, timeout=240, check=False, env=script_env())
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    campaigns = [c for c in lines if not c.get("summary")]
    assert {(c["backend"], c["mode"]) for c in campaigns} == {
        (b, m) for b in ("json", "sqlite", "redis") for m in ("durable", "default")}, out.stderr
    for c in campaigns:
        where = f"{c['backend']}/{c['mode']}"
        assert c["problems"] == [], where
        assert c["kills"] == kills, where
        assert c["acked"] > 0, f"{where}: no change was acknowledged"
        if c["mode"] == "durable":
            assert c["lost"] == 0, where
    assert sum(c["lost"] for c in campaigns if c["mode"] == "default") > 0
    assert lines[-1]["summary"] is True
    assert lines[-1]["durable_lost"] == 0
    assert out.returncode == 0, out.stderr
