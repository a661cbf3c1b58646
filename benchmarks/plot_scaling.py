# Plot of time per training step against n for flashgp and GPyTorch, from benchmarks/uci.py JSON
# results. Usage: python benchmarks/plot_scaling.py results/uci.json --out results/scaling.png
"""Time per step against the number of training points, one line per library.

Reads one or more JSON files written by ``benchmarks/uci.py`` (any data sets; points are placed
at each record's n_train) and marks failed runs (e.g. out of memory) at the n they were asked
for with an x on the axis floor. ``--extra LABEL:N:SECONDS`` adds single measured points taken
elsewhere (e.g. the 1M step of examples/large_gpu_fit.py), labelled as given.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"flashgp": dict(color="tab:blue", marker="o"), "gpytorch": dict(color="tab:orange", marker="s")}


def requested_n(record: dict) -> int | None:
    """n of a failed run, from a synthetic data set's name ("synth-N"), else None."""
    name = record.get("dataset", "")
    return int(name.split("-", 1)[1]) if name.startswith("synth-") else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="JSON files of benchmarks/uci.py")
    p.add_argument("--extra", action="append", default=[], metavar="LABEL:N:SECONDS")
    p.add_argument("--title", default="Exact GP training step (Matern 5/2, CG) on one GPU")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    points: dict[str, list] = {}
    failed: dict[str, list] = {}
    device = None
    for path in args.results:
        report = json.loads(Path(path).read_text())
        device = device or report["meta"].get("device_name")
        for r in report["results"]:
            if r.get("ok"):
                points.setdefault(r["library"], []).append((r["n_train"], r["step_seconds_median"]))
            elif requested_n(r):
                failed.setdefault(r["library"], []).append(requested_n(r))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for lib, pts in sorted(points.items()):
        pts.sort()
        ax.plot([n for n, _ in pts], [s for _, s in pts], label=lib, **STYLE.get(lib, {}))
    floor = min(s for pts in points.values() for _, s in pts) / 2
    for lib, ns in failed.items():
        ax.scatter(ns, [floor] * len(ns), marker="x", s=80, color=STYLE.get(lib, {}).get("color"),
                   label=f"{lib}: out of memory", zorder=3)
    for extra in args.extra:
        label, n, seconds = extra.rsplit(":", 2)
        ax.scatter([int(n)], [float(seconds)], marker="D", color="tab:green", label=label, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training points n")
    ax.set_ylabel("seconds per Adam step (median)")
    ax.set_title(args.title + (f"\n{device}" if device else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
