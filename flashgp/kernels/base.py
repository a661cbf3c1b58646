# The Kernel base class (one pairwise formula evaluated as a matrix or along the diagonal)
# and the sum and product of kernels.
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import nn

from ..shapes import as_batch_shape
from .constraints import ExactValues


def _check_inputs(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name}: expected shape (..., n, d), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {x.dtype}")


def check_operator_inputs(x1: torch.Tensor, x2: torch.Tensor | None, no_gradient: str) -> None:
    """The inputs of a structured kernel's ``operator(x1, x2)``: tensors ``(..., n, d)`` with the same d,
    neither requiring grad (ValueError "x1, x2: " + ``no_gradient``, which says why)."""
    _check_inputs(x1, "x1")
    if x2 is not None:
        _check_inputs(x2, "x2")
        if x2.shape[-1] != x1.shape[-1]:
            raise ValueError(f"x2: expected {x1.shape[-1]} columns like x1, got {x2.shape[-1]}")
    if x1.requires_grad or (x2 is not None and x2.requires_grad):
        raise ValueError(f"x1, x2: {no_gradient}")


class Kernel(ExactValues):
    """A covariance function k(x, x').

    Subclasses implement ``evaluate(x1, x2, diag)``: with ``diag=False`` it returns the matrix
    ``(*batch, n1, n2)`` of k over all pairs; with ``diag=True`` (n1 == n2) the vector ``(*batch, n)``
    of k(x1_i, x2_i). Both come from the same formula applied to a pair statistic (a scaled
    squared distance, an inner product, coordinate differences), so dense, blocked, diagonal
    and row evaluation, and every gradient (by autograd on blocks), share one definition.

    Args:
        active_dims: the input columns this kernel sees (default: all).
        batch_shape: leading shape of the hyperparameters, for batches of independent GPs.
    """

    def __init__(self, active_dims: Sequence[int] | None = None, batch_shape: Sequence[int] = ()):
        super().__init__()
        if active_dims is not None:
            if isinstance(active_dims, (str, bytes)) or not hasattr(active_dims, "__iter__"):
                raise TypeError(f"active_dims: expected a list of column indices, got {active_dims!r}")
            active_dims = list(active_dims)
            if not active_dims or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool)
                                          and i >= 0 for i in active_dims):
                raise ValueError(f"active_dims: expected non-empty list of ints >= 0, got {active_dims}")
            active_dims = torch.tensor([int(i) for i in active_dims], dtype=torch.long)
            self.register_buffer("active_dims", active_dims, persistent=False)
        else:
            self.active_dims = None
        self.batch_shape = as_batch_shape(batch_shape)

    # ----- evaluation ----------------------------------------------------------------
    def forward(self, x1: torch.Tensor, x2: torch.Tensor | None = None, diag: bool = False) -> torch.Tensor:
        """k(x1, x2). x1: ``(*batch, n1, d)``, x2: ``(*batch, n2, d)`` (default x1).

        Returns ``(*batch, n1, n2)``, or ``(*batch, n1)`` with ``diag=True``.
        """
        _check_inputs(x1, "x1")
        x2 = x1 if x2 is None else x2
        _check_inputs(x2, "x2")
        if x1.shape[-1] != x2.shape[-1]:
            raise ValueError(f"x2: expected {x1.shape[-1]} columns like x1, got {x2.shape[-1]}")
        if diag and x1.shape[-2] != x2.shape[-2]:
            raise ValueError(f"x2: diag=True needs as many rows as x1, got {x2.shape[-2]} and {x1.shape[-2]}")
        return self.evaluate(self.select_dims(x1), self.select_dims(x2), diag)

    def select_dims(self, x: torch.Tensor) -> torch.Tensor:
        """The columns of x ``(*batch, n, d)`` this kernel sees (``active_dims``)."""
        if self.active_dims is None:
            return x
        if int(self.active_dims.max()) >= x.shape[-1]:
            raise ValueError(f"active_dims: index {int(self.active_dims.max())} out of range for d={x.shape[-1]}")
        return x.index_select(-1, self.active_dims)

    def evaluate(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool) -> torch.Tensor:
        raise NotImplementedError

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        """k(x_i, x_i) for every row of x ``(*batch, n, d)`` -> ``(*batch, n)``."""
        return self.forward(x, x, diag=True)

    @property
    def is_stationary(self) -> bool:
        return False

    # ----- finite feature maps ----------------------------------------------------------
    #: whether k(x, x') = f(x) . f(x') for a finite feature map f (``features``); kernels that have
    #: one set it True and implement ``feature_map``
    has_features = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) ``(*batch, n, P)`` for x ``(*batch, n, d)``, with k(x, x') = f(x) . f(x'): the kernel's
        finite feature map (``models.BasisGP`` solves in it at O(n P^2)). TypeError for kernels
        without one (stationary kernels get one through ``HilbertSpace``)."""
        _check_inputs(x, "x")
        if not self.has_features:
            raise TypeError(f"kernel: {type(self).__name__} has no finite feature map; wrap stationary kernels "
                            "(RBF, Matern) in kernels.HilbertSpace(kernel, num_basis=...), and combine it with "
                            "Categorical, Linear and Scale kernels by + and *")
        return self.feature_map(self.select_dims(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``features`` on the columns this kernel sees (subclasses with ``has_features``)."""
        raise NotImplementedError

    def factored_features(self, x: torch.Tensor):
        """(B ``(*, n, R)``, D ``(*batch, R, P)``) with features(x) = B D, B free of the hyperparameters
        and D free of x (a basis and its weights: the sines and sqrt(S) of ``HilbertSpace``, one-hot
        levels and the level factor of ``Categorical``), or None where the kernel has no such
        split. A model then computes B^T B over the data once and each training step costs
        O(R^2 P), whatever n."""
        if not self.has_features:
            return None
        return self.factored_map(self.select_dims(x))

    def factored_map(self, x: torch.Tensor):
        """``factored_features`` on the columns this kernel sees; None by default."""
        return None

    # ----- algebra -------------------------------------------------------------------
    def __add__(self, other: "Kernel") -> "Kernel":
        if not isinstance(other, Kernel):
            return NotImplemented
        return Sum(self, other)

    def __mul__(self, other: "Kernel") -> "Kernel":
        if not isinstance(other, Kernel):
            return NotImplemented
        return Product(self, other)


