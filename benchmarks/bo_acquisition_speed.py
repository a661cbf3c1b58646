# The cost of acquisition-function evaluations on FlashGPModel against SingleTaskGP at identical
# hyperparameters, so that only the models' posterior code differs (bo_compare.py's loop fits each
# model itself, and optimize_acqf's iteration counts then differ with the fits).
"""Acquisition cost at equal hyperparameters.

    python benchmarks/bo_acquisition_speed.py --threads 1 --out benchmarks/results/bo/acq_speed_cpu
    python benchmarks/bo_acquisition_speed.py --device cuda --sizes 1000,5000,10000 --out ...

For each n: Hartmann-6 at n Sobol points (plus N(0, 0.05^2) noise), SingleTaskGP fitted by
fit_gpytorch_mll (n <= 2,000) or left at its defaults, and FlashGPModel given the same
lengthscales, noise and constant (Normalize and Standardize on both). Timed, median of
``--reps``: qLogExpectedImprovement on 512 raw samples (X (512, 1, 6), no gradient; the start of
optimize_acqf), its value and gradient at 10 restarts (X (10, 1, 6); one step of the
optimizer), and a whole optimize_acqf (num_restarts=10, raw_samples=512, the same seed for
both). Both models take their default solvers (flashgp: fg.Auto, Cholesky up to 2,000 points;
GPyTorch: Cholesky up to 800, CG beyond).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
import warnings
from pathlib import Path

import torch

from botorch.acquisition import qLogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize
from botorch.optim import optimize_acqf
from botorch.test_functions import Hartmann
from botorch.utils.sampling import draw_sobol_samples
from flashgp.botorch import FlashGPModel
from gpytorch.mlls import ExactMarginalLogLikelihood

REPO = Path(__file__).resolve().parents[1]


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps: int) -> float:
    """Median seconds of ``reps`` calls of fn after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def models(n: int, device, dtype, fit_max: int):
    """(FlashGPModel, SingleTaskGP, Y, bounds) on n noisy Hartmann-6 observations, with equal
    hyperparameters (SingleTaskGP's, fitted when n <= fit_max)."""
    function = Hartmann(dim=6, negate=True).to(device=device, dtype=dtype)
    bounds = function.bounds.to(device=device, dtype=dtype)
    torch.manual_seed(0)
    X = draw_sobol_samples(bounds, n=n, q=1, seed=0).squeeze(-2)
    Y = (function(X) + 0.05 * torch.randn(n, device=device, dtype=dtype)).unsqueeze(-1)
    theirs = SingleTaskGP(X, Y, input_transform=Normalize(d=6, bounds=bounds))
    if n <= fit_max:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_gpytorch_mll(ExactMarginalLogLikelihood(theirs.likelihood, theirs))
    ours = FlashGPModel(X, Y, input_transform=Normalize(d=6, bounds=bounds))
    gp = ours.flashgp_model
    gp.kernel.lengthscale = theirs.covar_module.lengthscale.detach().reshape(gp.kernel.lengthscale.shape)
    gp.likelihood.noise = theirs.likelihood.noise.detach().reshape(())
    gp.mean.constant = theirs.mean_module.constant.detach().reshape(())
    theirs.eval()
    ours.eval()
    return ours, theirs, Y, bounds


def measure(n: int, args, device, dtype) -> list[dict]:
    ours, theirs, Y, bounds = models(n, device, dtype, args.fit_max)
    raw = torch.rand(512, 1, 6, device=device, dtype=dtype)
    restarts = torch.rand(10, 1, 6, device=device, dtype=dtype)
    rows = []
    for name, model in (("flashgp", ours), ("SingleTaskGP", theirs)):
        acq = qLogExpectedImprovement(model, best_f=Y.max())

        def raw_values():
            with torch.no_grad():
                acq(raw)

        def value_and_grad():
            x = restarts.clone().requires_grad_(True)
            acq(x).sum().backward()

        def optimize():
            torch.manual_seed(1)
            optimize_acqf(acq, bounds, q=1, num_restarts=10, raw_samples=512)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = {"model": name, "n": n, "raw_512_s": timed(raw_values, device, args.reps),
                   "value_grad_10_s": timed(value_and_grad, device, args.reps),
                   "optimize_acqf_s": timed(optimize, device, max(1, args.reps // 5))}
        rows.append(row)
        print(row, flush=True)
    return rows


def report(rows: list[dict], args, device) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    lines = ["# Acquisition cost at equal hyperparameters: FlashGPModel / SingleTaskGP", "",
             f"Command: `python benchmarks/bo_acquisition_speed.py {' '.join(args.argv)}`", "",
             f"Device: {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; commit {commit}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Median of {args.reps} repetitions "
             f"(optimize_acqf: {max(1, args.reps // 5)}).", "",
             "| n | qLogEI at 512 raw samples, s (flashgp / SingleTaskGP = ratio) | value + grad at 10 restarts, s "
             "| optimize_acqf, s |", "| ---: | --- | --- | --- |"]
    by_n = {}
    for row in rows:
        by_n.setdefault(row["n"], {})[row["model"]] = row
    for n, pair in by_n.items():
        cells = []
        for key in ("raw_512_s", "value_grad_10_s", "optimize_acqf_s"):
            a, b = pair["flashgp"][key], pair["SingleTaskGP"][key]
            cells.append(f"{a:.4f} / {b:.4f} = {a / b:.2f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,50,200,1000")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--fit-max", type=int, default=2000, help="fit SingleTaskGP up to this n")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bo" / "acq_speed_cpu"))
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), torch.float64
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        rows += measure(n, args, device, dtype)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    out.with_suffix(".md").write_text(report(rows, args, device))
    print(f"wrote {out}.md and {out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
