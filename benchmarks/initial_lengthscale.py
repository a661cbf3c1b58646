# How far from the optimum 50 Adam steps end when the lengthscales start at a fraction of the
# inputs' standard deviation (fg.init_from_data uses 0.5), and GPyTorch's batch sine test.
"""Usage: python benchmarks/initial_lengthscale.py [--fractions 1,0.5,0.25]

Sine data y = sum_j sin(2 pi k x_j) + 0.1 noise, x uniform on [0, 1]^d, k = 0.5, 1, 2, 4 periods,
d = 1 and 3, n = 20 and 100; Scale(RBF(ARD)), Cholesky, Adam lr 0.1. For each start it prints
the mll per point after 50 steps below the best mll any start reached in 400 steps (0: at the
optimum), and the totals. Then GPyTorch's batch test (11 points over two periods and over one,
noise 0.01, 50 steps): the MAE against the noise-free function per set.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import flashgp as fg  # noqa: E402
from flashgp import kernels as K  # noqa: E402
from results_file import write_results  # noqa: E402


def fitted_mll(x, y, fraction: float, iters: int) -> float:
    model = fg.ExactGP(x, y, K.Scale(K.RBF(ard_dims=x.shape[1])), solver=fg.Cholesky())
    std = x.std(-2, unbiased=False)
    model.kernel.base.lengthscale = (fraction * std).view(1, -1)
    fg.fit(model, iters=iters, progress=False, seed=0)
    return float(model.mll().detach())


def batch_sine_test(fraction: float) -> tuple[float, float]:
    def sine(n, high, seed):
        x = torch.linspace(0, high, n, dtype=torch.float64)
        y = torch.sin(2 * math.pi * x) + 0.01 * torch.randn(n, generator=torch.Generator().manual_seed(seed),
                                                            dtype=torch.float64)
        grid = torch.linspace(0, high, 51, dtype=torch.float64)
        return x[:, None], y, grid[:, None], torch.sin(2 * math.pi * grid)

    sets = [sine(11, 2.0, 6), sine(11, 1.0, 7)]
    x, y = torch.stack([s[0] for s in sets]), torch.stack([s[1] for s in sets])
    model = fg.ExactGP(x, y, K.Scale(K.RBF(batch_shape=(2,))), likelihood=fg.likelihoods.Gaussian(batch_shape=(2,)),
                       mean=fg.means.Constant(batch_shape=(2,)))
    model.kernel.base.lengthscale = (fraction * x.std(-2, unbiased=False)).view(2, 1, 1)
    fg.fit(model, optimizer="adam", lr=0.1, iters=50, progress=False)
    mean = model.predict(torch.stack([s[2] for s in sets])).mean
    return tuple(float((mean[i] - sets[i][3]).abs().mean()) for i in range(2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", default="1,0.5,0.25")
    parser.add_argument("--out", default=None, metavar="OUT",
                        help="also write the rows to OUT.json (default: stdout only)")
    args = parser.parse_args(argv)
    rows = []
    fractions = [float(f) for f in args.fractions.split(",")]
    warnings.simplefilter("ignore")
    totals = {f: 0.0 for f in fractions}
    worst = {f: 0.0 for f in fractions}
    for d in (1, 3):
        for k in (0.5, 1, 2, 4):
            for n in (20, 100):
                g = torch.Generator().manual_seed(int(10 * k + n + d))
                x = torch.rand(n, d, generator=g, dtype=torch.float64)
                y = torch.sin(2 * math.pi * k * x).sum(-1) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
                best = max(fitted_mll(x, y, f, 400) for f in fractions)
                gaps = {f: best - fitted_mll(x, y, f, 50) for f in fractions}
                for f, gap in gaps.items():
                    totals[f] += gap
                    worst[f] = max(worst[f], gap)
                print(f"d={d} periods={k} n={n:3d}: best mll (400 steps) {best:.3f}; below it after 50 "
                      "steps: " + "  ".join(f"x{f}: {gap:.3f}" for f, gap in gaps.items()), flush=True)
                rows += [dict(kind="case", d=d, periods=k, n=n, fraction=f, best_mll_400_steps=best,
                              mll_gap_after_50_steps=gap) for f, gap in gaps.items()]
    print("total: " + "  ".join(f"x{f}: {totals[f]:.3f} (worst {worst[f]:.3f})" for f in fractions))
    rows += [dict(kind="total", fraction=f, mll_gap_total=totals[f], mll_gap_worst=worst[f])
             for f in fractions]
    for f in fractions:
        first, second = batch_sine_test(f)
        print(f"GPyTorch batch sine test, lengthscales x{f} of the std: MAE {first:.3f} (two periods), "
              f"{second:.3f} (one)")
        rows.append(dict(kind="batch_sine_test", fraction=f, mae_two_periods=first, mae_one_period=second))
    if args.out:
        write_results(args.out, rows, args, device="cpu",
                      extra={"mll": "per point; gap: best mll of any start in 400 steps minus the mll "
                                    "after 50 steps from this start"})


if __name__ == "__main__":
    main()
