"""Committed read-modify-write transactions per second across 1, 2, 4 and 8 processes.

Issue 4's benchmark: per backend, our adapters' ``transaction()`` side by side with the
raw primitive measured in the same run (stdlib sqlite3 ``BEGIN IMMEDIATE`` increments,
redis-py WATCH/MULTI increments, a ``flock``-locked read-modify-write of a JSON file).
Every run checks that the final counter equals processes x increments. It is the ``mp``
workload of the benchmark suite (``scripts/bench/w_mp.py``), run without the peer::

    python -m bench.multiprocess                 # 1,2,4,8 procs x 200
    python -m bench.multiprocess --per-proc 50 --procs 1,2

Extra arguments go to ``scripts/bench/run.py``; the table is in its summary.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent / "run.py"


def main(argv: list[str]) -> int:
    defaults = ["--workloads", "mp", "--no-peer", "--procs", "1,2,4,8", "--per-proc", "200",
                "--reps", "1", "--chart", "no"]
    return subprocess.call([sys.executable, str(RUN), *defaults, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
