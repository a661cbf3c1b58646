# The models the estimator and the command line can build, by name: "exact" (ExactGP), "sgpr"
# (inducing points), "ski" (structured kernel interpolation), "svgp" (variational, minibatches,
# non-Gaussian likelihoods), "basis" (BasisGP: a Hilbert-space basis of the continuous kernel),
# "itergp" (IterGP: the computation-aware posterior); for several outputs a MultitaskGP
# ("independent", "icm", "lmc"). One registry, one builder each.
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from .likelihoods import Gaussian, Poisson, StudentT
from .models import SGPR, SVGP, BasisGP, ExactGP, IterGP, MultitaskGP

METHODS = ("exact", "sgpr", "ski", "svgp", "basis", "itergp")
# how several outputs (2-D targets) are modelled: independently (shared kernel hyperparameters, B
# diagonal), by intrinsic coregionalisation, or by an LMC of LMC_TERMS terms
MULTITASK = ("independent", "icm", "lmc")
LMC_TERMS = 2
# regression likelihoods by name; all but "gaussian" need method="svgp"
LIKELIHOODS = {"gaussian": Gaussian, "student_t": StudentT, "poisson": Poisson}
DEFAULT_INDUCING = 500  # inducing points of "sgpr" and "svgp" (at most n)
OBJECTIVE_CHUNK = 8192  # points per evaluation of SVGP's bound in total_objective
DEFAULT_GRID = {1: 1000, 2: 100, 3: 30}  # SKI grid points per dimension by input dimension
# "basis": basis functions per continuous column by their number (more columns: give them), the
# box of the Hilbert-space basis (half the training range times this), and the kernel names whose
# base kernel has a spectral density (the others cannot be approximated so)
DEFAULT_BASIS = {1: 32, 2: 16, 3: 8}
BOUNDARY_FACTOR = 1.5
BASIS_KERNELS = ("rbf", "matern12", "matern32", "matern52")
ITERGP_POLICY, ITERGP_BUDGET = "cg", 100  # "itergp": the defaults of itergp_policy and itergp_budget
NO_SOLVER = ("sgpr", "svgp", "basis")  # methods whose objective needs no solves with the n x n K


