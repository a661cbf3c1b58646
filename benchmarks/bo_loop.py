# The measurements of bo_compare.py: one Bayesian-optimization run of a model on a test problem
# (fit seconds, acquisition seconds and the best value per iteration), and one BO iteration at a
# large number of observations. flashgp's FlashGPModel and BoTorch's SingleTaskGP are built and
# fitted the same way here, each from scratch at every iteration.
"""BO runs for ``bo_compare.py`` (imported by it; needs BoTorch).

``run(problem, kind, ...)``: a Sobol design of ``init`` points (``draw_sobol_samples``, the
run's seed), then ``iters`` iterations of: build the model of ``kind`` on all data so far
(``Normalize`` with the problem's bounds, ``Standardize``), fit it (``fit_model``), maximize
qLogExpectedImprovement (q = 1) by ``optimize_acqf`` and evaluate the (noise-free) function at
the candidate. The torch seed is set before each ``optimize_acqf`` from the run's seed and the
iteration, so both models draw the same raw samples and MC base samples.

``large(n, ...)``: n observations of Hartmann-6 at uniform random points (plus N(0, 0.05^2)
noise); per model, ``steps`` Adam steps (lr 0.1) of its own fit, then one ``optimize_acqf``.
"""
from __future__ import annotations

import time
import warnings
from functools import partial

import torch

import flashgp as fg
from botorch.acquisition import qLogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize
from botorch.optim import optimize_acqf
from botorch.optim.fit import fit_gpytorch_mll_torch
from botorch.test_functions import Branin, Hartmann
from botorch.utils.sampling import draw_sobol_samples
from flashgp.botorch import FlashGPModel
from gpytorch.mlls import ExactMarginalLogLikelihood

MODELS = ("flashgp", "SingleTaskGP")
OPTIMA = {"hartmann6": -3.32237, "branin": 0.397887}  # the minima (BO maximizes the negated functions)
LARGE_NOISE = 0.05  # standard deviation of the noise added to the large-n observations


def problem(name: str, device, dtype):
    """The negated BoTorch test function and its bounds (2, d)."""
    function = Hartmann(dim=6, negate=True) if name == "hartmann6" else Branin(negate=True)
    function = function.to(device=device, dtype=dtype)
    return function, function.bounds.to(device=device, dtype=dtype)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def fit_model(kind: str, X, Y, bounds, settings: dict):
    """A model of ``kind`` built from scratch on (X, Y) and fitted: flashgp by ``fg.fit`` with
    ``settings["optimizer"]`` ("lbfgs": ``settings["lbfgs_steps"]`` L-BFGS steps of up to 20
    iterations, lr 1; "adam": ``settings["adam_steps"]`` steps at lr 0.1), SingleTaskGP by
    ``fit_gpytorch_mll`` (scipy L-BFGS-B to convergence, BoTorch's defaults)."""
    transform = Normalize(d=X.shape[-1], bounds=bounds)
    if kind == "flashgp":
        model = FlashGPModel(X, Y, input_transform=transform)
        lbfgs = settings["optimizer"] == "lbfgs"
        with warnings.catch_warnings():  # the noise ends on its floor on noise-free functions
            warnings.simplefilter("ignore", fg.NumericalWarning)
            fg.fit(model, optimizer=settings["optimizer"], lr=1.0 if lbfgs else 0.1,
                   iters=settings["lbfgs_steps"] if lbfgs else settings["adam_steps"], progress=False)
        return model
    model = SingleTaskGP(X, Y, input_transform=transform)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def acquire(model, Y, bounds, num_restarts: int, raw_samples: int, seed: int):
    """(candidate (1, d), failures) of optimize_acqf on qLogEI at q = 1; failures: how many
    times its scipy optimization failed and BoTorch retried from new initial conditions (its
    RuntimeWarning "Optimization failed in gen_candidates_scipy")."""
    torch.manual_seed(seed)
    acqf = qLogExpectedImprovement(model, best_f=Y.max())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        candidate, _ = optimize_acqf(acqf, bounds=bounds, q=1, num_restarts=num_restarts, raw_samples=raw_samples)
    failures = sum("Optimization failed" in str(w.message) for w in caught)
    return candidate.detach(), failures


