# The periodic kernel: k = exp(-2 sum_j sin^2(pi |x_j - x'_j| / p) / l_j^2).
# Works on coordinate differences, so it is not a profile of r2.
from typing import Sequence

import math

import torch

from .base import Kernel
from .constraints import PositiveProperty, check_ard_dims, register_positive


class Periodic(Kernel):
    """Periodic kernel with learned ``period`` and ``lengthscale`` (ARD over ard_dims)."""

    def __init__(self, ard_dims: int | None = None, lengthscale: float = 1.0, period: float = 1.0,
                 active_dims: Sequence[int] | None = None, batch_shape: Sequence[int] = ()):
        super().__init__(active_dims=active_dims, batch_shape=batch_shape)
        ard_dims = check_ard_dims(ard_dims)
        self.ard_dims = ard_dims
        register_positive(self, "lengthscale", lengthscale, (*self.batch_shape, 1, ard_dims or 1))
        register_positive(self, "period", period, (*self.batch_shape, 1, ard_dims or 1))

    lengthscale = PositiveProperty("Lengthscales, shape (*batch, 1, ard_dims or 1).")

    period = PositiveProperty("Periods, shape (*batch, 1, ard_dims or 1).")

    def evaluate(self, x1, x2, diag):
        if self.ard_dims is not None and x1.shape[-1] != self.ard_dims:
            raise ValueError(f"x1: expected {self.ard_dims} columns (ard_dims), got {x1.shape[-1]}")
        ls, period = self.lengthscale, self.period
        if diag:
            diff = (x1 - x2)
            s = torch.sin(math.pi * diff / period).pow(2) / ls.pow(2)
            return torch.exp(-2 * s.sum(-1))
        # (*b, n1, n2, d) coordinate differences for this block
        diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)
        s = torch.sin(math.pi * diff / period.unsqueeze(-2)).pow(2) / ls.unsqueeze(-2).pow(2)
        return torch.exp(-2 * s.sum(-1))
