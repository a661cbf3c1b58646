# Side-by-side benchmark of flashgp's SGPR and GPyTorch's InducingPointKernel (Titsias' collapsed
# bound): same data, kernel, starting hyperparameters, inducing points, optimizer and steps.
"""Benchmark fg.SGPR against GPyTorch 1.15's SGPR (InducingPointKernel) on UCI or synthetic data.

Example: python benchmarks/sgpr_compare.py --data ../shared/data/uci --datasets elevators,protein
--inducing 500,2000 --device cuda --iters 10 --out benchmarks/results/sgpr/sgpr_uci_h100   (writes .md, .json)

Each (library, data set, m) runs in its own subprocess (peak memory: CUDA's max allocated bytes on
a GPU, the resident-set increase on a CPU). Model: constant mean, Scale(RBF, ARD), Gaussian
likelihood; hyperparameters start at softplus(0) = ln 2 (GPyTorch's defaults) in both libraries,
and both start from the same inducing points (k-means++ seeds of the training inputs,
``flashgp.inducing.select_inducing``, seed 0), learned with the hyperparameters by Adam. Reported:
the bound per point at the start (identical parameters), seconds per training step (median after
two warm-up steps), prediction seconds (mean and variance of the test set), peak memory, test
RMSE and NLL on the standardized target. GPyTorch predicts with its defaults (which add diag(K - Q)
to the training covariance, ``gpytorch.settings.sgpr_diagonal_correction``); flashgp with the
bound's optimal posterior (GPflow's). Data set "synth-N-D" is synthetic: N points in D dimensions.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from subprocess_runs import record_run, run_in_subprocess, worker_options, write_report  # noqa: E402
from uci import device_name, load, make_sync, metrics, synthetic, version_of  # noqa: E402

WARMUP = 2


def dataset(args):
    """The data set of a worker: "synth-N-D" or a UCI split (standardized)."""
    if args.dataset.startswith("synth-"):
        _, n, d = args.dataset.split("-")
        ds = synthetic(f"synth-{n}", getattr(torch, args.dtype), args.seed, d=int(d))
        ds.name = args.dataset
        return ds
    return load(args)


def inducing_points(x: torch.Tensor, m: int) -> torch.Tensor:
    from flashgp.inducing import select_inducing
    return select_inducing(x, m, "kmeans++", seed=0)


def run_flashgp(ds, z, args, device, sync) -> dict:
    import flashgp as fg
    d = ds.x_train.shape[-1]
    kernel = fg.kernels.Scale(fg.kernels.RBF(ard_dims=d, lengthscale=math.log(2)), outputscale=math.log(2))
    model = fg.SGPR(ds.x_train, ds.y_train, kernel, inducing=z, likelihood=fg.likelihoods.Gaussian(noise=math.log(2)),
                    mean=fg.means.Constant(0.0))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    bound = float(model.elbo().detach())
    times = []
    for _ in range(args.iters + WARMUP):
        start = time.perf_counter()
        opt.zero_grad()
        loss = model.loss().sum()
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - start)
    model.eval()
    start = time.perf_counter()
    post = model.predict(ds.x_test)
    mean, var = post.mean, post.variance
    sync()
    return {"bound_start": bound, "loss_end": float(loss), "step_times": times[WARMUP:],
            "predict_seconds": time.perf_counter() - start, **metrics(mean, var, ds.y_test)}


def run_gpytorch(ds, z, args, device, sync) -> dict:
    import gpytorch

    class Peer(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            base = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=x.shape[-1]))
            self.covar_module = gpytorch.kernels.InducingPointKernel(base, inducing_points=z.clone(),
                                                                     likelihood=likelihood)

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = Peer(ds.x_train, ds.y_train, likelihood).to(device=device, dtype=ds.x_train.dtype)
    likelihood.to(device=device, dtype=ds.x_train.dtype)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    model.train()
    likelihood.train()
    bound = float(mll(model(ds.x_train), ds.y_train).detach())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    times = []
    for _ in range(args.iters + WARMUP):
        start = time.perf_counter()
        opt.zero_grad()
        loss = -mll(model(ds.x_train), ds.y_train)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - start)
    model.eval()
    likelihood.eval()
    start = time.perf_counter()
    with torch.no_grad():
        pred = likelihood(model(ds.x_test))
        mean, var = pred.mean, pred.variance
    sync()
    return {"bound_start": bound, "loss_end": float(loss), "step_times": times[WARMUP:],
            "predict_seconds": time.perf_counter() - start, **metrics(mean, var, ds.y_test)}


def worker(args) -> int:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    sync = make_sync(device)
    ds = dataset(args)
    ds = ds.to(device) if hasattr(ds, "to") else ds
    for name in ("x_train", "y_train", "x_test", "y_test"):
        setattr(ds, name, getattr(ds, name).to(device))
    torch.manual_seed(args.seed)
    z = inducing_points(ds.x_train, args.m)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = run_flashgp if args.lib == "flashgp" else run_gpytorch
    result = {"lib": args.lib, "dataset": ds.name, "m": args.m, "n": ds.x_train.shape[0], "d": ds.x_train.shape[1]}
    record_run(result, lambda: run(ds, z, args, device, sync), device, args.result)
    return 0


def table(rows: list) -> str:
    lines = ["| data set | n | d | m | library | bound at start | s / step | predict s | peak MiB | RMSE | NLL | step ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['dataset']} | {row['n']} | {row['d']} | {row['m']} | {row['lib']} | "
                         f"failed: {row['error'][:120]} | | | | | | |")
            continue
        peer = next((r for r in rows if r["dataset"] == row["dataset"] and r["m"] == row["m"]
                     and r["lib"] == "gpytorch" and "error" not in r), None)
        ratio = f"{peer['step_seconds'] / row['step_seconds']:.2f}x" if peer and row["lib"] == "flashgp" else ""
        lines.append(f"| {row['dataset']} | {row['n']} | {row['d']} | {row['m']} | {row['lib']} | "
                     f"{row['bound_start']:.6f} | {row['step_seconds']:.4f} | {row['predict_seconds']:.3f} | "
                     f"{row['peak_bytes'] / 2**20:.0f} | {row['rmse']:.4f} | {row['nll']:.4f} | {ratio} |")
    return "\n".join(lines)


def parent(args) -> int:
    rows = []
    for name in args.datasets:
        for m in args.inducing:
            for lib in args.libs:
                options = ["--lib", lib, "--dataset", name, "--m", str(m)] + worker_options(
                    args, ("data", "device", "dtype", "iters", "lr", "split", "seed", "threads", "max_train"))
                row = run_in_subprocess(__file__, options, args.timeout,
                                        {"lib": lib, "dataset": name, "m": m, "n": 0, "d": 0})
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    device = torch.device(args.device)
    header = (f"SGPR side by side, {device_name(device)}, torch {torch.__version__}, gpytorch "
              f"{version_of('gpytorch')}, {args.dtype}, Adam lr {args.lr}, {args.iters} steps, "
              f"{time.strftime('%Y-%m-%d')}.\n\nCommand: `python benchmarks/sgpr_compare.py "
              f"{' '.join(sys.argv[1:])}`\n\n")
    write_report(args.out, header, table(rows), {"args": vars(args), "rows": rows})
    print(table(rows))
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", default=None, help="folder of UCI data sets (default: packaged flashgp/data)")
    p.add_argument("--datasets", default="elevators", type=lambda s: s.split(","),
                   help="comma-separated UCI names or synth-N-D (default elevators)")
    p.add_argument("--inducing", default="500", type=lambda s: [int(v) for v in s.split(",")],
                   help="comma-separated numbers of inducing points (default 500)")
    p.add_argument("--libs", default="flashgp,gpytorch", type=lambda s: s.split(","))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--iters", type=int, default=20, help="timed Adam steps (default 20)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--split", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    p.add_argument("--out", default="results/sgpr_compare", help="output stem (.md, .json; default results/sgpr_compare)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--m", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--max-train", type=int, default=None, help="random subsample of the training split")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return worker(args) if args.worker else parent(args)


if __name__ == "__main__":
    sys.exit(main())