def timed(fn, device):
    """(fn(), seconds) with the device synchronized before the clock is read."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def run(name: str, kind: str, seed: int, init: int, iters: int, settings: dict, device, dtype) -> list[dict]:
    """One BO run; a row per iteration: problem, model, seed, iteration (1-based), n (points
    the model was fitted on), best (the best value so far, minimization form), regret (best -
    optimum), fit_seconds, acq_seconds, acq_failures (``acquire``)."""
    function, bounds = problem(name, device, dtype)
    X = draw_sobol_samples(bounds=bounds, n=init, q=1, seed=seed).squeeze(-2)
    Y = function(X).unsqueeze(-1)
    rows = []
    for it in range(iters):
        model, fit_s = timed(lambda: fit_model(kind, X, Y, bounds, settings), device)
        (x, failures), acq_s = timed(lambda: acquire(model, Y, bounds, settings["num_restarts"],
                                                     settings["raw_samples"], seed=10_000 * seed + it), device)
        n = X.shape[0]
        X, Y = torch.cat([X, x]), torch.cat([Y, function(x).unsqueeze(-1)])
        best = -float(Y.max())
        rows.append({"problem": name, "model": kind, "seed": seed, "iteration": it + 1, "n": n, "best": best,
                     "regret": best - OPTIMA[name], "fit_seconds": fit_s, "acq_seconds": acq_s,
                     "acq_failures": failures})
    return rows


def warm_up(settings: dict, device, dtype) -> None:
    """One small fit and acquisition of each model (first-call costs: torch.optim imports
    torch._dynamo on first use, about a second), not timed."""
    function, bounds = problem("branin", device, dtype)
    X = draw_sobol_samples(bounds=bounds, n=6, q=1, seed=0).squeeze(-2)
    Y = function(X).unsqueeze(-1)
    small = {**settings, "num_restarts": 2, "raw_samples": 16}
    for kind in MODELS:
        acquire(fit_model(kind, X, Y, bounds, small), Y, bounds, 2, 16, seed=0)


def large(n: int, steps: int, settings: dict, device, dtype, seed: int = 0) -> list[dict]:
    """One BO iteration per model at n noisy Hartmann-6 observations: ``steps`` Adam steps
    (lr 0.1; flashgp: ``fg.fit``; SingleTaskGP: ``fit_gpytorch_mll_torch`` without early
    stopping), then optimize_acqf. Rows: model, n, steps, fit_seconds, acq_seconds, and the
    acquisition's candidate value."""
    function, bounds = problem("hartmann6", device, dtype)
    g = torch.Generator(device="cpu").manual_seed(seed)
    X = torch.rand(n, 6, generator=g, dtype=dtype).to(device)
    Y = (function(X) + LARGE_NOISE * torch.randn(n, generator=g, dtype=dtype).to(device)).unsqueeze(-1)
    rows = []
    for kind in MODELS:
        def fit():
            transform = Normalize(d=6, bounds=bounds)
            if kind == "flashgp":
                model = FlashGPModel(X, Y, input_transform=transform)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", fg.NumericalWarning)
                    fg.fit(model, optimizer="adam", lr=0.1, iters=steps, progress=False)
                return model
            model = SingleTaskGP(X, Y, input_transform=transform)
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            mll.train()
            fit_gpytorch_mll_torch(mll, step_limit=steps, stopping_criterion=None,
                                   optimizer=partial(torch.optim.Adam, lr=0.1))
            mll.eval()
            return model
        model, fit_s = timed(fit, device)
        (x, failures), acq_s = timed(lambda: acquire(model, Y, bounds, settings["num_restarts"],
                                                     settings["raw_samples"], seed=seed), device)
        rows.append({"model": kind, "n": n, "steps": steps, "fit_seconds": fit_s, "acq_seconds": acq_s,
                     "acq_failures": failures, "candidate_value": -float(function(x))})
    return rows
