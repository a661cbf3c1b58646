# Prior mean functions m(x) of a GP: zero, a learned constant, a learned linear function.
# x (*batch, n, d) -> (*batch, n).
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..shapes import broadcast_shapes


class Mean(nn.Module):
    """Base class of mean functions: ``forward(x)`` maps (*batch, n, d) to (*batch, n)."""


class Zero(Mean):
    """m(x) = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)


class Constant(Mean):
    """m(x) = constant (learned), shape (*batch,)."""

    def __init__(self, constant: float = 0.0, batch_shape: Sequence[int] = ()):
        super().__init__()
        self.raw_constant = nn.Parameter(torch.full(tuple(batch_shape), float(constant)))

    @property
    def constant(self) -> torch.Tensor:
        return self.raw_constant

    @constant.setter
    def constant(self, value) -> None:
        with torch.no_grad():
            self.raw_constant.copy_(torch.as_tensor(value, dtype=self.raw_constant.dtype).expand(self.raw_constant.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw_constant.unsqueeze(-1).expand(*broadcast_shapes(x.shape[:-2], self.raw_constant.shape), x.shape[-2])


class Linear(Mean):
    """m(x) = x @ weights + bias; weights (*batch, d), bias (*batch,) when ``bias=True``."""

    def __init__(self, input_dims: int, bias: bool = True, batch_shape: Sequence[int] = ()):
        super().__init__()
        if not isinstance(input_dims, int) or input_dims < 1:
            raise ValueError(f"input_dims: expected a positive int, got {input_dims!r}")
        self.weights = nn.Parameter(torch.zeros(*batch_shape, input_dims))
        self.bias = nn.Parameter(torch.zeros(tuple(batch_shape))) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.weights.shape[-1]:
            raise ValueError(f"x: expected {self.weights.shape[-1]} columns, got {x.shape[-1]}")
        out = (x * self.weights.unsqueeze(-2)).sum(-1)
        return out if self.bias is None else out + self.bias.unsqueeze(-1)
