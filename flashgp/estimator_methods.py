# The models the estimator and the command line can build, by name: "exact" (ExactGP), "sgpr"
# (inducing points), "ski" (structured kernel interpolation), "svgp" (variational, minibatches,
# non-Gaussian likelihoods); for several outputs a MultitaskGP ("independent", "icm", "lmc").
# One registry, one builder each.
from __future__ import annotations

import numbers

import numpy as np
import torch

from .likelihoods import Gaussian, Poisson, StudentT
from .models import SGPR, SVGP, ExactGP, MultitaskGP

METHODS = ("exact", "sgpr", "ski", "svgp")
# how several outputs (2-D targets) are modelled: independently (shared kernel hyperparameters, B
# diagonal), by intrinsic coregionalisation, or by an LMC of LMC_TERMS terms
MULTITASK = ("independent", "icm", "lmc")
LMC_TERMS = 2
# regression likelihoods by name; all but "gaussian" need method="svgp"
LIKELIHOODS = {"gaussian": Gaussian, "student_t": StudentT, "poisson": Poisson}
DEFAULT_INDUCING = 500  # inducing points of "sgpr" and "svgp" (at most n)
OBJECTIVE_CHUNK = 8192  # points per evaluation of SVGP's bound in total_objective
DEFAULT_GRID = {1: 1000, 2: 100, 3: 30}  # SKI grid points per dimension by input dimension


def check_inducing(method: str, inducing, n_features: int):
    """Validate ``inducing`` for ``method`` (ValueError/TypeError naming it): None (the default),
    for "sgpr" a count or an array (m, n_features) of inducing inputs in data units, for "ski"
    a grid size (one per dimension or one for all). Returns it as an int, an int tuple or a
    float64 array."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if inducing is None:
        return None
    if method == "exact":
        raise ValueError("inducing: only method='sgpr' or 'svgp' (inducing points) and 'ski' (grid size) "
                         f"take it; got inducing={inducing!r:.40} with method='exact'")
    if isinstance(inducing, numbers.Integral) and not isinstance(inducing, bool):
        if inducing < (1 if method == "sgpr" else 4):
            raise ValueError(f"inducing: expected a count >= {1 if method == 'sgpr' else 4}, got {inducing}")
        return int(inducing)
    if isinstance(inducing, (str, bytes, bool)):
        raise TypeError(f"inducing: expected a number or an array, got {inducing!r:.40}")
    array = np.asarray(inducing, dtype=np.float64)
    if method == "ski":
        if array.shape != (n_features,) or np.any(array != np.round(array)) or np.any(array < 4):
            raise ValueError(f"inducing: for method='ski', expected a grid size >= 4 or one per feature "
                             f"({n_features}), got {inducing!r:.60}")
        return tuple(int(v) for v in array)
    if array.ndim != 2 or array.shape[1] != n_features or array.shape[0] < 1:
        raise ValueError(f"inducing: expected inducing inputs of shape (m, {n_features}), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("inducing: the inducing inputs contain NaN or infinite values")
    return array


def fitted_kernel(model):
    """The kernel whose hyperparameters the estimator and the command line report: the model's,
    or for SKI the base kernel inside its ``Interpolated`` (the grid adds no hyperparameters)."""
    from .kernels import Interpolated
    kernel = model.kernel
    return kernel.base if isinstance(kernel, Interpolated) else kernel


def build_model(method: str, x: torch.Tensor, y: torch.Tensor, kernel, likelihood, mean, solver,
                inducing, seed: int = 0):
    """The model of ``method`` on standardized data x (n, d), y (n,): ``inducing`` as
    ``check_inducing`` returns it, an array already in the model's input units."""
    if method == "exact":
        return ExactGP(x, y, kernel, likelihood=likelihood, mean=mean, solver=solver)
    if method in ("sgpr", "svgp"):
        if isinstance(inducing, np.ndarray):
            inducing = torch.as_tensor(inducing, dtype=x.dtype, device=x.device)
        if method == "sgpr":
            return SGPR(x, y, kernel, inducing=inducing, likelihood=likelihood, mean=mean, seed=seed)
        count = min(DEFAULT_INDUCING, x.shape[-2]) if inducing is None else inducing
        return SVGP(kernel, count, likelihood=likelihood, mean=mean, x=x, y=y, seed=seed)
    from .kernels import Interpolated
    d = x.shape[-1]
    if d not in DEFAULT_GRID:
        raise ValueError(f"method: 'ski' interpolates on a grid in 1 to 3 dimensions, the data have {d} "
                         "features; use method='sgpr' (inducing points) for more")
    grid = DEFAULT_GRID[d] if inducing is None else inducing
    return ExactGP(x, y, Interpolated(kernel, grid_size=grid), likelihood=likelihood, mean=mean, solver=solver)


