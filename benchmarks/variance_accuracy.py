# Accuracy of every prediction path against float64 Cholesky at the same hyperparameters: posterior
# means and variances on random problems across noise levels, lengthscales, n and precisions.
"""Usage: python benchmarks/variance_accuracy.py --n 2000,5000 --out results/variance_accuracy

Each problem: n uniform points in [0, 1]^3, y = sum sin(6 x) + noise, Matern 5/2 with outputscale
1 at the grid's (noise, lengthscale); m test points. The reference is the float64 Cholesky posterior
of the same model. Per path it reports the relative errors of the latent variances (median, max,
min: a negative min means a variance below the exact one), the posterior mean error in units of
the posterior standard deviation, the smallest eigenvalue of the covariance relative to its largest
(paths with a dense covariance), the CG iterations of the variance solves, and seconds.
Writes results.json and results.md under --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flashgp as fg  # noqa: E402

NOISES = (1e-1, 1e-2, 1e-4)
LENGTHSCALES = (0.2, 0.7)


def paths(args) -> dict:
    """name -> (dtype, CG solver) of every path measured (the Cholesky reference aside)."""
    pc = fg.PivotedCholesky(100)
    cg = dict(max_iters=args.max_iters, backend=args.backend)
    return {
        "cg, eval_tol 1e-3 (before: uncertified)": (torch.float64, fg.CG(precond=pc, variance_tol=None, **cg)),
        "cg certified (default)": (torch.float64, fg.CG(precond=pc, **cg)),
        "cg certified, no preconditioner": (torch.float64, fg.CG(precond=None, **cg)),
        "cg certified, blocks 256": (torch.float64, fg.CG(precond=fg.PivotedCholesky(100, block_size=256), **cg)),
        "cg certified, Vecchia(30)": (torch.float64, fg.CG(precond=fg.Vecchia(30), **cg)),
        "cg certified, float32": (torch.float32, fg.CG(precond=pc, **cg)),
        "LOVE rank 200 (uncertified)": (torch.float64, fg.CG(precond=pc, exact_var_max=0, variance_tol=None, **cg)),
        "LOVE + certified CG": (torch.float64, fg.CG(precond=pc, exact_var_max=0, **cg)),
        "local 256 (uncertified)": (torch.float64, fg.CG(precond=pc, exact_var_max=0, local_neighbors=256,
                                                         variance_tol=None, **cg)),
        "local 256 + certified CG": (torch.float64, fg.CG(precond=pc, exact_var_max=0, local_neighbors=256, **cg)),
    }


def problem(n: int, m: int, seed: int, device):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    y = torch.sin(6 * x).sum(-1) + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    xt = torch.rand(m, 3, generator=gen, dtype=torch.float64)
    return x.to(device), y.to(device), xt.to(device)


def model_at(x, y, noise, lengthscale, dtype, solver):
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=3)).to(device=x.device, dtype=dtype)
    model = fg.ExactGP(x.to(dtype), y.to(dtype), kernel,
                       likelihood=fg.likelihoods.Gaussian(noise_floor=1e-6), solver=solver)
    model.kernel.outputscale, model.kernel.base.lengthscale, model.likelihood.noise = 1.0, lengthscale, noise
    return model


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def measure(model, xt, ref_mean, ref_var, device) -> dict:
    """Errors of the posterior at xt against the reference (float64 mean and variance)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fg.NumericalWarning)
        post, seconds = timed(lambda: model.posterior(xt.to(model.train_x.dtype)), device)
        var = post.variance.double()
    d = model.diagnostics
    rel = var / ref_var - 1
    row = {"var_rel_median": float(rel.abs().median()), "var_rel_max": float(rel.abs().max()),
           "var_rel_min": float(rel.min()),
           "mean_err_in_sd": float(((post.mean.double() - ref_mean).abs() / ref_var.sqrt()).max()),
           "variance_method": d.get("variance_method"), "variance_iterations": d.get("variance_cg_iterations"),
           "variance_error_bound": d.get("variance_error_bound"), "uncertified": d.get("variance_uncertified"),
           "mean_error_bound_sd": d.get("mean_error_bound"),
           "seconds": seconds, "warnings": [str(w.message)[:120] for w in caught]}
    if d.get("variance_method") in ("cg", "lanczos", "lanczos+cg"):
        cov = post.covariance.to_dense().double()
        eig = torch.linalg.eigvalsh(0.5 * (cov + cov.T))
        row["cov_min_eig_rel"] = float(eig.min() / eig.max())
    return row


