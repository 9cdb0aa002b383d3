"""One benchmark run in a fresh interpreter: ``python worker.py --workload W ... --out R.json``.

The orchestrator (``run.py``) starts this script with our venv's Python or with
pycascadeui 2.1.0's (both packages import as ``cascadeui``), in a private working
directory (the peer writes a ``logs/`` folder into the current directory). The result, or
the error, goes to ``--out`` as JSON; stdout is free for the implementation's own logging.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_json

WORKLOADS = {
    "dispatch": "w_dispatch",
    "durable": "w_durable",
    "raw": "w_raw",
    "mp": "w_mp",
    "restart": "w_restart",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    p.add_argument("--impl", choices=["ours", "peer", "raw"], required=True)
    p.add_argument("--backend", default="json")
    p.add_argument("--size", default="10KB")
    p.add_argument("--actions", type=int, default=1000)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--api", choices=["auto", "durable", "flush"], default="auto")
    p.add_argument("--gc-freeze", type=int, default=0)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--per-proc", type=int, default=100)
    p.add_argument("--panels", type=int, default=100)
    p.add_argument("--channels", type=int, default=50)
    p.add_argument("--api-setup", default=None)
    p.add_argument("--mode", default="latency")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--key-prefix", default="cascadeui-bench")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    os.chdir(args.workdir)
    result: dict[str, Any] = {"workload": args.workload, "impl": args.impl,
                              "backend": args.backend, "size": args.size,
                              "python": sys.version.split()[0]}
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(WORKLOADS[args.workload])
        result["result"] = module.run(args)
        result["ok"] = True
    except BaseException as exc:  # reported to the orchestrator, never swallowed silently
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    result["wall_s"] = time.perf_counter() - t0
    try:
        result["cascadeui_version"] = importlib.metadata.version(
            "pycascadeui" if args.impl == "peer" else "cascadeui-persistence")
    except importlib.metadata.PackageNotFoundError:
        result["cascadeui_version"] = None
    write_json(args.out, result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
