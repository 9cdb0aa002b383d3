"""scripts/bench/storage.py runs at a tiny size and prints its table (issue 2)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from _spawn import script, script_env

# A script under scripts/ at a tiny size: skipped by `-m "not slow"` while iterating,
# always run by `bash scripts/test.sh full` (CI).
pytestmark = pytest.mark.slow



def test_bench_storage_quick(redis_url: str, tmp_path: Path) -> None:
    start = time.monotonic()
    done = subprocess.run(
        [*script("bench.storage"), "--quick", "--redis-url", redis_url, "--dir",
         str(tmp_path)], capture_output=True, text=True, timeout=60, check=False,
        env=script_env())
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 15
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| state | backend | save ms")
    backends = [row.split("|")[2].strip() for row in rows[1:]]
    assert backends == ["file", "sqlite", "redis"] * 2
    for row in rows[1:]:
        ratio = row.split("|")[5].strip()
        assert ratio.endswith("x")
        assert float(ratio[:-1]) > 0
