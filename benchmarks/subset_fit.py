# Full-batch training of an ExactGP against minibatch SGD on random subsets (fg.fit(model,
# batch_size=m), flashgp.subset_training) on UCI data: seconds, final hyperparameters, test metrics.
"""Benchmark minibatch (subset) SGD of exact-GP hyperparameters against full-batch training.

Example: python benchmarks/subset_fit.py --datasets elevators,kin40k --max-train 2000
--out benchmarks/results/subset_fit/cpu   (writes cpu.md and cpu.json)

Per data set (standardized, ``--max-train`` training rows drawn with seed 0, the test split 0):
a constant mean, Scale(RBF, ARD) and Gaussian ExactGP on ``--solver`` is trained by Adam at
``--lr`` from the same initial values (``fg.init_from_data``) (a) full-batch for ``--iters`` steps,
(b) on random subsets of m rows per step for each m in ``--batch-sizes``, for
max(``--iters``, ``--epochs`` x ceil(n / m)) steps. After each fit the model predicts the test set
with its own solver on all n training points. Reported: training seconds, the final lengthscales
(geometric mean over dimensions), outputscale and noise with their relative difference to the
full-batch values (the largest over all hyperparameters, lengthscales per dimension), the full-data
-mll per point at the final values, and test RMSE / NLL (Gaussian predictive density with the
learned noise) on the standardized target.
"""
from __future__ import annotations

import argparse
import math
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
from flashgp.kernels import RBF, Scale  # noqa: E402
from results_file import versions, write_results  # noqa: E402
from uci import device_name, metrics  # noqa: E402


def build(ds, solver):
    d = ds.x_train.shape[1]
    return fg.ExactGP(ds.x_train, ds.y_train, Scale(RBF(ard_dims=d)), solver=solver)


def hyperparameters(model) -> dict:
    with torch.no_grad():
        return {"lengthscale": model.kernel.base.lengthscale.detach().reshape(-1).clone(),
                "outputscale": float(model.kernel.outputscale), "noise": float(model.likelihood.noise)}


def relative_differences(h, ref) -> dict:
    ls = ((h["lengthscale"] - ref["lengthscale"]).abs() / ref["lengthscale"]).max().item()
    return {"lengthscale": ls, **{k: abs(h[k] - ref[k]) / ref[k] for k in ("outputscale", "noise")}}


def run(ds, solver, lr, steps, batch_size=None, optimizer="adam") -> dict:
    model = build(ds, solver)
    start = time.perf_counter()
    if optimizer == "lbfgs":  # the full-batch optimum: L-BFGS steps of up to 20 iterations each
        history = fg.fit(model, optimizer="lbfgs", iters=steps, progress=False, seed=0)
    else:
        history = fg.fit(model, lr=lr, iters=steps, progress=False, seed=0, batch_size=batch_size)
    seconds = time.perf_counter() - start
    print(f"  m={batch_size or 'n'}: {steps} steps in {seconds:.1f} s", flush=True)
    h = hyperparameters(model)
    model.eval()
    with torch.no_grad():
        full_loss = float(model.loss())
        post = model.posterior(ds.x_test)
        scores = metrics(post.mean, post.variance + h["noise"], ds.y_test)
    return {"m": batch_size or ds.x_train.shape[0], "steps": steps, "seconds": seconds,
            "epochs": steps * (batch_size or ds.x_train.shape[0]) / ds.x_train.shape[0],
            "last_step_loss": history.loss[-1], "full_mll_loss": full_loss, "hyper": h, **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO / ".uci"))
    parser.add_argument("--datasets", default="elevators,kin40k")
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--batch-sizes", default="256,1024")
    parser.add_argument("--iters", type=int, default=50, help="full-batch Adam steps (and the fewest SGD steps)")
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--solver", choices=("cholesky", "auto"), default="cholesky")
    parser.add_argument("--full-optimizer", choices=("adam", "lbfgs"), default="adam",
                        help="full batch: --iters Adam steps, or --full-iters L-BFGS steps (its optimum)")
    parser.add_argument("--full-iters", type=int, default=30)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    solver = fg.Cholesky() if args.solver == "cholesky" else fg.Auto()
    rows, tables = [], []
    for name in args.datasets.split(","):
        ds = load_uci(name, root=args.data, max_train=args.max_train, dtype=torch.float64, seed=0)
        n, d = ds.x_train.shape
        print(f"{name}: n={n}, d={d}, test={ds.x_test.shape[0]}", flush=True)
        full = (run(ds, solver, args.lr, args.full_iters, optimizer="lbfgs") if args.full_optimizer == "lbfgs"
                else run(ds, solver, args.lr, args.iters))
        results = [full]
        for m in (int(v) for v in args.batch_sizes.split(",")):
            steps = max(args.iters, math.ceil(args.epochs * math.ceil(n / m)))
            results.append(run(ds, solver, args.lr, steps, m))
        table = [f"### {name} (n = {n:,}, d = {d}, {ds.x_test.shape[0]:,} test points)", "",
                 "| training | steps | epochs | seconds | lengthscale (geo. mean) | outputscale | noise "
                 "| largest rel. diff. to full batch | full-data -mll/n | test RMSE | test NLL |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results:
            diff = relative_differences(r["hyper"], full["hyper"])
            r["relative_difference"] = diff
            label = (f"full batch ({args.full_optimizer})" if r is full else f"subsets m = {r['m']:,}")
            geo = float(r["hyper"]["lengthscale"].log().mean().exp())
            worst = max(diff.values())
            which = max(diff, key=diff.get)
            table.append(f"| {label} | {r['steps']} | {r['epochs']:.1f} | {r['seconds']:.1f} | {geo:.3f} | "
                         f"{r['hyper']['outputscale']:.3f} | {r['hyper']['noise']:.4f} | "
                         f"{'-' if r is full else f'{worst:.1%} ({which})'} | {r['full_mll_loss']:.4f} | "
                         f"{r['rmse']:.4f} | {r['nll']:.4f} |")
            rows.append({"dataset": name, "n": n, "d": d, **r})
            print(table[-1], flush=True)
        tables += table + [""]
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_results(out, rows, args, device="cpu")
        v = versions()
        command = "python " + " ".join(sys.argv)
        text = ["# Minibatch (subset) SGD against full-batch training of an ExactGP", "",
                f"Command: `{command}`", "",
                f"Machine: {device_name(torch.device('cpu'))}, {torch.get_num_threads()} torch threads; "
                "the CPU was shared with other agents' jobs while this ran, so seconds are indicative only.",
                f"Versions: python {v.get('python')}, torch {v.get('torch')}, flashgp {v.get('flashgp')} "
                f"(commit {v.get('flashgp_commit')}).", "",
                f"Model: constant mean, Scale(RBF, ARD), Gaussian noise, float64, solver {args.solver}; Adam, "
                f"lr {args.lr}, seed 0; all runs start from the same initial values. Full batch: "
                + (f"{args.full_iters} L-BFGS steps (up to 20 iterations each)" if args.full_optimizer == "lbfgs"
                   else f"{args.iters} Adam steps") + " on the exact -mll per point; subsets: max({args.iters}, {args.epochs:g} epochs) steps "
                "on the exact -mll per point of m random rows (float64 Cholesky). Every model then predicts "
                "with the exact posterior on all n training points. Relative differences: |value - full| / "
                "full, lengthscales per dimension; the largest is shown with its hyperparameter.", "",
                *tables]
        out.with_suffix(".md").write_text("\n".join(text) + "\n")
        print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
