# Example: a multi-output exact GP (fg.MultitaskGP, intrinsic coregionalisation) on three correlated
# synthetic tasks, against one independent ExactGP per task; then one task left unobserved on an interval.
"""Three correlated outputs of one input: a MultitaskGP against independent ExactGPs.

    python examples/multitask_regression.py                       # n = 50 points, 3 tasks
    python examples/multitask_regression.py --plot multitask.png  # and the figures

Each task is a fixed mixture of two latent functions plus Gaussian noise (std --noise), so the
tasks are correlated. Part 1: every point observed for every task (targets (n, 3)); the
MultitaskGP (Matérn 5/2, B = W Wᵀ + diag(v) of rank 2) takes the exact Kronecker path and is
compared, by the RMSE of its posterior mean against the true functions on a test grid, with
three ExactGPs (Scale(Matérn 5/2)) fitted one task at a time. Part 2: task 0 is not observed on
(0.6, 1.2); the remaining observations go in as rows with a task index each (BoTorch's
MultiTaskGP layout), and on that interval the multitask model predicts task 0 from the others.
"""
from __future__ import annotations

import argparse

import torch

import flashgp as fg

# task a = MIXING[a, 0] g_0(x) + MIXING[a, 1] g_1(x)
MIXING = torch.tensor([[1.0, 0.3], [0.7, -0.6], [-0.8, 0.4]], dtype=torch.float64)
GAP = (0.6, 1.2)  # where task 0 is left unobserved in part 2


def truth(x: torch.Tensor) -> torch.Tensor:
    """The true functions (m, 3) at inputs x (m,) in [0, 2]."""
    latent = torch.stack([torch.sin(5 * x) + 0.6 * torch.sin(11 * x), torch.cos(4 * x)], -1)
    return latent @ MIXING.T