def save(args, rows: list[dict]) -> None:
    """results.json and results.md under --out (rewritten after every problem: a run cut short
    keeps what it measured)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "argv": sys.argv}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / "results.md").write_text(f"{meta}\n\n" + summary(rows) + "\n" + markdown(rows))


def run(args) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    for n in args.n:
        x, y, xt = problem(n, args.m, args.seed, device)
        for noise in NOISES:
            for lengthscale in LENGTHSCALES:
                ref_model = model_at(x, y, noise, lengthscale, torch.float64, fg.Cholesky())
                ref, seconds = timed(lambda: ref_model.posterior(xt), device)
                ref_mean, ref_var = ref.mean.double(), ref.variance.double()
                print(f"n {n} noise {noise:g} lengthscale {lengthscale}: Cholesky {seconds:.2f} s", flush=True)
                for name, (dtype, solver) in paths(args).items():
                    if name in args.skip:
                        continue
                    model = model_at(x, y, noise, lengthscale, dtype, solver)
                    row = {"n": n, "m": args.m, "noise": noise, "lengthscale": lengthscale, "path": name,
                           "cholesky_seconds": seconds,
                           **measure(model, xt, ref_mean, ref_var, device)}
                    rows.append(row)
                    print(f"  {name:42s} var rel med {row['var_rel_median']:.2e} max {row['var_rel_max']:.2e} "
                          f"min {row['var_rel_min']:+.2e} mean/sd {row['mean_err_in_sd']:.1e} "
                          f"it {row['variance_iterations']} {row['seconds']:.2f} s"
                          + (f" [{len(row['warnings'])} warning(s)]" if row["warnings"] else ""), flush=True)
                save(args, rows)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| n | noise | lengthscale | path | var rel err median | max | min | mean err / sd | "
             "cov min eig / max | variance CG its | s | warnings |", "|" + "---|" * 12]
    for r in rows:
        eig = f"{r['cov_min_eig_rel']:.1e}" if "cov_min_eig_rel" in r else ""
        lines.append(f"| {r['n']} | {r['noise']:g} | {r['lengthscale']} | {r['path']} | {r['var_rel_median']:.1e} | "
                     f"{r['var_rel_max']:.1e} | {r['var_rel_min']:+.1e} | {r['mean_err_in_sd']:.1e} | {eig} | "
                     f"{r['variance_iterations'] if r['variance_iterations'] is not None else ''} | "
                     f"{r['seconds']:.2f} | {len(r['warnings'])} |")
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> str:
    """One line per (n, path) over the noise / lengthscale grid: the median of the per-problem median
    relative variance errors, the largest relative error, the smallest (signed), the largest mean
    error in posterior sds, the smallest covariance eigenvalue ratio, the most variance CG iterations,
    and how many problems warned."""
    lines = ["| n | path | var rel err (median of medians) | max | min | mean err / sd (max) | "
             "cov min eig / max | variance CG its (max) | problems that warned |", "|" + "---|" * 9]
    keys = sorted({(r["n"], r["path"]) for r in rows}, key=lambda k: (k[0], list(r["path"] for r in rows).index(k[1])))
    for n, path in keys:
        group = [r for r in rows if r["n"] == n and r["path"] == path]
        meds = sorted(r["var_rel_median"] for r in group)
        eigs = [r["cov_min_eig_rel"] for r in group if "cov_min_eig_rel" in r]
        its = [r["variance_iterations"] for r in group if r["variance_iterations"] is not None]
        lines.append(f"| {n} | {path} | {meds[len(meds) // 2]:.1e} | {max(r['var_rel_max'] for r in group):.1e} | "
                     f"{min(r['var_rel_min'] for r in group):+.1e} | {max(r['mean_err_in_sd'] for r in group):.1e} | "
                     f"{f'{min(eigs):+.1e}' if eigs else ''} | {max(its) if its else ''} | "
                     f"{sum(bool(r['warnings']) for r in group)} of {len(group)} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=lambda s: [int(v) for v in s.split(",")], default=[2000])
    p.add_argument("--m", type=int, default=200, help="test points (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto")
    p.add_argument("--max-iters", type=int, default=2000)
    p.add_argument("--skip", type=lambda s: s.split(";"), default=[], help="path names to skip, ';'-separated")
    p.add_argument("--out", default="results/variance_accuracy")
    args = p.parse_args(argv)
    print(summary(run(args)))


if __name__ == "__main__":
    main()
