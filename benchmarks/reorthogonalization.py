# CG with and without full re-orthogonalization on ill-conditioned kernel systems, with float32
# products and with bfloat16 products (emulated on the CPU): iterations and true residuals.
"""Usage: python benchmarks/reorthogonalization.py --out benchmarks/results/accuracy/reorthogonalization_cpu

Each problem: x uniform in [0, 1]^2, an RBF kernel matrix K (lengthscale ls) plus noise * I, 11
right-hand sides (as in training: a solve column and 10 probes), a pivoted-Cholesky
preconditioner of rank `rank` (0: none). The products are float32 (K stored in float32) or
bfloat16 (K and the vectors rounded to bfloat16, the product accumulated by torch and returned in
float32); the CG state is float32. "true" is the relative residual ||b - K_hat x|| / ||b|| in
float64, "recurrence" the one CG tracks."""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flashgp.linalg import mbcg, pivoted_cholesky  # noqa: E402
from flashgp.operators import Dense  # noqa: E402
from flashgp.operators.low_rank import LowRankPlusDiag  # noqa: E402

PROBLEMS = [(2000, 0.2, 1e-2, 30), (2000, 0.1, 1e-3, 30), (3000, 0.1, 1e-2, 0)]  # n, ls, noise, rank


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-iters", type=int, default=400)
    parser.add_argument("--out", default="results/reorthogonalization_cpu",
                        help="output prefix: writes OUT.json and OUT.md (default results/reorthogonalization_cpu)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for n, ls, noise, rank in PROBLEMS:
        x = torch.rand(n, 2, dtype=torch.float64)
        k = torch.exp(-0.5 * torch.cdist(x, x).square() / ls**2)
        k_hat = k + noise * torch.eye(n, dtype=torch.float64)
        b = torch.randn(n, 11, dtype=torch.float64)
        k32, k16 = k.float(), k.bfloat16()
        precond = None
        if rank:
            factor = pivoted_cholesky(Dense(k32), rank)
            precond = LowRankPlusDiag(factor, torch.full((n,), noise)).solve
        products = {"float32": lambda v: k32 @ v + noise * v,
                    "bfloat16": lambda v: (k16 @ v.bfloat16()).float() + noise * v}
        for product, matmul in products.items():
            for reorth in (False, True):
                for tol in (1e-2, 1e-4):
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        res = mbcg(matmul, b.float(), precond=precond, tol=tol, max_iters=args.max_iters,
                                   warn=False, reorthogonalize=reorth)
                    true = (b - k_hat @ res.solution.double()).norm(dim=0) / b.norm(dim=0)
                    rows.append(dict(n=n, lengthscale=ls, noise=noise, rank=rank, product=product,
                                     reorthogonalize=reorth, tol=tol, iterations=res.iterations,
                                     converged=res.converged, breakdowns=res.breakdowns,
                                     recurrence=float(res.residual.mean()), true=float(true.mean()),
                                     seconds=round(time.perf_counter() - start, 3)))
                    print(json.dumps(rows[-1]), flush=True)
    lines = ["# CG with and without re-orthogonalization (CPU)", "",
             f"- command: `python {' '.join(sys.argv)}`", f"- torch {torch.__version__}, max_iters {args.max_iters}",
             "- " + __doc__.split("\n\n", 1)[1].replace("\n", " "), "",
             "| n | lengthscale | noise | precond rank | products | reorth. | tol | iterations | converged | "
             "breakdowns | recurrence residual | true residual |",
             "|---:|---:|---:|---:|---|---|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r['n']} | {r['lengthscale']} | {r['noise']} | {r['rank']} | {r['product']} | "
              f"{r['reorthogonalize']} | {r['tol']:.0e} | {r['iterations']} | {r['converged']} | "
              f"{r['breakdowns']} | {r['recurrence']:.2e} | {r['true']:.2e} |" for r in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
