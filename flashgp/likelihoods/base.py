# The likelihood interface every observation model implements: log p(y | f), its expectation
# under Gaussian marginals of f, the marginal likelihood and the predictive moments of y.
# Defaults use Gauss-Hermite quadrature; subclasses give closed forms where they exist.
from __future__ import annotations

from typing import NamedTuple

import torch

from ..kernels.constraints import ExactValues
from .quadrature import QUADRATURE_POINTS, check_points, normal_nodes


class PredictiveMoments(NamedTuple):
    """Mean and variance of an observation y* given Gaussian latent marginals, each ``(*batch, n)``.

    For a conjugate (Gaussian-noise) likelihood y* is Gaussian with these moments; for others
    they are its first two moments (e.g. for ``Bernoulli``, P(y* = 1) and P(1 - P)).
    Unpacks as a pair: ``mean, variance = likelihood.predictive(m, v)``.
    """

    mean: torch.Tensor
    variance: torch.Tensor

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()


class Likelihood(ExactValues):
    """Base class of observation models p(y | f), elementwise over the n points.

    Interface (shapes broadcast; ``*batch`` includes the likelihood's own ``batch_shape``):

    * ``log_prob(y, f)``: log p(y | f), y ``(*batch, n)``, f ``(*samples, *batch, n)`` ->
      ``(*samples, *batch, n)``.
    * ``expected_log_prob(y, mean, var, points=None)``: E_{f ~ N(mean, var)} log p(y | f) ->
      ``(*batch, n)``; the data term of a variational lower bound.
    * ``marginal_log_prob(y, mean, var, points=None)``: log of int p(y | f) N(f; mean, var) df
      -> ``(*batch, n)``; the test log likelihood of y under the predictive distribution.
    * ``predictive(mean, var, points=None)``: ``PredictiveMoments`` (mean, variance) of y.
    * ``conjugate``: True for Gaussian-noise likelihoods (``Gaussian``, ``FixedNoise``), which
      also give ``noise_diag(n, noise=None)`` -> ``(*batch, n)`` for exact inference; False here.
    * ``num_latents``: latent functions per point, 1 here (elementwise likelihoods); ``Softmax``
      has C and takes mean and var ``(*batch, C, n)`` instead (see its docstring).

    Defaults use Gauss-Hermite quadrature with ``points`` nodes per element (the instance's
    ``points`` attribute unless given per call; ``QUADRATURE_POINTS`` = 20 by default): a new
    likelihood implements ``_log_prob(y, f)`` and ``_conditional_moments(f)`` (E[y | f],
    Var[y | f]) and overrides ``_expected_log_prob``, ``_marginal_log_prob`` or ``_predictive``
    where a closed form exists. The public methods check their inputs (var >= 0, shapes that
    broadcast, valid targets through ``_check_targets``) and cast y to the dtype of f or mean.
    """

    conjugate: bool = False
    num_latents: int = 1
    batch_shape = torch.Size()
    _points = QUADRATURE_POINTS

    @property
    def points(self) -> int:
        """Gauss-Hermite nodes per element used by the quadrature defaults (settable)."""
        return self._points

    @points.setter
    def points(self, value) -> None:
        self._points = check_points(value)

    # ----- public interface: checks, then the hooks below -------------------------------------
    def log_prob(self, y, f) -> torch.Tensor:
        """log p(y | f) elementwise: y ``(*batch, n)``, f ``(*samples, *batch, n)`` -> broadcast shape."""
        y, f = self._check_log_prob(y, f)
        return self._log_prob(y, f)

    def expected_log_prob(self, y, mean, var, *, points: int | None = None) -> torch.Tensor:
        """E_{f ~ N(mean, var)} log p(y | f), elementwise: y, mean, var ``(*batch, n)`` -> ``(*batch, n)``."""
        y, mean, var = self._check_marginals(y, mean, var)
        return self._expected_log_prob(y, mean, var, self._points_for(points))

    def marginal_log_prob(self, y, mean, var, *, points: int | None = None) -> torch.Tensor:
        """log int p(y | f) N(f; mean, var) df, elementwise: ``(*batch, n)`` -> ``(*batch, n)``."""
        y, mean, var = self._check_marginals(y, mean, var)
        return self._marginal_log_prob(y, mean, var, self._points_for(points))

    def predictive(self, mean, var, *, points: int | None = None) -> PredictiveMoments:
        """Moments of y* given f* ~ N(mean, var) elementwise: mean, var ``(*batch, n)``."""
        mean, var = self._check_moments(mean, var)
        self._check_shapes(mean=mean, var=var)
        return self._predictive(mean, var, self._points_for(points))

    def noise_diag(self, n: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``(*batch, n)`` Gaussian noise variances: only conjugate likelihoods have them."""
        raise NotImplementedError(f"{type(self).__name__} is not a Gaussian-noise likelihood "
                                  "(conjugate is False): it has no noise diagonal")

    # ----- hooks: inputs are checked tensors of one floating dtype ---------------------------
    def _log_prob(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define log p(y | f) (_log_prob)")

    def _conditional_moments(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E[y | f] and Var[y | f], each of f's shape (broadcast with the likelihood's batch)."""
        raise NotImplementedError(f"{type(self).__name__} does not define the moments of y given f "
                                  "(_conditional_moments)")

    def _expected_log_prob(self, y, mean, var, points: int) -> torch.Tensor:
        return _quadrature_expected_log_prob(self, y, mean, var, points)

    def _marginal_log_prob(self, y, mean, var, points: int) -> torch.Tensor:
        return _quadrature_marginal_log_prob(self, y, mean, var, points)

    def _predictive(self, mean, var, points: int) -> PredictiveMoments:
        return _quadrature_predictive(self, mean, var, points)

    def _check_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Validate (and possibly convert) the targets; a subclass restricts their values."""
        return y

    # ----- input checks ---------------------------------------------------------------------
    def _points_for(self, points) -> int:
        return self.points if points is None else check_points(points)

    def _check_log_prob(self, y, f) -> tuple[torch.Tensor, torch.Tensor]:
        f = _real_tensor(f, "f")
        y = self._targets(y, f)
        self._check_shapes(y=y, f=f)
        return y, f

    def _check_marginals(self, y, mean, var) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, var = self._check_moments(mean, var)
        y = self._targets(y, mean)
        self._check_shapes(y=y, mean=mean, var=var)
        return y, mean, var

    def _check_moments(self, mean, var) -> tuple[torch.Tensor, torch.Tensor]:
        mean = _real_tensor(mean, "mean")
        var = _real_tensor(var, "var", device=mean.device)
        dtype = torch.promote_types(mean.dtype, var.dtype)
        mean, var = mean.to(dtype), var.to(dtype)
        if var.numel() and bool(torch.any(var < 0)):
            raise ValueError(f"var: expected latent variances >= 0, got min {float(var.min()):.3g}")
        return mean, var

    def _targets(self, y, like: torch.Tensor) -> torch.Tensor:
        y = _real_tensor(y, "y", device=like.device, allow_bool=True, dtype=like.dtype)
        return self._check_targets(y)

    def _check_shapes(self, **tensors: torch.Tensor) -> torch.Size:
        """The broadcast shape of ``tensors`` and ``(*batch_shape, 1)``, or a ValueError naming them."""
        shapes = [t.shape for t in tensors.values()] + [torch.Size((*self.batch_shape, 1))]
        try:
            return torch.broadcast_shapes(*shapes)
        except RuntimeError:
            given = ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())
            raise ValueError(f"{type(self).__name__}: shapes {given} do not broadcast together with "
                             f"the likelihood's batch shape {tuple(self.batch_shape)}") from None


def bad_entries(y: torch.Tensor, bad: torch.Tensor) -> str:
    """The first distinct values of y where ``bad`` holds and how many entries: "0.5, 2 (3 of 10
    entries)", for the targets' error messages."""
    values = torch.unique(y[bad])
    shown = ", ".join(f"{v:g}" for v in values[:5].tolist()) + (", ..." if len(values) > 5 else "")
    return f"{shown} ({int(bad.sum())} of {y.numel()} entries)"


