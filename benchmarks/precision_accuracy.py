# Accuracy of the fused kernels' precision modes in a whole BBMM evaluation: relative errors of the
# log marginal likelihood and its gradient against float64 Cholesky, next to the float64 CG baseline.
"""Usage: python benchmarks/precision_accuracy.py --n 5000,20000 --out results/precision_accuracy

Problems as in benchmarks/accuracy.py (x uniform in [-1, 1]^3, lengthscales in [0.4, 1.0],
outputscale 1, noise 0.01, y a GP draw plus noise). For each one: the float64 Cholesky mll and
gradient; the same CG settings (tol 0.01, 20 probes, rank 200, fixed probe seed) on float64 data
with the blocked backend (the error of CG and stochastic quadrature alone) and on float32 data with
the fused backend in each precision (that error plus the arithmetic's)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import flashgp as fg  # noqa: E402
from accuracy import make_kernel, problem, rel  # noqa: E402

MODES = [("float64 blocked", torch.float64, "blocked", "fp32"),
         ("float32 blocked", torch.float32, "blocked", "fp32"), ("fp32", torch.float32, "triton", "fp32"),
         ("tf32x3", torch.float32, "triton", "tf32x3"), ("tf32", torch.float32, "triton", "tf32")]


def mll_and_grad(x, y, kernel, solver, seed: int = 0):
    """(mll, gradient over the raw parameters (float64), diagnostics) of one evaluation."""
    model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=0.01), solver=solver)
    model = model.to(device=x.device, dtype=x.dtype)
    mll = model.mll(generator=torch.Generator(device=x.device).manual_seed(seed))
    mll.backward()
    grad = torch.cat([p.grad.flatten().double() for p in model.parameters()])
    return float(mll.detach()), grad.cpu(), dict(model.diagnostics)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", default="5000,20000")
    parser.add_argument("--kernels", default="rbf,matern")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="results/precision_accuracy")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for n in [int(v) for v in args.n.split(",")]:
        for kind in args.kernels.split(","):
            x, y, _, kernel = problem(kind, n, 3, seed=0)
            x, y = x.to(device), y.to(device)
            ref = mll_and_grad(x, y, kernel.to(device), fg.Cholesky())
            base = {}  # per dtype, the blocked CG run: same probes, so differences isolate the arithmetic
            for name, dtype, backend, precision in MODES:
                solver = fg.CG(tol=0.01, probes=20, precond=fg.PivotedCholesky(200), backend=backend,
                               precision=precision)
                k = make_kernel(kind, 3).to(device=device, dtype=dtype)
                k.load_state_dict({key: v.to(dtype) for key, v in kernel.state_dict().items()})
                got = mll_and_grad(x.to(dtype), y.to(dtype), k, solver)
                base.setdefault(dtype, got)
                rows.append({"n": n, "kernel": kind, "mode": name, "backend": got[2].get("backend"),
                             "mll_rel": abs(got[0] - ref[0]) / abs(ref[0]), "grad_rel": rel(got[1], ref[1]),
                             "mll_vs_blocked": abs(got[0] - base[dtype][0]) / abs(base[dtype][0]),
                             "grad_vs_blocked": rel(got[1], base[dtype][1]), "cg_iterations": got[2].get("cg_iterations")})
                print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = ["# Precision modes: mll and gradient error against float64 Cholesky", "",
             f"- command: `python {' '.join(sys.argv)}`", f"- device: {name}, torch {torch.__version__}",
             "- CG tol 0.01, 20 probes, pivoted Cholesky rank 200, same probe seed in every mode; one problem per row",
             "- vs Cholesky: the whole error (CG, stochastic quadrature and arithmetic); vs blocked: the "
             "difference to the blocked torch CG run on data of the same dtype with the same settings and "
             "probes (the fused arithmetic's own share)",
             "", "| n | kernel | mode | backend | mll err vs Cholesky | grad err vs Cholesky | "
             "mll diff vs blocked | grad diff vs blocked | CG iterations |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['n']} | {r['kernel']} | {r['mode']} | {r['backend']} | {r['mll_rel']:.2e} | "
              f"{r['grad_rel']:.2e} | {r['mll_vs_blocked']:.2e} | {r['grad_vs_blocked']:.2e} | {r['cg_iterations']} |"
              for r in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
