# Benchmark: CG iterations of one training mll against the pivoted-Cholesky rank, on a small
# problem whose conditioning mimics a large one (the noise scaled by n / n_target).
"""CG iterations of one training mll for each pivoted-Cholesky rank.

    python benchmarks/precond_rank.py --n 20000 --ranks 100 200 400

The data are those of examples/large_gpu_fit.py: uniform on [0, 1]^d, a sum of sines plus noise.
The kernel is Scale(Matern 5/2, ARD), with the hyperparameters given. The conditioning of
K + noise I is set by n lambda_i / noise, where lambda_i are the kernel operator's eigenvalues.
So the n points here, with noise * n / target_n, stand in for target_n points with ``noise``,
at a cost a CPU can pay. The defaults are the hyperparameters after 46 Adam steps of the n = 1M
fit (benchmarks/results/session7/README.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "examples"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import flashgp as fg  # noqa: E402
from large_gpu_fit import synthetic  # noqa: E402


def iterations(x, y, rank: int, lengthscale, outputscale: float, noise: float, max_iters: int,
               backend: str) -> dict:
    """One mll at the given hyperparameters; the solver's diagnostics of it."""
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=x.shape[-1]))
    solver = fg.CG(tol=1.0, precond=fg.PivotedCholesky(rank), backend=backend, max_iters=max_iters)
    model = fg.ExactGP(x, y, kernel, solver=solver)
    with torch.no_grad():
        model.kernel.base.lengthscale = torch.tensor([lengthscale], dtype=x.dtype)
        model.kernel.outputscale = torch.tensor(outputscale, dtype=x.dtype)
        model.likelihood.noise = torch.tensor(noise, dtype=x.dtype)
        start = time.perf_counter()
        model.mll()
    return {**model.diagnostics, "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="points used (default 20000)")
    parser.add_argument("--target-n", type=int, default=1_000_000,
                        help="the problem size to mimic (default 1000000)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--lengthscale", type=float, nargs="+", default=[0.1818, 0.1615, 0.1794],
                        help="one per dimension (their number sets d)")
    parser.add_argument("--outputscale", type=float, default=1.6409)
    parser.add_argument("--noise", type=float, default=0.008608, help="noise variance at target-n")
    parser.add_argument("--max-iters", type=int, default=400)
    parser.add_argument("--backend", default="blocked", choices=fg.backends.BACKENDS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1 or args.target_n < args.n:
        parser.error("--n: expected 1 <= n <= --target-n")
    noise = args.noise * args.n / args.target_n
    torch.manual_seed(args.seed)  # the probe vectors
    x, y = synthetic(args.n, len(args.lengthscale), 0.1, torch.device("cpu"), torch.float64, args.seed)
    print(f"n={args.n} standing in for {args.target_n}: noise {noise:.3g}, lengthscale "
          f"{args.lengthscale}, outputscale {args.outputscale}, float64, backend {args.backend}")
    for rank in args.ranks:
        d = iterations(x, y, rank, args.lengthscale, args.outputscale, noise, args.max_iters,
                       args.backend)
        print(f"  rank {rank} (built {d['precond_rank']}): {d['cg_iterations']} CG iterations, "
              f"residual {d['residual']:.3g}, {d['seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
