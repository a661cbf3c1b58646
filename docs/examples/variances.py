"""Predictive variances on the CG path against the exact (Cholesky) ones.

The same hyperparameters go to four models: the float64 Cholesky reference, CG with its default
certified variances (``variance_tol=0.01``), CG with fast uncertified Lanczos (LOVE) variances,
and CG with local variances from the nearest training points. For each, the ratio of its latent
variance to the exact one over the test points.

    python docs/examples/variances.py --n 1500 --test 200 --plot variances.png
"""
from __future__ import annotations

import argparse
import textwrap
import time
import warnings

import torch

import flashgp as fg


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="training points (default 1500)")
    parser.add_argument("--test", type=int, default=200, help="test points (default 200)")
    parser.add_argument("--plot", metavar="PNG", help="write the variance ratios here")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 2, generator=g, dtype=torch.float64)
    y = torch.sin(6 * x).sum(-1) + 0.05 * torch.randn(args.n, generator=g, dtype=torch.float64)
    x_test = torch.rand(args.test, 2, generator=g, dtype=torch.float64)

    def model(solver):
        kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, lengthscale=0.25), outputscale=1.0)
        return fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=0.0025), solver=solver)

    exact = model(fg.Cholesky()).posterior(x_test).variance
    solvers = {
        "certified (default)": fg.CG(),
        "LOVE (rank 200), uncertified": fg.CG(variance_tol=None, exact_var_max=0),
        "local, 64 neighbours": fg.CG(variance_tol=None, exact_var_max=0, local_neighbors=64),
    }
    ratios = {}
    print(f"n = {args.n}, {args.test} test points; latent variance / exact (Cholesky) variance:")
    for name, solver in solvers.items():
        gp = model(solver)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            variance = gp.posterior(x_test).variance
        seconds = time.perf_counter() - start
        ratio = variance / exact
        ratios[name] = ratio
        q = torch.quantile(ratio, torch.tensor([0.0, 0.5, 1.0], dtype=ratio.dtype)).tolist()
        print(f"  {name:<28} min {q[0]:.4f}  median {q[1]:.4f}  max {q[2]:.4f}   "
              f"({gp.diagnostics['variance_method']}, {seconds:.2f} s)")
        for item in caught:
            print(textwrap.fill(f"warning: {item.message}", width=88, initial_indent="    ",
                                subsequent_indent="      "))
    print("the default's certificate (model.diagnostics):")
    for key, value in gp_diagnostics(model(fg.CG()), x_test).items():
        print(f"  {key}: {value}")

    if args.plot:
        from matplotlib.figure import Figure
        figure = Figure(figsize=(7, 3.2), layout="constrained")
        ax = figure.subplots()
        for i, (name, ratio) in enumerate(ratios.items()):
            ax.plot(sorted(ratio.tolist()), label=name, color=f"C{i}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel("test points, sorted by ratio")
        ax.set_ylabel("variance / exact")
        ax.legend(fontsize="small")
        figure.savefig(args.plot, dpi=100)


def gp_diagnostics(gp, x_test) -> dict:
    """The variance certificate's entries of ``model.diagnostics`` after one prediction."""
    gp.posterior(x_test).variance
    keys = ("variance_method", "variance_bound", "variance_error_bound", "variance_uncertified",
            "variance_cg_iterations")
    return {k: gp.diagnostics[k] for k in keys if k in gp.diagnostics}


if __name__ == "__main__":
    main()