def _real_tensor(value, name: str, device=None, allow_bool: bool = False,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` as a real floating tensor of ``dtype`` (None: its own floating dtype; ints, and
    bools where allowed, become the default dtype); a TypeError naming ``name`` otherwise."""
    try:
        tensor = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name}: expected a real tensor, got {type(value).__name__}") from None
    if tensor.is_complex() or (tensor.dtype == torch.bool and not allow_bool):
        raise TypeError(f"{name}: expected real values, got {tensor.dtype}")
    if dtype is not None:
        return tensor.to(dtype)
    return tensor if tensor.is_floating_point() else tensor.to(torch.get_default_dtype())


# ----- the quadrature defaults, also public: they ignore closed forms (to check them) -----------

def quadrature_expected_log_prob(likelihood: Likelihood, y, mean, var,
                                 points: int | None = None) -> torch.Tensor:
    """``likelihood.expected_log_prob`` by Gauss-Hermite quadrature even where it has a closed
    form: y, mean, var ``(*batch, n)`` -> ``(*batch, n)``."""
    _check_one_latent(likelihood, "quadrature_expected_log_prob")
    y, mean, var = likelihood._check_marginals(y, mean, var)
    return _quadrature_expected_log_prob(likelihood, y, mean, var, likelihood._points_for(points))


def quadrature_marginal_log_prob(likelihood: Likelihood, y, mean, var,
                                 points: int | None = None) -> torch.Tensor:
    """``likelihood.marginal_log_prob`` by quadrature (log-sum-exp over the nodes): ``(*batch, n)``."""
    _check_one_latent(likelihood, "quadrature_marginal_log_prob")
    y, mean, var = likelihood._check_marginals(y, mean, var)
    return _quadrature_marginal_log_prob(likelihood, y, mean, var, likelihood._points_for(points))


def quadrature_predictive(likelihood: Likelihood, mean, var, points: int | None = None) -> PredictiveMoments:
    """``likelihood.predictive`` by quadrature over ``_conditional_moments``: ``(*batch, n)`` each."""
    _check_one_latent(likelihood, "quadrature_predictive")
    mean, var = likelihood._check_moments(mean, var)
    likelihood._check_shapes(mean=mean, var=var)
    return _quadrature_predictive(likelihood, mean, var, likelihood._points_for(points))


def _check_one_latent(likelihood, what: str) -> None:
    if likelihood.num_latents != 1:
        raise TypeError(f"{what}: {type(likelihood).__name__} has {likelihood.num_latents} latent functions "
                        "per point; this Gauss-Hermite rule is for likelihoods of one (num_latents = 1)")


def _quadrature_expected_log_prob(likelihood, y, mean, var, points: int) -> torch.Tensor:
    f, p, _ = normal_nodes(mean, var, points, _ndim(likelihood, y, mean, var))
    return (p * likelihood._log_prob(y, f)).sum(0)


def _quadrature_marginal_log_prob(likelihood, y, mean, var, points: int) -> torch.Tensor:
    f, _, log_p = normal_nodes(mean, var, points, _ndim(likelihood, y, mean, var))
    return torch.logsumexp(log_p + likelihood._log_prob(y, f), dim=0)


def _quadrature_predictive(likelihood, mean, var, points: int) -> PredictiveMoments:
    # law of total variance: Var y = E Var[y | f] + Var E[y | f], the second in two passes
    f, p, _ = normal_nodes(mean, var, points, _ndim(likelihood, mean, var))
    cond_mean, cond_var = likelihood._conditional_moments(f)
    y_mean = (p * cond_mean).sum(0)
    y_var = (p * cond_var).sum(0) + (p * (cond_mean - y_mean).square()).sum(0)
    return PredictiveMoments(*torch.broadcast_tensors(y_mean, y_var))


def _ndim(likelihood, *tensors) -> int:
    """Dimensions of the broadcast of ``tensors`` and the likelihood's ``(*batch_shape, 1)``."""
    return len(torch.broadcast_shapes(*(t.shape for t in tensors), (*likelihood.batch_shape, 1)))
