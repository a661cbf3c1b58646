# IterGP: an ExactGP whose posterior is the computation-aware one of Wenger et al. (2022): the
# solve K_hat^{-1} is replaced by C_i from i policy actions, and the variance says what that costs.
"""The computation-aware GP posterior (IterGP; Wenger et al. 2022, "Posterior and computational
uncertainty in Gaussian processes").

With C_i ~ K_hat^{-1} from i actions (``flashgp.linalg.itergp``), the posterior at x* is

    mean(x*)     = m(x*) + K(x*, X) C_i (y - m(X))
    cov(x*, x*') = k(x*, x*') - K(x*, X) C_i K(X, x*')        (the combined covariance)
                 = [k - K(x*, X) K_hat^{-1} K(X, x*')]           (mathematical)
                 + [K(x*, X) (K_hat^{-1} - C_i) K(X, x*')]        (computational, PSD)

The combined variance is never below the exact posterior's: the approximation is paid for in
uncertainty. For data y - m(X) = g(X) of a function g in the RKHS of the latent-plus-noise
kernel, |mean_i(x) - mean_exact(x)| <= sqrt(computational variance(x)) ||g||, with equality
for the worst such g; ||g|| is at least the data's K_hat^{-1} norm sqrt(r^T K_hat^{-1} r), r = y - m(X),
which it equals for the smallest-norm g (``IterGPPosterior.mean_error_bound``).
"""
from __future__ import annotations

import math
import numbers
import time
import torch

from ..distributions import Downdated, FactorDowndated, Posterior
from ..kernels import Kernel
from ..likelihoods import Likelihood
from ..linalg.itergp import POLICIES, ProjectedPrecision, itergp_solve
from ..means import Mean
from ..operators import kernel_operator
from ..preconditioners.base import PreconditionerConfig
from ..serialize import ConfigError, kernel_from_config, likelihood_from_config, mean_from_config, register_model, \
    solver_from_config, solver_to_config
from .batched_inputs import posterior_per_test_set
from .direct_prediction import TestSolve
from .exact_gp import ExactGP
from .finite import check_noise_values
from .prediction import chunk_points, keeps_factor, prediction_cache


# ``IterGPPosterior.mean_error_bound`` adds ROUNDOFF * eps * k(x, x) to the computational variance
ROUNDOFF = 16


def check_policy(policy) -> str:
    """``policy`` if it is one of ``POLICIES``, else ValueError naming them."""
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"policy: expected one of {', '.join(map(repr, POLICIES))}, got {policy!r}")
    return policy


def check_budget(budget) -> dict:
    """The budget as {"iterations": int or None, "seconds": float or None}: from an int i >= 1
    (i actions) or a dict with "iterations" and/or "seconds" (> 0); ValueError otherwise."""
    expected = ('a positive int (iterations) or a dict {"seconds": s} / {"iterations": i, "seconds": s}')
    if isinstance(budget, numbers.Integral) and not isinstance(budget, bool):
        budget = {"iterations": int(budget)}
    if not isinstance(budget, dict):
        raise ValueError(f"budget: expected {expected}, got {budget!r}")
    extra = set(budget) - {"iterations", "seconds"}
    if extra or not budget or all(budget.get(k) is None for k in ("iterations", "seconds")):
        raise ValueError(f"budget: expected {expected}, got {budget!r}")
    iterations, seconds = budget.get("iterations"), budget.get("seconds")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral)
                                   or iterations < 1):
        raise ValueError(f"budget: iterations must be a positive int, got {iterations!r}")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)
                                or not math.isfinite(seconds) or seconds <= 0):
        raise ValueError(f"budget: seconds must be a positive finite number, got {seconds!r}")
    return {"iterations": None if iterations is None else int(iterations),
            "seconds": None if seconds is None else float(seconds)}


def check_precond(precond):
    """``precond`` if it is None or a preconditioner configuration, else TypeError."""
    if precond is not None and not isinstance(precond, PreconditionerConfig):
        raise TypeError(f"precond: expected None or a preconditioner configuration (fg.PivotedCholesky(rank=k), "
                        f"fg.Nystrom(...), fg.RPCholesky(...), fg.Vecchia(...)), got {type(precond).__name__}")
    return precond


