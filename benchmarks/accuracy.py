# BBMM (CG) against float64 Cholesky on random problems: relative errors of the log marginal
# likelihood, its gradient, and the posterior mean and variance. Writes a markdown table + JSON.
"""Usage: python benchmarks/accuracy.py --n 2000,5000 --kernels rbf,matern,rq --seeds 3 --out results/accuracy"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flashgp as fg  # noqa: E402

SOLVERS = {
    "CG default": fg.CG(),
    "CG tol 0.01, 20 probes, rank 200": fg.CG(tol=0.01, probes=20, precond=fg.PivotedCholesky(200)),
}


def make_kernel(kind: str, d: int):
    base = {"rbf": lambda: fg.kernels.RBF(ard_dims=d), "matern": lambda: fg.kernels.Matern(nu=2.5, ard_dims=d),
            "rq": lambda: fg.kernels.RQ(ard_dims=d, alpha=2.0)}[kind]()
    return fg.kernels.Scale(base)


def problem(kind: str, n: int, d: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1
    x_test = torch.rand(500, d, generator=gen, dtype=torch.float64) * 2 - 1
    kernel = make_kernel(kind, d).double()
    kernel.base.lengthscale = 0.4 + 0.6 * torch.rand(d, generator=gen, dtype=torch.float64)
    kernel.outputscale = 1.0
    with torch.no_grad():
        f_all = torch.linalg.cholesky(kernel(torch.cat([x, x_test])) + 1e-6 * torch.eye(n + 500, dtype=torch.float64))
        f = f_all @ torch.randn(n + 500, generator=gen, dtype=torch.float64)
    y = f[:n] + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y, x_test, kernel


def evaluate(model):
    model.zero_grad()
    mll = model.mll()
    mll.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    post = model.posterior(model._x_test)
    return float(mll.detach()), grad, post.mean, post.variance


def rel(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).norm() / torch.as_tensor(b).norm())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", default="2000,5000")
    parser.add_argument("--kernels", default="rbf,matern,rq")
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="results/accuracy")
    args = parser.parse_args()
    rows = []
    for n in [int(v) for v in args.n.split(",")]:
        for kind in args.kernels.split(","):
            for seed in range(args.seeds):
                x, y, x_test, kernel = problem(kind, n, args.d, seed)
                model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=0.01),
                                   solver=fg.Cholesky())
                model._x_test = x_test
                ref = evaluate(model)
                for name, solver in SOLVERS.items():
                    model.solver = solver
                    torch.manual_seed(seed)
                    got = evaluate(model)
                    rows.append({"n": n, "kernel": kind, "seed": seed, "solver": name,
                                 "mll_rel": abs(got[0] - ref[0]) / abs(ref[0]), "grad_rel": rel(got[1], ref[1]),
                                 "mean_rel": rel(got[2], ref[2]), "var_rel": rel(got[3], ref[3]),
                                 "var_min": float(got[3].min()), "cg_iterations": model.diagnostics.get("cg_iterations")})
                    print(json.dumps(rows[-1]), flush=True)
    lines = ["# BBMM accuracy against float64 Cholesky", "",
             f"- command: `python {' '.join(sys.argv)}`",
             f"- machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, float64",
             "- problems: x uniform in [-1, 1]^d, lengthscales uniform in [0.4, 1.0], outputscale 1, noise 0.01, "
             "y a GP draw plus noise; 500 test points (exact-variance path); worst case over seeds", "",
             "| n | kernel | solver | mll rel. err | grad rel. err | mean rel. err | var rel. err | min var |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["n"], r["kernel"], r["solver"]) for r in rows}, key=lambda k: (k[0], k[1], k[2]))
    for key in keys:
        group = [r for r in rows if (r["n"], r["kernel"], r["solver"]) == key]
        worst = {m: max(r[m] for r in group) for m in ("mll_rel", "grad_rel", "mean_rel", "var_rel")}
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {worst['mll_rel']:.2e} | {worst['grad_rel']:.2e} | "
                     f"{worst['mean_rel']:.2e} | {worst['var_rel']:.2e} | {min(r['var_min'] for r in group):.2e} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
