"""What flashgp's numerical warnings look like, and where the numbers behind them are kept.

Three small problems, each set up to trigger one kind of ``fg.NumericalWarning``:

1. a CG solve with too few iterations allowed (``CG(max_iters=...)``);
2. noise-free data, whose learned noise ends on its floor;
3. the same warning raised at every step of a fit: shown once, then summarized.

    python docs/examples/warnings_demo.py
"""
from __future__ import annotations

import textwrap
import warnings

import torch

import flashgp as fg


def data(n: int, noise: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return x, torch.sin(6 * x).sum(-1) + noise * torch.randn(n, generator=g, dtype=torch.float64)


def show(caught) -> None:
    """Print caught warnings, wrapped to the width of a page."""
    for item in caught:
        print(textwrap.fill(f"{item.category.__name__}: {item.message}", width=88,
                            initial_indent="  ", subsequent_indent="      "))


def main() -> None:
    warnings.simplefilter("always", fg.NumericalWarning)

    print("1. The posterior mean solve stops at CG(max_iters=10):")
    x, y = data(1000, 0.05)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, lengthscale=0.2), outputscale=1.0)
    model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=0.0025),
                       solver=fg.CG(precond=None, max_iters=10, variance_tol=None))
    with warnings.catch_warnings(record=True) as caught:
        model.posterior(x[:5]).mean
    show(caught)
    d = model.diagnostics
    print(f"  model.diagnostics: path {d['path']!r}, cg_iterations {d['cg_iterations']}, "
          f"residual {d['residual']:.3g}, converged {d['converged']}")

    print("\n2. Noise-free data (y = f(x) exactly) and a noise floor of 1e-3, Cholesky path:")
    x, y = data(300, 0.0)
    model = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF(ard_dims=2)),
                       likelihood=fg.likelihoods.Gaussian(noise_floor=1e-3))
    with warnings.catch_warnings(record=True) as caught:
        history = fg.fit(model, iters=100, lr=0.3, progress=False)
    show(caught)
    with torch.no_grad():
        print(f"  learned noise {float(model.likelihood.noise):.3g}, floor "
              f"{model.likelihood.noise_floor:.3g}; history.warnings holds {len(history.warnings)}")

    print("\n3. A fit whose every step warns (CG capped at 20 iterations, no preconditioner):")
    x, y = data(1000, 0.05)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, lengthscale=0.2), outputscale=1.0)
    model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=0.0025),
                       solver=fg.CG(precond=None, max_iters=20, lanczos_iters=20))
    with warnings.catch_warnings(record=True) as caught:
        history = fg.fit(model, iters=4, progress=False, seed=0)
    show(caught)
    print("  history.warnings (step, kind):")
    for step, message in history.warnings:
        print(f"    {step}: {message.split(':')[0]}")


if __name__ == "__main__":
    main()
