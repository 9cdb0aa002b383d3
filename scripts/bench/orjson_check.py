"""Is orjson worth a dependency? Encode/decode time of one ~11 MB state, json vs orjson.

orjson is not a dependency of the project; run this in a scratch venv that has it::

    python3 -m venv /tmp/oj && /tmp/oj/bin/pip install orjson
    /tmp/oj/bin/python -m bench.orjson_check
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson  # type: ignore[import-not-found]


def median_seconds(fn: Callable[[], Any], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    records = {f"k{i}": {"name": "x" * 30, "n": i, "tags": ["a", "b"], "score": i * 0.5}
               for i in range(120_000)}
    doc = {"application": {"records": records}, "persistent_views": {}}
    text = json.dumps(doc, separators=(",", ":"))
    print(f"document: {len(text) / 1e6:.1f} MB")
    for what, ours, theirs in (
            ("encode", lambda: json.dumps(doc, separators=(",", ":"), ensure_ascii=False),
             lambda: orjson.dumps(doc)),
            ("decode", lambda: json.loads(text), lambda: orjson.loads(text))):
        a, b = median_seconds(ours), median_seconds(theirs)
        print(f"{what}: json {a * 1000:.0f} ms, orjson {b * 1000:.0f} ms, {a / b:.1f}x")


if __name__ == "__main__":
    main()
