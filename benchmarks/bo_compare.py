# Side-by-side Bayesian optimization with flashgp's BoTorch model (flashgp.botorch.FlashGPModel)
# and BoTorch's SingleTaskGP: the same designs, acquisition and optimizer settings, per-iteration
# regret and seconds; and a large-n mode timing one BO iteration of each.
"""Benchmark FlashGPModel against SingleTaskGP in BoTorch's BO loop (qLogEI, optimize_acqf).

    python benchmarks/bo_compare.py                                   # Hartmann-6 and Branin, 10 seeds
    python benchmarks/bo_compare.py --problem branin --seeds 3 --iters 10 --out /tmp/bo
    python benchmarks/bo_compare.py --large 1000,5000,10000 --device cuda --out benchmarks/results/bo/large_h100

Loop mode (``bo_loop.run``): per problem and seed, ``--init`` Sobol points, then ``--iters``
iterations of batch size 1; each model is built and fitted from scratch at every iteration
(flashgp: ``fg.fit`` with L-BFGS, ``--lbfgs-steps`` steps of up to 20 iterations, or Adam;
SingleTaskGP: ``fit_gpytorch_mll``), then qLogExpectedImprovement is maximized by
``optimize_acqf`` (``--num-restarts`` 10, ``--raw-samples`` 512 for both). Recorded per
iteration: the best value so far, the simple regret (best - optimum: Hartmann-6 -3.32237, Branin
0.397887), fit seconds and optimize_acqf seconds. Writes ``OUT.csv`` (a row per iteration),
``OUT.json`` (the same rows with the command, versions and device) and ``OUT.md`` (median and
quartiles over seeds of the final simple regret, median seconds per iteration, ratios),
rewritten after every run so an interrupted benchmark keeps what it measured.

Large mode (``--large N1,N2``; ``bo_loop.large``): N noisy Hartmann-6 observations at random
points, ``--large-steps`` Adam steps of each model's fit, then one optimize_acqf; fit and
acquisition timed separately (``OUT.json``, ``OUT.md``).
"""
from __future__ import annotations

import argparse
import csv
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import versions, write_results  # noqa: E402
from uci import device_name, version_of  # noqa: E402

SHARED_CPU_NOTE = ("The CPU was shared with other processes (other agents' tests and builds) while this ran: "
                   "seconds are upper bounds of an idle machine's and vary with the load; each seed's two runs "
                   "ran back to back, so the ratios are the more telling numbers.")


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile), linear interpolation."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


STARTED: dict = {}  # the date and versions when main() started (the code that ran; later writes reuse them)


def header(args, kind: str) -> list[str]:
    info = STARTED.setdefault("versions", versions())
    started = STARTED.setdefault("date", time.strftime('%Y-%m-%d %H:%M %Z'))
    return [f"# {kind}: FlashGPModel against SingleTaskGP", "",
            f"Command: `python {shlex.join(sys.argv)}`", "",
            f"Started: {started}, last written {time.strftime('%H:%M %Z')}. "
            f"Device: {device_name(torch.device(args.device))}, "
            f"{torch.get_num_threads()} torch threads. Versions: python {info['python']}, torch {info['torch']}, "
            f"botorch {version_of('botorch')}, gpytorch {version_of('gpytorch')}, flashgp {info['flashgp']} "
            f"(commit {info['flashgp_commit']}).", ""]