def make_data(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x (n,) uniform on [0, 2] and targets Y (n, 3) = truth(x) + N(0, noise²)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=torch.float64) * 2
    return x, truth(x) + noise * torch.randn(n, MIXING.shape[0], generator=g, dtype=torch.float64)


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root mean squared error per column."""
    return (pred - target).square().mean(0).sqrt()


def independent(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, iters: int, lr: float) -> torch.Tensor:
    """The posterior mean at x_test of one ExactGP fitted to (x, y) alone."""
    model = fg.ExactGP(x.unsqueeze(-1), y, fg.kernels.Scale(fg.kernels.Matern(nu=2.5)))
    fg.fit(model, iters=iters, lr=lr, progress=False)
    with torch.no_grad():
        return model.posterior(x_test.unsqueeze(-1)).mean


def table(title: str, names: list[str], multitask: torch.Tensor, single: torch.Tensor) -> None:
    print(f"{title}\n  {'task':<8}{'MultitaskGP':>12}{'independent':>13}")
    for name, a, b in zip(names, multitask.tolist(), single.tolist()):
        print(f"  {name:<8}{a:>12.3f}{b:>13.3f}")


def save_plot(grid_model, gap_model, x_test, path: str) -> None:
    """Each task's posterior with the true functions (dotted), both parts, and the learned task
    correlations, written to ``path``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'flashgp[plot]')")
        return
    from flashgp.plot_multitask import plot_multitask, plot_task_correlations

    figure = Figure(figsize=(15, 4.2), layout="constrained")
    left, middle, right = figure.subplots(1, 3, width_ratios=[2, 2, 1.3])
    plot_multitask(grid_model, x_test, y=truth(x_test), ax=left)
    left.set_title("every task observed at every x", fontsize="medium")
    plot_multitask(gap_model, x_test, y=truth(x_test), ax=middle)
    middle.axvspan(*GAP, color="0.9", zorder=0)
    middle.set_title(f"task 0 unobserved on ({GAP[0]}, {GAP[1]})", fontsize="medium")
    plot_task_correlations(grid_model, ax=right)
    figure.savefig(path, dpi=100)
    print(f"plot: {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="training points per task (default 50)")
    parser.add_argument("--noise", type=float, default=0.3, help="noise standard deviation (default 0.3)")
    parser.add_argument("--rank", type=int, default=2, help="rank of W in B = W Wᵀ + diag(v) (default 2)")
    parser.add_argument("--iters", type=int, default=100, help="Adam steps per model (default 100)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam's learning rate (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", help="write the figures to this path")
    args = parser.parse_args(argv)

    x, y = make_data(args.n, args.noise, args.seed)
    t = y.shape[1]
    names = [f"task {a}" for a in range(t)]
    x_test = torch.linspace(0, 2, 400, dtype=torch.float64)
    f_test = truth(x_test)
    print(f"{t} tasks, n={args.n} points each, noise std {args.noise}; RMSE of the posterior mean against "
          f"the true functions on {len(x_test)} test points")

    # ----- part 1: every point observed for every task (a grid: the Kronecker path) --------------
    model = fg.MultitaskGP(x.unsqueeze(-1), y, fg.kernels.Matern(nu=2.5), rank=args.rank)
    fg.fit(model, iters=args.iters, lr=args.lr, progress=False)
    post = model.posterior(x_test.unsqueeze(-1))                          # MultitaskPosterior
    lower, upper = post.confidence_region()                               # (m, t) each
    print(f"\nMultitaskGP on the grid: structure {model.diagnostics.get('structure', 'dense')}, "
          f"path {model.diagnostics['path']}, {model.num_train} rows")
    single = torch.stack([independent(x, y[:, a], x_test, args.iters, args.lr) for a in range(t)], -1)
    table("test RMSE, every task observed at every x:", names, rmse(post.mean.detach(), f_test), rmse(single, f_test))
    inside = ((f_test >= lower) & (f_test <= upper)).double().mean(0)
    print("95% band covers the true function on " + ", ".join(f"{v:.0%}" for v in inside.tolist())
          + " of the test points")

    with torch.no_grad():
        b = model.task_covariance
        corr = b / (b.diagonal().sqrt().unsqueeze(-1) * b.diagonal().sqrt())
        true = torch.corrcoef(f_test.T)
    print("learned task correlations [the true functions' correlation over the test points]:")
    for a in range(t):
        print("  " + "  ".join(f"{corr[a, c]:+.2f} [{true[a, c]:+.2f}]" for c in range(t)))
    print("noise variances per task: " + ", ".join(f"{v:.3f}" for v in model.likelihood.noise.tolist())
          + f" (true {args.noise ** 2:.3f})")

    # ----- part 2: task 0 unobserved on GAP (rows with a task index each: TaskBlocks) ------------
    seen = torch.ones_like(y, dtype=torch.bool)
    seen[(x > GAP[0]) & (x < GAP[1]), 0] = False
    rows = seen.T.reshape(-1)                                             # task-major, as y.T
    x_rows = x.repeat(t)[rows].unsqueeze(-1)
    y_rows = y.T.reshape(-1)[rows]
    task_rows = torch.arange(t).repeat_interleave(args.n)[rows]
    gap_model = fg.MultitaskGP(x_rows, y_rows, fg.kernels.Matern(nu=2.5), rank=args.rank, task_index=task_rows)
    fg.fit(gap_model, iters=args.iters, lr=args.lr, progress=False)
    in_gap = (x_test > GAP[0]) & (x_test < GAP[1])
    with torch.no_grad():
        task0 = gap_model.posterior(x_test[in_gap].unsqueeze(-1), task_index=torch.zeros(int(in_gap.sum())))
    alone = independent(x[seen[:, 0]], y[seen[:, 0], 0], x_test[in_gap], args.iters, args.lr)
    print(f"\ntask 0 unobserved on {GAP}: {int((~seen[:, 0]).sum())} of its {args.n} points left out, "
          f"{gap_model.num_train} rows, path {gap_model.diagnostics['path']}")
    print(f"test RMSE of task 0 on {GAP}: MultitaskGP {rmse(task0.mean, f_test[in_gap, 0]).item():.3f}, "
          f"independent {rmse(alone, f_test[in_gap, 0]).item():.3f}")

    if args.plot:
        save_plot(model, gap_model, x_test, args.plot)


if __name__ == "__main__":
    main()
