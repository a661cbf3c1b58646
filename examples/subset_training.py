# Example: train an ExactGP's hyperparameters by minibatch SGD on random subsets of its training
# points (fg.fit(model, batch_size=m)), then predict with the exact posterior on all n points.
"""Minibatch (subset) SGD for an exact GP, next to a full-batch fit.

    python examples/subset_training.py                       # n = 3,000, m = 256
    python examples/subset_training.py --n 4000 --batch-size 512 --iters 300

Data: x uniform on [0, 5]^2, y = f(x) + noise with f drawn from a GP with an RBF kernel of
lengthscale 0.6 and outputscale 1, noise variance 0.09. Each Adam step of the subset fit
costs one Cholesky factorization of an m x m matrix (the exact -mll per point of m random
rows); the full-batch fit (--full) factors the n x n matrix every step.
"""
from __future__ import annotations

import argparse
import time

import torch

import flashgp as fg
from flashgp.kernels import RBF, Scale


def make_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + 500, 2, generator=g, dtype=torch.float64) * 5
    truth = Scale(RBF(lengthscale=0.6), outputscale=1.0).double()
    with torch.no_grad():
        k = truth(x) + 1e-8 * torch.eye(len(x), dtype=torch.float64)
        f = torch.linalg.cholesky(k) @ torch.randn(len(x), generator=g, dtype=torch.float64)
    y = f + 0.3 * torch.randn(len(x), generator=g, dtype=torch.float64)
    return x[:n], y[:n], x[n:], f[n:]


def report(label: str, model, seconds: float, x_test, f_test) -> None:
    with torch.no_grad():
        ls, scale = float(model.kernel.base.lengthscale), float(model.kernel.outputscale)
        noise = float(model.likelihood.noise)
        rmse = float((model.posterior(x_test).mean - f_test).square().mean().sqrt())
    print(f"{label}: {seconds:.1f} s; lengthscale {ls:.3f} (true 0.6), outputscale {scale:.3f} (1.0), "
          f"noise {noise:.4f} (0.09); test RMSE of the posterior mean against f {rmse:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--full", action="store_true", help="also fit full-batch (L-BFGS), for comparison")
    args = parser.parse_args()
    x, y, x_test, f_test = make_data(args.n, seed=0)
    model = fg.ExactGP(x, y, Scale(RBF()), solver=fg.Cholesky())
    start = time.perf_counter()
    history = fg.fit(model, batch_size=args.batch_size, iters=args.iters, lr=args.lr, seed=0, progress=False)
    epochs = args.iters * args.batch_size / args.n
    print(f"subset SGD: n={args.n:,}, m={args.batch_size}, {args.iters} steps ({epochs:.1f} epochs); "
          f"last subset loss {history.loss[-1]:.4f}")
    report("subset SGD", model, time.perf_counter() - start, x_test, f_test)
    if args.full:
        full = fg.ExactGP(x, y, Scale(RBF()), solver=fg.Cholesky())
        start = time.perf_counter()
        fg.fit(full, optimizer="lbfgs", lr=1.0, iters=3, progress=False)
        report("full batch (L-BFGS)", full, time.perf_counter() - start, x_test, f_test)


if __name__ == "__main__":
    main()
