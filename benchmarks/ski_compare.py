# Side-by-side benchmark of flashgp's SKI (fg.kernels.Interpolated) and GPyTorch's KISS-GP
# (GridInterpolationKernel): same data, grid, kernel, starting hyperparameters, optimizer and steps.
"""Benchmark fg.kernels.Interpolated (SKI) against GPyTorch 1.15's GridInterpolationKernel.

Example: python benchmarks/ski_compare.py --n 100000,1000000 --dims 1,2 --device cpu
--out benchmarks/results/ski/cpu   (writes cpu.md and cpu.json)

Each (library, d, n) runs in its own subprocess (peak memory: CUDA's max allocated bytes on a GPU,
the resident-set increase over the run on a CPU). Data: synthetic, 1-D on [0, 10] (f = sin 3x +
0.5 cos 7x) or 2-D on [0, 4]^2 (f = sin 2x1 cos 1.5x2 + 0.5 sin 3x2), noise 0.1, test points drawn
like the training points. Model: constant mean, Scale(RBF) with one lengthscale (GPyTorch 1.15.2
applies ARD lengthscales in reverse dimension order inside GridInterpolationKernel, so ARD would
not compare like with like), Gaussian likelihood, all starting at the same values (lengthscale
--lengthscale, outputscale 1, noise 0.05, mean 0). Both interpolate by cubic convolution (Keys,
a = -0.5) on the same grid: flashgp's from the training range widened by two spacings, given to
GPyTorch point by point (``update_grid``). Both train by Adam (--lr) for --iters timed steps after
two warm-up steps with their CG settings matched to GPyTorch's defaults: training CG tolerance 1,
10 probe vectors, at least 20 Lanczos steps, a rank-15 pivoted Cholesky preconditioner; predictions
with CG tolerance 0.01 and LOVE variances from a rank-100 root (GPyTorch: fast_pred_var). Reported:
median seconds per training step, prediction seconds (mean and variance of the test set), peak
memory, test RMSE and NLL (predictive, with the noise) and the mll per point at the last step.
"flashgp-exact" is the exact GP (fg.Cholesky, same start and steps) where n <= --exact-n: the
reference SKI should approach.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from subprocess_runs import record_run, run_in_subprocess, worker_options, write_report  # noqa: E402
from uci import device_name, make_sync, metrics, version_of  # noqa: E402

WARMUP = 2
NOISE = 0.1
INIT = {"outputscale": 1.0, "noise": 0.05, "mean": 0.0}


def truth(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] == 1:
        return torch.sin(3 * x[:, 0]) + 0.5 * torch.cos(7 * x[:, 0])
    return torch.sin(2 * x[:, 0]) * torch.cos(1.5 * x[:, 1]) + 0.5 * torch.sin(3 * x[:, 1])


def data(n: int, d: int, test: int, dtype, seed: int):
    """(x_train (n, d), y_train, x_test (test, d), y_test) on [0, 10] (1-D) or [0, 4]^2 (2-D); the
    test points lie inside the training range (the grid covers that range)."""
    g = torch.Generator().manual_seed(seed)
    width = 10.0 if d == 1 else 4.0
    x = torch.rand(n + test, d, generator=g, dtype=torch.float64) * width
    y = truth(x) + NOISE * torch.randn(n + test, generator=g, dtype=torch.float64)
    x_test = x[n:].clamp(float(x[:n].min()), float(x[:n].max()))
    return x[:n].to(dtype), y[:n].to(dtype), x_test.to(dtype), y[n:].to(dtype)


def ski_kernel(x, grid: int, lengthscale: float):
    """flashgp's Interpolated(Scale(RBF)) with its grid fixed from x, and the grid's points per axis."""
    import flashgp as fg
    rbf = fg.kernels.RBF(lengthscale=lengthscale)
    kernel = fg.kernels.Interpolated(fg.kernels.Scale(rbf, outputscale=INIT["outputscale"]), grid_size=grid)
    spec = kernel.grid(x)
    points = [s + h * torch.arange(g, dtype=torch.float64) for s, h, g in zip(spec.start, spec.spacing, spec.shape)]
    return kernel, points


def train(model, loss_fn, args, sync) -> tuple[list, float]:
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    times, loss = [], None
    for _ in range(args.iters + WARMUP):
        start = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - start)
    return times[WARMUP:], float(loss.detach())


def run_flashgp(ds, args, device, sync, exact=False) -> dict:
    import flashgp as fg
    x, y, x_test, y_test = ds
    if exact:
        kernel = fg.kernels.Scale(fg.kernels.RBF(lengthscale=args.lengthscale), outputscale=INIT["outputscale"])
        solver = fg.Cholesky()
    else:
        kernel, _ = ski_kernel(x, args.grid_size, args.lengthscale)
        solver = fg.CG(tol=1.0, probes=10, lanczos_iters=20, precond=fg.PivotedCholesky(rank=15), eval_tol=0.01,
                       variance_tol=None, exact_var_max=0, root_rank=100)
    model = fg.ExactGP(x, y, kernel.to(device), likelihood=fg.likelihoods.Gaussian(noise=INIT["noise"]),
                       mean=fg.means.Constant(INIT["mean"]), solver=solver)
    times, loss = train(model, lambda: model.loss().sum(), args, sync)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LOVE's convergence warning: reported through the metrics
        pred = model.predict(x_test)
        mean, var = pred.mean, pred.variance
    sync()
    d = model.diagnostics
    return {"loss_end": loss, "step_times": times, "predict_seconds": time.perf_counter() - start,
            "backend": d.get("backend"), "variance_root_change": d.get("variance_root_change"),
            **metrics(mean, var, y_test)}


def run_gpytorch(ds, args, device, sync) -> dict:
    import gpytorch
    x, y, x_test, y_test = ds
    _, points = ski_kernel(x.cpu(), args.grid_size, args.lengthscale)
    d = x.shape[-1]

    class Peer(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            lows = [float(p[1]) for p in points]
            highs = [float(p[-2]) for p in points]
            grid = gpytorch.kernels.GridInterpolationKernel(gpytorch.kernels.RBFKernel(), grid_size=args.grid_size,
                                                            num_dims=d, grid_bounds=list(zip(lows, highs)))
            self.covar_module = gpytorch.kernels.ScaleKernel(grid)

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = Peer(x, y, likelihood).to(device=device, dtype=x.dtype)
    likelihood.to(device=device, dtype=x.dtype)
    model.covar_module.base_kernel.update_grid([p.to(device=device, dtype=x.dtype) for p in points])
    model.covar_module.base_kernel.base_kernel.lengthscale = args.lengthscale
    model.covar_module.outputscale = INIT["outputscale"]
    likelihood.noise = INIT["noise"]
    model.mean_module.constant.data.fill_(INIT["mean"])
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    model.train()
    likelihood.train()
    times, loss = train(model, lambda: -mll(model(x), y), args, sync)
    model.eval()
    likelihood.eval()
    start = time.perf_counter()
    with torch.no_grad(), gpytorch.settings.fast_pred_var(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = likelihood(model(x_test))
        mean, var = pred.mean, pred.variance
    sync()
    return {"loss_end": loss, "step_times": times, "predict_seconds": time.perf_counter() - start,
            **metrics(mean, var, y_test)}


def worker(args) -> int:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    sync = make_sync(device)
    ds = tuple(t.to(device) for t in data(args.n_one, args.d, args.test, getattr(torch, args.dtype), args.seed))
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"lib": args.lib, "n": args.n_one, "d": args.d, "grid": args.grid_size}
    if args.lib == "gpytorch":
        run = lambda: run_gpytorch(ds, args, device, sync)  # noqa: E731
    else:
        run = lambda: run_flashgp(ds, args, device, sync, exact=args.lib == "flashgp-exact")  # noqa: E731
    record_run(result, run, device, args.result)
    return 0


def table(rows: list) -> str:
    lines = ["| d | n | grid | library | s / step | predict s | peak MiB | RMSE | NLL | mll / n at end | step ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        grid = "exact" if row["lib"] == "flashgp-exact" else f"{row['grid']}^{row['d']}"
        if "error" in row:
            lines.append(f"| {row['d']} | {row['n']} | {grid} | {row['lib']} | failed: {row['error'][:120]} "
                         f"| | | | | | |")
            continue
        peer = next((r for r in rows if (r["d"], r["n"]) == (row["d"], row["n"]) and r["lib"] == "gpytorch"
                     and "error" not in r), None)
        ratio = f"{peer['step_seconds'] / row['step_seconds']:.2f}x" if peer and row["lib"] == "flashgp" else ""
        lines.append(f"| {row['d']} | {row['n']} | {grid} | {row['lib']} | {row['step_seconds']:.3f} | "
                     f"{row['predict_seconds']:.2f} | {row['peak_bytes'] / 2**20:.0f} | {row['rmse']:.4f} | "
                     f"{row['nll']:.4f} | {-row['loss_end']:.4f} | {ratio} |")
    return "\n".join(lines)


def parent(args) -> int:
    rows = []
    for d in args.dims:
        grid = args.grid[min(d, len(args.grid)) - 1]
        sizes = sorted(set(args.n) | ({args.exact_n} if args.exact_n and "flashgp-exact" in args.libs else set()))
        for n in sizes:
            for lib in args.libs:
                if lib == "flashgp-exact" and n > args.exact_n:
                    continue
                options = ["--lib", lib, "--d", str(d), "--n-one", str(n), "--grid-size", str(grid)] + \
                    worker_options(args, ("device", "dtype", "iters", "lr", "seed", "threads", "test", "lengthscale"))
                row = run_in_subprocess(__file__, options, args.timeout, {"lib": lib, "n": n, "d": d, "grid": grid})
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    device = torch.device(args.device)
    header = (f"SKI side by side, {device_name(device)}, {args.threads} threads, torch {torch.__version__}, gpytorch "
              f"{version_of('gpytorch')}, {args.dtype}, Adam lr {args.lr}, {args.iters} timed steps (after "
              f"{WARMUP} warm-up steps), {args.test} test points, {time.strftime('%Y-%m-%d')}.\n\n"
              f"Command: `python benchmarks/ski_compare.py {' '.join(sys.argv[1:])}`\n\n")
    write_report(args.out, header, table(rows), {"args": vars(args), "device": device_name(device),
                                                 "torch": torch.__version__, "gpytorch": version_of("gpytorch"),
                                                 "rows": rows})
    print(table(rows))
    return 0


def ints(text: str) -> list:
    return [int(v) for v in text.split(",")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--n", default="100000,1000000", type=ints, help="training sizes (default 100000,1000000)")
    p.add_argument("--dims", default="1,2", type=ints, help="input dimensions, 1 to 3 (default 1,2)")
    p.add_argument("--grid", default="1000,100,30", type=ints,
                   help="grid points per dimension for d = 1, 2, 3 (default 1000,100,30)")
    p.add_argument("--exact-n", type=int, default=5000,
                   help="size of the exact-GP reference run (with the SKI runs at that size; 0: none)")
    p.add_argument("--libs", default="flashgp,gpytorch,flashgp-exact", type=lambda s: s.split(","),
                   help="comma-separated: flashgp, gpytorch, flashgp-exact (default all)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--iters", type=int, default=10, help="timed Adam steps (default 10)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--lengthscale", type=float, default=0.3, help="initial lengthscale (default 0.3)")
    p.add_argument("--test", type=int, default=10000, help="test points (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run (default 1800)")
    p.add_argument("--out", default="results/ski_compare", help="output stem (.md, .json)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--d", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n-one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--grid-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.worker:
        if not all(1 <= d <= 3 for d in args.dims):
            p.error("--dims: SKI takes 1 to 3 dimensions")
        unknown = set(args.libs) - {"flashgp", "gpytorch", "flashgp-exact"}
        if unknown:
            p.error(f"--libs: unknown {sorted(unknown)}")
        if args.device == "cuda" and not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return worker(args) if args.worker else parent(args)


if __name__ == "__main__":
    sys.exit(main())