class IterGPPosterior(Posterior):
    """A ``Posterior`` whose covariance is IterGP's combined one, with its split (computed on first
    use, by the model's exact solver: Cholesky for small n, else CG):

    * ``mathematical_variance`` ``(*batch, m)``: the exact posterior's variance;
    * ``computational_variance`` ``(*batch, m)``: combined minus mathematical (clamped at 0:
      round-off), what the budget left unresolved;
    * ``exact_mean`` ``(*batch, m)``: the exact posterior mean;
    * ``mean_error_bound`` ``(*batch, m)``: sqrt(computational_variance) * sqrt(r^T K_hat^{-1} r),
      r = y - m(X): a bound of |mean - exact_mean| (see ``flashgp.models.itergp``).

    ``policy``, ``iterations`` and ``itergp_seconds`` are in ``diagnostics``.
    """

    def __init__(self, mean, covariance, noise=None, diagnostics=None, exact=None, data_norm=None,
                 prior_variance=None):
        super().__init__(mean, covariance, noise, diagnostics)
        self._exact_fn, self._data_norm_fn, self._exact = exact, data_norm, None
        self._prior_variance_fn = prior_variance

    @classmethod
    def wrap(cls, post: Posterior, exact, data_norm, prior_variance) -> IterGPPosterior:
        """``post`` (a plain Posterior, before its variances were computed) as an IterGPPosterior."""
        return cls(post.mean, post.covariance, post.noise, post.diagnostics, exact, data_norm, prior_variance)

    def _exact_posterior(self) -> Posterior:
        if self._exact is None:
            with torch.no_grad():
                self._exact = self._exact_fn()
        return self._exact

    @property
    def exact_mean(self) -> torch.Tensor:
        """The exact posterior mean m(x) + K(x, X) K_hat^{-1} (y - m(X)) ``(*batch, m)``."""
        return self._exact_posterior().mean

    @property
    def mathematical_variance(self) -> torch.Tensor:
        """k(x, x) - K(x, X) K_hat^{-1} K(X, x) ``(*batch, m)``: the exact posterior's variance."""
        return self._exact_posterior().latent_variance

    @property
    def computational_variance(self) -> torch.Tensor:
        """K(x, X) (K_hat^{-1} - C_i) K(X, x) ``(*batch, m)``, as the combined latent variance minus
        the mathematical one, clamped at 0 (round-off)."""
        combined = self.latent_variance.detach()
        return (combined - self.mathematical_variance.to(combined.dtype)).clamp_min(0)

    @property
    def mean_error_bound(self) -> torch.Tensor:
        """sqrt(computational_variance + a) * ||y - m(X)||_{K_hat^{-1}} ``(*batch, m)``: |mean - exact_mean|
        is at most this (Wenger et al. 2022, Theorem 2's argument applied to the smallest-norm
        function through the data). a = ``ROUNDOFF`` eps k(x, x) allows for the round-off of the
        computational variance, a difference of two variances (where the budget has resolved a
        test point, clamping it to 0 left the bound below the mean's own round-off error)."""
        comp = self.computational_variance
        with torch.no_grad():
            allowance = ROUNDOFF * torch.finfo(comp.dtype).eps * self._prior_variance_fn().to(comp.dtype)
        return (comp + allowance.clamp_min(0)).sqrt() * self._data_norm_fn().to(comp.dtype)


