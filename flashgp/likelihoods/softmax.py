# Multiclass classification: C latent functions per point, p(y = c | f) = softmax(f)_c, with
# expectations under the Gaussian marginals of f by Monte Carlo over fixed base draws.
from __future__ import annotations

import functools
import math
import numbers

import torch

from .base import Likelihood, PredictiveMoments, _real_tensor, bad_entries


class Softmax(Likelihood):
    """Softmax likelihood for labels y in {0, ..., C - 1}, C = ``num_classes``:
    p(y | f) = softmax(f)_y = exp(f_y) / sum_c exp(f_c) over the C latent values f of a point.

    Args:
        num_classes: C >= 2, the number of classes and of latent functions (``num_latents``).
        samples: Monte Carlo draws per expectation (default 64).
        seed: seed of the base draws (default 0).

    Shapes (the class dimension is -2, the points -1):

    * latent ``mean``, ``var`` ``(*batch, C, n)``: independent Gaussian marginals of the C latent
      values at each point (broadcastable, e.g. var of shape ``(*batch, 1, n)`` or a scalar);
    * labels ``y`` ``(*batch, n)``, integer class indices as ints or as floats equal to ints
      (bools and other values are refused, with errors naming y);
    * ``log_prob(y, f)``: f ``(*samples, *batch, C, n)`` -> ``(*samples, *batch, n)``;
    * ``expected_log_prob(y, mean, var)`` = E log softmax(f)_y -> ``(*batch, n)``;
    * ``marginal_log_prob(y, mean, var)`` = log E softmax(f)_y -> ``(*batch, n)``;
    * ``probabilities(mean, var)`` = E softmax(f) -> ``(*batch, C, n)``, summing to 1 over C;
    * ``predictive(mean, var)``: ``PredictiveMoments`` of the one-hot label, mean = the
      probabilities p and variance p (1 - p), each ``(*batch, C, n)``.

    The expectations use f = mean + sqrt(var) eps over ``samples`` base draws eps of shape
    ``(samples, C, 1)``: drawn once from ``seed`` (standard normal, as antithetic pairs eps,
    -eps), cached per dtype and device, and shared by every point and batch. The estimates are
    therefore deterministic and differentiable in mean and var (a fixed-sample objective for
    optimizers), and a point's estimate does not depend on which other points share its call
    (minibatches). Their error is of order (the std of the integrand) / sqrt(samples) per point;
    errors at different points are correlated. ``points`` is accepted for the common signature
    and unused. var = 0 has an infinite derivative (of sqrt), as with quadrature.
    """

    def __init__(self, num_classes: int, samples: int = 64, seed: int = 0):
        super().__init__()
        self.num_classes = _check_int(num_classes, "num_classes", 2)
        self.samples = _check_int(samples, "samples", 1)
        self.seed = _check_int(seed, "seed", 0)

    @property
    def num_latents(self) -> int:
        """The number of latent functions per point: C = ``num_classes``."""
        return self.num_classes

    # ----- public interface ----------------------------------------------------------------
    def log_prob(self, y, f) -> torch.Tensor:
        """log softmax(f)_y: y ``(*batch, n)``, f ``(*samples, *batch, C, n)`` -> ``(*samples, *batch, n)``."""
        f = _real_tensor(f, "f")
        self._check_classes(f=f)
        y = self._labels(y, f)
        self._point_shape(y, f=f)
        return _gather(torch.log_softmax(f, dim=-2), y)

    def expected_log_prob(self, y, mean, var, *, points: int | None = None) -> torch.Tensor:
        """E_{f ~ N(mean, var)} log softmax(f)_y: y ``(*batch, n)``, mean, var ``(*batch, C, n)`` ->
        ``(*batch, n)``."""
        y, mean, var = self._check_marginals(y, mean, var)
        self._points_for(points)  # checked, unused
        return self._expected_log_prob(y, mean, var, points)

    def marginal_log_prob(self, y, mean, var, *, points: int | None = None) -> torch.Tensor:
        """log E_{f ~ N(mean, var)} softmax(f)_y (log-sum-exp over the draws): ``(*batch, n)``."""
        y, mean, var = self._check_marginals(y, mean, var)
        self._points_for(points)
        log_p = _gather(torch.log_softmax(self._draws(mean, var), dim=-2), y)
        return torch.logsumexp(log_p, dim=0) - math.log(self.samples)

    def probabilities(self, mean, var) -> torch.Tensor:
        """E_{f ~ N(mean, var)} softmax(f): mean, var ``(*batch, C, n)`` -> ``(*batch, C, n)``."""
        mean, var = self._check_latents(mean, var)
        return torch.softmax(self._draws(mean, var), dim=-2).mean(0)

    def predictive(self, mean, var, *, points: int | None = None) -> PredictiveMoments:
        """Probabilities p ``(*batch, C, n)`` as the mean, p (1 - p) as the variance."""
        self._points_for(points)
        p = self.probabilities(mean, var)
        return PredictiveMoments(p, p * (1 - p))

    # ----- hooks on checked inputs (y: class indices in [0, C), any dtype) -------------------
    def _log_prob(self, y, f):
        return _gather(torch.log_softmax(f, dim=-2), y.long())

    def _expected_log_prob(self, y, mean, var, points):
        return _gather(torch.log_softmax(self._draws(mean, var), dim=-2), y.long()).mean(0)

    # ----- the draws -----------------------------------------------------------------------
    def base_draws(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """The fixed standard normal draws eps ``(samples, C, 1)`` (cached; do not modify)."""
        return _base_draws(self.samples, self.num_classes, self.seed, dtype, torch.device(device or "cpu"))

    def _draws(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """f = mean + sqrt(var) eps: ``(samples, *batch, C, n)``."""
        ndim = max(mean.dim(), var.dim())
        eps = self.base_draws(mean.dtype, mean.device)
        eps = eps.view((self.samples,) + (1,) * (ndim - 2) + (self.num_classes, 1))
        return mean + var.sqrt() * eps

    # ----- checks ---------------------------------------------------------------------------
    def _check_marginals(self, y, mean, var):
        mean, var = self._check_latents(mean, var)
        y = self._labels(y, mean)
        self._point_shape(y, mean=mean, var=var)
        return y, mean, var

    def _check_latents(self, mean, var):
        mean, var = self._check_moments(mean, var)
        self._check_classes(mean=mean, var=var)
        return mean, var

    def _check_classes(self, **tensors: torch.Tensor) -> torch.Size:
        """The broadcast of ``tensors``, which must end in ``(C, n)`` with C = num_classes."""
        given = ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())
        expected = (f"expected latent values of shape (*batch, C, n) with C = num_classes = "
                    f"{self.num_classes} at dimension -2")
        try:
            shape = torch.broadcast_shapes(*(t.shape for t in tensors.values()))
        except RuntimeError:
            raise ValueError(f"Softmax: shapes {given} do not broadcast together; {expected}") from None
        if len(shape) < 2 or shape[-2] != self.num_classes:
            raise ValueError(f"Softmax: {expected}, got {given}")
        return shape

    def _point_shape(self, y: torch.Tensor, **latents: torch.Tensor) -> torch.Size:
        """The broadcast of y ``(*batch, n)`` with the latents' shape less the class dimension."""
        shape = torch.broadcast_shapes(*(t.shape for t in latents.values()))
        try:
            return torch.broadcast_shapes(y.shape, shape[:-2] + shape[-1:])
        except RuntimeError:
            given = ", ".join(f"{name} {tuple(t.shape)}" for name, t in latents.items())
            raise ValueError(f"Softmax: labels y {tuple(y.shape)} do not broadcast with the points of "
                             f"{given} (y is (*batch, n) for latents (*batch, C, n))") from None

    def _labels(self, y, like: torch.Tensor) -> torch.Tensor:
        """y as a long tensor of class indices in [0, C), or an error naming y."""
        if isinstance(y, torch.Tensor) and y.dtype == torch.bool or isinstance(y, bool):
            raise TypeError("y: Softmax labels must be class indices 0..C-1, got booleans")
        y = _real_tensor(y, "y", device=like.device)
        bad = ~torch.isfinite(y) | (y < 0) | (y >= self.num_classes) | (y != torch.round(y))
        if bool(torch.any(bad)):
            raise ValueError(f"y: Softmax labels must be integers from 0 to {self.num_classes - 1} "
                             f"(num_classes = {self.num_classes}), got {bad_entries(y, bad)}")
        return y.long()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, samples={self.samples}, seed={self.seed}"


def _gather(log_p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log_p ``(*s, C, n)`` at the labels y ``(*batch, n)``: ``(*s', n)``, broadcast."""
    shape = torch.broadcast_shapes(log_p.shape[:-2] + log_p.shape[-1:], y.shape)
    log_p = log_p.expand(shape[:-1] + log_p.shape[-2:-1] + shape[-1:])
    index = y.expand(shape).unsqueeze(-2)
    return log_p.gather(-2, index).squeeze(-2)


@functools.lru_cache(maxsize=32)
def _base_draws(samples: int, classes: int, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    half = torch.randn((samples + 1) // 2, classes, 1, generator=generator, dtype=torch.float64)
    eps = torch.cat([half, -half])[:samples]  # antithetic pairs (even samples: odd moments exactly 0)
    return eps.to(dtype=dtype, device=device)


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)
