# IterGP: the computation-aware GP posterior at growing budgets. The posterior mean approaches the
# exact one, and the computational part of the variance shrinks to 0 while covering the mean's error.
"""fg.IterGP at budgets i = 1 .. n for each policy, on a 2-D toy problem.

Example: python examples/itergp_budget.py --n 400 --budgets 5,20,80,400

Prints, per policy and budget: the largest error of the mean against the exact posterior mean,
the largest computational standard deviation, the fraction of test points where the error is
within 2 combined standard deviations, and whether the bound |mean_i - mean_exact| <=
sqrt(computational variance) ||y - m||_{K_hat^-1} held at every test point.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import flashgp as fg  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=400, help="training points (default 400)")
    p.add_argument("--test", type=int, default=200, help="test points (default 200)")
    p.add_argument("--budgets", default="5,20,80", help="budgets i (the run adds n)")
    p.add_argument("--iters", type=int, default=30, help="Adam steps of the fit (default 30)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    n = args.n
    x = torch.rand(n, 2, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1]) + 0.05 * torch.randn(n, dtype=torch.float64)
    x_test = torch.rand(args.test, 2, dtype=torch.float64) * 4 - 2

    # training is the ExactGP's (the exact mll through the model's solver); the budget is for predictions
    model = fg.IterGP(x, y, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=2)), policy="cg", budget=n)
    fg.fit(model, iters=args.iters, lr=0.1, progress=False)
    print(f"IterGP: n={n}, fitted noise {float(model.likelihood.noise.detach()):.3g}")

    budgets = sorted({min(int(b), n) for b in args.budgets.split(",") if b} | {n})
    print("| policy | i | max |mean - exact| | max computational sd | within 2 sd | bound holds | solve s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for policy in ("cg", "cholesky", "pivoted"):
        for budget in budgets:
            model.policy, model.budget = policy, budget
            post = model.posterior(x_test)
            error = (post.mean - post.exact_mean).abs()
            within = float((error <= 2 * post.stddev).double().mean())
            holds = bool((error <= post.mean_error_bound).all())
            print(f"| {policy} | {budget} | {float(error.max()):.2e} | "
                  f"{float(post.computational_variance.sqrt().max()):.2e} | {within:.2f} | {holds} | "
                  f"{model.diagnostics['itergp_seconds']:.2f} |")
    # a time budget: as many actions as fit in 50 ms
    model.policy, model.budget = "cg", {"seconds": 0.05}
    model.posterior(x_test)
    info = model.diagnostics
    print(f"budget {{'seconds': 0.05}}: {info['iterations']} actions, stopped: {info['stopped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