class IterGPPrediction:
    """The prediction cache of an IterGP at one state: C_i (``ProjectedPrecision``) and alpha = C_i r.

    Built in float64 (the projected system and the factors; the kernel is evaluated at the
    training inputs cast to float64). ``exact()``: the exact prediction cache of the model's
    solver at the same state, made on first use."""

    direct_ok = True
    data_grad = False

    def __init__(self, model, snapshot):
        self.snapshot, self.model = snapshot, model
        self.kernel, self.mean_fn, self.train_x = model.kernel, model.mean, model.train_x
        n = model.num_train
        x64 = self.train_x.double()
        noise = model.train_noise().detach().double().expand(n)
        check_noise_values(noise)
        self.resid = (model.train_y - model.mean(self.train_x)).double()
        op = kernel_operator(self.kernel, x64)

        def matvec(v):
            return op.matmul(v.unsqueeze(-1)).squeeze(-1) + noise * v

        def column(k):
            col = self.kernel(x64, x64[k:k + 1]).squeeze(-1).double()
            col[k] = col[k] + noise[k]
            return col
        diag = self.kernel.diag(x64).double().expand(n) + noise
        budget, order = model.budget, model.order
        if order is not None and order.numel() and int(order.max()) >= n:
            raise ValueError(f"order: indices up to {int(order.max())}, but the model has {n} training "
                             "points (set_train_data changed n); set model.order = None or a new order")
        precond, self.precond_seconds = None, 0.0
        if model.policy == "cg" and model.precond is not None:
            start = time.perf_counter()
            built = model.precond.build(op, noise, None, "predict")
            self.precond_seconds = time.perf_counter() - start

            def precond(v):
                return built.solve(v.unsqueeze(-1)).squeeze(-1)
        self.state: ProjectedPrecision = itergp_solve(matvec, column, diag, self.resid, model.policy,
                                                      budget["iterations"], budget["seconds"], order,
                                                      precond=precond)
        self.alpha = self.state.solution.unsqueeze(-1)  # (n, 1) float64
        state = self.state
        self.diagnostics = {"n": n, "path": "itergp", "policy": model.policy, "iterations": state.iterations,
                            "stopped": state.stopped, "itergp_seconds": state.seconds,
                            "residual": float(state.residual.norm() / self.resid.norm().clamp_min(1e-300)),
                            "unit_actions_for_cg": state.replaced,
                            "precond": None if precond is None else model.precond.kind,
                            "precond_seconds": self.precond_seconds}
        self._exact = None
        self._data_norm = None

    @property
    def cross_inputs(self) -> torch.Tensor:
        return self.train_x

    def work_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64

    def direct_matches(self, m: int) -> bool:
        return True

    def test_solve(self, rhs: torch.Tensor, m: int, prior: torch.Tensor) -> TestSolve:
        """C_i rhs for the direct (differentiable) posterior's columns rhs ``(n, c)``."""
        return TestSolve(self.state.apply(rhs), "itergp")

    # ----- the exact part -------------------------------------------------------------
    def exact(self):
        """The model's exact prediction cache (its solver: Cholesky or CG) at this cache's state."""
        if self._exact is None:
            if not self.snapshot.matches(self.model):
                raise ValueError("posterior: the model changed after this posterior was computed; its "
                                 "mathematical and computational variances cannot be computed consistently. "
                                 "Call model.posterior(x) again")
            with torch.no_grad():
                self._exact = prediction_cache(self.model, self.model._active_solver(), self.snapshot)
        return self._exact

    def exact_posterior(self, x: torch.Tensor) -> Posterior:
        """The exact posterior at x ``(m, d)`` or test sets ``(*t, m, d)``."""
        cache, x = self.exact(), x.detach()
        return cache.posterior(x) if x.dim() == 2 else posterior_per_test_set(cache.posterior, x)

    def data_norm(self) -> torch.Tensor:
        """sqrt(r^T K_hat^{-1} r), r = y - m(X), by the exact solve (a float64 scalar)."""
        if self._data_norm is None:
            alpha = self.exact().alpha.double().reshape(-1)
            self._data_norm = (self.resid.reshape(-1) @ alpha).clamp_min(0).sqrt()
        return self._data_norm

    # ----- the posterior --------------------------------------------------------------
    def _rows(self, x: torch.Tensor, mean: bool = True):
        """(mean ``(c,)`` or None, W = K(x, X) L ``(c, i)``) at x ``(c, d)``, computed in float64."""
        cross = self.kernel(x.double(), self.train_x.double())
        out = self.mean_fn(x) + (cross @ self.alpha).squeeze(-1).to(x.dtype) if mean else None
        return out, (cross @ self.state.factor).to(x.dtype)

    def posterior(self, x: torch.Tensor) -> IterGPPosterior:
        """The combined posterior at x ``(m, d)``: mean and covariance k(x, x) - W W^T, W = K(x, X) L;
        in chunks of test points, W kept while it fits ``prediction.KEEP_FACTOR_BYTES``."""
        start = time.perf_counter()
        m, n, i = x.shape[-2], self.train_x.shape[-2], self.state.iterations
        chunk, keep = chunk_points(n), keeps_factor(m, i, 1, x.dtype)
        means, factors, variances = [], [], []
        for begin in range(0, m, chunk):
            part = x[..., begin:begin + chunk, :]
            mean, left = self._rows(part)
            means.append(mean)
            if keep:
                factors.append(left)
            else:
                variances.append(kernel_operator(self.kernel, part).diagonal() - left.square().sum(-1))
        mean = torch.cat(means, -1)
        prior = kernel_operator(self.kernel, x)
        if keep:
            left = torch.cat(factors, -2)
            covariance = Downdated(prior, left, left)
        else:
            covariance = FactorDowndated(prior, x, lambda part: self._rows(part, mean=False)[1],
                                         torch.cat(variances, -1), chunk)
        self.diagnostics["variance_method"] = "itergp"
        self.diagnostics["predict_seconds"] = time.perf_counter() - start
        return IterGPPosterior(mean, covariance, diagnostics=self.diagnostics,
                               exact=lambda: self.exact_posterior(x), data_norm=self.data_norm,
                               prior_variance=lambda: self.kernel.diag(x.detach()))


