"""Issue 13's benchmark scripts at a tiny size (smoke tests, not timed tests).

``scripts/bench/push.py`` (commit-to-running-store delay, pushed and polled, all four
backends) and ``scripts/bench/postgres.py`` (PostgreSQL multi-process transactions
against raw psycopg) must run end to end and keep their checks: every commit reaches the
running store, no increment is lost.
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


def _run(*args: str) -> list[dict[str, object]]:
    done = subprocess.run(script(*args), capture_output=True, text=True,
                          timeout=600, check=False, env=script_env())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_bench_push_runs_every_backend_and_mode(postgres_url: str) -> None:
    rows = _run("bench.push", "--commits", "4")
    assert {(r["backend"], r["mode"]) for r in rows} == {
        (b, m) for b in ("file", "sqlite", "redis", "postgres") for m in ("poll", "push")}
    assert all(r["missed"] == 0 for r in rows)


def test_bench_postgres_loses_no_increment(postgres_url: str) -> None:
    rows = _run("bench.postgres", "--procs", "1,2",
                "--per-proc", "10", "--reps", "1")
    assert {(r["impl"], r["procs"]) for r in rows} == {
        (i, p) for i in ("raw", "ours") for p in (1, 2)}
    assert all(r["lost"] == 0 and r["ok"] for r in rows)


def test_bench_postgres_durable_stores_what_memory_holds(postgres_url: str) -> None:
    rows = _run("bench.postgres", "--durable", "--actions", "20",
                "--state", "10KB", "--users", "1,10")
    assert [r["users"] for r in rows] == [1, 10]
    assert all(r["stored_equals_memory"] and r["changes"] == 20 for r in rows)
