# ExactGP: a GP regression model with Gaussian noise, trained and queried through
# Cholesky (small n) or BBMM (CG, any n) inference, with cached predictions.
from __future__ import annotations

import time

import torch

from ..initial_values import init_from_data
from ..kernels import Kernel
from ..linalg import PivotCache
from ..likelihoods import Likelihood
from ..means import Mean
from ..operators import kernel_operator
from ..serialize import (kernel_from_config, kernel_to_config, likelihood_from_config, likelihood_to_config,
                         mean_from_config, mean_to_config, register_model, solver_from_config, solver_to_config)
from ..objectives import exact_mll
from ..solvers import Auto, resolve_solver
from .base import Prior
from .finite import parameters_finite
from .prediction import PredictionCache, prediction_cache
from .regression import RegressionModel
from .validation import check_test_inputs


@register_model("ExactGP")
class ExactGP(RegressionModel):
    """Exact Gaussian-process regression (a ``GPModel``: its objective is the exact log marginal
    likelihood, ``mll()``; ``loss()`` is its negation).

    Args:
        x: training inputs (n, d), or (b, n, d) for a batch of b independent GPs; (n,) is read
            as (n, 1).
        y: training targets (n,) or (b, n).
        kernel: a ``flashgp.kernels.Kernel`` (e.g. ``Scale(RBF(ard_dims=d))``).
        likelihood: ``Gaussian()`` (default) or ``FixedNoise(noise)``.
        mean: ``Constant()`` (default), ``Zero()`` or ``Linear(d)``.
        solver: ``fg.Auto()`` (default: Cholesky for small n, CG beyond), ``fg.Cholesky()`` or
            ``fg.CG(...)``.

    The model's parameters take the dtype and device of x (ints and bools become the default
    dtype, float16/bfloat16 become float32); test inputs are cast to that dtype. Values that
    the kernel, likelihood and mean were not given (constructor arguments left at None) are
    chosen from the data by ``fg.init_from_data`` (lengthscales from the inputs' spread, output
    scale and noise from var(y), the constant mean from mean(y), the Gaussian noise floor from
    the dtype); given values are kept as they are.
    ``diagnostics`` describes the last solve: path ("cholesky" or "cg"), backend,
    cg_iterations, residual, jitter, seconds; on the CG path also converged and cg_breakdowns
    (and variance_converged, variance_residual, variance_cg_iterations, variance_cg_breakdowns
    for CG variance solves); after predictions variance_method and variance_clamped. The mll on
    the CG path also gives precond_pivots: "greedy" (fresh pivoted-Cholesky pivots), "reused"
    (those of an earlier step, see ``fg.PivotedCholesky.refresh_every``) or None (no pivots);
    with ``fg.Vecchia`` "searched" (a new neighbour search) or "reused" (the last one's;
    residuals are then those of the whitened system, in the P^{-1} norm),
    and mean_residual: residual is the relative residual of the solve against y, while CG stops
    (and converged says) on the mean over y and the probe vectors, which can be below tol while
    residual is above it; precond_seconds, the preconditioner build's share of seconds;
    precond_remaining_error and precond_stop_threshold after a greedy build (else None): the
    largest diagonal entry of K - L L^T left, and the level under which the greedy run stops
    before its rank. The CG
    path gives precond_rank (0: no preconditioner), precond_block_size (0: no diagonal blocks,
    ``fg.PivotedCholesky.block_size``) and precond_block_repairs (None without blocks, else
    how many blocks needed jitter, the largest jitter, and how many kept only their diagonal;
    for ``fg.Vecchia`` those of its neighbour blocks) and precond_neighbors (``fg.Vecchia``'s
    predecessors per point, else 0) for the mll and the posterior mean solve;
    the first prediction on it also precond_seconds and mean_solve_seconds (the posterior mean
    solve) and, with Lanczos variances, root_seconds (the cached root). Seconds wait for CUDA.
    Lanczos variances also give variance_root_change: how much the second half of the root's
    vectors lowered the median variance of y*, relative to it (it warns above 10%: the
    variances are then still too large; raise ``CG(root_rank=...)``).
    """

    config_keys = frozenset({"kernel", "likelihood", "mean", "solver"})

    def __init__(self, x, y, kernel: Kernel, likelihood: Likelihood | None = None,
                 mean: Mean | None = None, solver=None):
        super().__init__(x, y, kernel, likelihood, mean)
        self.solver = Auto() if solver is None else solver
        resolve_solver(self.solver, self._checked_data[0].shape[-2])  # type check now, not at the first call
        self._take_data()
        self._init_values()

    def _init_values(self) -> None:
        """Choose the values the kernel, likelihood and mean were not given (``fg.init_from_data``)."""
        init_from_data(self)

    def _data_changed(self) -> None:
        self._precond_state = PivotCache()  # preconditioner state of the last mll steps (not saved)

    @property
    def pivot_cache(self):
        """The preconditioner state later mll steps reuse: a ``PivotCache`` (pivots, see
        ``fg.PivotedCholesky.refresh_every``), a ``VecchiaState`` (neighbour index), ... whichever
        serves the solver's preconditioner; replaced by ``set_train_data``, never saved in model
        files (fit checkpoints carry it, ``solver_state``)."""
        return self._precond_state

    def preconditioner_state(self, solver=None):
        """The preconditioner state serving ``solver`` (default: the active one), made fresh
        (and kept) when the current one serves another kind of preconditioner."""
        engine = (self._active_solver() if solver is None else solver).engine()
        self._precond_state = engine.state_for(self._precond_state)
        return self._precond_state

    @property
    def deterministic(self) -> bool:
        """True on an exact solver's path (Cholesky at the current n)."""
        return self._active_solver().engine().exact

    def _active_solver(self):
        return resolve_solver(self.solver, self.num_train)

    # ----- training -----------------------------------------------------------------
    def mll(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Log marginal likelihood divided by n, differentiable; shape ``(*batch,)``.

        ``generator`` fixes the CG probe vectors (a deterministic objective, e.g. for L-BFGS).
        """
        start = time.perf_counter()
        self._check_noise_count(self.num_train)
        engine = self._active_solver().engine()
        if engine.name == "cg" and not parameters_finite(self):  # refused before CG warns about NaN
            self._nonfinite(None)  # (the Cholesky path diagnoses only when it fails: no cost)
        try:
            value, info = exact_mll(engine, self.kernel, self.mean, self.likelihood,
                                    self.train_x, self.train_y, state=self.preconditioner_state(),
                                    generator=generator, noise=self.train_noise())
        except ValueError as err:  # NotPSDError, a preconditioner's check of its diagonal
            self._nonfinite(err)
            raise
        if not bool(torch.isfinite(value).all()):
            self._nonfinite(None)  # else the caller sees the non-finite value (fg.fit stops on it)
        self.diagnostics = {"n": self.num_train, **info.as_dict(), "seconds": time.perf_counter() - start}
        return value

    def loss(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """-mll(generator): the negative log marginal likelihood per point, ``(*batch,)``."""
        return -self.mll(generator)

    def prior(self, x) -> Prior:
        """The prior mean ``(*batch, m)`` and kernel operator ``(*batch, m, m)`` at inputs x (m, d) or
        ``(*batch, m, d)`` (the "auto" backend: a dense matrix while it fits the memory budget)."""
        x = check_test_inputs(x, self.train_x)
        return Prior(self.mean(x), kernel_operator(self.kernel, x))

    # ----- files and checkpoints ------------------------------------------------------
    def config(self) -> dict:
        """The kernel, likelihood, mean and solver as JSON-ready dicts (``flashgp.serialize``)."""
        return {"kernel": kernel_to_config(self.kernel), "likelihood": likelihood_to_config(self.likelihood),
                "mean": mean_to_config(self.mean), "solver": solver_to_config(self.solver)}

    @classmethod
    def from_config(cls, config: dict, tensors: dict) -> ExactGP:
        """An ExactGP on tensors["train_x"], tensors["train_y"] with the parts ``config`` describes."""
        return cls(tensors["train_x"], tensors["train_y"], kernel_from_config(config["kernel"]),
                   likelihood=likelihood_from_config(config["likelihood"]),
                   mean=mean_from_config(config["mean"]), solver=solver_from_config(config["solver"]))

    def solver_state(self) -> dict:
        """The preconditioner state later mll steps reuse (pivots, a neighbour index), as CPU
        tensors (``PreconditionerState.state_dict``)."""
        state = self.preconditioner_state()
        return {} if state is None else state.state_dict()

    def load_solver_state(self, state: dict) -> None:
        """Take ``solver_state()`` of a model with the same solver (unusable states are ignored)."""
        target = self.preconditioner_state()
        if target is not None:
            target.load_state_dict(state, self.train_x.dtype, self.train_x.device)

    # ----- prediction ---------------------------------------------------------------
    def _cache_key(self):
        return self._active_solver()

    def _new_prediction(self, snapshot) -> PredictionCache:
        """The prediction cache of the active solver's engine (``models.prediction``)."""
        return prediction_cache(self, self._active_solver(), snapshot)
