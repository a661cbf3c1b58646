# Kernels on one categorical input column (integer level codes 0..L-1): exchangeable (one
# correlation between any two different levels), one-hot (none) or a learned low-rank-plus-diagonal
# covariance.
"""Categorical kernels, to be combined with continuous ones by ``+`` and ``*`` (``active_dims``
picks the column)::

    k = Scale(RBF(ard_dims=2, active_dims=[0, 1]) * Categorical(4, active_dims=[2]))

The column holds level codes 0..L-1 as numbers (2.0 is level 2); anything else (a fraction, a
negative code, a level >= L) raises ValueError naming the column and the level, at fit and at
prediction time alike.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from .base import Kernel
from .constraints import PositiveProperty, register_positive

KINDS = ("exchangeable", "onehot", "lowrank")


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


class Categorical(Kernel):
    """k(a, b) on level codes a, b of one column.

    Args:
        num_levels: L >= 2, the number of levels (codes 0..L-1).
        kind: "exchangeable": k(a, b) = 1 if a == b else exp(-decay) (one learned ``decay`` > 0;
            PSD for every value: (1 - c) I + c 1 1^T with c in (0, 1)); "onehot": k(a, b) = 1 if
            a == b else 0 (B = I, no parameters: the levels are independent; scale it with
            ``Scale`` or combine it with others); "lowrank": k(a, b) = B[a, b] with
            B = W W^T + diag(v) learned (W ``(L, rank)``, v > 0), as a task covariance.
        rank: the columns of W for "lowrank" (0 .. L).
        active_dims: the one input column the kernel reads (default: the only column).
        batch_shape: leading shape of the hyperparameters.
    """

    def __init__(self, num_levels: int, kind: str = "exchangeable", rank: int = 1,
                 active_dims: Sequence[int] | None = None, batch_shape: Sequence[int] = ()):
        super().__init__(active_dims=active_dims, batch_shape=batch_shape)
        self.num_levels = _check_int(num_levels, "num_levels", 2)
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        if self.active_dims is not None and self.active_dims.numel() != 1:
            raise ValueError(f"active_dims: a categorical kernel reads one column, got {self.active_dims.tolist()}")
        self.kind = kind
        self.rank = _check_int(rank, "rank", 0) if kind == "lowrank" else 0
        if self.rank > self.num_levels:
            raise ValueError(f"rank: expected at most num_levels ({self.num_levels}), got {rank}")
        if kind == "exchangeable":
            register_positive(self, "decay", 1.0, self.batch_shape)
        elif kind == "onehot":  # a buffer, so that it follows the model's dtype and device
            self.register_buffer("identity", torch.eye(self.num_levels), persistent=False)
        elif kind == "lowrank":
            scale = 1.0 / math.sqrt(max(self.rank, 1))
            self.factor = nn.Parameter(torch.full((*self.batch_shape, self.num_levels, self.rank), scale))
            register_positive(self, "level_variance", 0.5, (*self.batch_shape, self.num_levels))

    decay = PositiveProperty("exchangeable: -log of the correlation between two different levels, shape (*batch,).")
    level_variance = PositiveProperty("lowrank: the diagonal v of B = W W^T + diag(v), shape (*batch, L).")

    def covariance(self) -> torch.Tensor:
        """The level covariance B ``(*batch, L, L)``."""
        if self.kind == "exchangeable":
            c = torch.exp(-self.decay).unsqueeze(-1).unsqueeze(-1)
            eye = torch.eye(self.num_levels, dtype=c.dtype, device=c.device)
            return c + (1 - c) * eye
        if self.kind == "onehot":
            return self.identity.expand(*self.batch_shape, self.num_levels, self.num_levels)
        return self.factor @ self.factor.transpose(-1, -2) + torch.diag_embed(self.level_variance)

    has_features = True

    def level_factor(self) -> torch.Tensor:
        """D ``(*batch, L, P)`` with D D^T = B: I (onehot); [sqrt(c) 1, sqrt(1 - c) I] (exchangeable,
        P = L + 1); [W, diag(sqrt(v))] (lowrank, P = rank + L)."""
        if self.kind == "onehot":
            return self.identity
        if self.kind == "exchangeable":
            c = torch.exp(-self.decay)[..., None, None]
            rest = -torch.expm1(-self.decay)[..., None, None]  # 1 - c without cancellation
            ones = torch.ones(self.num_levels, 1, dtype=c.dtype, device=c.device)
            eye = torch.eye(self.num_levels, dtype=c.dtype, device=c.device)
            return torch.cat([(c.sqrt() * ones).expand(*c.shape[:-2], self.num_levels, 1), rest.sqrt() * eye], -1)
        diag = torch.diag_embed(self.level_variance.sqrt())
        return torch.cat([self.factor.expand(*diag.shape[:-2], *self.factor.shape[-2:]), diag], -1)

    has_features = True

    def factored_map(self, x: torch.Tensor):
        """(the one-hot encoding of x's levels ``(*b, n, L)``, ``level_factor()``)."""
        return torch.nn.functional.one_hot(self.levels(x), self.num_levels).to(x.dtype), self.level_factor()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """f(a) = D[a] (the row of ``level_factor()`` of each point's level): f(a) . f(b) = B[a, b]."""
        onehot, factor = self.factored_map(x)
        return onehot @ factor.to(onehot.dtype)

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """The level codes of x ``(*b, n, 1)`` as ``(*b, n)`` int64, checked."""
        if x.shape[-1] != 1:
            raise ValueError(f"x: a categorical kernel reads one column, got {x.shape[-1]} (set active_dims)")
        codes = x.detach()[..., 0]
        rounded = torch.round(codes)
        bad = (rounded != codes) | (rounded < 0) | (rounded >= self.num_levels) | ~torch.isfinite(codes)
        if bool(bad.any()):
            column = "the column" if self.active_dims is None else f"column {int(self.active_dims[0])}"
            value = float(codes[bad].flatten()[0])
            raise ValueError(f"x: {column} holds {value:g}, not a level code 0..{self.num_levels - 1} of this "
                             f"Categorical kernel (unknown categories, or a column with more levels than "
                             f"num_levels={self.num_levels})")
        return rounded.long()

    def evaluate(self, x1, x2, diag):
        cov = self.covariance()
        a, b = self.levels(x1), self.levels(x2)
        batch = cov.shape[:-2]
        if diag:
            values = cov.diagonal(dim1=-2, dim2=-1)  # (*batch, L)
            a = a.expand(*torch.broadcast_shapes(a.shape[:-1], batch), a.shape[-1])
            return values.expand(*a.shape[:-1], self.num_levels).gather(-1, a)
        shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], batch)
        a = a.expand(*shape, a.shape[-1])
        b = b.expand(*shape, b.shape[-1])
        picked = cov.expand(*shape, self.num_levels, self.num_levels).gather(
            -2, a.unsqueeze(-1).expand(*shape, a.shape[-1], self.num_levels))  # B's rows of a: (*shape, n1, L)
        return picked.gather(-1, b.unsqueeze(-2).expand(*shape, a.shape[-1], b.shape[-1]))
