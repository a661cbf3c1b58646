# Benchmark: accuracy of the cached-Lanczos-root (LOVE) predictive variances against a float64
# Cholesky, at a CPU-sized stand-in of the n = 1M fit's hyperparameters.
"""LOVE variances of ``CG(root_rank=r, exact_var_max=0)`` against Cholesky variances.

    python benchmarks/love_variance.py --n 20000 --lengthscale 0.44 --root-ranks 50 200 800
    python benchmarks/love_variance.py --uci kin40k --data .uci --n 12000 --root-ranks 100 200
    python benchmarks/love_variance.py --n 20000 --root-ranks 200 --local-neighbors 64 256

The data are those of examples/large_gpu_fit.py (uniform on [0, 1]^3). The n = 1M fit ended at
lengthscales near 0.12, outputscale 1.98, noise 0.0089: about n * l^3 = 1,700 points per
lengthscale cube. At n = 20,000 a lengthscale of 0.44 keeps that density (the outputscale and
noise are the fit's). For each root rank the script prints the ratio of the LOVE variance of
y* to the exact one over ``--test`` points (LOVE can only overstate it: a rank-r root misses
part of the downdate k*^T K_hat^-1 k*) and the 95% interval coverage of both. ``--local-neighbors``
adds local variances (conditioned on the k nearest training points; also upper bounds).

With ``--uci NAME`` the data are a UCI set's split 0 instead (``--n`` random training rows), at
hyperparameters fitted by 40 Adam steps of a Cholesky GP on 3,000 of them (Matern 5/2, ARD).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "examples", REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import flashgp as fg  # noqa: E402
from flashgp.datasets import load_uci  # noqa: E402
from large_gpu_fit import synthetic  # noqa: E402
from results_file import write_results  # noqa: E402


def make_model(x, y, solver, args):
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=x.shape[-1]))
    model = fg.ExactGP(x, y, kernel, solver=solver)
    if args.fitted is not None:  # --uci: the small fit's hyperparameters
        model.load_state_dict(args.fitted, strict=False)
        return model
    with torch.no_grad():
        kernel.base.lengthscale = torch.full((1, x.shape[-1]), args.lengthscale, dtype=x.dtype)
        kernel.outputscale = torch.tensor(args.outputscale, dtype=x.dtype)
        model.likelihood.noise = torch.tensor(args.noise, dtype=x.dtype)
    return model


def fit_small(args) -> dict:
    """Raw parameters (name -> tensor) of a Cholesky GP fitted to 3,000 rows of the --uci set."""
    data = load_uci(args.uci, root=args.data, max_train=3000, seed=args.seed)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=data.x_train.shape[-1]))
    model = fg.ExactGP(data.x_train, data.y_train, kernel, solver=fg.Cholesky())
    fg.fit(model, iters=40, progress=False)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def coverage(pred, y) -> float:
    return float(((y - pred.mean).abs() <= 1.96 * pred.variance.sqrt()).double().mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--lengthscale", type=float, default=0.44)
    parser.add_argument("--outputscale", type=float, default=1.98)
    parser.add_argument("--noise", type=float, default=0.0089)
    parser.add_argument("--root-ranks", type=int, nargs="+", default=[50, 200, 800])
    parser.add_argument("--local-neighbors", type=int, nargs="*", default=[],
                        help="also local variances from this many nearest training points "
                             "(CG(local_neighbors=k)), each k against the same Cholesky reference")
    parser.add_argument("--precond-rank", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--uci", default=None, help="a UCI data set's name instead of synthetic data")
    parser.add_argument("--data", default=None, help="folder of UCI data sets (with --uci)")
    parser.add_argument("--out", default=None, metavar="OUT",
                        help="also write the rows to OUT.json (default: stdout only)")
    args = parser.parse_args(argv)
    args.fitted = None
    if args.uci is None:
        x, y = synthetic(args.n + args.test, 3, 0.1, torch.device("cpu"), torch.float64, args.seed)
        x_train, y_train, x_test, y_test = x[:args.n], y[:args.n], x[args.n:], y[args.n:]
        print(f"n={args.n}, test {args.test}, lengthscale {args.lengthscale}, outputscale "
              f"{args.outputscale}, noise {args.noise}", flush=True)
    else:
        args.fitted = fit_small(args)
        data = load_uci(args.uci, root=args.data, max_train=args.n, seed=args.seed)
        x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
        print(f"{args.uci}: n={x_train.shape[0]}, test {x_test.shape[0]}, hyperparameters of a "
              f"3,000-point fit: { {k: v.flatten().tolist() for k, v in args.fitted.items()} }", flush=True)
    start = time.perf_counter()
    exact = make_model(x_train, y_train, fg.Cholesky(), args).predict(x_test)
    exact_var = exact.variance
    seconds = time.perf_counter() - start
    print(f"  Cholesky: median variance of y* {float(exact_var.median()):.4g}, coverage "
          f"{coverage(exact, y_test):.3f}, {seconds:.1f} s", flush=True)
    rows = [dict(method="cholesky", median_variance=float(exact_var.median()),
                 coverage_95=coverage(exact, y_test), seconds=seconds)]
    runs = [("root rank", rank, dict(root_rank=rank)) for rank in args.root_ranks]
    runs += [("local neighbours", k, dict(local_neighbors=k)) for k in args.local_neighbors]
    for label, value, option in runs:
        solver = fg.CG(eval_tol=0.01, exact_var_max=0, backend="dense", variance_tol=None,
                       precond=fg.PivotedCholesky(args.precond_rank), **option)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fg.NumericalWarning)
            pred = make_model(x_train, y_train, solver, args).predict(x_test)
        seconds = time.perf_counter() - start
        ratio = pred.variance / exact_var
        change = pred.diagnostics.get("variance_root_change")
        print(f"  {label} {value}: variance / exact min {float(ratio.min()):.3g}, median "
              f"{float(ratio.median()):.3g}, max {float(ratio.max()):.3g}; coverage "
              f"{coverage(pred, y_test):.3f}; mean max |difference| "
              f"{float((pred.mean - exact.mean).abs().max()):.2e}"
              + ("" if change is None else f"; root change {change:.3g}")
              + f"; {seconds:.1f} s", flush=True)
        rows.append({"method": next(iter(option)), next(iter(option)): value,
                     "variance_ratio_min": float(ratio.min()), "variance_ratio_median": float(ratio.median()),
                     "variance_ratio_max": float(ratio.max()), "coverage_95": coverage(pred, y_test),
                     "mean_max_abs_difference": float((pred.mean - exact.mean).abs().max()),
                     "variance_root_change": change, "seconds": seconds})
    if args.out:
        write_results(args.out, rows, args, device="cpu",
                      extra={"n_train": x_train.shape[0], "n_test": x_test.shape[0]})


if __name__ == "__main__":
    main()
