# Test inputs with batch dimensions for a model without them: x (*b, m, d) is b separate test
# sets, each predicted as on its own; their posteriors are stacked (a block-diagonal covariance).
from __future__ import annotations

import math

import torch

from ..distributions import Posterior, PosteriorCovariance


class StackedOperator(PosteriorCovariance):
    """Square operators A_i (m, m), one per element of ``batch_shape`` (in row-major order), as
    one ``(*batch_shape, m, m)`` operator: the covariances of independent test sets."""

    def __init__(self, parts: list, batch_shape: torch.Size):
        self.parts = list(parts)
        self.shape = torch.Size((*batch_shape, *self.parts[0].shape[-2:]))
        self.dtype, self.device = self.parts[0].dtype, self.parts[0].device

    def _per_part(self, tensor: torch.Tensor, trailing: int) -> torch.Tensor:
        """``tensor`` (broadcastable to (*batch, *its last ``trailing`` dims)) as (B, ...)."""
        tail = tensor.shape[tensor.dim() - trailing:]
        return tensor.expand(*self.batch_shape, *tail).reshape(-1, *tail)

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        out = torch.stack([a.matmul(r) for a, r in zip(self.parts, self._per_part(rhs, 2))])
        return out.reshape(*self.batch_shape, *out.shape[-2:])

    def _diagonal(self) -> torch.Tensor:
        return torch.stack([a.diagonal() for a in self.parts]).reshape(*self.batch_shape, self.shape[-1])

    def _rows(self, index: torch.Tensor) -> torch.Tensor:
        out = torch.stack([a.rows(i) for a, i in zip(self.parts, self._per_part(index, 1))])
        return out.reshape(*self.batch_shape, *out.shape[-2:])


def posterior_per_test_set(posterior, x: torch.Tensor) -> Posterior:
    """The posteriors ``posterior(x_i)`` of every test set x_i (m, d) of x ``(*b, m, d)``, stacked:
    mean ``(*b, m)``, covariance a ``StackedOperator`` ``(*b, m, m)`` (no covariance between sets), the
    diagnostics of the last set. Equal to calling ``posterior`` on each x[i] alone."""
    batch = x.shape[:-2]
    if math.prod(batch) == 0:
        raise ValueError(f"x: expected at least one test set, got shape {tuple(x.shape)}")
    parts = [posterior(one) for one in x.reshape(-1, *x.shape[-2:])]
    mean = torch.stack([p.mean for p in parts]).reshape(*batch, x.shape[-2])
    covariance = StackedOperator([p.covariance for p in parts], batch)
    return Posterior(mean, covariance, diagnostics=parts[-1].diagnostics)
