# Dot-product kernels: Linear k = v x.x' and Polynomial k = (x.x' + c)^p.
# Both are functions of the inner product, evaluated as a matrix or along the diagonal.
import numbers
from typing import Sequence

import torch

from .base import Kernel
from .constraints import PositiveProperty, register_positive


def inner_product(x1: torch.Tensor, x2: torch.Tensor, diag: bool) -> torch.Tensor:
    """x1 . x2 for all pairs ``(*b, n1, n2)``, or row by row ``(*b, n)`` with diag=True."""
    return (x1 * x2).sum(-1) if diag else x1 @ x2.transpose(-1, -2)


def _expand(param: torch.Tensor, diag: bool) -> torch.Tensor:
    """param ``(*batch,)`` -> ``(*batch, 1)`` for diagonals or ``(*batch, 1, 1)`` for matrices, so it
    broadcasts from the right against kernel values with any (or no) leading batch dims."""
    return param.reshape(*param.shape, *([1] * (1 if diag else 2)))


class Linear(Kernel):
    """k(x, x') = variance * x . x' (Bayesian linear regression with prior weight variance)."""

    def __init__(self, variance: float = 1.0, active_dims: Sequence[int] | None = None,
                 batch_shape: Sequence[int] = ()):
        super().__init__(active_dims=active_dims, batch_shape=batch_shape)
        register_positive(self, "variance", variance, self.batch_shape)

    variance = PositiveProperty("Prior weight variance, shape (*batch,).")

    def evaluate(self, x1, x2, diag):
        ip = inner_product(x1, x2, diag)
        return _expand(self.variance, diag) * ip

    has_features = True

    def feature_map(self, x):
        """sqrt(variance) x: the d input columns themselves."""
        return self.variance.sqrt()[..., None, None] * x

    def factored_map(self, x):
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return x, self.variance.sqrt()[..., None, None] * eye


class Polynomial(Kernel):
    """k(x, x') = (x . x' + offset)^power, ``power`` a positive int, ``offset`` learned >= 0."""

    def __init__(self, power: int = 2, offset: float = 1.0, active_dims: Sequence[int] | None = None,
                 batch_shape: Sequence[int] = ()):
        super().__init__(active_dims=active_dims, batch_shape=batch_shape)
        if isinstance(power, bool) or not isinstance(power, numbers.Integral) or power < 1:
            raise ValueError(f"power: expected a positive int, got {power!r}")
        self.power = int(power)
        register_positive(self, "offset", offset, self.batch_shape)

    offset = PositiveProperty("Offset c, shape (*batch,).")

    def evaluate(self, x1, x2, diag):
        ip = inner_product(x1, x2, diag)
        return (ip + _expand(self.offset, diag)).pow(self.power)
