# The sparse interpolation matrix W (n x G) of structured kernel interpolation: each point's
# cubic convolution weights on the 4^d grid points around it. Products in bounded row chunks.
"""Cubic convolution interpolation (Keys 1981) on a regular grid, and the operator W it defines.

On a grid u_j = start + j h (j = 0 .. g - 1) a function f is interpolated at x by
f(x) ~ sum_j u((x - u_j) / h) f(u_j) with Keys' kernel u (parameter a = -0.5, the choice that
makes the interpolant third-order accurate, and the one GPyTorch's ``Interpolation`` uses):

    u(s) = (a + 2)|s|^3 - (a + 3)|s|^2 + 1         for |s| <= 1
    u(s) = a|s|^3 - 5a|s|^2 + 8a|s| - 4a           for 1 < |s| < 2,   0 beyond.

Each point has 4 non-zero weights per dimension, at the grid points j0 - 1 .. j0 + 2 around it
(j0 = floor((x - start) / h)); in d dimensions the weights are the tensor products over the
dimensions: 4^d per point. The points must lie in [u_1, u_{g-2}] per dimension, where the four
neighbours exist (``STENCIL_SLACK`` grid spacings of round-off are accepted beyond).

W is stored as each point's stencil corner (the flat index of its first grid point, row-major
over the grid, the first dimension slowest) and its 4^d weights: the stencil's flat indices are
corner + ``offsets``, the same offsets for every point.
"""
from __future__ import annotations

import math
import warnings

import torch

from ..shapes import broadcast_shapes
from .base import Operator

KEYS_A = -0.5
# how far (in grid spacings) a point may lie beyond [u_1, u_{g-2}] and still be interpolated (its
# stencil clamped inside the grid: the weight it loses is u(2 - slack) = O(slack^2), under 1e-6)
STENCIL_SLACK = 1e-3
# entries of the (chunk, 4^d, t) temporaries of a product with t columns: rows are taken in
# chunks so that at most this many exist at a time (plus the chunk's output)
ROW_CHUNK_ENTRIES = 1 << 22


def cubic_kernel(s: torch.Tensor, a: float = KEYS_A) -> torch.Tensor:
    """Keys' cubic convolution kernel u(s) (any shape)."""
    s = s.abs()
    near = ((a + 2) * s - (a + 3)) * s * s + 1
    far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return torch.where(s <= 1, near, torch.where(s < 2, far, torch.zeros_like(s)))


def stencil_offsets(grid_shape: tuple, device=None) -> torch.Tensor:
    """The flat offsets (4^d,) of a stencil's grid points from its corner, row-major."""
    out = torch.zeros(1, dtype=torch.long, device=device)
    stride = 1
    for g in reversed(grid_shape):
        out = (torch.arange(4, device=device).unsqueeze(-1) * stride + out).flatten()
        stride *= g
    return out


