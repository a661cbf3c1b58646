# ExactGP: a GP regression model with Gaussian noise, trained and queried through
# Cholesky (small n) or BBMM (CG, any n) inference, with cached predictions.
from __future__ import annotations

import math
import time

import torch
from ..distributions import Posterior
from ..initial_values import init_from_data
from ..kernels import Kernel
from ..linalg import PivotCache
from ..likelihoods import FixedNoise, Gaussian, Likelihood
from ..means import Constant, Mean
from ..operators import KernelOperator
from ..serialize import (kernel_from_config, kernel_to_config, likelihood_from_config, likelihood_to_config,
                         mean_from_config, mean_to_config, register_model, solver_from_config, solver_to_config)
from ..objectives import exact_mll
from ..solvers import Auto, resolve_solver
from .base import GPModel, Prior
from .batched_inputs import posterior_per_test_set
from .finite import (FIX_PARAMETERS, NonFiniteError, check_kernel_values, diagnose, nonfinite_parameters,
                     parameters_finite)
from .prediction import PredictionCache, prediction_cache
from .state import StateSnapshot
from .validation import (check_batch_shapes, check_columns, check_test_batch, check_test_inputs,
                         check_train_data)


@register_model("ExactGP")
class ExactGP(GPModel):
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
        super().__init__()
        x, y = check_train_data(x, y)
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel: expected a flashgp.kernels.Kernel, got {type(kernel).__name__}")
        likelihood = Gaussian() if likelihood is None else likelihood
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood: expected a flashgp likelihood, got {type(likelihood).__name__}")
        if not likelihood.conjugate:
            raise TypeError(f"likelihood: ExactGP needs a Gaussian-noise (conjugate) likelihood, Gaussian() "
                            f"or FixedNoise(noise); {type(likelihood).__name__} is not conjugate (its "
                            "posterior is not Gaussian; approximate models will take it)")
        mean = Constant() if mean is None else mean
        if not isinstance(mean, Mean):
            raise TypeError(f"mean: expected a flashgp mean, got {type(mean).__name__}")
        self.solver = Auto() if solver is None else solver
        resolve_solver(self.solver, x.shape[-2])  # type check now, not at the first call
        self.kernel, self.likelihood, self.mean = kernel, likelihood, mean
        self.to(dtype=x.dtype, device=x.device)
        self.set_train_data(x, y)
        init_from_data(self)  # the values the kernel, likelihood and mean were not given

    def set_train_data(self, x, y) -> None:
        """Replace the training data: x (n, d), (*b, n, d) or (n,) (d = 1), y (n,) or (*b, n).

        New data is cast to the model's dtype (the dtype of the data it was built with) and must
        be on its device; its batch shape must broadcast with the kernel's, likelihood's and mean's.
        The model keeps its own copy of x and y (the cost: one copy of each, unless the cast
        already made one), so later edits of the caller's arrays never reach it; the kernel must
        stay finite at the inputs (k(x_i, x_i), else ``NonFiniteError`` naming the kernel and dtype).
        """
        x, y = check_train_data(x, y, like=getattr(self, "train_x", None))
        check_batch_shapes(x, {"kernel": self.kernel, "likelihood": self.likelihood, "mean": self.mean})
        check_columns(x, {"kernel": self.kernel.diag, "mean": self.mean})
        self._check_noise_count(x.shape[-2])
        check_kernel_values(self.kernel, x)
        self.register_buffer("train_x", x)
        self.register_buffer("train_y", y)
        self._prediction = None
        self._precond_state = PivotCache()  # preconditioner state of the last mll steps (not saved)

    def _check_noise_count(self, n: int) -> None:
        """A FixedNoise likelihood must hold one variance per training point (it can be reassigned)."""
        if isinstance(self.likelihood, FixedNoise) and self.likelihood.noise.shape[-1] != n:
            raise ValueError(f"noise: the FixedNoise likelihood holds {self.likelihood.noise.shape[-1]} "
                             f"variances, expected one per training point ({n})")

    def train(self, mode: bool = True):
        """Training mode (``mode=True``) also drops the prediction cache, as GPyTorch's ``train()``
        does (predictions detect parameter changes themselves; this covers what they cannot see,
        see ``models.state``). ``eval()`` keeps it."""
        if mode:
            self._prediction = None
        return super().train(mode)

    def _nonfinite(self, err: Exception | None, x: torch.Tensor | None = None) -> None:
        """Raise ``NonFiniteError`` with the diagnosed cause of a failed or non-finite solve (``err``:
        the engine's error, kept as the cause) when one is found (``finite.diagnose``)."""
        problem = diagnose(self, x)
        if problem is not None:
            raise NonFiniteError(problem) from err

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

    def _active_solver(self):
        return resolve_solver(self.solver, self.num_train)

    # ----- training -----------------------------------------------------------------
    def mll(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Log marginal likelihood divided by n, differentiable; shape (*batch,).

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
                                    generator=generator)
        except ValueError as err:  # NotPSDError, a preconditioner's check of its diagonal
            self._nonfinite(err)
            raise
        if not bool(torch.isfinite(value).all()):
            self._nonfinite(None)  # else the caller sees the non-finite value (fg.fit stops on it)
        self.diagnostics = {"n": self.num_train, **info.as_dict(), "seconds": time.perf_counter() - start}
        return value

    def loss(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """-mll(generator): the negative log marginal likelihood per point, (*batch,)."""
        return -self.mll(generator)

    def prior(self, x) -> Prior:
        """The prior mean (*batch, m) and kernel operator (*batch, m, m) at inputs x (m, d) or
        (*batch, m, d) (the "auto" backend: a dense matrix while it fits the memory budget)."""
        x = check_test_inputs(x, self.train_x)
        return Prior(self.mean(x), KernelOperator(self.kernel, x))

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
    def _prediction_cache(self) -> PredictionCache:
        """The prediction cache at the current state, rebuilt when anything it was computed from
        changed (``models.state.StateSnapshot``) or another solver is active."""
        solver, cache = self._active_solver(), self._prediction
        if cache is None or cache.solver != solver or not cache.snapshot.matches(self):
            self._prediction = None
            self._check_noise_count(self.num_train)
            params = nonfinite_parameters(self)  # once per state: refused before any solve warns
            if params:
                raise NonFiniteError(f"non-finite parameters: {'; '.join(params)}. {FIX_PARAMETERS}")
            snapshot = StateSnapshot(self)
            try:
                cache = prediction_cache(self, solver, snapshot)
            except ValueError as err:  # NotPSDError, invalid noise, a preconditioner's checks
                self._nonfinite(err)
                raise
            self._prediction = cache
        return cache

    def _stale_guard(self, snapshot: StateSnapshot):
        """The guard of a posterior's lazy covariance: it raises once the model has left ``snapshot``."""
        def guard():
            if not snapshot.matches(self):
                raise ValueError("covariance: the model changed after this posterior was computed (its "
                                 "parameters, parts or training data were edited); its mean and variance "
                                 "are those of the earlier state, and the covariance cannot be evaluated "
                                 "consistently. Call model.posterior(x) again")
        return guard

    def _check_posterior(self, post: Posterior, x: torch.Tensor) -> None:
        """NonFiniteError (the cause diagnosed, else the numbers) unless the mean and the variances
        are finite; computes the variances (they are cached in ``post``)."""
        try:
            _ = post.variance  # computed and cached; Posterior refuses NaN or infinite variances
        except ValueError as err:
            self._nonfinite(err, x)
            raise NonFiniteError(f"posterior: {err} (at finite parameters and kernel values; diagnostics: "
                                 f"{self.diagnostics}); try float64 data or the Cholesky solver") from err
        # the sum is finite when every entry is (one reduction; an overflowing sum checks them all)
        if not math.isfinite(float(post.mean.sum())) and not bool(torch.isfinite(post.mean).all()):
            self._nonfinite(None, x)
            raise NonFiniteError(f"posterior: the mean is not finite at {int((~torch.isfinite(post.mean)).sum())} "
                                 f"of {post.mean.numel()} test points, at finite parameters and kernel values "
                                 f"(diagnostics: {self.diagnostics}); try float64 data or the Cholesky solver")

    def posterior(self, x) -> Posterior:
        """The latent posterior p(f(x*) | data) at test inputs x (m, d) or (b, m, d) (batch models:
        batch dimensions that broadcast with the model's).

        A model without batch dimensions also takes x (*b, m, d): b separate test sets, each
        predicted as on its own (mean (*b, m), covariance (*b, m, m), none between the sets).
        Returns a ``Posterior`` (mean, variance, covariance operator, sample, confidence_region).
        Predictions are not differentiable.

        What a posterior promises:

        * current: the cached solves are reused only while the model is unchanged (any change
          of a parameter, part or the training data is seen, ``models.state``); the mean and
          variances are computed now, and the lazy covariance raises ValueError if the model
          changes before it is used (call ``posterior`` again);
        * finite and non-negative: variances below 0 from round-off are clamped (counted in
          diagnostics["variance_clamped"]); a NaN or infinite mean or variance raises
          ``NonFiniteError`` naming the cause (a non-finite parameter, invalid FixedNoise
          variances, a kernel overflowing the dtype at the test or training inputs);
        * bounded memory: on the Cholesky path test points are taken ``PREDICT_CHUNK_BYTES`` at a
          time, and a low-rank factor beyond ``KEEP_FACTOR_BYTES`` (Cholesky's m x n, LOVE's
          m x root_rank) is recomputed in chunks when the covariance is used
          (``models.prediction``); dense covariances and samples are size-checked first.
        """
        x = check_test_inputs(x, self.train_x)
        start = time.perf_counter()
        with torch.no_grad():
            cache = self._prediction_cache()
            if x.dim() > 2 and cache.alpha.dim() == 2:  # test sets for a model without batches
                post = posterior_per_test_set(cache.posterior, x)
            else:
                check_test_batch(x, cache.alpha.shape[:-2])
                post = cache.posterior(x)
            self.diagnostics = {**cache.diagnostics}
            post.diagnostics = self.diagnostics
            self._check_posterior(post, x)
        post.covariance.guard = self._stale_guard(cache.snapshot)
        self.diagnostics["seconds"] = time.perf_counter() - start
        return post

