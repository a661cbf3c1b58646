# Study: would diagonal blocks of the low-rank residual (a PITC-like preconditioner) cut CG
# iterations against pivoted Cholesky alone? Dense float64 on a CPU stand-in of the 1M fit.
"""CG iterations with P = L L^T + noise I against P = L L^T + blockdiag(K_hat - L L^T).

    python benchmarks/precond_blocks.py --n 8000 --ranks 100 400 --blocks 0 64 256

The stand-in is that of benchmarks/precond_rank.py: the data of examples/large_gpu_fit.py
(uniform on [0, 1]^3, a sum of sines plus noise), Scale(Matern 5/2, ARD) at the hyperparameters
after 46 Adam steps of the n = 1M fit, and the noise variance scaled by n / target_n so that the
largest eigenvalues of K over the noise stand where those of the 1M problem do. L is the greedy
rank-k pivoted Cholesky factor of K (``flashgp.linalg.pivoted_cholesky``).

Blocks: the points are put in a spatial order (``flashgp.linalg.spatial.spatial_order``: every
run of b consecutive points a box of its own), and the preconditioner adds
the b x b diagonal blocks of K_hat - L L^T, the part of K that the low-rank factor misses at
short range. P stays SPD (K_hat - L L^T is PSD). It costs n b numbers more than L: as many as
b more columns of L. Here P is formed densely and factored once (the dense form of
``fg.PivotedCholesky(block_size=b)``, which came out of this study), and
CG (``flashgp.linalg.mbcg``) runs on [y, 10 probes ~ N(0, P)] as in training. Reported: the
iterations to the training tolerance (mean relative residual 1, no minimum), the relative
residual of the y column there (``--min-iters 20``: after at least the 20 iterations of a
training step), and the iterations for y alone to reach 1e-2 (a prediction solve). Prints one
JSON line per setting.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "examples", REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from flashgp.linalg import mbcg, pivoted_cholesky  # noqa: E402
from flashgp.linalg.spatial import spatial_order  # noqa: E402
from flashgp.operators import Dense  # noqa: E402
from large_gpu_fit import synthetic  # noqa: E402
from results_file import write_results  # noqa: E402


def matern52(x: torch.Tensor, lengthscale: torch.Tensor, outputscale: float) -> torch.Tensor:
    """Dense float64 Scale(Matern 5/2, ARD) kernel matrix of x (n, d)."""
    z = x / lengthscale
    s = math.sqrt(5.0) * torch.cdist(z, z)
    return outputscale * (1 + s + s * s / 3) * torch.exp(-s)


def preconditioner(k_hat: torch.Tensor, factor: torch.Tensor, noise: float, block: int,
                   order: torch.Tensor) -> torch.Tensor:
    """The Cholesky factor of P = L L^T + noise I (block 0) or L L^T + blockdiag(K_hat - L L^T)."""
    low = factor @ factor.T
    p = low + noise * torch.eye(k_hat.shape[0], dtype=k_hat.dtype)
    if block:
        for s in range(0, len(order), block):
            idx = order[s:s + block]
            p[idx[:, None], idx[None, :]] = k_hat[idx[:, None], idx[None, :]]
    return torch.linalg.cholesky(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--target-n", type=int, default=1_000_000)
    parser.add_argument("--lengthscale", type=float, nargs=3, default=[0.118, 0.108, 0.126])
    parser.add_argument("--outputscale", type=float, default=1.98)
    parser.add_argument("--noise", type=float, default=0.0089)
    parser.add_argument("--ranks", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 64, 256])
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--min-iters", type=int, default=0,
                        help="training solve: at least this many iterations (training uses 20)")
    parser.add_argument("--skip-predict", action="store_true", help="no prediction solve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, metavar="OUT",
                        help="also write the rows to OUT.json (default: JSON lines on stdout only)")
    args = parser.parse_args()
    rows = []
    torch.manual_seed(args.seed)
    x, y = synthetic(args.n, 3, 0.1, torch.device("cpu"), torch.float64, args.seed)
    noise = args.noise * args.n / args.target_n
    lengthscale = torch.tensor(args.lengthscale, dtype=torch.float64)
    k = matern52(x, lengthscale, args.outputscale)
    k_hat = k + noise * torch.eye(args.n, dtype=torch.float64)
    order = spatial_order(x / lengthscale, min(b for b in args.blocks if b) if any(args.blocks) else 64)
    gen = torch.Generator().manual_seed(args.seed + 1)
    for rank in args.ranks:
        factor = pivoted_cholesky(Dense(k), rank)
        for block in args.blocks:
            began = time.perf_counter()
            chol = preconditioner(k_hat, factor, noise, block, order)
            solve = lambda r, c=chol: torch.cholesky_solve(r, c)  # noqa: E731
            probes = chol @ torch.randn(args.n, args.probes, dtype=torch.float64, generator=gen)
            rhs = torch.cat([(y - y.mean())[:, None], probes], -1)
            train = mbcg(lambda v: k_hat @ v, rhs, precond=solve, tol=1.0, max_iters=args.max_iters,
                         min_iters=args.min_iters, warn=False)
            row = dict(n=args.n, noise=noise, rank=rank, block=block, extra_memory_columns=block,
                       min_iters=args.min_iters, train_iterations=train.iterations,
                       train_y_residual=float(train.residual[0]),
                       train_mean_residual=float(train.residual.mean()))
            if not args.skip_predict:
                pred = mbcg(lambda v: k_hat @ v, rhs[:, :1], precond=solve, tol=1e-2,
                            max_iters=args.max_iters, warn=False)
                row.update(predict_iterations=pred.iterations, predict_converged=pred.converged)
            row.update(seconds=round(time.perf_counter() - began, 2))
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        write_results(args.out, rows, args, device="cpu")


if __name__ == "__main__":
    main()
