# Drop-in comparison with scikit-learn: GaussianProcessRegressor (ConstantKernel * Matern(2.5, ARD)
# + WhiteKernel, normalize_y=True, L-BFGS-B) against flashgp.sklearn.GPRegressor with its DEFAULT
# arguments, on small real data sets (n_train <= 1000). Reports test RMSE, the ratio, the total
# log marginal likelihood of the standardized targets and the fit time. Writes markdown + JSON.
"""Usage: python benchmarks/sklearn_compare.py --splits 3 --out benchmarks/results/sklearn/sklearn_compare

--params '{"optimizer": "lbfgs", "lr": 1.0, "iters": 5}' passes non-default arguments to GPRegressor;
--reuse-sklearn OLD.json takes the sklearn rows of an earlier run (same data sets and splits)
instead of fitting sklearn again.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_diabetes, make_friedman1
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flashgp.datasets import load_uci  # noqa: E402
from flashgp.sklearn import GPRegressor  # noqa: E402

UCI_ROOT = Path("/work/shared/data/uci")
UCI_SETS = ("concrete", "yacht", "housing", "energy", "airfoil", "wine")
SKLEARN_SETS = ("diabetes", "friedman1")
DEFAULT_SETS = ",".join(UCI_SETS + SKLEARN_SETS)
MAX_TRAIN = 1000


def load(name: str, split: int):
    """(x_train, y_train, x_test, y_test) in the data's own units (no standardization here)."""
    if name in UCI_SETS:
        root = None if name == "concrete" else UCI_ROOT  # concrete ships with flashgp
        ds = load_uci(name, split=split, root=root, standardize=False, max_train=MAX_TRAIN, seed=split)
        return tuple(t.numpy() for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    if name == "diabetes":
        x, y = load_diabetes(return_X_y=True)
    elif name == "friedman1":
        x, y = make_friedman1(n_samples=600, n_features=10, noise=1.0, random_state=0)
    else:
        raise ValueError(f"--datasets: unknown data set {name!r}; expected some of {DEFAULT_SETS}")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=split)
    return x_train, y_train, x_test, y_test


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def fit_sklearn(x, y, x_test, y_test) -> dict:
    kernel = ConstantKernel() * Matern(length_scale=np.ones(x.shape[1]), nu=2.5) + WhiteKernel()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning when a bound is hit
        ref = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(x, y)
    seconds = time.perf_counter() - start
    return {"rmse": rmse(ref.predict(x_test), y_test), "seconds": seconds,
            "lml": float(ref.log_marginal_likelihood_value_),
            "lengthscale": ref.kernel_.k1.k2.length_scale.tolist(),
            "noise": float(ref.kernel_.k2.noise_level * ref._y_train_std**2)}


def fit_flashgp(x, y, x_test, y_test, params: dict) -> dict:
    start = time.perf_counter()
    est = GPRegressor(**params).fit(x, y)
    seconds = time.perf_counter() - start
    return {"rmse": rmse(est.predict(x_test), y_test), "seconds": seconds,
            "lml": float(est.log_marginal_likelihood_), "lengthscale": est.lengthscale_.tolist(),
            "noise": float(est.noise_), "n_iter": est.n_iter_,
            "polish_seconds": sum(est.polish_history_.step_seconds) if est.polish_history_ else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default=DEFAULT_SETS)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--params", default="{}", help="JSON dict of GPRegressor arguments")
    parser.add_argument("--out", default="results/sklearn_compare",
                        help="output prefix: writes OUT.md and OUT.json (default results/sklearn_compare)")
    parser.add_argument("--reuse-sklearn", default=None, help="JSON of an earlier run")
    args = parser.parse_args()
    params = json.loads(args.params)
    earlier = {}
    if args.reuse_sklearn:
        earlier = {(r["dataset"], r["split"]): r["sklearn"]
                   for r in json.loads(Path(args.reuse_sklearn).read_text())["rows"]}
    rows = []
    for name in args.datasets.split(","):
        for split in range(args.splits):
            x, y, x_test, y_test = load(name, split)
            ref = earlier.get((name, split)) or fit_sklearn(x, y, x_test, y_test)
            ours = fit_flashgp(x, y, x_test, y_test, params)
            rows.append({"dataset": name, "split": split, "n_train": x.shape[0], "d": x.shape[1],
                         "sklearn": ref, "flashgp": ours, "ratio": ours["rmse"] / ref["rmse"]})
            print(f"{name:10s} split {split} n={x.shape[0]:4d} d={x.shape[1]:2d} "
                  f"rmse sk {ref['rmse']:.4g} fg {ours['rmse']:.4g} ratio {rows[-1]['ratio']:.4f} | "
                  f"lml sk {ref['lml']:.2f} fg {ours['lml']:.2f} | "
                  f"s sk {ref['seconds']:.2f} fg {ours['seconds']:.2f}", flush=True)
    write(rows, args, params)


def write(rows: list, args, params: dict) -> None:
    ratios = np.array([r["ratio"] for r in rows])
    lines = ["# flashgp.sklearn.GPRegressor against sklearn's GaussianProcessRegressor", "",
             f"- command: `python {' '.join(sys.argv)}`",
             f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch "
             f"{torch.__version__}, scikit-learn {sklearn.__version__}, float64, CPU",
             "- sklearn: `GaussianProcessRegressor(ConstantKernel() * Matern(length_scale=np.ones(d), "
             "nu=2.5) + WhiteKernel(), normalize_y=True, random_state=0)` (L-BFGS-B, no restarts)",
             f"- flashgp: `GPRegressor(**{params})` (otherwise the defaults)",
             *([f"- sklearn rows reused from `{args.reuse_sklearn}`"] if args.reuse_sklearn else []),
             f"- UCI sets: fixed splits of the collection, at most {MAX_TRAIN} training rows "
             "(random subset, seed = split); diabetes and friedman1 (n=600, noise 1): 80/20 splits "
             "with random_state = split. Raw (unstandardized) data go to both estimators.",
             "- lml: total log marginal likelihood of the standardized training targets (higher is better)",
             "",
             "| data set | split | n | d | RMSE sklearn | RMSE flashgp | ratio | lml sklearn | lml flashgp "
             "| fit s sklearn | fit s flashgp (of it polish) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        sk, fg = r["sklearn"], r["flashgp"]
        lines.append(f"| {r['dataset']} | {r['split']} | {r['n_train']} | {r['d']} | {sk['rmse']:.4g} | "
                     f"{fg['rmse']:.4g} | {r['ratio']:.4f} | {sk['lml']:.1f} | {fg['lml']:.1f} | "
                     f"{sk['seconds']:.2f} | {fg['seconds']:.2f} ({fg.get('polish_seconds', 0.0):.2f}) |")
    lines += ["", "| data set | mean RMSE ratio over splits |", "|---|---:|"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        lines.append(f"| {name} | {np.mean([r['ratio'] for r in rows if r['dataset'] == name]):.4f} |")
    lines += ["", f"Ratio (flashgp / sklearn RMSE): max {ratios.max():.4f}, geometric mean "
              f"{np.exp(np.log(ratios).mean()):.4f}; {int((ratios <= 1.02).sum())} of {len(ratios)} "
              "fits within 2%."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    Path(args.out + ".json").write_text(json.dumps({"command": "python " + " ".join(sys.argv),
                                                    "params": params, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
