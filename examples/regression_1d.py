# Example: exact GP regression of a noisy 1-D function; prints the fit and plots the posterior
# (mean, 95% band, samples, data) and the training curve to a PNG. Run with --help for options.
"""Fit ``Scale(RBF)`` to n noisy samples of sin(3x) + x/2 on [-3, 3].

    python examples/regression_1d.py --n 200 --iters 100 --plot regression_1d.png
"""
from __future__ import annotations

import argparse
import math
import warnings

import torch

import flashgp as fg


def make_data(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x (n, 1) uniform on [-3, 3] and targets y (n,) = f(x) + N(0, noise^2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 6 - 3
    return x, truth(x[:, 0]) + noise * torch.randn(n, generator=g, dtype=torch.float64)


def truth(x: torch.Tensor) -> torch.Tensor:
    """The latent function f(x) = sin(3x) + x/2 for x of any shape."""
    return torch.sin(3 * x) + 0.5 * x


def save_plot(model: fg.ExactGP, history: fg.History, path: str) -> None:
    """Posterior on a grid (left) and the training curve (right), written to ``path``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'flashgp[plot]')")
        return
    from flashgp.plot import plot_history, plot_posterior_1d

    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[2, 1])
    grid = torch.linspace(-3.5, 3.5, 300, dtype=torch.float64)
    with warnings.catch_warnings():  # joint samples on a dense grid need a tiny, reported jitter
        warnings.simplefilter("ignore", fg.NumericalWarning)
        plot_posterior_1d(model, grid, num_samples=3, ax=left, generator=torch.Generator().manual_seed(0))
    left.plot(grid, truth(grid), "k:", lw=1, label="truth")
    left.legend(loc="upper left", fontsize="small")
    plot_history(history, ax=right)
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="training points (default 200)")
    parser.add_argument("--iters", type=int, default=100, help="Adam steps (default 100)")
    parser.add_argument("--noise", type=float, default=0.2, help="noise standard deviation of the data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", help="write the figure to this path")
    args = parser.parse_args(argv)

    x, y = make_data(args.n, args.noise, args.seed)
    model = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF()))
    history = fg.fit(model, optimizer="adam", lr=0.1, iters=args.iters, progress=False, seed=args.seed)

    x_test = torch.linspace(-3, 3, 500, dtype=torch.float64).unsqueeze(-1)
    post = model.posterior(x_test)                       # latent f: mean (500,), variance (500,)
    lower, upper = model.predict(x_test).confidence_region()  # 95% band for new observations
    rmse = float((post.mean - truth(x_test[:, 0])).pow(2).mean().sqrt())
    print(f"n={args.n}, {args.iters} Adam steps, solver path: {model.diagnostics['path']}")
    with torch.no_grad():
        ls, scale, noise = (float(v) for v in (model.kernel.base.lengthscale, model.kernel.outputscale,
                                               model.likelihood.noise))
    print(f"  lengthscale {ls:.3f}   outputscale {scale:.3f}   noise std {math.sqrt(noise):.3f} "
          f"(true {args.noise})")
    print(f"  RMSE of the posterior mean against f: {rmse:.4f}   mean 95% band width "
          f"{float((upper - lower).mean()):.3f}")
    if args.plot:
        save_plot(model, history, args.plot)


if __name__ == "__main__":
    main()
