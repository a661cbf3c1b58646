# The Kronecker product of operators: products one factor at a time along its axis of the
# reshaped right-hand side, entries and rows as products of the factors'. Never the full matrix.
"""A_1 ⊗ A_2 ⊗ ... ⊗ A_k of operators A_j (r_j x c_j), an (R x C) matrix, R = r_1 ... r_k and
C = c_1 ... c_k, indexed row-major (the first factor's index slowest): (A_1 ⊗ A_2)[(a, c), (b, d)]
= A_1[a, b] A_2[c, d]. A product reshapes a column to the grid (c_1, ..., c_k) and applies each
factor along its axis: for square factors G (g_1 + ... + g_k) multiply-adds per column with dense
factors, and for Toeplitz factors a 1-D FFT along each axis. Square factors (SKI's grids, a
multitask model's training covariance) give a square operator with a diagonal; rectangular ones
(cross covariances between test and training grids) only products, rows and dense form.
"""
from __future__ import annotations

import math

import torch

from ..shapes import broadcast_shapes
from .base import Operator


class Kronecker(Operator):
    """A_1 ⊗ ... ⊗ A_k ``(*batch, R, C)`` of operators ``factors`` A_j ``(*batch_j, r_j, c_j)``
    (batch shapes broadcast). ``grad_inputs()``: the factors' (a tensor shared by several
    factors appears once and gets the sum of their gradients). ``diagonal`` needs square factors."""

    def __init__(self, *factors: Operator):
        if not factors or not all(isinstance(f, Operator) for f in factors):
            raise TypeError("factors: expected one or more Operator instances")
        self.factors = factors
        self.grid_shape = tuple(f.n_cols for f in factors)  # the grid of a right-hand side column
        self.row_grid = tuple(f.n_rows for f in factors)
        self.size = math.prod(self.grid_shape)
        self.shape = torch.Size((*broadcast_shapes(*[f.batch_shape for f in factors]), math.prod(self.row_grid),
                                 self.size))
        self.dtype, self.device = factors[0].dtype, factors[0].device
        self.shift_invariant = all(getattr(f, "shift_invariant", False) for f in factors)

    @property
    def backend(self) -> str:
        """The backend of the factor that has one (a ``KernelOperator``: a multitask covariance's K_x),
        else "dense"; what the engine's records report and predictions reuse."""
        return next((f.backend for f in self.factors if hasattr(f, "backend")), "dense")

    @property
    def precision(self) -> str:
        return next((f.precision for f in self.factors if hasattr(f, "precision")),
                    str(self.dtype).replace("torch.", ""))

    # ----- products --------------------------------------------------------------------
    def _along(self, factor: Operator, axis: int, x: torch.Tensor) -> torch.Tensor:
        """Apply ``factor`` along grid axis ``axis`` of x ``(*b, g_1, ..., g_k, t)``."""
        k = len(self.grid_shape)
        nb = x.dim() - k - 1
        moved = x.movedim(nb + axis, nb)  # (*b, g_axis, other axes..., t)
        rest = moved.shape[nb + 1:]
        out = factor._matmul(moved.reshape(*moved.shape[:nb + 1], -1))
        nb_out = out.dim() - 2
        return out.reshape(*out.shape[:nb_out + 1], *rest).movedim(nb_out, nb_out + axis)

    def _apply(self, x: torch.Tensor, skip: int | None = None) -> torch.Tensor:
        """Every factor but ``skip`` applied along its axis of x ``(*b, g_1, ..., g_k, t)``."""
        for axis, factor in enumerate(self.factors):
            if axis != skip:
                x = self._along(factor, axis, x)
        return x

    def _grid(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(*v.shape[:-2], *self.grid_shape, v.shape[-1])

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.grid_shape)
        return x.reshape(*x.shape[:x.dim() - k - 1], -1, x.shape[-1])

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        out = self._flat(self._apply(self._grid(rhs)))
        batch = broadcast_shapes(self.batch_shape, rhs.shape[:-2])
        return out.expand(*batch, *out.shape[-2:]) if out.shape[:-2] != batch else out

    # ----- entries ---------------------------------------------------------------------
    def _split(self, index: torch.Tensor, grid: tuple | None = None) -> list[torch.Tensor]:
        """The factor indices (row-major) of flat indices ``index`` on ``grid`` (default: the columns')."""
        out, rest = [], index
        for g in reversed(self.grid_shape if grid is None else grid):
            out.append(rest % g)
            rest = rest // g
        return out[::-1]

    def entries(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Entries [i, j] for broadcastable long tensors i, j (shape S): ``(*batch, *S)``. Needs
        factors with ``entries`` (Toeplitz)."""
        out = None
        for factor, a, b in zip(self.factors, self._split(i, self.row_grid), self._split(j)):
            e = factor.entries(a, b)
            out = e if out is None else out * e
        return out

    def diagonal(self) -> torch.Tensor:
        if self.row_grid != self.grid_shape:
            raise ValueError(f"diagonal: needs square factors, got {[tuple(f.shape) for f in self.factors]}")
        out = None
        for factor in self.factors:
            d = factor.diagonal()
            out = d if out is None else (out.unsqueeze(-1) * d.unsqueeze(-2)).flatten(-2)
        return out.expand(*self.batch_shape, self.size)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """index (k,) or ``(*batch, k)`` -> ``(*batch, k, C)``: the Kronecker product of the factors' rows."""
        out = None
        for factor, part in zip(self.factors, self._split(index, self.row_grid)):
            r = factor.rows(part)
            out = r if out is None else (out.unsqueeze(-1) * r.unsqueeze(-2)).flatten(-2)
        return out.expand(*broadcast_shapes(self.batch_shape, index.shape[:-1]), *out.shape[-2:])

    def to_dense(self) -> torch.Tensor:
        """The full matrix (tests only)."""
        out = None
        for factor in self.factors:
            a = factor.to_dense()
            if out is None:
                out = a
                continue
            prod = out[..., :, None, :, None] * a[..., None, :, None, :]
            out = prod.reshape(*prod.shape[:-4], out.shape[-2] * a.shape[-2], out.shape[-1] * a.shape[-1])
        return out.expand(*self.shape)

    # ----- gradients -------------------------------------------------------------------
    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        seen, out = set(), []
        for factor in self.factors:
            for t in factor.grad_inputs():
                if id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
        return tuple(out)

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        """For factor j: sum_i u_i^T (A_1 ⊗ .. ⊗ A_k) v_i = sum over the other axes and columns
        of U^T A_j (V with every other factor applied), U and V the columns reshaped to the grid;
        each factor's ``bilinear_grad`` gets those as its columns."""
        inputs = self.grad_inputs()
        if not inputs:
            return ()
        position = {id(t): n for n, t in enumerate(inputs)}
        grads = [None] * len(inputs)
        u, v = left.reshape(*left.shape[:-2], *self.row_grid, left.shape[-1]), self._grid(right)
        for axis, factor in enumerate(self.factors):
            own = factor.grad_inputs()
            if not own:
                continue
            rhs = self._apply(v, skip=axis)
            nb = rhs.dim() - len(self.grid_shape) - 1

            def columns(x, nb):
                moved = x.movedim(nb + axis, nb)
                return moved.reshape(*moved.shape[:nb + 1], -1)
            for t, g in zip(own, factor.bilinear_grad(columns(u, u.dim() - len(self.grid_shape) - 1),
                                                      columns(rhs, nb))):
                if g is not None:
                    n = position[id(t)]
                    grads[n] = g if grads[n] is None else grads[n] + g
        return tuple(grads)
