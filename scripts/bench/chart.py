"""Draw the dispatch-until-durable chart: ``python chart.py data.json chart.png``.

Runs in the bench-only venv (matplotlib is never a dependency of the project). One line
per implementation and backend: microseconds per action (until durable) against the size
of the ``application`` slice, both axes logarithmic; a second panel shows the worst
event-loop stall.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SIZE_BYTES = {"2KB": 2e3, "10KB": 1e4, "100KB": 1e5, "1MB": 1e6, "10MB": 1e7}


def main(data_path: str, png_path: str) -> int:
    with open(data_path) as fh:
        rows = json.load(fh)
    lines: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for row in rows:
        x = SIZE_BYTES.get(row["size"]) or float(row["size"])
        lines.setdefault((row["impl"], row["backend"]), []).append(
            (x, row["us_per_action"]["median"], row["worst_stall_ms"]["median"]))
    fig, (cost, stall) = plt.subplots(1, 2, figsize=(12, 5))
    styles = {"ours": "-", "peer": "--"}
    markers = {"json": "o", "sqlite": "s", "redis": "^"}
    for (impl, backend), points in sorted(lines.items()):
        points.sort()
        xs = [p[0] for p in points]
        label = f"{'pycascadeui 2.1.0' if impl == 'peer' else 'ours'} / {backend}"
        kw = {"linestyle": styles.get(impl, "-"), "marker": markers.get(backend, "x"),
              "label": label}
        cost.plot(xs, [p[1] for p in points], **kw)
        stall.plot(xs, [p[2] for p in points], **kw)
    cost.set(xscale="log", yscale="log", xlabel="application slice (bytes of JSON)",
             ylabel="microseconds per action, until durable",
             title="Dispatch with persistence on")
    stall.set(xscale="log", yscale="log", xlabel="application slice (bytes of JSON)",
              ylabel="worst 1 ms ticker lateness (ms)", title="Event-loop stall")
    stall.axhline(20, color="grey", linewidth=0.8, linestyle=":")
    for ax in (cost, stall):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
