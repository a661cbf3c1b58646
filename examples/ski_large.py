# Example: structured kernel interpolation (SKI / KISS-GP) on a million 1-D points on a CPU:
# fg.kernels.Interpolated on a regular grid, trained by BBMM, mean and LOVE variances predicted.
"""A SKI GP (``fg.kernels.Interpolated``) on n synthetic 1-D points, trained and predicted on a CPU.

    python examples/ski_large.py                      # n = 1,000,000, grid of 1,000 points, 20 steps
    python examples/ski_large.py --n 20000 --iters 5  # seconds

The kernel is Scale(RBF) interpolated from a regular grid: k(x, x') ~ w(x)^T K_UU w(x'), w the
cubic interpolation weights of x (4 per point), K_UU the RBF on the grid, a Toeplitz matrix
multiplied by FFTs. A training step costs O(n + G log G) per CG iteration (G grid points)
instead of the exact GP's O(n^2); nothing n x n or G x G is ever formed. The grid is fixed from
the training inputs when the model is built (their range widened by two grid spacings).
"""
from __future__ import annotations

import argparse
import math
import time
import warnings

import torch

import flashgp as fg


def truth(x: torch.Tensor) -> torch.Tensor:
    """The noise-free function on [0, 10]: wiggles on a lengthscale of about 0.15 (about 15 spacings
    of the default grid: SKI's error is then far below the noise)."""
    return torch.sin(3 * x) + 0.5 * torch.cos(7 * x)


def synthetic(n: int, noise: float, dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, 1) uniform on [0, 10] and y = truth(x) + noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=dtype) * 10
    return x, truth(x[:, 0]) + noise * torch.randn(n, generator=g, dtype=dtype)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="training points (default 1,000,000)")
    parser.add_argument("--grid", type=int, default=1000, help="grid points (default 1,000)")
    parser.add_argument("--lengthscale", type=float, default=0.3, help="initial RBF lengthscale (default 0.3)")
    parser.add_argument("--iters", type=int, default=20, help="Adam steps (default 20)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    parser.add_argument("--test", type=int, default=10_000, help="test points (default 10,000)")
    parser.add_argument("--noise", type=float, default=0.1, help="noise standard deviation (default 0.1)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--precond-rank", type=int, default=20, help="pivoted Cholesky rank (default 20)")
    parser.add_argument("--root-rank", type=int, default=100,
                        help="Lanczos steps of the cached root for LOVE variances (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 10 or args.grid < 8 or args.test < 1:
        parser.error("expected --n >= 10, --grid >= 8 and --test >= 1")

    dtype = getattr(torch, args.dtype)
    x, y = synthetic(args.n, args.noise, dtype, args.seed)
    x_test = torch.linspace(0.05, 9.95, args.test, dtype=dtype).unsqueeze(-1)
    rbf = fg.kernels.RBF(lengthscale=args.lengthscale)
    kernel = fg.kernels.Interpolated(fg.kernels.Scale(rbf), grid_size=args.grid)
    solver = fg.CG(precond=fg.PivotedCholesky(rank=args.precond_rank), eval_tol=0.01, variance_tol=None,
                   exact_var_max=0, root_rank=args.root_rank)
    start = time.perf_counter()
    model = fg.ExactGP(x, y, kernel, solver=solver)
    grid = model.kernel.grid(model.train_x)  # fixed from the training inputs (the first step would do it)
    spacing, low = grid.spacing[0], grid.start[0]
    high = low + (args.grid - 1) * spacing
    print(f"n={args.n}, grid={args.grid} points (spacing {spacing:.4g} on [{low:.3f}, {high:.3f}]), {args.dtype}, "
          f"CPU threads {torch.get_num_threads()}; model built in {time.perf_counter() - start:.2f} s")

    def report(step, loss, model):
        d = model.diagnostics
        with torch.no_grad():
            lengthscale, noise = float(model.kernel.base.base.lengthscale), float(model.likelihood.noise)
        print(f"  step {step}: loss {float(loss):+.5f}, {d['seconds']:.2f} s, {d['cg_iterations']} CG iterations, "
              f"lengthscale {lengthscale:.4f} ({lengthscale / spacing:.1f} grid spacings), noise {noise:.4g}",
              flush=True)

    start = time.perf_counter()
    history = fg.fit(model, optimizer="adam", lr=args.lr, iters=args.iters, progress=False, seed=args.seed,
                     callback=report)
    train = time.perf_counter() - start
    steps = sum(history.step_seconds)
    print(f"  training: {len(history)} steps in {train:.1f} s ({steps / max(1, len(history)):.2f} s/step), "
          f"backend {model.diagnostics.get('backend')}")

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fg.NumericalWarning)
        pred = model.predict(x_test)
        mean, std = pred.mean, pred.stddev
    seconds = time.perf_counter() - start
    y_test = truth(x_test[:, 0]) + args.noise * torch.randn(args.test, generator=torch.Generator().manual_seed(1),
                                                             dtype=dtype)
    rmse = float((mean - y_test).pow(2).mean().sqrt())
    nll = float((0.5 * ((y_test - mean) / std).square() + std.log()).mean() + 0.5 * math.log(2 * math.pi))
    coverage = float(((y_test - mean).abs() <= 1.96 * std).to(dtype).mean())
    d = model.diagnostics
    print(f"  prediction of {args.test} points in {seconds:.1f} s (mean solve {d.get('cg_iterations')} CG iterations; "
          f"{d.get('variance_method')} variances, root change {d.get('variance_root_change', float('nan')):.3g})")
    print(f"  test RMSE {rmse:.4f} (noise std {args.noise}), test NLL {nll:.4f}, 95% coverage {coverage:.3f}")
    for warning in caught:
        print(f"  warning: {str(warning.message)[:160]}")


if __name__ == "__main__":
    main()
