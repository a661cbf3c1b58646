# The demo job: fit an exact GP on the small UCI set shipped in the package and report
# test RMSE / NLL and timings. Run with `python -m flashgp` (or `python -m flashgp.demo`).
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch

from . import kernels, likelihoods, means
from .datasets import Dataset, load_uci
from .fit import History, fit
from .models import ExactGP
from .solvers import CG, Auto, PivotedCholesky


def evaluate(model: ExactGP, x_test: torch.Tensor, y_test: torch.Tensor) -> dict:
    """Test RMSE and mean negative log predictive density (standardized units)."""
    pred = model.predict(x_test)
    rmse = float((pred.mean - y_test).pow(2).mean().sqrt())
    var = pred.variance
    nll = float((0.5 * (y_test - pred.mean).pow(2) / var + 0.5 * torch.log(2 * math.pi * var)).mean())
    return {"rmse": rmse, "nll": nll}


@dataclass
class DemoFit:
    """A fitted demo model with its data split, training history and training time."""

    model: ExactGP
    data: Dataset
    history: History
    train_seconds: float


def fit_demo(dataset: str = "concrete", iters: int = 50, lr: float = 0.1, solver: str = "auto",
             split: int = 0, progress: bool = True) -> DemoFit:
    """Fit Scale(Matern-5/2 ARD) with Adam on one split of ``dataset`` (standardized)."""
    data = load_uci(dataset, split=split, dtype=torch.float64)
    d = data.x_train.shape[-1]
    chosen = CG(precond=PivotedCholesky(100)) if solver == "cg" else Auto()
    model = ExactGP(data.x_train, data.y_train, kernels.Scale(kernels.Matern(nu=2.5, ard_dims=d)),
                    likelihood=likelihoods.Gaussian(), mean=means.Constant(), solver=chosen)
    start = time.perf_counter()
    history = fit(model, optimizer="adam", lr=lr, iters=iters, progress=progress)
    return DemoFit(model, data, history, time.perf_counter() - start)


def summarize(fitted: DemoFit) -> dict:
    """Test metrics (standardized units), sizes and timings of a ``DemoFit``."""
    model, data, history = fitted.model, fitted.data, fitted.history
    start = time.perf_counter()
    metrics = evaluate(model, data.x_test, data.y_test)
    metrics.update(predict_seconds=time.perf_counter() - start, train_seconds=fitted.train_seconds,
                   n_train=data.x_train.shape[0], n_test=data.x_test.shape[0], d=data.d,
                   final_loss=history.loss[-1] if history.loss else float("nan"),
                   noise=float(model.likelihood.noise.detach()), path=model.diagnostics.get("path"))
    return metrics


def run(dataset: str = "concrete", iters: int = 50, lr: float = 0.1, solver: str = "auto",
        split: int = 0, progress: bool = True) -> dict:
    """Fit Scale(Matern-5/2 ARD) with Adam on ``dataset`` and return metrics and timings."""
    return summarize(fit_demo(dataset, iters, lr, solver, split, progress))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flashgp.demo", description="flashgp demo fit")
    parser.add_argument("--dataset", default="concrete", help="packaged name or a UCI-format folder")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--solver", choices=["auto", "cg"], default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    m = run(args.dataset, args.iters, args.lr, args.solver, progress=not args.quiet)
    print(f"flashgp demo: {args.dataset} (n_train={m['n_train']}, n_test={m['n_test']}, d={m['d']}), "
          f"Scale(Matern-5/2 ARD), Adam lr={args.lr}, {args.iters} steps, solver path: {m['path']}")
    print(f"  test RMSE {m['rmse']:.4f}   test NLL {m['nll']:.4f}   (standardized target)")
    print(f"  training {m['train_seconds']:.2f} s ({m['train_seconds'] / max(1, args.iters) * 1000:.1f} ms/step)"
          f"   prediction {m['predict_seconds'] * 1000:.1f} ms   noise {m['noise']:.4f}")


if __name__ == "__main__":
    main()
