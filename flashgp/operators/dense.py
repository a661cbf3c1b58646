# A matrix held as a plain tensor: the reference operator for small problems and tests.
# Gradients flow to the tensor itself.
from __future__ import annotations

import torch

from ..shapes import sum_to_shape
from .base import Operator


class Dense(Operator):
    """Wraps a tensor ``matrix`` of shape ``(*batch, n_rows, n_cols)``."""

    def __init__(self, matrix: torch.Tensor):
        if not isinstance(matrix, torch.Tensor):
            raise TypeError(f"matrix: expected a torch.Tensor, got {type(matrix).__name__}")
        if matrix.dim() < 2:
            raise ValueError(f"matrix: expected at least 2 dimensions, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.shape = matrix.shape
        self.dtype = matrix.dtype
        self.device = matrix.device

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        return self.matrix.detach() @ rhs

    def diagonal(self) -> torch.Tensor:
        return self.matrix.detach().diagonal(dim1=-2, dim2=-1)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        m = self.matrix.detach()
        if index.dim() == 1:
            return m[..., index, :]
        idx = index.unsqueeze(-1).expand(*index.shape, self.n_cols)
        return m.expand(*index.shape[:-1], *m.shape[-2:]).gather(-2, idx)

    def to_dense(self) -> torch.Tensor:
        return self.matrix

    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.matrix,) if self.matrix.requires_grad else ()

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        if not self.matrix.requires_grad:
            return ()
        return (sum_to_shape(left @ right.transpose(-1, -2), self.matrix.shape),)