def check_multitask(multitask, rank, method: str, num_outputs: int) -> tuple[str, int]:
    """(multitask mode, task rank) for 2-D targets of ``num_outputs`` columns (ValueError naming the
    argument): ``multitask`` None means "independent"; rank from 1 to the outputs (unused by
    "independent"); only method "exact" models several outputs."""
    mode = "independent" if multitask is None else multitask
    if not isinstance(mode, str) or mode not in MULTITASK:
        raise ValueError(f"multitask: expected None or one of {MULTITASK}, got {multitask!r:.40}")
    if method != "exact":
        raise ValueError(f"y: several outputs (y of shape (n, {num_outputs})) need method='exact' (a MultitaskGP); "
                         f"got method={method!r}")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 1 <= rank <= num_outputs:
        raise ValueError(f"task_rank: expected an int from 1 to the number of outputs ({num_outputs}), got {rank!r}")
    return mode, int(rank)


def build_multitask(mode: str, x: torch.Tensor, y: torch.Tensor, kernel, solver, rank: int) -> MultitaskGP:
    """A ``MultitaskGP`` on standardized x (n, d) and y (n, t) (NaN: unobserved) for ``mode`` (see
    MULTITASK): the kernel over the inputs carries no output scale (each task's variance is in B)."""
    import copy
    if mode == "independent":
        return MultitaskGP(x, y, kernel, rank=0, solver=solver)
    if mode == "icm":
        return MultitaskGP(x, y, kernel, rank=rank, solver=solver)
    return MultitaskGP(x, y, [kernel] + [copy.deepcopy(kernel) for _ in range(LMC_TERMS - 1)], rank=rank,
                       solver=solver)


def check_likelihood(method: str, name) -> str:
    """The regression likelihood's name (ValueError naming ``likelihood``): "gaussian" for every
    method, "student_t" (robust) and "poisson" (counts, log link) with method="svgp"."""
    if not isinstance(name, str) or name not in LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {tuple(LIKELIHOODS)}, got {name!r:.40}")
    if name != "gaussian" and method != "svgp":
        raise ValueError(f"likelihood: {name!r} is not Gaussian; it needs method='svgp' (got method={method!r})")
    return name


def fit_arguments(model, x: torch.Tensor, y: torch.Tensor, batch_size) -> dict:
    """The extra ``fg.fit`` arguments of ``model``: the data and batch size of a model that trains
    on minibatches (``SVGP``), else none."""
    return {"data": (x, y), "batch_size": batch_size} if model.trains_on_batches else {}


def total_objective(model, x: torch.Tensor, y: torch.Tensor, generator) -> float:
    """The training objective summed over the n points (the log marginal likelihood, or the
    bound of SGPR and SVGP), without gradients; SVGP's data term taken in chunks."""
    n = x.shape[-2]
    with torch.no_grad():
        if not model.trains_on_batches:  # loss per training row (a multitask model: n t of them)
            return -float(model.loss(generator=generator).sum()) * model.num_train
        # each chunk's elbo is its mean data term minus KL / n: weighted by its size, they add up
        # to the whole data term minus KL once
        step = OBJECTIVE_CHUNK
        return sum(float(model.elbo(x[i:i + step], y[i:i + step], num_data=n)) * min(step, n - i)
                   for i in range(0, n, step))
