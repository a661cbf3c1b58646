# Counts with a log link: y | f ~ Poisson(exp(f)), y in {0, 1, 2, ...}.
from __future__ import annotations

import torch

from .base import Likelihood, PredictiveMoments, bad_entries
from .quadrature import QUADRATURE_POINTS, check_points


class Poisson(Likelihood):
    """Poisson likelihood with a log link: p(y | f) = rate^y exp(-rate) / y!, rate = exp(f).

    Args:
        points: Gauss-Hermite nodes for ``marginal_log_prob`` (the only method without a closed
            form; default ``QUADRATURE_POINTS`` = 20).

    Shapes as in ``Likelihood``: y ``(*batch, n)`` of counts (non-negative integers, as floats or
    ints; anything else is refused with a ValueError naming y), f ``(*samples, *batch, n)``, mean
    and var ``(*batch, n)``. Closed forms, with m = mean and v = var:

    * ``expected_log_prob`` = y m - exp(m + v / 2) - lgamma(y + 1)
    * ``predictive``: mean exp(m + v / 2) (the log-normal mean of the rate), variance
      mean + (exp(v) - 1) exp(2 m + v) (Poisson noise plus the variance of the rate).

    ``marginal_log_prob`` = log E p(y | f) by quadrature: accurate while the latent std sqrt(v)
    is moderate (the integrand's peak is narrow in f for large counts); raise ``points``
    otherwise. Not conjugate: exact GPs cannot use it.
    """

    def __init__(self, points: int = QUADRATURE_POINTS):
        super().__init__()
        self.points = check_points(points)

    def _log_prob(self, y, f):
        return y * f - f.exp() - torch.lgamma(y + 1)

    def _conditional_moments(self, f):
        rate = f.exp()
        return rate, rate

    def _expected_log_prob(self, y, mean, var, points):
        return y * mean - (mean + var / 2).exp() - torch.lgamma(y + 1)

    def _predictive(self, mean, var, points):
        rate = (mean + var / 2).exp()
        variance = rate + torch.expm1(var) * rate.square()  # rate^2 = exp(2m + v)
        return PredictiveMoments(*torch.broadcast_tensors(rate, variance))

    def _check_targets(self, y: torch.Tensor) -> torch.Tensor:
        bad = ~torch.isfinite(y) | (y < 0) | (y != torch.round(y))
        if bool(torch.any(bad)):
            raise ValueError(f"y: Poisson counts must be non-negative integers, got {bad_entries(y, bad)}")
        return y

    def extra_repr(self) -> str:
        return f"points={self.points}"
