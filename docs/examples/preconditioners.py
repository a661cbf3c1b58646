"""How many CG iterations each preconditioner saves on one problem.

Dense data in two dimensions with a small noise: the regime where a low-rank preconditioner
struggles and Vecchia's nearest-neighbour factor does well. Every preconditioner keeps about the
same memory, ``--memory`` numbers per training point: a rank-k factor, or k - 1 neighbours.

    python docs/examples/preconditioners.py --n 2000 --memory 32 --plot preconditioners.png
"""
from __future__ import annotations

import argparse
import time

import torch

import flashgp as fg


def problem(n: int, d: int, noise: float, seed: int):
    """x (n, d) uniform on the unit cube and y = sum_j sin(6 x_j) + noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(6 * x).sum(-1) + noise**0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="training points (default 2000)")
    parser.add_argument("--d", type=int, default=2, help="input dimensions (default 2)")
    parser.add_argument("--noise", type=float, default=0.0025, help="noise variance (default 0.0025)")
    parser.add_argument("--memory", type=int, default=32, help="numbers kept per training point (default 32)")
    parser.add_argument("--plot", metavar="PNG", help="write a bar chart of the iterations here")
    args = parser.parse_args(argv)

    x, y = problem(args.n, args.d, args.noise, seed=0)
    x_test = torch.rand(10, args.d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = args.memory
    choices = {"none": None, f"PivotedCholesky({k})": fg.PivotedCholesky(k),
               f"RPCholesky({k})": fg.RPCholesky(k), f"Nystrom({k})": fg.Nystrom(k),
               f"Vecchia({k - 1})": fg.Vecchia(k - 1)}
    print(f"n = {args.n}, d = {args.d}, noise variance {args.noise}, Matern 5/2, lengthscale 0.2 (fixed)")
    print("CG iterations of the posterior mean solve (relative residual 1e-3):")
    print(f"{'preconditioner':<22}{'CG iterations':>14}{'build s':>9}{'solve s':>9}")
    iterations = {}
    for name, precond in choices.items():
        kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, lengthscale=0.2), outputscale=1.0)
        model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=args.noise),
                           solver=fg.CG(precond=precond, variance_tol=None))
        start = time.perf_counter()
        model.posterior(x_test).mean
        d = model.diagnostics
        iterations[name] = d["cg_iterations"]
        print(f"{name:<22}{d['cg_iterations']:>14}{d['precond_seconds']:>9.3f}"
              f"{d['mean_solve_seconds']:>9.3f}")
    best = min(iterations, key=iterations.get)
    print(f"fewest iterations: {best}")

    if args.plot:
        from matplotlib.figure import Figure
        figure = Figure(figsize=(7, 3), layout="constrained")
        ax = figure.subplots()
        names = list(iterations)
        ax.barh(names[::-1], [iterations[n] for n in names[::-1]], color="C0")
        ax.set_xlabel("CG iterations of the posterior mean solve")
        ax.set_title(f"n = {args.n}, d = {args.d}, noise {args.noise}: equal memory per point",
                     fontsize="medium")
        figure.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
