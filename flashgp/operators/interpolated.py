# Structured kernel interpolation (SKI / KISS-GP) as an operator: K ~ W1 K_UU W2^T with sparse
# cubic interpolation W and a structured grid covariance K_UU (Toeplitz, Kronecker of Toeplitz).
"""``InterpolatedOperator``: the SKI approximation of a kernel matrix,

    K(x1, x2) ~ W1 K_UU W2^T      ``(*batch, n1, n2)``,

W1 (n1 x G), W2 (n2 x G) sparse interpolation matrices (``Interpolation``, 4^d weights per point)
and K_UU (G x G) the kernel on a regular grid of G points as a structured operator (a Toeplitz
matrix, a Kronecker product of Toeplitz factors, a multi-level Toeplitz matrix): no G x G or
n x n matrix is ever formed. Costs: a product with t columns O(t (n 4^d + G log G)); ``diagonal``
O(n 16^d) (w_i^T B w_i with B the one 4^d x 4^d block of K_UU every stencil sees, since K_UU is
shift invariant on the grid); a row O(G log G + n 4^d) (pivoted Cholesky asks for one at a time).

Gradients: K_UU is a function of the base kernel's parameters. ``grad_inputs()`` are those
parameters (``params``); ``bilinear_grad(U, V)`` rebuilds K_UU with autograd on (``make_grid``),
takes the grid operator's gradient of sum (W1^T u_i)^T K_UU (W2^T v_i) with respect to its
generators (autograd through the FFT product) and carries it back to the parameters.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..shapes import broadcast_shapes
from .base import Operator
from .interpolation import Interpolation

# rows of the (chunk, 4^d) x (4^d, 4^d) products of ``diagonal`` at a time
DIAGONAL_CHUNK = 1 << 16


class InterpolatedOperator(Operator):
    """W1 K_UU W2^T of shape ``(*batch, n1, n2)``.

    Args:
        left: W1, an ``Interpolation`` ``(*batch, n1, G)``.
        make_grid: () -> K_UU ``(*batch, G, G)``, a shift-invariant structured operator (``Toeplitz``,
            ``Kronecker`` of them) with ``entries(i, j)``, built from the current parameters; called
            once under no_grad for products and again, with autograd, by ``bilinear_grad``.
        right: W2 ``(*batch, n2, G)``, or None for the symmetric W1 K_UU W1^T.
        params: the tensors K_UU is a function of (the base kernel's parameters); those that
            require grad are ``grad_inputs()``.
        precision: what ``precision`` reports (the dtype the FFTs run in).

    Attributes ``backend = "ski"`` and ``precision`` are what the engine's records report.
    """

    backend = "ski"

    def __init__(self, left: Interpolation, make_grid: Callable[[], Operator], right: Interpolation | None = None,
                 params=(), precision: str | None = None):
        if not isinstance(left, Interpolation) or not (right is None or isinstance(right, Interpolation)):
            raise TypeError("left, right: expected Interpolation operators (right may be None)")
        self.left, self.right, self.make_grid = left, right, make_grid
        self.params = tuple(p for p in params if p.requires_grad)
        with torch.no_grad():
            self.grid = make_grid()
        if not getattr(self.grid, "shift_invariant", False):
            raise TypeError(f"make_grid: expected a shift-invariant grid operator (Toeplitz, Kronecker of "
                            f"Toeplitz), got {type(self.grid).__name__}")
        other = left if right is None else right
        if self.grid.n_rows != left.n_cols or other.n_cols != left.n_cols:
            raise ValueError(f"left, right, make_grid: grid sizes differ ({left.n_cols}, {other.n_cols}, "
                             f"{self.grid.n_rows})")
        batch = broadcast_shapes(left.batch_shape, other.batch_shape, self.grid.batch_shape)
        self.shape = torch.Size((*batch, left.n_rows, other.n_rows))
        self.dtype, self.device = left.dtype, left.device
        self.precision = precision or str(self.dtype).replace("torch.", "")

    @property
    def _right(self) -> Interpolation:
        return self.left if self.right is None else self.right

    # ----- products --------------------------------------------------------------------
    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        out = self.left._matmul(self.grid._matmul(self._right.t_matmul(rhs)))
        return out.expand(*broadcast_shapes(self.batch_shape, out.shape[:-2]), *out.shape[-2:])

    # ----- entries ---------------------------------------------------------------------
    def stencil_block(self, grid: Operator | None = None) -> torch.Tensor:
        """B = K_UU[S, S] ``(*batch, s, s)`` for the stencil S = corner + offsets of any point (the same
        for every corner: K_UU is shift invariant). Of ``grid`` if given (differentiable when it
        is), else of the detached grid operator."""
        grid = self.grid if grid is None else grid
        offsets = self.left.offsets
        return grid.entries(offsets.unsqueeze(-1), offsets)

    def diagonal(self, block: torch.Tensor | None = None) -> torch.Tensor:
        """w_i^T B w_i for every point (symmetric operators only), ``(*batch, n)``; ``block``: B given
        (differentiable), else that of the detached grid operator."""
        if self.right is not None and self.right is not self.left:
            raise ValueError("diagonal: only defined for the symmetric operator W K_UU W^T")
        block = self.stencil_block() if block is None else block
        weights = self.left.weights
        batch = broadcast_shapes(weights.shape[:-2], block.shape[:-2])
        parts = [((weights[..., r:r + DIAGONAL_CHUNK, :] @ block) * weights[..., r:r + DIAGONAL_CHUNK, :]).sum(-1)
                 for r in range(0, max(1, self.n_rows), DIAGONAL_CHUNK)]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        return out.expand(*broadcast_shapes(batch, self.batch_shape), self.n_rows)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """index (k,) or ``(*batch, k)`` -> ``(*batch, k, n2)``: W2 (K_UU (W1[index])^T), one grid product
        with k columns."""
        w = self.left.rows(index)  # (*b, k, G)
        out = self._right._matmul(self.grid._matmul(w.transpose(-1, -2))).transpose(-1, -2)
        batch = broadcast_shapes(self.batch_shape, index.shape[:-1])
        return out.expand(*batch, *out.shape[-2:])

    def to_dense(self, grid: Operator | None = None) -> torch.Tensor:
        """The matrix ``(*batch, n1, n2)`` as W_a (K_UU W_b^T), the grid product taken on the side with
        fewer points (G x min(n1, n2) numbers). Of ``grid`` if given (differentiable through its
        FFT products), else of the detached grid operator."""
        grid = self.grid if grid is None else grid
        n1, n2 = self.shape[-2:]
        if n1 <= n2 or self.right is None:
            inner = grid._matmul(self.left.to_dense().transpose(-1, -2))  # (*b, G, n1)
            out = self._right._matmul(inner).transpose(-1, -2)
        else:
            out = self.left._matmul(grid._matmul(self._right.to_dense().transpose(-1, -2)))
        return out.expand(*self.batch_shape, n1, n2)

    # ----- gradients -------------------------------------------------------------------
    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        return self.params

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        """Gradients of sum_i left_i^T (W1 K_UU W2^T) right_i for ``params``: the grid operator's
        bilinear gradient for (W1^T left, W2^T right), carried to the parameters by autograd."""
        if not self.params:
            return ()
        u, v = self.left.t_matmul(left.detach()), self._right.t_matmul(right.detach())
        with torch.enable_grad():
            grid = self.make_grid()
            inputs = grid.grad_inputs()
            if not inputs:
                return tuple(None for _ in self.params)
            grads = grid.bilinear_grad(u, v)
            pairs = [(t, g) for t, g in zip(inputs, grads) if g is not None]
            out = torch.autograd.grad([t for t, _ in pairs], self.params, [g for _, g in pairs],
                                      allow_unused=True)
        return tuple(out)
