# Binary classification, labels y in {0, 1}: p(y = 1 | f) = Phi(f) (probit link) or sigmoid(f) (logit).
from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import Likelihood, PredictiveMoments, _quadrature_predictive, bad_entries
from .quadrature import QUADRATURE_POINTS, check_points

LINKS = ("probit", "logit")


class Bernoulli(Likelihood):
    """Bernoulli likelihood for labels y in {0, 1}: p(y | f) = Phi((2y - 1) f) (probit link, the
    default) or sigmoid((2y - 1) f) (logit link).

    Args:
        link: "probit" (default) or "logit".
        points: Gauss-Hermite nodes for what has no closed form (default ``QUADRATURE_POINTS``
            = 20): ``expected_log_prob`` for both links; for the logit link also
            ``marginal_log_prob``, ``predictive`` and ``probability``.

    Shapes as in ``Likelihood``: y ``(*batch, n)`` of 0/1 values (floats, ints or bools; anything
    else is refused, e.g. labels -1/+1 must be mapped with (y + 1) / 2), f ``(*samples, *batch, n)``,
    mean and var ``(*batch, n)``.

    * probit: log p(y | f) = log Phi((2y - 1) f); closed forms ``marginal_log_prob`` = log
      Phi((2y - 1) m / sqrt(1 + v)) and P(y* = 1) = Phi(m / sqrt(1 + v)).
    * logit: log p(y | f) = -softplus(-(2y - 1) f); P(y* = 1) = E sigmoid(f*) and the marginal
      log E p(y | f) by quadrature.

    ``predictive`` gives P(y* = 1) as the mean and P (1 - P) as the variance (also
    ``probability(mean, var)``). Not conjugate: exact GPs cannot use it.
    """

    num_classes = 2  # labels 0 and 1 (``SVGP.predict_proba`` gives both columns)

    def __init__(self, link: str = "probit", points: int = QUADRATURE_POINTS):
        super().__init__()
        if not isinstance(link, str) or link not in LINKS:
            hint = "; pass the nodes by name, Bernoulli(points=...)" if isinstance(link, int) else ""
            raise ValueError(f"link: expected 'probit' or 'logit', got {link!r}{hint}")
        self.link = link
        self.points = check_points(points)

    def probability(self, mean, var, *, points: int | None = None) -> torch.Tensor:
        """P(y* = 1) for f* ~ N(mean, var): Phi(mean / sqrt(1 + var)) (probit) or E sigmoid(f*)
        by quadrature (logit): ``(*batch, n)``."""
        mean, var = self._check_moments(mean, var)
        self._check_shapes(mean=mean, var=var)
        return self._probability(mean, var, self._points_for(points))

    def _probability(self, mean, var, points: int) -> torch.Tensor:
        if self.link == "probit":
            return torch.special.ndtr(mean / (1 + var).sqrt())
        return _quadrature_predictive(self, mean, var, points).mean

    def _log_prob(self, y, f):
        if self.link == "probit":
            return torch.special.log_ndtr((2 * y - 1) * f)  # log Phi, accurate far in the lower tail
        return F.logsigmoid((2 * y - 1) * f)  # = -softplus(-(2y - 1) f), accurate in both tails

    def _conditional_moments(self, f):
        p = torch.special.ndtr(f) if self.link == "probit" else torch.sigmoid(f)
        return p, p * (1 - p)

    def _marginal_log_prob(self, y, mean, var, points):
        if self.link == "probit":
            return torch.special.log_ndtr((2 * y - 1) * mean / (1 + var).sqrt())
        return super()._marginal_log_prob(y, mean, var, points)

    def _predictive(self, mean, var, points):
        p = self._probability(mean, var, points)
        return PredictiveMoments(p, p * (1 - p))

    def _check_targets(self, y: torch.Tensor) -> torch.Tensor:
        bad = (y != 0) & (y != 1)
        if bool(torch.any(bad)):
            raise ValueError(f"y: Bernoulli labels must be 0 or 1, got {bad_entries(y, bad)}; map labels -1/+1 "
                             "with (y + 1) / 2")
        return y

    def extra_repr(self) -> str:
        return f"link={self.link!r}, points={self.points}"
