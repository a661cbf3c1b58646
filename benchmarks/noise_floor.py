# The noise floor on noise-free data: how low can Gaussian(noise_floor=...) go on the Cholesky path
# before K_hat needs jitter, and how do flashgp's predictions compare with scikit-learn's exact GP
# (GaussianProcessRegressor, alpha=1e-10, normalize_y=True) as the floor falls?
"""Usage: python benchmarks/noise_floor.py [--floors 1e-4,1e-6,1e-10,auto] [--cases 1x50,3x200]
       python benchmarks/noise_floor.py --cholesky

Data: y = sum_j sin(6 x_j), x uniform on [0, 1]^d, no noise; 200 test points. Each case is fitted
like GPRegressor does (standardized x and y, Scale(RBF(ARD)), 100 Adam steps in log space, then up
to 5 L-BFGS steps), float64 and float32, with the floor given in standardized units (``auto``: the
default rule of ``fg.likelihoods.Gaussian``). Per fit it prints the learned noise and outputscale,
the largest jitter any Cholesky needed, the test RMSE (sklearn's beside it), the median |z| of
the test errors against the latent stds (0.67 for calibrated stds; far below: stds too wide),
the share of test stds that came out 0, and flashgp's latent std over sklearn's (median, max).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flashgp as fg  # noqa: E402
from flashgp.log_space import log_space  # noqa: E402
from flashgp.polish import polish_lbfgs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import write_results  # noqa: E402


def data(n: int, d: int, seed: int):
    rng = np.random.RandomState(seed)
    x, x_test = rng.rand(n, d), rng.rand(200, d)
    return x, np.sin(6 * x).sum(1), x_test, np.sin(6 * x_test).sum(1)


def sklearn_fit(x, y, x_test):
    """scikit-learn's exact GP on standardized inputs (as flashgp's fit), 3 restarts."""
    kernel = ConstantKernel(1.0, (1e-5, 1e5)) * RBF(np.ones(x.shape[1]), (1e-5, 1e5))
    gp = GaussianProcessRegressor(kernel, alpha=1e-10, normalize_y=True, n_restarts_optimizer=3,
                                  random_state=0)
    x_mean, x_std = x.mean(0), x.std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp.fit((x - x_mean) / x_std, y)
    return gp.predict((x_test - x_mean) / x_std, return_std=True)


def cholesky_limits(ns=(50, 200, 500, 1000, 2000), lengthscales=(0.1, 0.3, 1.0, 3.0)) -> list[dict]:
    """The lowest floor (relative to K's diagonal, on a grid of 1e-15..1e-10) at and above which
    a float64 Cholesky of K + floor I succeeds without jitter: RBF kernel, x uniform on [0, 1]^d
    (printed, and returned as rows)."""
    rows = []
    grid = [1e-15, 3e-15, 1e-14, 3e-14, 1e-13, 3e-13, 1e-12, 3e-12, 1e-11, 1e-10]
    torch.manual_seed(0)
    for d in (1, 3):
        for n in ns:
            x = torch.rand(n, d, dtype=torch.float64)
            lowest = []
            for ls in lengthscales:
                k = torch.exp(-0.5 * torch.cdist(x / ls, x / ls).pow(2))
                clean = [int(torch.linalg.cholesky_ex(k + r * torch.eye(n, dtype=k.dtype))[1]) == 0 for r in grid]
                lowest.append(next((r for i, r in enumerate(grid) if all(clean[i:])), float("nan")))
            print(f"d={d} n={n:5d} lowest clean floor / k(x, x) for lengthscales {lengthscales}: "
                  + ", ".join(f"{v:.0e}" for v in lowest), flush=True)
            rows += [dict(d=d, n=n, lengthscale=ls, lowest_clean_floor_relative=v)
                     for ls, v in zip(lengthscales, lowest)]
    return rows


def flashgp_fit(x, y, x_test, floor, dtype):
    x_mean, x_std, y_mean, y_std = x.mean(0), x.std(0), y.mean(), y.std()
    tx = torch.tensor((x - x_mean) / x_std, dtype=dtype)
    ty = torch.tensor((y - y_mean) / y_std, dtype=dtype)
    likelihood = fg.likelihoods.Gaussian() if floor == "auto" else fg.likelihoods.Gaussian(
        noise=max(0.1, 10 * float(floor)), noise_floor=float(floor))
    kernel = fg.kernels.Scale(fg.kernels.RBF(ard_dims=x.shape[1]))
    model = fg.ExactGP(tx, ty, kernel, likelihood=likelihood, solver=fg.Cholesky())
    jitter = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with log_space(model):
            fg.fit(model, iters=100, progress=False, seed=0)
            polish_lbfgs(model, 5, 0)
        post = model.posterior(torch.tensor((x_test - x_mean) / x_std, dtype=dtype))
        mean, std = post.mean.double().numpy() * y_std + y_mean, post.stddev.double().numpy() * y_std
    for w in caught:
        text = str(w.message)
        if "jitter" in text and "added jitter" in text:
            jitter = max(jitter, float(text.rsplit("added jitter ", 1)[1].split()[0]))
    floor_used = model.likelihood._constraints["noise"].lower
    return mean, std, float(model.likelihood.noise.detach()), floor_used, float(kernel.outputscale.detach()), jitter


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floors", default="1e-4,1e-6,1e-10,auto")
    parser.add_argument("--cases", default="1x50,1x200,3x50,3x200", help="DxN,...")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--cholesky", action="store_true", help="only the jitter-free limits of "
                        "a float64 Cholesky (n = 50..2000, d = 1, 3)")
    parser.add_argument("--out", default=None, metavar="OUT",
                        help="also write the rows to OUT.json (default: stdout only)")
    args = parser.parse_args(argv)
    if args.cholesky:
        rows = cholesky_limits()
        if args.out:
            write_results(args.out, rows, args, device="cpu",
                          extra={"lowest_clean_floor_relative": "null: none on the grid 1e-15..1e-10"})
        return
    rows = []
    floors = args.floors.split(",")
    print(f"torch {torch.__version__}; floors in standardized units (y var 1)")
    for case in args.cases.split(","):
        d, n = (int(v) for v in case.split("x"))
        for seed in (int(s) for s in args.seeds.split(",")):
            x, y, x_test, y_test = data(n, d, seed)
            ref_mean, ref_std = sklearn_fit(x, y, x_test)
            ref_rmse = np.sqrt(np.mean((ref_mean - y_test) ** 2))
            for dtype_name in args.dtypes.split(","):
                for floor in floors:
                    mean, std, noise, used, outputscale, jitter = flashgp_fit(
                        x, y, x_test, floor, getattr(torch, dtype_name))
                    err = np.abs(mean - y_test)
                    z = np.median(err / np.where(std > 0, std, np.inf))
                    ratio = std / ref_std
                    print(f"d={d} n={n:4d} seed={seed} {dtype_name} floor={floor:>7s} ({used:.2e}) "
                          f"noise={noise:.2e} outputscale={outputscale:6.3g} jitter={jitter:.0e} "
                          f"rmse={np.sqrt(np.mean(err**2)):.2e} (sklearn {ref_rmse:.2e}) "
                          f"median|z|={z:.3g} zero_std={np.mean(std == 0):.2f} "
                          f"std/sklearn median={np.median(ratio):.3f} max={ratio.max():.3f}", flush=True)
                    rows.append(dict(d=d, n=n, seed=seed, dtype=dtype_name, floor=floor, floor_used=used,
                                     noise=noise, outputscale=outputscale, max_jitter=jitter,
                                     rmse=float(np.sqrt(np.mean(err**2))), sklearn_rmse=float(ref_rmse),
                                     median_abs_z=float(z), zero_std_share=float(np.mean(std == 0)),
                                     std_over_sklearn_median=float(np.median(ratio)),
                                     std_over_sklearn_max=float(ratio.max())))
    if args.out:
        write_results(args.out, rows, args, device="cpu",
                      extra={"units": "floor, floor_used and noise in standardized units (y variance 1); "
                                      "rmse in y's units; z: test errors over flashgp's latent stds"})


if __name__ == "__main__":
    main()
