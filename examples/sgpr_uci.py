# Example: a sparse GP (fg.SGPR, m inducing points) beside the exact GP on one split of a UCI
# regression set: the bound against the exact log marginal likelihood, test RMSE / NLL, seconds.
"""SGPR (Titsias' collapsed bound, learned inducing points) and the exact GP on a UCI split.

    python examples/sgpr_uci.py                                   # packaged concrete, m = 50
    python examples/sgpr_uci.py --data /path/to/uci/protein --inducing 500 --no-exact

Both models use Scale(RBF, ARD) on standardized data and are trained by Adam with the same
steps; metrics are in the data's units. The exact GP is skipped with --no-exact (beyond about
20,000 training points it needs a GPU or the CG solver).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import flashgp as fg
from flashgp.datasets import load_uci


def report(name: str, model, data, history, seconds: float) -> None:
    start = time.perf_counter()
    pred = model.predict(data.x_test)
    predict_ms = 1e3 * (time.perf_counter() - start)
    mean, std = data.to_original_units(pred.mean), pred.stddev * data.y_std
    y = data.to_original_units(data.y_test)
    rmse = float((mean - y).pow(2).mean().sqrt())
    nll = float((0.5 * torch.log(2 * math.pi * std**2) + 0.5 * ((y - mean) / std) ** 2).mean())
    print(f"  {name:<6} objective {-history.loss[-1]:+.4f} per point   train {seconds:6.2f} s   "
          f"RMSE {rmse:.4f}   NLL {nll:.4f}   predict {predict_ms:.0f} ms")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="concrete", help="a UCI-format folder (default: packaged concrete)")
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--max-train", type=int, default=None, help="subsample the training rows")
    parser.add_argument("--inducing", type=int, default=50, help="inducing points m (default 50)")
    parser.add_argument("--init", choices=("kmeans++", "rpcholesky"), default="kmeans++")
    parser.add_argument("--iters", type=int, default=100, help="Adam steps (default 100)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--no-exact", action="store_true", help="fit only the SGPR")
    args = parser.parse_args(argv)

    data = load_uci(args.data, split=args.split, max_train=args.max_train)  # standardized, float64
    print(f"{data.name}: n_train={data.n_train}, n_test={data.n_test}, d={data.d}, m={args.inducing}")
    kernel = fg.kernels.Scale(fg.kernels.RBF(ard_dims=data.d))
    sparse = fg.SGPR(data.x_train, data.y_train, kernel, inducing=args.inducing, init=args.init)
    start_points = sparse.inducing_points.detach().clone()
    start = time.perf_counter()
    history = fg.fit(sparse, lr=args.lr, iters=args.iters, progress=False, seed=0)
    report("SGPR", sparse, data, history, time.perf_counter() - start)
    if not args.no_exact:
        exact = fg.ExactGP(data.x_train, data.y_train, fg.kernels.Scale(fg.kernels.RBF(ard_dims=data.d)))
        start = time.perf_counter()
        history = fg.fit(exact, lr=args.lr, iters=args.iters, progress=False, seed=0)
        report("exact", exact, data, history, time.perf_counter() - start)
        # the bound at the SGPR's hyperparameters never exceeds the exact mll at the same values
        exact.load_state_dict({k: v for k, v in sparse.state_dict().items() if k != "inducing_points"})
        with torch.no_grad():
            print(f"  at the SGPR's hyperparameters: bound {float(sparse.elbo()):+.4f} <= exact mll "
                  f"{float(exact.mll()):+.4f} per point")
    moved = float((sparse.inducing_points.detach() - start_points).norm(dim=-1).mean())
    print(f"  the inducing points moved {moved:.3f} (mean distance, standardized units) while training")
    print(f"  diagnostics of the last bound: {sparse.diagnostics}")


if __name__ == "__main__":
    main()