@register_model("IterGP")
class IterGP(ExactGP):
    """Gaussian-process regression with the computation-aware posterior (IterGP) of Wenger et al.
    (2022): an ``ExactGP`` (trained the same way, ``loss()`` the exact negative log marginal
    likelihood through ``solver``) whose ``posterior`` replaces K_hat^{-1} by C_i, the projection
    onto i actions of a ``policy``, and adds the resulting computational uncertainty to the
    variance. See ``flashgp.models.itergp`` and ``flashgp.linalg.itergp``.

    ``policy``, ``budget`` and ``order`` are keyword-only: the positional arguments are
    ``ExactGP``'s, in its order.

    Args:
        x: training inputs (n, d) ((n,) is read as (n, 1)); unbatched data only.
        y: training targets (n,).
        kernel: a ``flashgp.kernels.Kernel``.
        likelihood: ``Gaussian()`` (default) or ``FixedNoise(noise)``.
        mean: ``Constant()`` (default), ``Zero()`` or ``Linear(d)``.
        solver: the exact solver of training (``loss``) and of the posterior's mathematical part,
            as ``ExactGP``'s: ``fg.Auto()`` (default), ``fg.Cholesky()`` or ``fg.CG(...)``.
        policy: the actions: "cg" (conjugate-gradient residuals: i = n gives the exact
            posterior, and the mean converges fastest), "cholesky" (unit vectors at the points in
            data order, or in ``order``: the exact posterior of those i points, with the others'
            information left as computational uncertainty) or "pivoted" (unit vectors at the pivots
            of a greedy pivoted Cholesky of K_hat, the largest remaining diagonal first).
        budget: the number of actions i (an int; at most n are taken), or a dict
            ``{"seconds": s}`` (actions until s seconds have passed, at least one) or
            ``{"iterations": i, "seconds": s}`` (whichever comes first). Default 100.
        order: for policy "cholesky", the data indices to take first (distinct); the rest follow in
            data order. Kept as the buffer ``policy_order`` (saved with the model).
        precond: for policy "cg", a preconditioner configuration (``fg.PivotedCholesky(rank=k)``,
            ``fg.Nystrom``, ``fg.RPCholesky``, ``fg.Vecchia``): the actions are then P^{-1} r, the
            preconditioned CG search directions (built afresh for each posterior cache, in
            float64). None (default): plain CG. Ignored by the other policies.

    Cost of a posterior's cache: i products with K_hat for "cg" (O(n^2 i)), i kernel columns for
    the unit-vector policies (O(n d i)), plus O(n i^2); memory O(n i) (the actions, L and K_hat L,
    float64). ``posterior(x)`` returns an ``IterGPPosterior``; ``diagnostics`` gives path
    "itergp", policy, iterations, stopped ("budget", "seconds", "complete": C_n = K_hat^{-1},
    "degenerate"), itergp_seconds, residual (||y - m - K_hat C_i (y - m)|| relative to ||y - m||)
    and unit_actions_for_cg (CG actions taken as pivoted unit vectors once the residual reached
    round-off).
    """

    config_keys = ExactGP.config_keys | {"policy", "budget", "precond"}

    def __init__(self, x, y, kernel: Kernel, likelihood: Likelihood | None = None, mean: Mean | None = None,
                 solver=None, *, policy: str = "cg", budget=100, order=None, precond=None):
        policy, budget = check_policy(policy), check_budget(budget)
        check_precond(precond)
        if precond is not None and policy != "cg":
            raise ValueError(f"precond: only the 'cg' policy takes a preconditioner, the policy is {policy!r}")
        super().__init__(x, y, kernel, likelihood, mean, solver)
        if self.train_x.dim() != 2:
            raise ValueError(f"x: IterGP takes unbatched data, x of shape (n, d); got {tuple(self.train_x.shape)}")
        self.policy, self.budget, self.precond = policy, budget, precond
        self.order = order

    def _checked_order(self, order) -> torch.Tensor:
        if self.policy != "cholesky":
            raise ValueError(f"order: only the 'cholesky' policy takes an order of the points, the policy is "
                             f"{self.policy!r}")
        if isinstance(order, torch.Tensor):
            if order.is_floating_point() or order.dtype == torch.bool or order.is_complex():
                raise ValueError(f"order: expected integer indices, got a tensor of dtype {order.dtype}")
            order = order.reshape(-1)
        else:
            try:
                order = torch.as_tensor(list(order), dtype=torch.long)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"order: expected a sequence of integer indices, got {order!r:.100}") from None
        n = self.num_train
        order = order.long().to(self.device)
        if order.numel() and (int(order.min()) < 0 or int(order.max()) >= n):
            raise ValueError(f"order: expected indices in [0, {n}), got values in [{int(order.min())}, "
                             f"{int(order.max())}]")
        if order.unique().numel() != order.numel():
            raise ValueError("order: expected distinct indices (each point at most once)")
        return order

    # ----- settings ---------------------------------------------------------------
    @property
    def policy(self) -> str:
        """"cg", "cholesky" or "pivoted" (assignable; the next posterior uses it)."""
        return self._policy

    @policy.setter
    def policy(self, value) -> None:
        self._policy = check_policy(value)

    @property
    def precond(self):
        """The "cg" policy's preconditioner configuration, or None (assignable, checked)."""
        return self._precond

    @precond.setter
    def precond(self, value) -> None:
        self._precond = check_precond(value)

    @property
    def budget(self) -> dict:
        """{"iterations": i or None, "seconds": s or None} (assign an int or a dict)."""
        return dict(self._budget)

    @budget.setter
    def budget(self, value) -> None:
        self._budget = check_budget(value)

    @property
    def order(self):
        """The "cholesky" policy's order of points ``(k,)`` (long; the buffer ``policy_order``), or
        None: data order. Assignable (checked)."""
        return self._buffers.get("policy_order")

    @order.setter
    def order(self, value) -> None:
        self.register_buffer("policy_order", None if value is None else self._checked_order(value))

    # ----- files ------------------------------------------------------------------
    def config(self) -> dict:
        """ExactGP's config plus "policy" (a string), "budget" (a dict) and "precond" (None or the
        preconditioner's dict, as in a solver's config)."""
        return {**super().config(), "policy": self.policy, "budget": self.budget,
                "precond": None if self.precond is None else solver_to_config(self.precond)}

    @classmethod
    def from_config(cls, config: dict, tensors: dict) -> IterGP:
        try:
            policy, budget = check_policy(config["policy"]), check_budget(config["budget"])
        except ValueError as err:
            raise ConfigError(f"IterGP: {err}") from None
        precond = None if config["precond"] is None else solver_from_config(config["precond"])
        if precond is not None and not isinstance(precond, PreconditionerConfig):
            raise ConfigError(f"IterGP: precond: expected a preconditioner's config, got {config['precond']!r:.100}")
        return cls(tensors["train_x"], tensors["train_y"], kernel_from_config(config["kernel"]),
                   likelihood=likelihood_from_config(config["likelihood"]), mean=mean_from_config(config["mean"]),
                   solver=solver_from_config(config["solver"]), policy=policy, budget=budget,
                   order=tensors.get("policy_order"), precond=precond)

    # ----- prediction ---------------------------------------------------------------
    def _cache_key(self):
        budget = self._budget
        return ("itergp", self.policy, budget["iterations"], budget["seconds"], self.precond, self._active_solver())

    def _new_prediction(self, snapshot) -> IterGPPrediction:
        return IterGPPrediction(self, snapshot)

    def _direct_posterior(self, cache, x, differentiable):
        post = super()._direct_posterior(cache, x, differentiable)
        return IterGPPosterior.wrap(post, lambda: cache.exact_posterior(x), cache.data_norm,
                                    lambda: cache.kernel.diag(x.detach()))

    def posterior(self, x) -> IterGPPosterior:
        """The combined (computation-aware) posterior at x (m, d) or test sets ``(*t, m, d)``: an
        ``IterGPPosterior`` (see the class docstring); differentiable in x when x requires grad
        (C_i held fixed)."""
        return super().posterior(x)