def loop_report(rows: list[dict], args) -> str:
    """The markdown summary of the loop rows."""
    lines = header(args, "Bayesian optimization")
    flash_fit = (f"fg.fit, L-BFGS, {args.lbfgs_steps} steps of up to 20 iterations (lr 1)"
                 if args.optimizer == "lbfgs" else f"fg.fit, Adam, {args.adam_steps} steps (lr 0.1)")
    lines += [f"Setup: {args.init} initial Sobol points, {args.iters} iterations of batch size 1, "
              f"qLogExpectedImprovement, optimize_acqf with num_restarts={args.num_restarts}, "
              f"raw_samples={args.raw_samples}; every model built and fitted from scratch at each iteration "
              f"(flashgp: {flash_fit}, MAP with BoTorch's priors; "
              "SingleTaskGP: fit_gpytorch_mll). Both: RBF with ARD, LogNormal priors, Normalize(bounds), "
              f"Standardize, {args.dtype}. Seconds: fit = building and fitting the model; acq = optimize_acqf. "
              "Retries: optimize_acqf's scipy runs that failed and were restarted from new initial conditions "
              "(BoTorch's warning 'Optimization failed in gen_candidates_scipy').", "",
              SHARED_CPU_NOTE if args.device == "cpu" else "", ""]
    for name in dict.fromkeys(r["problem"] for r in rows):
        mine = [r for r in rows if r["problem"] == name]
        seeds = sorted({r["seed"] for r in mine})
        lines += [f"## {name}", "",
                  "| model | seeds | final simple regret: median [25%, 75%] | median fit s / iter | "
                  "median acq s / iter | optimize_acqf retries |", "| --- | --- | --- | --- | --- | --- |"]
        summary = {}
        for kind in ("flashgp", "SingleTaskGP"):
            part = [r for r in mine if r["model"] == kind]
            finals = [max((r for r in part if r["seed"] == s), key=lambda r: r["iteration"])["regret"]
                      for s in seeds if any(r["seed"] == s for r in part)]
            if not finals:
                continue
            q1, med, q3 = quartiles(finals)
            fit_s = statistics.median(r["fit_seconds"] for r in part)
            acq_s = statistics.median(r["acq_seconds"] for r in part)
            summary[kind] = (med, fit_s, acq_s)
            retries = sum(r.get("acq_failures", 0) for r in part)
            lines.append(f"| {kind} | {len(finals)} | {med:.3g} [{q1:.3g}, {q3:.3g}] | {fit_s:.3f} | {acq_s:.3f} | "
                         f"{retries} in {len(part)} iterations |")
        if len(summary) == 2:
            (r1, f1, a1), (r2, f2, a2) = summary["flashgp"], summary["SingleTaskGP"]
            ratio = f"{r1 / r2:.2f}" if r2 > 0 else "n/a"
            lines.append(f"| ratio flashgp / SingleTaskGP | | {ratio} | {f1 / f2:.2f} | {a1 / a2:.2f} | |")
        lines += ["", "Median simple regret over seeds by iteration:", "",
                  "| iteration | flashgp | SingleTaskGP |", "| --- | --- | --- |"]
        last = max(r["iteration"] for r in mine)
        for it in sorted({1, *range(5, last + 1, 5), last}):
            cells = []
            for kind in ("flashgp", "SingleTaskGP"):
                values = [r["regret"] for r in mine if r["model"] == kind and r["iteration"] == it]
                cells.append(f"{statistics.median(values):.3g}" if values else "")
            lines.append(f"| {it} | {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines)


def large_report(rows: list[dict], args) -> str:
    lines = header(args, f"One BO iteration at large n ({args.large_steps} Adam steps, lr 0.1)")
    lines += [f"Hartmann-6 at n uniform random points plus N(0, 0.05^2) noise; per model {args.large_steps} Adam "
              "steps (flashgp: fg.fit; SingleTaskGP: fit_gpytorch_mll_torch, no early stopping), then one "
              f"optimize_acqf of qLogEI (q=1, num_restarts={args.num_restarts}, raw_samples={args.raw_samples}). "
              "candidate: the Hartmann-6 value (minimization form) at the candidate.", "",
              SHARED_CPU_NOTE if args.device == "cpu" else "", "",
              "| n | model | fit s | acq s | candidate |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['model']} | {r['fit_seconds']:.2f} | {r['acq_seconds']:.2f} | "
                     f"{r['candidate_value']:.4f} |")
    by_n = {}
    for r in rows:
        by_n.setdefault(r["n"], {})[r["model"]] = r
    lines += ["", "| n | fit ratio flashgp / SingleTaskGP | acq ratio |", "| --- | --- | --- |"]
    for n, pair in by_n.items():
        if len(pair) == 2:
            a, b = pair["flashgp"], pair["SingleTaskGP"]
            lines.append(f"| {n:,} | {a['fit_seconds'] / b['fit_seconds']:.2f} | "
                         f"{a['acq_seconds'] / b['acq_seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], args, report: str) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_results(out, rows, args, extra={"botorch": version_of("botorch"), "started": STARTED})
    out.with_name(out.name + ".md").write_text(report)


def seeds_of(text: str) -> list[int]:
    """--seeds: a count (seeds 0..N-1) or a comma-separated list."""
    return [int(s) for s in text.split(",")] if "," in text else list(range(int(text)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=["hartmann6", "branin", "all"], default="all")
    parser.add_argument("--seeds", default="10", help="a count (seeds 0..N-1) or a list such as 0,4,7")
    parser.add_argument("--init", type=int, default=20)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--num-restarts", type=int, default=10)
    parser.add_argument("--raw-samples", type=int, default=512)
    parser.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="flashgp's fit")
    parser.add_argument("--lbfgs-steps", type=int, default=5)
    parser.add_argument("--adam-steps", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--large", default=None, help="large mode: comma-separated n, e.g. 1000,5000,10000")
    parser.add_argument("--large-steps", type=int, default=10)
    parser.add_argument("--out", default=None, help="OUT.csv/.json/.md (default benchmarks/results/bo/...)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    STARTED.clear()
    header(args, "")  # record the date and versions (the commit) now
    import bo_loop
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    settings = {"optimizer": args.optimizer, "lbfgs_steps": args.lbfgs_steps, "adam_steps": args.adam_steps,
                "num_restarts": args.num_restarts, "raw_samples": args.raw_samples}
    tag = "cpu" if device.type == "cpu" else device.type
    bo_loop.warm_up(settings, device, dtype)
    rows: list[dict] = []
    if args.large:
        args.out = args.out or str(REPO / "benchmarks" / "results" / "bo" / f"large_{tag}")
        for n in (int(v) for v in args.large.split(",")):
            rows += bo_loop.large(n, args.large_steps, settings, device, dtype)
            for r in rows[-2:]:
                print(f"n={r['n']:,} {r['model']}: fit {r['fit_seconds']:.2f} s, acq {r['acq_seconds']:.2f} s",
                      flush=True)
            write(rows, args, large_report(rows, args))
        return
    args.out = args.out or str(REPO / "benchmarks" / "results" / "bo" / f"bo_{tag}")
    names = ["hartmann6", "branin"] if args.problem == "all" else [args.problem]
    for name in names:
        for seed in seeds_of(args.seeds):
            for kind in bo_loop.MODELS:
                run = bo_loop.run(name, kind, seed, args.init, args.iters, settings, device, dtype)
                rows += run
                print(f"{name} seed {seed} {kind}: regret {run[-1]['regret']:.4g}, fit "
                      f"{statistics.median(r['fit_seconds'] for r in run):.3f} s, acq "
                      f"{statistics.median(r['acq_seconds'] for r in run):.3f} s per iteration", flush=True)
                write(rows, args, loop_report(rows, args))
    print(loop_report(rows, args))


if __name__ == "__main__":
    main()
