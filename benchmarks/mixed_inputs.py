# Mixed categorical and continuous inputs: the Hilbert-space basis-function model (fg.BasisGP with
# kernels.HilbertSpace x kernels.Categorical) against the exact GP of the same mixed kernel.
"""Benchmark mixed-input GPs: convergence, linear time in n, and a real data set.

Examples (the committed CPU results):
    python benchmarks/mixed_inputs.py --part convergence --out benchmarks/results/mixed/convergence_cpu
    python benchmarks/mixed_inputs.py --part scaling --out benchmarks/results/mixed/scaling_cpu
    python benchmarks/mixed_inputs.py --part bike --out benchmarks/results/mixed/bike_cpu

Parts:

* ``convergence``: synthetic data (2 continuous columns on [-2, 2], one categorical column of 4
  levels, n = --n), hyperparameters fixed (Matern 5/2, lengthscales 0.5 and 0.8, exchangeable
  decay 0.7, noise 0.01). The exact GP of Scale(Matern * Categorical) (fg.Cholesky, float64) against
  BasisGP with Scale(HilbertSpace(Matern, m) * Categorical) for m basis functions per column and
  each boundary factor c (the box's half-width over half the inputs' range):
  the gap in log marginal likelihood per point, the largest gaps of the posterior means and
  variances at 500 test points, and the largest kernel error on them.
* ``scaling``: the same data at n = --sizes (P = m^2 (L + 1) features, m = --basis): seconds of the
  first training step (mll and its gradient; with data statistics it includes the one O(n R^2)
  pass over the data), of later steps, and of predicting 10,000 test points, and the process's
  peak resident memory so far. BasisGP from data statistics (its default here), BasisGP forced to
  accumulate over the data in row blocks at every step (O(n P^2); up to --blocks-max), and the
  exact GP (fg.CG(variance_tol=None): BBMM, LOVE variances, the same mixed kernel; up to --exact-max).
* ``bike`` (UCI bike, split 0): hour and temperature continuous, working day, weather situation
  and season categorical (the casual and registered counts, which sum to the target, are left
  out). Three models trained by L-BFGS (--iters): the exact GP with the plain Scale(Matern 5/2,
  ARD) on all six columns as numbers; the exact GP of the mixed kernel Scale(Matern([hour, temp])
  * Categorical(working day)) + Scale(Categorical(weather)) + Scale(Categorical(season)); and
  BasisGP with the same kernel through HilbertSpace. The exact GPs use fg.Cholesky on --max-train
  training rows; BasisGP runs on those and on all training rows. Test RMSE and NLL
  (standardized target), seconds per training step.

Writes ``<out>.md`` and ``<out>.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import flashgp as fg  # noqa: E402
from flashgp.kernels import Categorical, HilbertSpace, Matern, Scale  # noqa: E402
from results_file import write_results  # noqa: E402
from uci import StepTimer, metrics  # noqa: E402

F64 = torch.float64
LEVELS = 4


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    cont = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    codes = torch.randint(0, LEVELS, (n, 1), generator=g).to(F64)
    offsets = torch.tensor([0.0, 0.8, -0.5, 0.3], dtype=F64)[codes[:, 0].long()]
    y = torch.sin(2 * cont[:, 0]) * torch.cos(cont[:, 1]) + offsets + 0.1 * torch.randn(n, generator=g, dtype=F64)
    return torch.cat([cont, codes], -1), y


def mixed_kernel(m: int | None, factor: float = 1.5):
    stationary = Matern(nu=2.5, ard_dims=2, active_dims=[0, 1])
    cont = stationary if m is None else HilbertSpace(stationary, m, boundary_factor=factor)
    return Scale(cont * Categorical(LEVELS, active_dims=[2]))


def set_values(model):
    kernel = model.kernel
    first = kernel.base.kernels[0]
    getattr(first, "base", first).lengthscale = [0.5, 0.8]
    kernel.base.kernels[1].decay = 0.7
    kernel.outputscale = 1.0
    model.likelihood.noise = 0.01
    model.mean.constant = 0.0


def part_convergence(args) -> list[dict]:
    x, y = synthetic(args.n, args.seed)
    test, _ = synthetic(500, args.seed + 1)
    test[:, :2] *= 0.95  # inside the training inputs' range
    exact = fg.ExactGP(x, y, mixed_kernel(None), solver=fg.Cholesky())
    set_values(exact)
    with torch.no_grad():
        start = time.perf_counter()
        mll, post = float(exact.mll()), exact.posterior(test)
        exact_seconds = time.perf_counter() - start
        k_exact = exact.kernel(test)
    rows = [{"model": "exact (Cholesky)", "m": None, "features": None, "mll": mll, "seconds": exact_seconds}]
    print(f"exact: mll {mll:+.6f} ({exact_seconds:.2f} s)", flush=True)
    for factor in args.boundary_factors:
        for m in args.basis_counts:
            rows.append(convergence_row(x, y, test, m, factor, mll, post, k_exact))
    return rows


def convergence_row(x, y, test, m, factor, mll, post, k_exact) -> dict:
    model = fg.BasisGP(x, y, mixed_kernel(m, factor))
    set_values(model)
    with torch.no_grad():
        start = time.perf_counter()
        value, approx = float(model.mll()), model.posterior(test)
        seconds = time.perf_counter() - start
        row = {"model": f"BasisGP, boundary factor {factor:g}", "m": m, "features": model.num_features, "mll": value,
               "mll_gap": abs(value - mll), "mean_gap": float((approx.mean - post.mean).abs().max()),
               "variance_gap": float((approx.variance - post.variance).abs().max()),
               "kernel_error": float((model.kernel(test) - k_exact).abs().max()), "seconds": seconds}
    print(f"c={factor:g} m={m:3d} P={row['features']:6d}: mll gap {row['mll_gap']:.2e}  mean gap {row['mean_gap']:.2e}  "
          f"var gap {row['variance_gap']:.2e}  kernel err {row['kernel_error']:.2e}  {seconds:.2f} s", flush=True)
    return row


def timed_step(model) -> float:
    start = time.perf_counter()
    loss = model.loss()
    loss.backward()
    return time.perf_counter() - start


def part_scaling(args) -> list[dict]:
    rows = []
    test, _ = synthetic(10_000, args.seed + 1)
    variants = {"BasisGP (statistics)": None, "BasisGP (row blocks)": args.blocks_max, "exact (CG)": args.exact_max}
    for n in args.sizes:
        x, y = synthetic(n, args.seed)
        for name, limit in variants.items():
            if limit is not None and n > limit:
                continue
            model = (fg.ExactGP(x, y, mixed_kernel(None), solver=fg.CG(variance_tol=None)) if name.startswith("exact")
                     else fg.BasisGP(x, y, mixed_kernel(args.basis)))
            if name.endswith("(row blocks)"):
                model._statistics_apply = lambda: False  # the O(n P^2) pass at every step
            set_values(model)
            first = timed_step(model)  # BasisGP (statistics): includes the one pass over the data
            steps = [timed_step(model) for _ in range(args.repeats)]
            start = time.perf_counter()
            with torch.no_grad():
                post = model.posterior(test)
                _ = post.variance
            predict = time.perf_counter() - start
            row = {"model": name, "n": n, "features": model.num_features if name.startswith("Basis") else None,
                   "first_step_seconds": first, "step_seconds": steps, "seconds_per_step": statistics.median(steps),
                   "predict_seconds": predict, "peak_rss_mb": peak_rss_mb()}
            rows.append(row)
            print(f"{name:<21} n={n:>9,}: first step {first:.2f} s, then {row['seconds_per_step']:.3f} s/step, "
                  f"predict 10k {predict:.2f} s, peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
            del model
    return rows


BIKE_CONTINUOUS, BIKE_CATEGORICAL = [6, 11], [9, 10, 3]  # hour, temp; working day, weather, season


def load_bike(args):
    data = np.loadtxt(Path(args.data) / "bike" / "data.csv.gz", delimiter=",")
    mask = np.loadtxt(Path(args.data) / "bike" / "test_mask.csv.gz", delimiter=",")[:, 0].astype(bool)
    cont = data[:, BIKE_CONTINUOUS]
    codes = np.stack([np.unique(data[:, c], return_inverse=True)[1] for c in BIKE_CATEGORICAL], 1)
    levels = [int(codes[:, j].max()) + 1 for j in range(codes.shape[1])]
    y = data[:, -1]
    train, test = ~mask, mask
    mu, sd = cont[train].mean(0), cont[train].std(0)
    y_mu, y_sd = y[train].mean(), y[train].std()
    x = np.concatenate([(cont - mu) / sd, codes], 1)
    y = (y - y_mu) / y_sd
    as_t = lambda a: torch.as_tensor(a, dtype=F64)  # noqa: E731
    return as_t(x[train]), as_t(y[train]), as_t(x[test]), as_t(y[test]), levels


def bike_kernel(levels, m: int | None):
    stationary = Matern(nu=2.5, ard_dims=2, active_dims=[0, 1])
    cont = stationary if m is None else HilbertSpace(stationary, m, boundary_factor=1.5)
    work, weather, season = (Categorical(levels[j], active_dims=[2 + j]) for j in range(3))
    return Scale(cont * work) + Scale(weather) + Scale(season)


def fit_and_score(model, x_test, y_test, args) -> dict:
    timer = StepTimer()
    fg.fit(model, optimizer="lbfgs", iters=args.iters, progress=False, seed=args.seed, callback=timer)
    steps = timer.seconds
    with torch.no_grad():
        pred = model.predict(x_test)
    return {"seconds_per_step": statistics.median(steps), "steps": len(steps), "final_loss": float(model.loss()),
            **metrics(pred.mean, pred.variance, y_test)}


def part_bike(args) -> list[dict]:
    x, y, x_test, y_test, levels = load_bike(args)
    keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(args.seed))[:args.max_train]
    keep = keep.sort().values
    xs, ys = x[keep], y[keep]
    print(f"bike: {x.shape[0]} training rows ({xs.shape[0]} in the subset), {x_test.shape[0]} test rows, levels "
          f"{levels}", flush=True)
    runs = [("exact, plain Scale(Matern 5/2 ARD) on 5 numbers", xs, ys,
             lambda a, b: fg.ExactGP(a, b, Scale(Matern(nu=2.5, ard_dims=5)), solver=fg.Cholesky())),
            ("exact, mixed kernel", xs, ys, lambda a, b: fg.ExactGP(a, b, bike_kernel(levels, None), solver=fg.Cholesky())),
            (f"BasisGP, mixed kernel (m={args.basis})", xs, ys, lambda a, b: fg.BasisGP(a, b, bike_kernel(levels, args.basis))),
            (f"BasisGP, mixed kernel (m={args.basis})", x, y, lambda a, b: fg.BasisGP(a, b, bike_kernel(levels, args.basis)))]
    rows = []
    for name, a, b, build in runs:
        torch.manual_seed(args.seed)
        model = build(a, b)
        result = fit_and_score(model, x_test, y_test, args)
        row = {"model": name, "n_train": a.shape[0], **result}
        rows.append(row)
        print(f"{name:<52} n={a.shape[0]:>6}: RMSE {row['rmse']:.4f}  NLL {row['nll']:+.4f}  "
              f"{row['seconds_per_step']:.3f} s/step ({row['steps']} steps)", flush=True)
    return rows


def table(part: str, rows: list[dict]) -> str:
    if part == "convergence":
        lines = ["| model | m per column | features P | mll / n | mll gap | max mean gap | max variance gap | max kernel error | s |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            gaps = [f"{r[k]:.2e}" if k in r else "" for k in ("mll_gap", "mean_gap", "variance_gap", "kernel_error")]
            lines.append(f"| {r['model']} | {r['m'] or ''} | {r['features'] or ''} | {r['mll']:+.6f} | "
                         + " | ".join(gaps) + f" | {r['seconds']:.2f} |")
        return "\n".join(lines)
    if part == "scaling":
        lines = ["| model | n | features P | s, first step | s / later step | s to predict 10,000 | peak RSS so far (MB) |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['model']} | {r['n']:,} | {r['features'] or ''} | {r['first_step_seconds']:.2f} | "
                         f"{r['seconds_per_step']:.3f} | {r['predict_seconds']:.2f} | {r['peak_rss_mb']:.0f} |")
        return "\n".join(lines)
    lines = ["| model | n train | test RMSE | test NLL | s / L-BFGS step | steps |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n_train']:,} | {r['rmse']:.4f} | {r['nll']:+.4f} | "
                     f"{r['seconds_per_step']:.3f} | {r['steps']} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", required=True, choices=("convergence", "scaling", "bike"))
    parser.add_argument("--n", type=int, default=2000, help="convergence: training points")
    parser.add_argument("--basis-counts", type=lambda s: [int(v) for v in s.split(",")], default=[4, 8, 12, 16, 24, 32])
    parser.add_argument("--boundary-factors", type=lambda s: [float(v) for v in s.split(",")], default=[1.5, 3.0],
                        help="convergence: HilbertSpace boundary factors")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[10_000, 30_000, 100_000, 300_000, 1_000_000])
    parser.add_argument("--basis", type=int, default=10, help="scaling, bike: basis functions per column")
    parser.add_argument("--exact-max", type=int, default=20_000, help="scaling: largest n of the exact GP")
    parser.add_argument("--blocks-max", type=int, default=100_000, help="scaling: largest n of the row-block path")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=str(REPO / ".uci"), help="folder of UCI-format data sets (default .uci)")
    parser.add_argument("--max-train", type=int, default=4000)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {"convergence": part_convergence, "scaling": part_scaling, "bike": part_bike}[args.part](args)
    text = table(args.part, rows)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_results(out, rows, args)
        out.with_suffix(".md").write_text(f"# Mixed inputs: {args.part}\n\n`python benchmarks/mixed_inputs.py "
                                          f"{' '.join(sys.argv[1:])}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