def check_inducing(method: str, inducing, n_features: int):
    """Validate ``inducing`` for ``method`` (ValueError/TypeError naming it): None (the default),
    for "sgpr" a count or an array (m, n_features) of inducing inputs in data units, for "ski"
    a grid size (one per dimension or one for all), for "basis" basis functions per column (one
    for all, or one per column; ``n_features`` then counts the continuous columns). Returns it as
    an int, an int tuple or a float64 array."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if inducing is None:
        return None
    if method in ("exact", "itergp"):
        raise ValueError("inducing: only method='sgpr' or 'svgp' (inducing points), 'ski' (grid size) and 'basis' "
                         f"(basis functions per column) take it; got inducing={inducing!r:.40} with method={method!r}")
    least = {"sgpr": 1, "basis": 1}.get(method, 4)
    if isinstance(inducing, numbers.Integral) and not isinstance(inducing, bool):
        if inducing < least:
            raise ValueError(f"inducing: expected a count >= {least}, got {inducing}")
        return int(inducing)
    if isinstance(inducing, (str, bytes, bool)):
        raise TypeError(f"inducing: expected a number or an array, got {inducing!r:.40}")
    array = np.asarray(inducing, dtype=np.float64)
    if method in ("ski", "basis"):
        what = "a grid size" if method == "ski" else "basis functions per continuous column: a count"
        if array.shape != (n_features,) or np.any(array != np.round(array)) or np.any(array < least):
            raise ValueError(f"inducing: for method={method!r}, expected {what} >= {least} or one per "
                             f"{'feature' if method == 'ski' else 'continuous column'} ({n_features}), "
                             f"got {inducing!r:.60}")
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
                inducing, seed: int = 0, *, policy: str = ITERGP_POLICY, budget: int = ITERGP_BUDGET):
    """The model of ``method`` on standardized data x (n, d), y (n,): ``inducing`` as
    ``check_inducing`` returns it, an array already in the model's input units (for "basis" the
    kernel already holds its basis, see ``basis_wrapper``); ``policy`` and ``budget`` of "itergp"."""
    if method == "exact":
        return ExactGP(x, y, kernel, likelihood=likelihood, mean=mean, solver=solver)
    if method == "itergp":
        return IterGP(x, y, kernel, likelihood=likelihood, mean=mean, solver=solver, policy=policy, budget=budget)
    if method == "basis":
        if not kernel.has_features:
            raise TypeError(f"kernel: method='basis' needs a kernel with a finite feature map (has_features), got "
                            f"{kernel!r:.120}; give a kernel name ({', '.join(BASIS_KERNELS)}), or wrap an RBF or "
                            "Matern kernel in fg.kernels.HilbertSpace(kernel, num_basis=m)")
        return BasisGP(x, y, kernel, likelihood=likelihood, mean=mean)
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


def fit_arguments(model, x: torch.Tensor, y: torch.Tensor, batch_size, subsets: bool = False) -> dict:
    """The extra ``fg.fit`` arguments of ``model``: the data and batch size of a model that trains
    on minibatches (``SVGP``); with ``subsets`` (method "exact") and a batch size, that batch size
    alone: ``fg.fit`` then trains the ExactGP on random subsets of its rows
    (``flashgp.subset_training``); else none."""
    if model.trains_on_batches:
        return {"data": (x, y), "batch_size": batch_size}
    return {"batch_size": batch_size} if subsets and batch_size is not None else {}


def basis_counts(inducing, continuous: int):
    """Basis functions per continuous column of method "basis" (``inducing`` as ``check_inducing``
    returns it): the default of ``DEFAULT_BASIS`` for 1 to 3 columns; beyond, or when the product
    exceeds ``kernels.hilbert.MAX_BASIS``, a ValueError."""
    from .kernels.hilbert import MAX_BASIS
    if continuous == 0:
        if inducing is not None:
            raise ValueError("inducing: every column is categorical, so method='basis' has no continuous "
                             "column to set basis functions for; leave inducing=None")
        return None
    if inducing is None:
        if continuous not in DEFAULT_BASIS:
            raise ValueError(f"method: 'basis' with {continuous} continuous columns: the number of basis functions "
                             "grows as m^d; use method='exact' or 'sgpr', or give inducing (basis functions per "
                             f"column) whose product is at most {MAX_BASIS:,} (fg.kernels.hilbert.MAX_BASIS)")
        return DEFAULT_BASIS[continuous]
    counts = [inducing] * continuous if isinstance(inducing, int) else list(inducing)
    if math.prod(counts) > MAX_BASIS:
        raise ValueError(f"inducing: {counts} basis functions per column make {math.prod(counts):,} in all, more "
                         f"than fg.kernels.hilbert.MAX_BASIS ({MAX_BASIS:,}); the number of basis functions grows "
                         "as m^d: give fewer per column, or use method='exact' or 'sgpr'")
    return inducing


def basis_wrapper(method: str, kernel, inducing, continuous: int):
    """For method "basis" with a named ``kernel``: base -> ``HilbertSpace(base, counts)`` (the
    continuous factor of the kernel; ``Scale`` and any ``Categorical`` stay outside). None for
    other methods and for a kernel object (used as given; then ``inducing`` must be None)."""
    if method != "basis":
        return None
    if not isinstance(kernel, str):
        if inducing is not None:
            raise ValueError("inducing: a kernel object is used as given with method='basis'; set the basis "
                             "functions in its fg.kernels.HilbertSpace(..., num_basis=m) and leave inducing=None")
        return None
    counts = basis_counts(inducing, continuous)

    def wrap(base):
        from .kernels import HilbertSpace
        if kernel not in BASIS_KERNELS or not callable(getattr(base, "log_spectral_density", None)):
            raise ValueError(f"kernel: method='basis' approximates a kernel with a spectral density: one of "
                             f"{', '.join(map(repr, BASIS_KERNELS))}; got {kernel!r}")
        return HilbertSpace(base, num_basis=list(counts) if isinstance(counts, tuple) else counts,
                            boundary_factor=BOUNDARY_FACTOR)
    return wrap


@dataclass
class MethodSettings:
    """What ``method_settings`` found: ``inducing`` (as ``check_inducing`` returns it), ``wrap`` (of
    ``basis_wrapper``) and ``options``, the keyword arguments of ``build_model`` ("itergp")."""
    inducing: object = None
    wrap: object = None
    options: dict = field(default_factory=dict)


def check_itergp(method: str, policy, budget) -> dict:
    """``build_model``'s policy and budget of "itergp" from the estimator's ``itergp_policy`` and
    ``itergp_budget`` (None: the defaults), ValueError naming them; other methods take neither."""
    from .linalg.itergp import POLICIES
    if method != "itergp":
        for name, value in (("itergp_policy", policy), ("itergp_budget", budget)):
            if value is not None:
                raise ValueError(f"{name}: only method='itergp' takes it (got method={method!r}); leave it None")
        return {}
    policy = ITERGP_POLICY if policy is None else policy
    budget = ITERGP_BUDGET if budget is None else budget
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"itergp_policy: expected None or one of {POLICIES}, got {policy!r:.40}")
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, numbers.Integral) or budget < 1:
        raise ValueError(f"itergp_budget: expected None or an int >= 1 (policy actions), got {budget!r:.40}")
    return {"policy": policy, "budget": int(budget)}


def method_settings(estimator, n_features: int, categorical: int) -> MethodSettings:
    """Check the settings of ``GPRegressor(method=...)`` that depend on the method (ValueError
    naming the argument): ``inducing``, ``solver`` (none for NO_SOLVER), ``batch_size`` (svgp:
    minibatches; exact: random subsets), ``polish``, ``itergp_policy`` and ``itergp_budget``;
    ``categorical`` columns of the ``n_features``."""
    method = estimator.method
    continuous = n_features - categorical
    inducing = check_inducing(method, estimator.inducing, continuous if method == "basis" else n_features)
    if method in NO_SOLVER and not (isinstance(estimator.solver, str) and estimator.solver == "auto"):
        raise ValueError(f"solver: method={method!r} takes no solver (its objective needs no solves "
                         f"with K); leave solver='auto' (got {estimator.solver!r:.40})")
    if method not in ("svgp", "exact") and estimator.batch_size is not None:
        raise ValueError("batch_size: only method='svgp' (minibatches) and 'exact' (random subsets of rows: "
                         f"minibatch SGD of the hyperparameters) take it; got method={method!r}")
    if method == "svgp" and estimator.polish == "lbfgs":
        raise ValueError("polish: method='svgp' trains on minibatches, which L-BFGS cannot; use polish='auto' or None")
    if method == "exact" and estimator.batch_size is not None and estimator.polish == "lbfgs":
        raise ValueError("polish: batch_size trains on random subsets of the rows, and an L-BFGS polish would "
                         "evaluate all of them at every step; use polish='auto' (no polish then) or None")
    options = check_itergp(method, estimator.itergp_policy, estimator.itergp_budget)
    return MethodSettings(inducing, basis_wrapper(method, estimator.kernel, inducing, continuous), options)


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
