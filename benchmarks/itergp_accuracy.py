# How close IterGP's computation-aware posterior (fg.IterGP) comes to the exact one as its budget
# grows, per policy, on UCI data sets; and whether its variance covers the error of its mean.
"""IterGP posterior against the exact posterior on UCI data sets, per policy and budget.

Example: python benchmarks/itergp_accuracy.py --datasets elevators,bike,protein --max-train 2000
--out benchmarks/results/itergp/cpu   (writes cpu.md and cpu.json)

Per data set: a random subset of --max-train training points and --max-test test points of split
0 (standardized by the training rows), float64. The hyperparameters of a Scale(Matern 5/2, ARD)
ExactGP (constant mean, Gaussian noise) are fitted by Adam (--iters steps, Cholesky); IterGP
models with the same parameters then predict with each policy (cg, cholesky, pivoted) and budget
i (--budgets, plus n). Reported: test RMSE and NLL (predictive: latent + noise) of the IterGP
posterior and of the exact one; the error of the mean relative to the exact mean,
||mean_i - mean_exact|| / ||mean_exact - m||; the fraction of test points with
|mean_i - mean_exact| <= 2 sqrt(combined variance) ("2sd") and with |mean_i - mean_exact| <=
sqrt(computational variance) ||y - m||_{K_hat^{-1}} (the bound of Wenger et al. 2022, Theorem 2
applied to the smallest-norm function through the data, ``post.mean_error_bound``, with its
allowance of 16 eps k(x, x) for the round-off of the variance: it must be 1), the median of the error over
that bound, the mean computational variance over the mean combined variance, and the seconds
of IterGP's solve (the actions and C_i) and of the whole posterior.
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import flashgp as fg  # noqa: E402
from flashgp.datasets import load_uci  # noqa: E402
from results_file import versions, write_results  # noqa: E402
from uci import device_name  # noqa: E402

POLICIES = ("cg", "cholesky", "pivoted")


def metrics(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(RMSE, mean Gaussian NLL) of predictions (mean, var) of targets y."""
    err2 = (mean - y).square()
    return float(err2.mean().sqrt()), float((0.5 * (torch.log(2 * math.pi * var) + err2 / var)).mean())


def fitted_exact(ds, args) -> fg.ExactGP:
    d = ds.x_train.shape[-1]
    model = fg.ExactGP(ds.x_train, ds.y_train, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d)),
                       solver=fg.Cholesky())
    fg.fit(model, iters=args.iters, lr=args.lr, progress=False)
    return model


