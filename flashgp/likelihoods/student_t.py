# Heavy-tailed regression noise: y = f + scale * t_df, robust to outliers; learned scale and,
# by default, learned degrees of freedom.
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from ..kernels.constraints import PositiveProperty, positive_value, register_positive, set_positive
from ..shapes import as_batch_shape
from .base import Likelihood, PredictiveMoments
from .gaussian import PLACEHOLDER_NOISE
from .quadrature import QUADRATURE_POINTS, check_points

PLACEHOLDER_SCALE = math.sqrt(PLACEHOLDER_NOISE)  # the scale of a StudentT() not given one
DF_FLOOR = 1e-2  # learned df = DF_FLOOR + softplus(raw_df): t densities stay proper and finite


class StudentT(Likelihood):
    """Student-t noise: p(y | f) = t_df(y; loc=f, scale), elementwise.

    Args:
        df: degrees of freedom, a finite number > 0 (default 4); with ``learn_df`` the initial
            value, which must then lie above ``DF_FLOOR`` = 0.01. Small values give heavy tails
            (robust to outliers); df -> inf tends to Gaussian noise of variance scale^2.
        scale: initial noise scale (the t's scale, not a variance), learned and kept positive
            (softplus). None (default): not given; it then starts at sqrt(0.1), like
            ``Gaussian``'s placeholder noise variance 0.1 for standardized targets.
        batch_shape: leading shape for batches of independent GPs (scale, and a learned df, are
            ``(*batch,)``).
        points: Gauss-Hermite nodes for ``expected_log_prob`` and ``marginal_log_prob`` (no
            closed forms; default 20). Quadrature is accurate while the latent std sqrt(var) is
            not far above the scale; beyond, p(y | f) has a peak at f = y narrower than the
            nodes' spacing. Measured at df = 4, y = mean, against adaptive quadrature, errors
            (nats) of expected_log_prob / marginal_log_prob with 20 nodes: 2e-7 / 1e-5 at
            sqrt(var) = scale, 3e-4 / 8e-3 at 2 scale, 0.02 / 0.23 at 4 scale, 0.15 / 1.3 at 8
            scale; with 200 nodes 4e-7 / 6e-5 at 4 scale, 4e-4 / 0.03 at 8 scale. Raise
            ``points`` (per instance or per call) where test variances are far above scale^2.
        learn_df: True (default): df is a learned parameter ``raw_df`` of shape ``(*batch,)``,
            df = 0.01 + softplus(raw_df) (no bound at 2: the noise variance is then infinite);
            ``likelihood.df`` is that tensor. False: df stays the given float.

    ``predictive(mean, var)``: mean (the location; y* has no mean for df <= 1) and variance
    var + scale^2 df / (df - 2), infinite where df <= 2. Not conjugate: exact GPs cannot use it.
    """

    def __init__(self, df: float = 4.0, scale: float | None = None, batch_shape: Sequence[int] = (),
                 points: int = QUADRATURE_POINTS, learn_df: bool = True):
        super().__init__()
        if not isinstance(learn_df, bool):
            raise TypeError(f"learn_df: expected True or False, got {learn_df!r}")
        df = _check_df(df)
        if learn_df and df <= DF_FLOOR:
            raise ValueError(f"df: expected a number > {DF_FLOOR} (the floor of a learned df), got {df!r}; "
                             "pass learn_df=False to keep a smaller df fixed")
        self._learn_df = learn_df
        self.batch_shape = as_batch_shape(batch_shape)
        register_positive(self, "scale", scale, self.batch_shape, placeholder=PLACEHOLDER_SCALE)
        if learn_df:
            register_positive(self, "df", df, self.batch_shape, lower=DF_FLOOR)
        else:
            self._df = df
        self.points = check_points(points)

    scale = PositiveProperty("Noise scale (of the t distribution, not a variance), shape (*batch,).")

    @property
    def learn_df(self) -> bool:
        """Whether df is a learned parameter (set in the constructor)."""
        return self._learn_df

    @property
    def df(self):
        """Degrees of freedom: a tensor ``(*batch,)`` when learned, else a float (settable)."""
        return positive_value(self, "df") if self._learn_df else self._df

    @df.setter
    def df(self, value) -> None:
        if self._learn_df:
            set_positive(self, "df", value)
        else:
            self._df = _check_df(value)

    def _scale_like(self, t: torch.Tensor) -> torch.Tensor:
        return self.scale.unsqueeze(-1).to(t.dtype)  # (*batch, 1), broadcasting over the points

    def _df_like(self, t: torch.Tensor):
        """df as a float (fixed) or a ``(*batch, 1)`` tensor in ``t``'s dtype (learned)."""
        return self.df.unsqueeze(-1).to(t.dtype) if self._learn_df else self._df

    def _log_prob(self, y, f):
        scale, df = self._scale_like(f), self._df_like(f)
        half = (df + 1) / 2
        if self._learn_df:
            const = torch.lgamma(half) - torch.lgamma(df / 2) - 0.5 * torch.log(df * math.pi)
        else:
            const = math.lgamma(half) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        return const - scale.log() - half * torch.log1p(((y - f) / scale).square() / df)

    def _noise_variance(self, like: torch.Tensor) -> torch.Tensor:
        """Var of the t noise, scale^2 df / (df - 2), ``(*batch, 1)``; infinite where df <= 2."""
        scale, df = self._scale_like(like), self._df_like(like)
        if not self._learn_df:
            if df <= 2:
                return torch.full_like(scale, math.inf)
            return scale.square() * (df / (df - 2))
        heavy = df <= 2
        ratio = df / torch.where(heavy, torch.ones_like(df), df - 2)  # no 0/0 in the unused branch's gradient
        variance = scale.square() * ratio
        return torch.where(heavy, torch.full_like(variance, math.inf), variance)

    def _conditional_moments(self, f):
        variance = self._noise_variance(f)
        return f.expand(torch.broadcast_shapes(f.shape, variance.shape)), variance

    def _predictive(self, mean, var, points):
        variance = var + self._noise_variance(mean)
        return PredictiveMoments(mean.expand_as(variance), variance)

    def extra_repr(self) -> str:
        df = "learned" if self._learn_df else f"{self._df:g}"
        return f"df={df}, points={self.points}"


def _check_df(df) -> float:
    if isinstance(df, bool) or not isinstance(df, numbers.Real) or not 0 < df < math.inf:
        raise ValueError(f"df: expected a finite number > 0 (degrees of freedom), got {df!r}")
    return float(df)
