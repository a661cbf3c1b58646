# Example: an exact GP on a UCI regression set (the packaged *concrete*, or any UCI-format folder),
# reporting test RMSE, NLL and 95% coverage in the data's units. Run with --help for options.
"""Exact GP (Scale(Matern-5/2, ARD)) on one train/test split of a UCI-format data set.

    python examples/uci_exact_gp.py                       # packaged concrete, split 0
    python examples/uci_exact_gp.py --data /path/to/uci/elevators --solver cg --max-train 5000

A UCI-format folder holds data.csv.gz (last column the target) and test_mask.csv.gz (one 0/1
column per split); see flashgp/data/README.md.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import flashgp as fg
from flashgp.datasets import load_uci

SOLVERS = {"auto": lambda: fg.Auto(), "cholesky": lambda: fg.Cholesky(),
           "cg": lambda: fg.CG(tol=1.0, precond=fg.PivotedCholesky(100))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="concrete", help="a UCI-format folder (default: packaged concrete)")
    parser.add_argument("--split", type=int, default=0, help="which test mask column (default 0)")
    parser.add_argument("--max-train", type=int, default=None, help="subsample the training rows")
    parser.add_argument("--iters", type=int, default=100, help="Adam steps (default 100)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--solver", choices=sorted(SOLVERS), default="auto")
    args = parser.parse_args(argv)

    data = load_uci(args.data, split=args.split, max_train=args.max_train)  # standardized, float64
    print(f"{data.name}: n_train={data.n_train}, n_test={data.n_test}, d={data.d}")
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=data.d))
    model = fg.ExactGP(data.x_train, data.y_train, kernel, likelihood=fg.likelihoods.Gaussian(),
                       mean=fg.means.Constant(), solver=SOLVERS[args.solver]())
    history = fg.fit(model, optimizer="adam", lr=args.lr, iters=args.iters, progress=False, seed=0)
    step_ms = 1e3 * sum(history.step_seconds) / max(1, len(history))
    final = history.loss[-1] if history.loss else float("nan")
    print(f"  fit: {len(history)} steps, {step_ms:.1f} ms/step, final loss {final:.4f}, "
          f"solver path {model.diagnostics['path']}")

    start = time.perf_counter()
    pred = model.predict(data.x_test)               # y* (n_test,), noise included
    seconds = time.perf_counter() - start
    mean = data.to_original_units(pred.mean)        # back to the data's units
    std = pred.stddev * data.y_std
    y = data.to_original_units(data.y_test)
    rmse = float((mean - y).pow(2).mean().sqrt())
    nll = float((0.5 * torch.log(2 * math.pi * std**2) + 0.5 * ((y - mean) / std) ** 2).mean())
    lower, upper = pred.confidence_region()
    coverage = float(((data.y_test >= lower) & (data.y_test <= upper)).double().mean())
    print(f"  test (data units): RMSE {rmse:.4f}   NLL {nll:.4f}   95% coverage {coverage:.3f}   "
          f"(prediction {seconds * 1e3:.1f} ms)")
    with torch.no_grad():
        lengthscales = model.kernel.base.lengthscale.flatten().tolist()
    print("  lengthscales (standardized inputs): " + " ".join(f"{v:.2f}" for v in lengthscales))
    print(f"  diagnostics of the last solve: {model.diagnostics}")


if __name__ == "__main__":
    main()
