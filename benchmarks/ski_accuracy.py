# How close SKI's (fg.kernels.Interpolated) log marginal likelihood and its gradient come to the exact
# GP's as the grid grows: float64, dense Cholesky of both (no CG noise), the same hyperparameters.
"""SKI mll and gradient error against the exact GP as the grid grows.

Example: python benchmarks/ski_accuracy.py --n 2000 --out benchmarks/results/ski/accuracy

Data: n points uniform on [-2, 2]^d, y = sin(2 x1) cos(x_d) + 0.1 noise, float64. Kernels:
Scale(RBF) (K_UU a Kronecker product of Toeplitz factors) in 1-D and 2-D, Scale(Matern 5/2) in
2-D (a two-level Toeplitz K_UU). Hyperparameters: lengthscale --lengthscale, outputscale 1,
noise 0.01, constant mean 0, the same for both models. Both mlls and gradients come from a float64
Cholesky of the dense matrix (W K_UU W^T for SKI), so the errors are SKI's alone. Reported per
grid: the spacing h, lengthscale / h, |mll_SKI - mll_exact| per point, and the gradient error
(largest absolute difference over all parameters, relative to the largest exact gradient entry).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import flashgp as fg  # noqa: E402

CASES = {  # name -> (d, base kernel factory, grid sizes)
    "rbf-1d": (1, lambda ls: fg.kernels.Scale(fg.kernels.RBF(lengthscale=ls), outputscale=1.0),
               (10, 20, 40, 80, 160, 320)),
    "rbf-2d": (2, lambda ls: fg.kernels.Scale(fg.kernels.RBF(lengthscale=ls), outputscale=1.0), (10, 20, 40, 80)),
    "matern52-2d": (2, lambda ls: fg.kernels.Scale(fg.kernels.Matern(nu=2.5, lengthscale=ls), outputscale=1.0),
                    (10, 20, 40, 80)),
}


def mll_and_grads(model):
    model.zero_grad()
    value = model.mll()
    value.backward()
    return float(value.detach()), [p.grad.clone() for p in model.parameters()]


def run(name: str, args) -> list:
    d, base, sizes = CASES[name]
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.n, d, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, -1]) + 0.1 * torch.randn(args.n, generator=g, dtype=torch.float64)
    parts = dict(likelihood=fg.likelihoods.Gaussian(noise=0.01), mean=fg.means.Constant(0.0), solver=fg.Cholesky())
    exact = fg.ExactGP(x, y, base(args.lengthscale), **parts)
    value, grads = mll_and_grads(exact)
    scale = max(float(t.abs().max()) for t in grads)
    rows = []
    for size in sizes:
        if size ** d > args.max_grid:
            continue
        start = time.perf_counter()
        parts = dict(likelihood=fg.likelihoods.Gaussian(noise=0.01), mean=fg.means.Constant(0.0),
                     solver=fg.Cholesky())
        ski = fg.ExactGP(x, y, fg.kernels.Interpolated(base(args.lengthscale), grid_size=size), **parts)
        ski_value, ski_grads = mll_and_grads(ski)
        spacing = ski.kernel.grid(x).spacing[0]
        rows.append({"case": name, "n": args.n, "d": d, "grid": size, "spacing": spacing,
                     "lengthscale_over_spacing": args.lengthscale / spacing, "mll_exact": value,
                     "mll_error": abs(ski_value - value),
                     "grad_error": max(float((a - b).abs().max()) for a, b in zip(ski_grads, grads)) / scale,
                     "seconds": time.perf_counter() - start})
        r = rows[-1]
        print(f"| {name} | {size}^{d} | {spacing:.4f} | {r['lengthscale_over_spacing']:.1f} | {r['mll_error']:.2e} | "
              f"{r['grad_error']:.2e} |", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="training points (default 2000)")
    p.add_argument("--cases", default=",".join(CASES), type=lambda s: s.split(","),
                   help=f"comma-separated, from {', '.join(CASES)} (default all)")
    p.add_argument("--lengthscale", type=float, default=0.5, help="the kernels' lengthscale (default 0.5)")
    p.add_argument("--max-grid", type=int, default=10_000, help="skip grids of more points (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output stem (.md, .json); default: print only")
    args = p.parse_args(argv)
    unknown = set(args.cases) - set(CASES)
    if unknown:
        p.error(f"--cases: unknown {sorted(unknown)}")
    torch.set_num_threads(2)
    head = ("| case | grid | spacing h | lengthscale / h | abs mll error per point | gradient error (relative) |\n"
            "| --- | --- | --- | --- | --- | --- |")
    print(head)
    rows = [row for name in args.cases for row in run(name, args)]
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"| {r['case']} | {r['grid']}^{r['d']} | {r['spacing']:.4f} | {r['lengthscale_over_spacing']:.1f} | "
                 f"{r['mll_error']:.2e} | {r['grad_error']:.2e} |" for r in rows]
        text = (f"SKI against the exact GP, n = {args.n}, float64, lengthscale {args.lengthscale}, noise 0.01, "
                f"dense Cholesky of both, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.\n\nCommand: "
                f"`python benchmarks/ski_accuracy.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n"
                + head + "\n" + "\n".join(lines) + "\n")
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
