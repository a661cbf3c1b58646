# Binary classification with a probit link: p(y = 1 | f) = Phi(f), labels y in {0, 1}.
from __future__ import annotations

import torch

from .base import Likelihood, PredictiveMoments
from .quadrature import QUADRATURE_POINTS, check_points


class Bernoulli(Likelihood):
    """Probit Bernoulli likelihood: p(y | f) = Phi((2y - 1) f) for labels y in {0, 1}.

    Args:
        points: Gauss-Hermite nodes for ``expected_log_prob`` (which has no closed form;
            default ``QUADRATURE_POINTS`` = 20).

    Shapes as in ``Likelihood``: y ``(*batch, n)`` of 0/1 values (floats, ints or bools; anything
    else is refused, e.g. labels -1/+1 must be mapped with (y + 1) / 2), f ``(*samples, *batch, n)``,
    mean and var ``(*batch, n)``. Closed forms: ``marginal_log_prob`` = log Phi((2y - 1) m /
    sqrt(1 + v)) and ``predictive``: P(y* = 1) = Phi(m / sqrt(1 + v)) as the mean, P (1 - P) as
    the variance (also ``probability(mean, var)``). Not conjugate: exact GPs cannot use it.
    """

    def __init__(self, points: int = QUADRATURE_POINTS):
        super().__init__()
        self.points = check_points(points)

    def probability(self, mean, var) -> torch.Tensor:
        """P(y* = 1) = Phi(mean / sqrt(1 + var)) for f* ~ N(mean, var): ``(*batch, n)``."""
        mean, var = self._check_moments(mean, var)
        self._check_shapes(mean=mean, var=var)
        return torch.special.ndtr(mean / (1 + var).sqrt())

    def _log_prob(self, y, f):
        return torch.special.log_ndtr((2 * y - 1) * f)  # log Phi, accurate far in the lower tail

    def _conditional_moments(self, f):
        p = torch.special.ndtr(f)
        return p, p * (1 - p)

    def _marginal_log_prob(self, y, mean, var, points):
        return torch.special.log_ndtr((2 * y - 1) * mean / (1 + var).sqrt())

    def _predictive(self, mean, var, points):
        p = torch.special.ndtr(mean / (1 + var).sqrt())
        return PredictiveMoments(p, p * (1 - p))

    def _check_targets(self, y: torch.Tensor) -> torch.Tensor:
        bad = (y != 0) & (y != 1)
        if bool(torch.any(bad)):
            values = torch.unique(y[bad])
            shown = ", ".join(f"{v:g}" for v in values[:5].tolist()) + (", ..." if len(values) > 5 else "")
            raise ValueError(f"y: Bernoulli labels must be 0 or 1, got {shown} ({int(bad.sum())} of "
                             f"{y.numel()} entries); map labels -1/+1 with (y + 1) / 2")
        return y

    def extra_repr(self) -> str:
        return f"points={self.points}"
