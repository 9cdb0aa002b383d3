"""One of several processes starting against the same state with migrations (issue 15).

``python _migrate_worker.py URL MARKS START_AT`` waits until the wall clock reaches
START_AT (so the processes start together), enables persistence with ``version=2`` and
migrations that append this pid to MARKS and sleep (so the other process arrives while
the first one migrates), then prints the loaded application slice as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cascadeui.persistence import backend_from_url
from cascadeui.store import StateStore

URL, MARKS, START_AT = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])


def step(n: int) -> Any:
    def fn(doc: dict[str, Any]) -> dict[str, Any]:
        with MARKS.open("a") as out:
            out.write(f"{os.getpid()} {n}\n")
        time.sleep(0.4)
        return {**doc, "application": {**doc["application"], f"step{n}": os.getpid()}}
    return fn


async def main() -> dict[str, Any]:
    store = StateStore()
    backend = backend_from_url(URL)
    await store.enable_persistence(backend, version=2, migrations={1: step(1), 2: step(2)})
    app = dict(store.state["application"])
    await store.close()
    await backend.aclose()
    return app


if __name__ == "__main__":
    time.sleep(max(0.0, START_AT - time.time()))
    print(json.dumps(asyncio.run(main())))
