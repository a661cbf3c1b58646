# Example: Bayesian optimization with BoTorch on flashgp's exact GP (flashgp.botorch.FlashGPModel)
# against BoTorch's SingleTaskGP, from the same Sobol design and seeds, with qLogExpectedImprovement.
"""Bayesian optimization of Branin (2-d) and Hartmann-6 with flashgp and with SingleTaskGP.

    python examples/bayesian_optimization.py                    # both problems, a short run
    python examples/bayesian_optimization.py --problem branin   # one problem
    python examples/bayesian_optimization.py --full             # 20 initial points, 30 iterations

Needs BoTorch (``pip install flashgp[botorch]``). Each run starts from the same scrambled Sobol
design for both models; every iteration builds each model afresh on all the data so far (inputs
normalized to the unit cube by ``Normalize``, outcomes standardized), fits it (flashgp:
``fg.fit`` with L-BFGS on the MAP objective; SingleTaskGP: ``fit_gpytorch_mll``), maximizes
qLogExpectedImprovement with ``optimize_acqf`` and evaluates the function at the candidate. It
prints the best value found after each iteration, the final simple regret and the seconds spent
fitting and optimizing the acquisition function. benchmarks/bo_compare.py repeats this over
many seeds.
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

import flashgp as fg

try:
    from botorch.acquisition import qLogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Normalize
    from botorch.optim import optimize_acqf
    from botorch.test_functions import Branin, Hartmann
    from botorch.utils.sampling import draw_sobol_samples
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from flashgp.botorch import FlashGPModel
except ImportError:
    Branin = None

# the minimum of each problem (the functions are maximized negated)
OPTIMA = {"branin": 0.397887, "hartmann6": -3.32237}
MODELS = ("flashgp", "SingleTaskGP")


def problem(name: str):
    """The BoTorch test function (negated: BO maximizes) and its bounds (2, d) in float64."""
    function = Branin(negate=True) if name == "branin" else Hartmann(dim=6, negate=True)
    return function, function.bounds.to(torch.float64)


def fitted_model(kind: str, X: torch.Tensor, Y: torch.Tensor, bounds: torch.Tensor, lbfgs_steps: int):
    """A model of ``kind`` built afresh on (X, Y), fitted, with fitting seconds."""
    start = time.perf_counter()
    transform = Normalize(d=X.shape[-1], bounds=bounds)
    if kind == "flashgp":
        model = FlashGPModel(X, Y, input_transform=transform)
        with warnings.catch_warnings():  # noise at its floor on these noise-free functions
            warnings.simplefilter("ignore", fg.NumericalWarning)
            fg.fit(model, optimizer="lbfgs", lr=1.0, iters=lbfgs_steps, progress=False)
    else:
        model = SingleTaskGP(X, Y, input_transform=transform)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model, time.perf_counter() - start


def next_point(model, Y: torch.Tensor, bounds: torch.Tensor, num_restarts: int, raw_samples: int, seed: int):
    """The maximizer of qLogEI (q = 1) over the bounds, and the seconds optimize_acqf took."""
    torch.manual_seed(seed)  # the same raw samples for both models
    acqf = qLogExpectedImprovement(model, best_f=Y.max())
    start = time.perf_counter()
    candidate, _ = optimize_acqf(acqf, bounds=bounds, q=1, num_restarts=num_restarts, raw_samples=raw_samples)
    return candidate.detach(), time.perf_counter() - start


def run(name: str, kind: str, init: int, iters: int, seed: int, num_restarts: int, raw_samples: int,
        lbfgs_steps: int = 5) -> dict:
    """One BO run; returns per-iteration lists: best (the best function value so far, in the
    problem's minimization form), regret (best - optimum), fit_s, acq_s."""
    function, bounds = problem(name)
    X = draw_sobol_samples(bounds=bounds, n=init, q=1, seed=seed).squeeze(-2)
    Y = function(X).unsqueeze(-1)
    record = {"best": [], "regret": [], "fit_s": [], "acq_s": []}
    for it in range(iters):
        model, fit_s = fitted_model(kind, X, Y, bounds, lbfgs_steps)
        x, acq_s = next_point(model, Y, bounds, num_restarts, raw_samples, seed=1000 * seed + it)
        X, Y = torch.cat([X, x]), torch.cat([Y, function(x).unsqueeze(-1)])
        best = -float(Y.max())
        record["best"].append(best)
        record["regret"].append(best - OPTIMA[name])
        record["fit_s"].append(fit_s)
        record["acq_s"].append(acq_s)
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=["branin", "hartmann6", "all"], default="all")
    parser.add_argument("--init", type=int, default=None, help="initial Sobol points (default: 2d + 2, --full 20)")
    parser.add_argument("--iters", type=int, default=None, help="BO iterations (default 4, --full 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-restarts", type=int, default=None, help="optimize_acqf restarts (default 4, --full 10)")
    parser.add_argument("--raw-samples", type=int, default=None, help="raw samples (default 128, --full 512)")
    parser.add_argument("--full", action="store_true",
                        help="20 initial points, 30 iterations, 10 restarts, 512 raw samples")
    args = parser.parse_args(argv)
    if Branin is None:
        print("BoTorch is not installed (pip install flashgp[botorch]); skipping")
        return
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    names = ["branin", "hartmann6"] if args.problem == "all" else [args.problem]
    iters = args.iters if args.iters is not None else (30 if args.full else 4)
    restarts = args.num_restarts if args.num_restarts is not None else (10 if args.full else 4)
    raw = args.raw_samples if args.raw_samples is not None else (512 if args.full else 128)
    for name in names:
        d = problem(name)[1].shape[-1]
        init = args.init if args.init is not None else (20 if args.full else 2 * d + 2)
        print(f"{name} (d={d}, minimum {OPTIMA[name]}): {init} Sobol points, {iters} iterations of qLogEI, "
              f"seed {args.seed}")
        records = {kind: run(name, kind, init, iters, args.seed, restarts, raw) for kind in MODELS}
        print(f"  {'iteration':>9}" + "".join(f"{kind + ' best':>20}" for kind in MODELS))
        for it in range(iters):
            print(f"  {it + 1:>9}" + "".join(f"{records[kind]['best'][it]:>20.5f}" for kind in MODELS))
        for kind in MODELS:
            r = records[kind]
            print(f"  {kind}: simple regret {r['regret'][-1]:.4g}; fit {sum(r['fit_s']) / iters:.3f} s and "
                  f"optimize_acqf {sum(r['acq_s']) / iters:.3f} s per iteration")


if __name__ == "__main__":
    main()
