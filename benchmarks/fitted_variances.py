# Posterior variances on the CG path after a fit, certified and uncertified, against float64
# Cholesky at the fitted hyperparameters: how far the old stopping rule was off, and the certified one.
"""Usage: python benchmarks/fitted_variances.py --out results/fitted_variances

The problem: n points uniform in [0, 1]^3 (default 5,000), y = sum sin(6 x) + N(0, 0.01), float64;
Scale(Matern 5/2, ARD), Gaussian noise, constant mean; ``fg.fit`` with Adam (lr 0.1) for --iters
steps (default 50) on ``fg.CG(tol=1.0, precond=fg.PivotedCholesky(100))``. Then, at the fitted
hyperparameters, the latent posterior variances at --m test points (default 100):

* "uncertified": ``variance_tol=None``, the variance solves stop at ``eval_tol`` (1e-3) on the
  relative residual, as before the certificate;
* "certified": the default ``variance_tol=0.01``;

each divided by the float64 Cholesky variance of the same model (median, min, max of the ratio),
with the CG iterations of the variance solves. Writes fitted_variances.json and fitted_variances.md
under --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flashgp as fg  # noqa: E402

RULES = {"uncertified (variance_tol=None)": None, "certified (variance_tol=0.01)": 0.01}


def solver(variance_tol, args) -> fg.CG:
    return fg.CG(tol=1.0, precond=fg.PivotedCholesky(args.rank), variance_tol=variance_tol)


def run(args) -> dict:
    torch.manual_seed(args.seed)
    x = torch.rand(args.n, 3, dtype=torch.float64)
    y = torch.sin(6 * x).sum(-1) + 0.1 * torch.randn(args.n, dtype=torch.float64)
    xt = torch.rand(args.m, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(args.seed + 1))
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=3))
    model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(), mean=fg.means.Constant(),
                       solver=solver(0.01, args))
    start = time.perf_counter()
    fg.fit(model, optimizer="adam", lr=0.1, iters=args.iters, progress=False)
    fit_seconds = time.perf_counter() - start
    model.solver = fg.Cholesky()
    exact = model.posterior(xt).variance
    rows = []
    for name, variance_tol in RULES.items():
        model.solver = solver(variance_tol, args)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fg.NumericalWarning)
            ratio = model.posterior(xt).variance / exact
        d = model.diagnostics
        rows.append({"rule": name, "variance_cg_iterations": d.get("variance_cg_iterations"),
                     "variance_error_bound": d.get("variance_error_bound"),
                     "ratio_median": float(ratio.median()), "ratio_min": float(ratio.min()),
                     "ratio_max": float(ratio.max()), "warnings": [str(w.message)[:160] for w in caught]})
        print(f"{name:32s} CG iterations {rows[-1]['variance_cg_iterations']}: CG / Cholesky variance median "
              f"{rows[-1]['ratio_median']:.4f}, min {rows[-1]['ratio_min']:.4f}, max {rows[-1]['ratio_max']:.4f}",
              flush=True)
    params = {"lengthscale": model.kernel.base.lengthscale.detach().flatten().tolist(),
              "outputscale": float(model.kernel.outputscale.detach()), "noise": float(model.likelihood.noise.detach())}
    meta = {"argv": sys.argv, "torch": torch.__version__, "machine": platform.machine(),
            "threads": torch.get_num_threads(), "fit_seconds": round(fit_seconds, 2), "fitted": params}
    return {"meta": meta, "rows": rows}


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = ["# Posterior variances after a fit: CG against float64 Cholesky", "",
             f"- command: `python {' '.join(meta['argv'])}`",
             f"- torch {meta['torch']}, {meta['machine']}, {meta['threads']} threads; fit {meta['fit_seconds']} s",
             f"- fitted: {meta['fitted']}", "",
             "| variance solves | CG iterations | CG / Cholesky latent variance, median | min | max | warnings |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['rule']} | {r['variance_cg_iterations']} | {r['ratio_median']:.4f} | "
                     f"{r['ratio_min']:.4f} | {r['ratio_max']:.4f} | {len(r['warnings'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--n", type=int, default=5000, help="training points (default 5000)")
    p.add_argument("--m", type=int, default=100, help="test points (default 100)")
    p.add_argument("--iters", type=int, default=50, help="Adam steps of the fit (default 50)")
    p.add_argument("--rank", type=int, default=100, help="pivoted-Cholesky rank (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/fitted_variances", help="folder of the JSON and markdown")
    args = p.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fitted_variances.json").write_text(json.dumps(result, indent=1))
    (out / "fitted_variances.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