def run(name: str, args) -> list:
    ds = load_uci(name, root=args.data, split=0, dtype=torch.float64, max_train=args.max_train, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    keep = torch.randperm(ds.x_test.shape[0], generator=gen)[:args.max_test].sort().values
    x_test, y_test = ds.x_test[keep], ds.y_test[keep]
    n, d = ds.x_train.shape
    start = time.perf_counter()
    exact = fitted_exact(ds, args)
    fit_seconds = time.perf_counter() - start
    noise = float(exact.likelihood.noise.detach())
    with torch.no_grad():
        ref = exact.posterior(x_test)
        ref_rmse, ref_nll = metrics(ref.mean, ref.variance + noise, y_test)
        prior_mean = exact.mean(x_test)
    print(f"\n{name}: n={n}, d={d}, test={len(y_test)}, fit {fit_seconds:.1f} s, noise {noise:.3g}; "
          f"exact RMSE {ref_rmse:.4f} NLL {ref_nll:.4f}", flush=True)
    print("| policy | i | RMSE | NLL | rel. mean error | 2sd | bound holds | error/bound (median) | "
          "comp/combined var | solve s | posterior s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [{"dataset": name, "n": n, "d": d, "test": len(y_test), "policy": "exact", "budget": n,
             "rmse": ref_rmse, "nll": ref_nll, "fit_seconds": fit_seconds, "noise": noise}]
    model = fg.IterGP(ds.x_train, ds.y_train, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d)),
                      solver=fg.Cholesky())
    model.load_state_dict(exact.state_dict())  # the fitted parameters
    budgets = sorted({min(b, n) for b in args.budgets} | {n})
    for policy in POLICIES:
        for budget in budgets:
            model.policy, model.budget = policy, budget
            start = time.perf_counter()
            with torch.no_grad():
                post = model.posterior(x_test)
                seconds = time.perf_counter() - start
                rmse, nll = metrics(post.mean, post.variance + noise, y_test)
                error = (post.mean - ref.mean).abs()
                rel = float(error.norm() / (ref.mean - prior_mean).norm())
                two_sd = float((error <= 2 * post.variance.sqrt()).double().mean())
                bound = post.mean_error_bound
                holds = float((error <= bound).double().mean())
                positive = bound > 1e-12 * float(ref.variance.mean().sqrt())  # where the bound is not ~0
                ratio = float((error[positive] / bound[positive]).median()) if bool(positive.any()) else None
                comp = float(post.computational_variance.mean() / post.variance.mean())
            info = model.diagnostics
            rows.append({"dataset": name, "n": n, "d": d, "test": len(y_test), "policy": policy, "budget": budget,
                         "iterations": info["iterations"], "stopped": info["stopped"], "rmse": rmse, "nll": nll,
                         "rel_mean_error": rel, "within_2sd": two_sd, "bound_holds": holds,
                         "error_over_bound_median": ratio, "comp_over_combined_var": comp,
                         "solve_seconds": info["itergp_seconds"], "posterior_seconds": seconds})
            print(f"| {policy} | {budget} | {rmse:.4f} | {nll:.4f} | {rel:.2e} | {two_sd:.3f} | {holds:.3f} | "
                  f"{'-' if ratio is None else f'{ratio:.3f}'} | {comp:.3f} | {info['itergp_seconds']:.2f} | {seconds:.2f} |", flush=True)
    return rows


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(rows: list, args, total: float) -> str:
    command = "python " + " ".join(sys.argv)
    ver = versions()
    lines = ["# IterGP: the computation-aware posterior against the exact one", "",
             f"Command: `{command}`", "",
             f"Device: {device_name(torch.device('cpu'))} ({torch.get_num_threads()} threads), "
             f"Python {platform.python_version()}, torch {ver['torch']}, flashgp {ver['flashgp']} "
             f"(commit {ver['flashgp_commit']}); total {total:.0f} s.", "",
             "Columns: test RMSE and NLL of the predictive distribution (standardized targets); rel. mean error "
             "= ||mean_i - mean_exact|| / ||mean_exact - m||; 2sd = fraction of test points with |mean_i - "
             "mean_exact| <= 2 sqrt(combined variance); bound holds = fraction with |mean_i - mean_exact| <= "
             "sqrt(computational variance) ||y - m||_{K_hat^-1} (Wenger et al. 2022, Theorem 2's bound for "
             "the smallest-norm RKHS function through the data; must be 1); error/bound = the median ratio (over points where the bound is not ~0; - when none is); "
             "comp/combined var = mean computational over mean combined variance; solve s = IterGP's actions "
             "and C_i; posterior s = the whole posterior call (solve + test predictions).", ""]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        part = [r for r in rows if r["dataset"] == name]
        head = part[0]
        lines += [f"## {name} (n = {head['n']}, d = {head['d']}, {head['test']} test points; exact GP: RMSE "
                  f"{head['rmse']:.4f}, NLL {head['nll']:.4f}; fit {head['fit_seconds']:.0f} s, noise "
                  f"{head['noise']:.3g})", "",
                  "| policy | i | RMSE | NLL | rel. mean error | 2sd | bound holds | error/bound | "
                  "comp/combined var | solve s | posterior s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in part[1:]:
            lines.append(f"| {r['policy']} | {r['budget']} | {r['rmse']:.4f} | {r['nll']:.4f} | "
                         f"{r['rel_mean_error']:.2e} | {r['within_2sd']:.3f} | {r['bound_holds']:.3f} | "
                         f"{_fmt(r['error_over_bound_median'])} | {r['comp_over_combined_var']:.3f} | "
                         f"{r['solve_seconds']:.2f} | {r['posterior_seconds']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO / ".uci"), help="folder of the UCI data sets (default .uci)")
    p.add_argument("--datasets", default="elevators,bike,protein")
    p.add_argument("--max-train", type=int, default=2000)
    p.add_argument("--max-test", type=int, default=1000)
    p.add_argument("--budgets", default="10,30,100,300", help="budgets i besides n (comma-separated)")
    p.add_argument("--iters", type=int, default=30, help="Adam steps of the hyperparameter fit")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: IterGP's steps are small products, which extra "
                        "threads slow down on a shared CPU)")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = p.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",") if b]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for name in args.datasets.split(","):
        rows += run(name, args)
    total = time.perf_counter() - start
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(markdown(rows, args, total) + "\n")
        write_results(out.with_suffix(".json"), rows, args, extra={"total_seconds": total}, device="cpu")
    print(f"total {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