def cubic_weights(x: torch.Tensor, start, spacing, grid_shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(corner (*batch, n) long, weights (*batch, n, 4^d)) of points x (*batch, n, d) on the
    grid u_j = start[k] + j spacing[k] (j < grid_shape[k]) of each dimension k.

    start, spacing: sequences of d floats. Raises ValueError naming the dimension, the number of
    points and their range when points lie outside [u_1, u_{g-2}] (beyond STENCIL_SLACK)."""
    d = x.shape[-1]
    if d != len(grid_shape):
        raise ValueError(f"x: expected {len(grid_shape)} columns (one per grid dimension), got {d}")
    corner = None
    weights = None
    stride = math.prod(grid_shape)
    for k, g in enumerate(grid_shape):
        stride //= g
        t = (x[..., k].detach().to(torch.float64) - float(start[k])) / float(spacing[k])
        low, high = 1 - STENCIL_SLACK, g - 2 + STENCIL_SLACK
        bad = ~((t >= low) & (t <= high))  # NaN counts as outside
        if bool(bad.any()):
            inner = (float(start[k]) + float(spacing[k]), float(start[k]) + (g - 2) * float(spacing[k]))
            values = x[..., k].detach()[bad]
            raise ValueError(
                f"x: {int(bad.sum())} of {t.numel()} points lie outside the interpolation grid in dimension "
                f"{k} (they reach [{float(values.min()):.6g}, {float(values.max()):.6g}]; the grid's "
                f"stencils cover [{inner[0]:.6g}, {inner[1]:.6g}]). The grid is fixed once set: pass "
                f"grid_bounds covering every input (training and test) to Interpolated(...)")
        j0 = t.floor().clamp(1, g - 3)
        frac = (t - j0).unsqueeze(-1)  # in [0, 1] up to the slack
        dist = frac - torch.tensor([-1.0, 0.0, 1.0, 2.0], dtype=torch.float64, device=x.device)
        w = cubic_kernel(dist).to(x.dtype)  # (*batch, n, 4)
        c = (j0.long() - 1) * stride
        corner = c if corner is None else corner + c
        weights = w if weights is None else (weights.unsqueeze(-1) * w.unsqueeze(-2)).flatten(-2)
    return corner, weights


class Interpolation(Operator):
    """W (*batch, n, G): row i holds ``weights[i]`` at the grid points corner[i] + offsets.

    Args:
        corner: (*batch, n) long, each point's stencil corner (flat grid index).
        weights: (*batch, n, s) its weights (s = 4^d for cubic interpolation).
        offsets: (s,) long, the stencil's flat offsets from its corner.
        size: G, the number of grid points.

    Products W v and W^T u (``t_matmul``): for an unbatched W by sparse CSR products (W and W^T
    stored as CSR matrices on first use: 2 n s indices and values, no temporaries beyond the
    result; 4-6x faster than gathers on a CPU at n = 1M); for a batched W by gathers and
    index_add over rows in chunks of at most ROW_CHUNK_ENTRIES (chunk x s x t) temporary entries.
    W carries no gradient.
    """

    def __init__(self, corner: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor, size: int):
        if corner.dtype != torch.long or weights.shape[:-1] != corner.shape or offsets.dim() != 1 \
                or weights.shape[-1] != offsets.shape[0]:
            raise ValueError(f"corner, weights, offsets: expected (*batch, n) long, (*batch, n, s) and (s,) "
                             f"long, got {tuple(corner.shape)} {corner.dtype}, {tuple(weights.shape)}, "
                             f"{tuple(offsets.shape)}")
        self.corner, self.weights, self.offsets = corner, weights.detach(), offsets
        self.size = int(size)
        self.shape = torch.Size((*corner.shape, self.size))
        self.dtype, self.device = weights.dtype, weights.device
        self._csr = self._csr_t = None  # W and W^T as sparse CSR matrices (unbatched W), on first use

    @classmethod
    def cubic(cls, x: torch.Tensor, start, spacing, grid_shape: tuple) -> "Interpolation":
        """W of points x (*batch, n, d) on a regular grid (see ``cubic_weights``)."""
        corner, weights = cubic_weights(x, start, spacing, grid_shape)
        return cls(corner, weights, stencil_offsets(grid_shape, x.device), math.prod(grid_shape))

    def index(self, rows: slice = slice(None)) -> torch.Tensor:
        """The flat grid indices (*batch, c, s) of the stencils of ``rows``."""
        return self.corner[..., rows].unsqueeze(-1) + self.offsets

    def _chunk(self, t: int) -> int:
        return max(1, ROW_CHUNK_ENTRIES // (self.offsets.shape[0] * max(1, t)))

    # ----- sparse CSR products (unbatched W) -----------------------------------------------
    def _sparse(self, transpose: bool) -> torch.Tensor:
        """W (n x G) or W^T (G x n) as a sparse CSR matrix, built once."""
        with warnings.catch_warnings():  # torch: "sparse CSR support is in beta", "invariant checks disabled"
            warnings.simplefilter("ignore", UserWarning)
            return self._build_sparse(transpose)

    def _build_sparse(self, transpose: bool) -> torch.Tensor:
        n, s = self.n_rows, self.offsets.shape[0]
        if self._csr is None:
            rows = torch.arange(0, n * s + 1, s, device=self.device)
            self._csr = torch.sparse_csr_tensor(rows, self.index().reshape(-1), self.weights.reshape(-1),
                                                (n, self.size))
        if transpose and self._csr_t is None:
            columns = self._csr.col_indices()
            order = torch.argsort(columns, stable=True)  # by grid point, then by data point
            rows = torch.zeros(self.size + 1, dtype=torch.long, device=self.device)
            rows[1:] = torch.bincount(columns, minlength=self.size).cumsum(0)
            self._csr_t = torch.sparse_csr_tensor(rows, order // s, self._csr.values()[order], (self.size, n))
        return self._csr_t if transpose else self._csr

    def _sparse_product(self, rhs: torch.Tensor, transpose: bool) -> torch.Tensor:
        """W rhs or W^T rhs for an unbatched W and rhs (*b, rows, t): the batch joins the columns."""
        matrix = self._sparse(transpose)
        flat = rhs.movedim(-2, 0).reshape(rhs.shape[-2], -1)
        out = (matrix @ flat.to(matrix.dtype)).to(rhs.dtype)
        return out.reshape(matrix.shape[0], *rhs.shape[:-2], rhs.shape[-1]).movedim(0, -2)

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """W rhs: rhs (*b, G, t) -> (*batch, n, t)."""
        if not self.batch_shape:
            return self._sparse_product(rhs, transpose=False)
        batch = broadcast_shapes(self.batch_shape, rhs.shape[:-2])
        n, t = self.n_rows, rhs.shape[-1]
        nbatch = math.prod(batch)
        flat = rhs.expand(*batch, self.size, t).reshape(nbatch * self.size, t)
        base = (torch.arange(nbatch, device=rhs.device) * self.size).reshape(*batch, 1, 1)
        weights = self.weights.expand(*batch, n, self.weights.shape[-1])
        out = rhs.new_empty(*batch, n, t)
        step = self._chunk(t)
        for start in range(0, n, step):
            rows = slice(start, start + step)
            index = (self.index(rows) + base).reshape(-1)
            gathered = flat.index_select(0, index).view(*batch, -1, self.offsets.shape[0], t)
            out[..., rows, :] = (gathered * weights[..., rows, :].unsqueeze(-1)).sum(-2)
        return out

    def t_matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """W^T rhs: rhs (*b, n, t) or (*b, n) -> (*batch, G, t) (or (*batch, G))."""
        vector = rhs.dim() == len(self.batch_shape) + 1 or rhs.dim() == 1
        if vector:
            rhs = rhs.unsqueeze(-1)
        if not self.batch_shape:
            out = self._sparse_product(rhs, transpose=True)
            return out.squeeze(-1) if vector else out
        batch = broadcast_shapes(self.batch_shape, rhs.shape[:-2])
        n, t = self.n_rows, rhs.shape[-1]
        nbatch = math.prod(batch)
        rhs = rhs.expand(*batch, n, t)
        base = (torch.arange(nbatch, device=rhs.device) * self.size).reshape(*batch, 1, 1)
        weights = self.weights.expand(*batch, n, self.weights.shape[-1])
        out = rhs.new_zeros(nbatch * self.size, t)
        step = self._chunk(t)
        for start in range(0, n, step):
            rows = slice(start, start + step)
            index = (self.index(rows) + base).reshape(-1)
            spread = weights[..., rows, :].unsqueeze(-1) * rhs[..., rows, :].unsqueeze(-2)
            out.index_add_(0, index, spread.reshape(-1, t))
        out = out.view(*batch, self.size, t)
        return out.squeeze(-1) if vector else out

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows of W as dense (*batch, k, G) (index (k,) or (*batch, k))."""
        batch = broadcast_shapes(self.batch_shape, index.shape[:-1])
        k = index.shape[-1]
        corner = self.corner.expand(*batch, self.n_rows).gather(-1, index.expand(*batch, k))
        weights = self.weights.expand(*batch, self.n_rows, self.weights.shape[-1]).gather(
            -2, index.expand(*batch, k).unsqueeze(-1).expand(*batch, k, self.weights.shape[-1]))
        out = weights.new_zeros(*batch, k, self.size)
        return out.scatter_add_(-1, corner.unsqueeze(-1) + self.offsets, weights)

    def to_dense(self) -> torch.Tensor:
        return self.rows(torch.arange(self.n_rows, device=self.device))