class _Combination(Kernel):
    def __init__(self, *kernels: Kernel):
        super().__init__()
        flat = []
        for k in kernels:
            if not isinstance(k, Kernel):
                raise TypeError(f"kernels: expected Kernel instances, got {type(k).__name__}")
            flat.extend(k.kernels if type(k) is type(self) else [k])
        self.kernels = nn.ModuleList(flat)
        self.batch_shape = torch.broadcast_shapes(*(k.batch_shape for k in flat))

    @property
    def is_stationary(self) -> bool:
        return all(k.is_stationary for k in self.kernels)

    @property
    def has_features(self) -> bool:
        return all(k.has_features for k in self.kernels)


class Sum(_Combination):
    """k1 + k2 + ...: the elementwise sum of the member kernels."""

    def evaluate(self, x1, x2, diag):
        out = self.kernels[0](x1, x2, diag=diag)
        for k in self.kernels[1:]:
            out = out + k(x1, x2, diag=diag)
        return out

    def factored_map(self, x):
        """B side by side, D block-diagonal."""
        parts = [k.factored_features(x) for k in self.kernels]
        if any(p is None for p in parts):
            return None
        shape = torch.broadcast_shapes(*(b.shape[:-1] for b, _ in parts))
        basis = torch.cat([b.expand(*shape, b.shape[-1]) for b, _ in parts], -1)
        batch = torch.broadcast_shapes(*(d.shape[:-2] for _, d in parts))
        rows, cols = sum(d.shape[-2] for _, d in parts), sum(d.shape[-1] for _, d in parts)
        weights = parts[0][1].new_zeros(*batch, rows, cols)
        r = c = 0
        for _, d in parts:
            weights[..., r:r + d.shape[-2], c:c + d.shape[-1]] = d
            r, c = r + d.shape[-2], c + d.shape[-1]
        return basis, weights

    def feature_map(self, x):
        """The members' features side by side: P = P1 + P2 + ..."""
        parts = [k.features(x) for k in self.kernels]
        shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        return torch.cat([p.expand(*shape, p.shape[-1]) for p in parts], -1)


class Product(_Combination):
    """k1 * k2 * ...: the elementwise (Hadamard) product of the member kernels."""

    def evaluate(self, x1, x2, diag):
        out = self.kernels[0](x1, x2, diag=diag)
        for k in self.kernels[1:]:
            out = out * k(x1, x2, diag=diag)
        return out

    def factored_map(self, x):
        """Row-wise Kronecker products of the bases, Kronecker products of the weights."""
        parts = [k.factored_features(x) for k in self.kernels]
        if any(p is None for p in parts):
            return None
        basis, weights = parts[0]
        for b, d in parts[1:]:
            pair = basis.unsqueeze(-1) * b.unsqueeze(-2)
            basis = pair.reshape(*pair.shape[:-2], -1)
            kron = weights[..., :, None, :, None] * d[..., None, :, None, :]
            weights = kron.reshape(*kron.shape[:-4], kron.shape[-4] * kron.shape[-3], kron.shape[-2] * kron.shape[-1])
        return basis, weights

    def feature_map(self, x):
        """Row-wise Kronecker products of the members' features (f1(x) kron f2(x) ...): P = P1 P2 ..."""
        out = self.kernels[0].features(x)
        for k in self.kernels[1:]:
            f = k.features(x)
            pair = out.unsqueeze(-1) * f.unsqueeze(-2)  # (*batch, n, P_out, P_k)
            out = pair.reshape(*pair.shape[:-2], -1)
        return out
