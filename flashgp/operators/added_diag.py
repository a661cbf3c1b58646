# A + diag(d): a base operator plus a diagonal (the noise of a Gaussian likelihood).
# The diagonal may require grad; its bilinear gradient is sum_i u_i * v_i row by row.
from __future__ import annotations

import torch

from ..shapes import broadcast_shapes, sum_to_shape
from .base import Operator


class AddedDiag(Operator):
    """base + diag(diag). base: square Operator ``(*batch, n, n)``; diag: ``(*batch, n)`` or (n,)."""

    def __init__(self, base: Operator, diag: torch.Tensor):
        if not isinstance(base, Operator):
            raise TypeError(f"base: expected an Operator, got {type(base).__name__}")
        if not isinstance(diag, torch.Tensor) or diag.shape[-1:] != base.shape[-1:]:
            raise ValueError(f"diag: expected a tensor with last dimension {base.n_cols}, "
                             f"got {getattr(diag, 'shape', type(diag))}")
        self.base, self.diag = base, diag
        self.shape = torch.Size((*broadcast_shapes(base.batch_shape, diag.shape[:-1]), *base.shape[-2:]))
        self.dtype, self.device = base.dtype, base.device

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """rhs ``(*b, n, t)``, b broadcastable with the batch -> ``(*broadcast batch, n, t)``. The base gets the
        matrix rhs through its ``_matmul``: its public ``matmul`` would read an (n, 1) column of a
        1-D rhs as batched vectors when the base has a batch of one dimension."""
        return torch.addcmul(self.base._matmul(rhs), self.diag.detach().unsqueeze(-1), rhs)

    def diagonal(self) -> torch.Tensor:
        return self.base.diagonal() + self.diag.detach()

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """index (k,) or ``(*batch, k)`` long -> ``(*batch, k, n)``: the base's rows plus diag[i] at (i, i).
        The batch is that of the base's rows and the diagonal together (a batched diagonal on
        an unbatched base gives batched rows)."""
        out = self.base.rows(index)  # (*b, k, n)
        batch = broadcast_shapes(out.shape[:-2], self.diag.shape[:-1])
        d = self.diag.detach().expand(*batch, out.shape[-1])
        idx = index.expand(*batch, index.shape[-1])
        eye_part = out.new_zeros(*batch, *out.shape[-2:]).scatter_(
            -1, idx.unsqueeze(-1), d.gather(-1, idx).unsqueeze(-1))
        return out + eye_part

    def to_dense(self) -> torch.Tensor:
        return self.base.to_dense() + torch.diag_embed(self.diag)

    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        own = (self.diag,) if self.diag.requires_grad else ()
        return tuple(self.base.grad_inputs()) + own

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        grads = tuple(self.base.bilinear_grad(left, right))
        if self.diag.requires_grad:
            grads = grads + (sum_to_shape((left * right).sum(-1), self.diag.shape),)
        return grads
