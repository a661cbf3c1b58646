# Minibatch (subset) SGD of an exact GP's hyperparameters at a size where no full-batch step is
# affordable, then the exact posterior (BBMM) on as many of the points as the time allows.
"""Subset SGD at n = 10M, then exact predictions.

Example (the committed GPU run):
    python benchmarks/subset_large.py --device cuda --n 10000000 --batch-size 4096 --iters 300 \
        --predict-n 2000000 --out benchmarks/results/subset_fit/large_h100

Data: x uniform on [0, 1]^3, y = sum_j sin(2 pi x_j) / sqrt(3) + N(0, 0.01) (the data of the
1M-point benchmark, ``examples/large_gpu_fit.py``), generated on the device in float32. An
ExactGP with Scale(Matern 5/2, ARD) is trained by ``fg.fit(model, batch_size=m)`` (Adam, one
Cholesky factorization of an m x m matrix per step, float64 on the subset). Then an ExactGP on
the first --predict-n points with those hyperparameters predicts --test points through BBMM
(``fg.CG``: mean solve to --eval-tol, Vecchia(30) preconditioner, local variances from 50
neighbours): seconds and the RMSE of the posterior mean against the noise-free function. The hyperparameters are compared with
those of a full-batch BBMM fit on 1M points of the same function
(``benchmarks/million_fit_parameters.json``, "raw_parameters_after").
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import flashgp as fg  # noqa: E402
from flashgp.kernels import Matern, Scale  # noqa: E402
from results_file import write_results  # noqa: E402


def make_data(n: int, d: int, device, seed: int):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(n, d, generator=g, device=device)
    f = torch.sin(2 * math.pi * x).sum(-1) / math.sqrt(d)
    return x, f + 0.1 * torch.randn(n, generator=g, device=device), f


def natural(model) -> dict:
    with torch.no_grad():
        return {"lengthscale": [float(v) for v in model.kernel.base.lengthscale.reshape(-1)],
                "outputscale": float(model.kernel.outputscale), "noise": float(model.likelihood.noise),
                "constant": float(model.mean.constant)}


def reference_values() -> dict | None:
    path = REPO / "benchmarks" / "million_fit_parameters.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text()).get("raw_parameters_after")
    if not raw:
        return None
    soft = lambda v: F.softplus(torch.as_tensor(v, dtype=torch.float64)).reshape(-1).tolist()  # noqa: E731
    values = {}
    for name, value in raw.items():
        key = name.rsplit(".", 1)[-1].removeprefix("raw_")
        values[key] = soft(value) if key != "constant" else torch.as_tensor(value).reshape(-1).tolist()
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--predict-n", type=int, default=2_000_000)
    parser.add_argument("--test", type=int, default=100_000)
    parser.add_argument("--eval-tol", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    start = time.perf_counter()
    x, y, _ = make_data(args.n, args.d, device, args.seed)
    x_test, _, f_test = make_data(args.test, args.d, device, args.seed + 1)
    print(f"data: n={args.n:,}, d={args.d}, {time.perf_counter() - start:.1f} s", flush=True)

    model = fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=args.d)), solver=fg.CG())
    start = time.perf_counter()
    history = fg.fit(model, batch_size=args.batch_size, iters=args.iters, lr=args.lr, seed=args.seed, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    fit_seconds = time.perf_counter() - start
    learned = natural(model)
    reference = reference_values()
    row = {"phase": "subset SGD", "n": args.n, "batch_size": args.batch_size, "steps": len(history.loss),
           "seconds": fit_seconds, "seconds_per_step": fit_seconds / max(len(history.loss), 1),
           "last_subset_loss": float(history.loss[-1]), **learned, "reference_1m_full_batch": reference}
    if reference is not None:
        listed = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
        pairs = [(a, b) for key in ("lengthscale", "outputscale", "noise")
                 for a, b in zip(listed(learned[key]), listed(reference[key]))]
        row["largest_relative_difference"] = max(abs(a - b) / abs(b) for a, b in pairs)
    rows.append(row)
    print(f"subset SGD: {row['steps']} steps of m={args.batch_size} in {fit_seconds:.1f} s; {learned}; "
          f"1M full-batch reference {reference}; largest relative difference "
          f"{row.get('largest_relative_difference', float('nan')):.3f}", flush=True)

    n_pred = min(args.predict_n, args.n)
    start = time.perf_counter()
    exact = fg.ExactGP(x[:n_pred], y[:n_pred], Scale(Matern(nu=2.5, ard_dims=args.d)),
                       solver=fg.CG(eval_tol=args.eval_tol, precond=fg.Vecchia(30), variance_tol=None,
                                    local_neighbors=50))
    exact.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("train_x", "train_y")},
                          strict=False)
    del model, x, y
    with torch.no_grad():
        mean = exact.posterior(x_test).mean
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rmse = float((mean - f_test).square().mean().sqrt())
    rows.append({"phase": "exact posterior mean (BBMM)", "n": n_pred, "test": args.test, "seconds": seconds,
                 "rmse_vs_f": rmse, "diagnostics": {k: v for k, v in exact.diagnostics.items()
                                                    if isinstance(v, (int, float, str, bool))},
                 "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None})
    print(f"exact posterior mean at n={n_pred:,} for {args.test:,} test points: {seconds:.1f} s, RMSE against "
          f"f {rmse:.4f} (noise sd 0.1); diagnostics {rows[-1]['diagnostics']}", flush=True)
    if args.out:
        write_results(args.out, rows, args, device=device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
