# The sum of operators of one shape: products, diagonals, rows and gradients add up.
# Gradient inputs are the concatenation of the members' inputs.
from __future__ import annotations

import torch

from ..shapes import broadcast_shapes
from .base import Operator


class SumOperator(Operator):
    """A_1 + A_2 + ... for operators of a common (broadcast) shape."""

    def __init__(self, *operators: Operator):
        if not operators or not all(isinstance(o, Operator) for o in operators):
            raise TypeError("operators: expected one or more Operator instances")
        if len({o.shape[-2:] for o in operators}) != 1:
            raise ValueError(f"operators: expected one matrix shape, got {[tuple(o.shape) for o in operators]}")
        self.operators = operators
        self.shape = torch.Size((*broadcast_shapes(*[o.batch_shape for o in operators]),
                                 *operators[0].shape[-2:]))
        self.dtype, self.device = operators[0].dtype, operators[0].device

    @property
    def backend(self) -> str:
        """The first member's backend (members built with one set of options report the same)."""
        return getattr(self.operators[0], "backend", "dense")

    @property
    def precision(self) -> str:
        return getattr(self.operators[0], "precision", str(self.dtype).replace("torch.", ""))

    def _matmul(self, rhs):
        """rhs ``(*b, n_cols, t)`` -> ``(*batch, n_rows, t)``. Members get the matrix rhs through their
        ``_matmul``: their public ``matmul`` would read an (n, 1) column of a 1-D rhs as batched
        vectors when a member has a batch of one dimension."""
        return sum(o._matmul(rhs) for o in self.operators)

    def diagonal(self):
        return sum(o.diagonal() for o in self.operators)

    def rows(self, index):
        return sum(o.rows(index) for o in self.operators)

    def to_dense(self):
        return sum(o.to_dense() for o in self.operators)

    def grad_inputs(self):
        return tuple(t for o in self.operators for t in o.grad_inputs())

    def bilinear_grad(self, left, right):
        return tuple(g for o in self.operators for g in o.bilinear_grad(left, right))
