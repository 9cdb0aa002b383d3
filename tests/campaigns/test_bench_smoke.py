"""The benchmark suite (scripts/bench) in its smoke mode: tiny sizes, every workload once.

Not a timed test: it only proves the scripts still run end to end against both
implementations (ours, and pycascadeui 2.1.0 in ``.venv-peer``, installed from PyPI by
the suite on first use and reused afterwards) and that the checks they make hold.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _spawn import script, script_env

# A script under scripts/ at a tiny size: skipped by `-m "not slow"` while iterating,
# always run by `bash scripts/test.sh full` (CI).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(script(*args), env=script_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_smoke_run_covers_every_workload(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "bench"
    proc = _run("bench.run", "--smoke", "--out", str(out), "--redis-url", redis_url)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert all(r["ok"] for r in runs), [r.get("error") for r in runs if not r["ok"]]
    seen = {(r["workload"], r["impl"]) for r in runs}
    assert seen == {("raw", "raw"), ("dispatch", "ours"), ("dispatch", "peer"),
                    ("mp", "ours"), ("mp", "raw"), ("restart", "ours"), ("restart", "peer")}
    assert {r["cascadeui_version"] for r in runs if r["impl"] == "peer"} == {"2.1.0"}
    summary = results["summary"]
    ours = [d for d in summary["dispatch"] if d["impl"] == "ours"]
    assert {d["backend"] for d in ours} == {"json", "sqlite", "redis"}
    for row in ours:  # our store's guarantees hold even at smoke size
        assert row["mismatches"] == 0
        assert row["failed_saves"] == 0
    assert all(m["lost_updates"] == 0 for m in summary["mp"])
    for row in summary["restart"]:
        assert row["counts"]["restored"] == 10
        assert row["requests"]["median"] >= 10
    table = (out / "summary.md").read_text()
    assert "dispatch until durable" in table
    assert "raw limits" in table


def test_compaction_stall_script_runs(redis_url: str) -> None:
    proc = _run("bench.compaction_stall", "--size", "10KB", "--writes", "2",
                "--redis-url", redis_url, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3])
            for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert {(b, m) for b in ("json", "sqlite", "redis") for m in ("append", "compact")} <= rows


def test_durable_script_runs(tmp_path: Path, redis_url: str) -> None:
    """Issue 11's durable benchmark at smoke size: every cell runs, nothing is lost."""
    out = tmp_path / "durable"
    proc = _run("bench.durable", "--smoke", "--out", str(out), "--redis-url",
                redis_url, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert {(r["backend"], r["users"]) for r in rows} == {
        (b, u) for b in ("json", "sqlite", "redis") for u in (1, 10)}
    for row in rows:
        assert row["failures"] == 0
        assert row["mismatches"] == 0
        assert row["changes"] == (20 if row["users"] == 1 else 50)
        assert row["raw_p50_ms"] > 0
    assert "p99 / raw p50" in (out / "summary.md").read_text()


def test_arguments_are_checked_before_anything_runs(tmp_path: Path) -> None:
    proc = _run("bench.run", "--sizes", "10KB,huge", "--dry-run", timeout=60)
    assert proc.returncode != 0
    assert "huge" in proc.stderr
    proc = _run("bench.run", "--workloads", "dispatch,nope", "--dry-run",
                timeout=60)
    assert proc.returncode != 0
    assert "nope" in proc.stderr
    proc = _run("bench.run", "--smoke", "--no-peer", "--dry-run", timeout=60)
    assert proc.returncode == 0
    assert "impls=['ours']" in proc.stdout


def test_peer_check_reports_a_missing_venv(tmp_path: Path) -> None:
    proc = _run("bench.peer", "--check", "--venv", str(tmp_path / "none"),
                timeout=60)
    assert proc.returncode == 1
    assert "absent" in proc.stdout


@pytest.mark.parametrize("size", ["10KB", "1MB"])
def test_state_builder_hits_the_requested_size(size: str) -> None:
    from bench.common import build_application, json_size, size_bytes
    got = json_size(build_application(size_bytes(size)))
    assert 0.9 * size_bytes(size) <= got <= 1.05 * size_bytes(size)
