# Symmetric (multi-level) Toeplitz matrices from their first column: products by circulant
# embedding and real FFTs, entries by index differences. The matrix itself is never formed.
"""A symmetric Toeplitz matrix T (g x g) has T[i, j] = c[|i - j|]: its first column c says it all.
A k-level one (block Toeplitz with Toeplitz blocks, ... ) lives on a regular grid of shape
(g_1, ..., g_k), flattened row-major (the first axis slowest), and has
T[i, j] = c[|i_1 - j_1|, ..., |i_k - j_k|] for the grid positions of i and j: it is the kernel
matrix of any stationary kernel that is even in each coordinate (RBF, Matern, RQ, Periodic, with
or without ARD) on a regular grid, c the kernel at the grid's offsets from its first point.

Products: T is the leading block of a circulant matrix of size L_1 x ... x L_k (L >= 2 g - 2
per level, rounded up to a size with only factors 2, 3 and 5), which the k-dimensional real FFT
diagonalizes: T v = crop(irfftn(rfftn(e) * rfftn(pad(v)))), e the embedded column. The
embedding is even in every coordinate, so its spectrum is real. Cost per column: a few FFTs of
L_1 ... L_k (about 2^k G) numbers, G = g_1 ... g_k; memory of a product: its columns in chunks of
at most ``FFT_CHUNK_ENTRIES`` spectrum entries.
"""
from __future__ import annotations

import math

import torch

from .base import Operator

# entries (complex numbers) of the spectra a product holds at a time: the right-hand side's
# columns are taken in chunks of at most this many over their embedded size (one column at least)
FFT_CHUNK_ENTRIES = 1 << 23


def fast_size(n: int) -> int:
    """The smallest integer >= n (and >= 1) with no prime factor above 5 (sizes torch's FFT does fast)."""
    n = max(1, int(n))
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def embedding_size(g: int) -> int:
    """The circulant size of one level of g points: a fast size >= 2 g - 2 (1 for g = 1)."""
    return fast_size(max(1, 2 * g - 2))


def embed(column: torch.Tensor, levels: int, sizes: tuple) -> torch.Tensor:
    """The first column of the circulant embedding, ``(*batch, L_1, ..., L_k)`` from the Toeplitz
    generator ``column`` ``(*batch, g_1, ..., g_k)``: per level [c_0 .. c_{g-1}, zeros, c_{g-1} .. c_1]
    (the last run shortened to fit when L = 2 g - 2). Differentiable in ``column``."""
    out = column
    for level, size in enumerate(sizes):
        axis = out.dim() - levels + level
        g = out.shape[axis]
        tail = min(g - 1, size - g)
        parts = [out]
        if size - g - tail > 0:
            shape = list(out.shape)
            shape[axis] = size - g - tail
            parts.append(out.new_zeros(shape))
        if tail > 0:
            parts.append(out.narrow(axis, 1, tail).flip(axis))
        out = torch.cat(parts, axis) if len(parts) > 1 else out
    return out


class Toeplitz(Operator):
    """The symmetric k-level Toeplitz matrix T ``(*batch, G, G)``, G = g_1 ... g_k, of ``column``.

    Args:
        column: ``(*batch, g_1, ..., g_k)``, the generator: T[i, j] = column[..., |i_1 - j_1|, ...,
            |i_k - j_k|] for the grid positions (i_1 .. i_k), (j_1 .. j_k) of the flat indices i,
            j (row-major, the first axis slowest). May require grad: ``grad_inputs()`` is
            (column,) then, and ``bilinear_grad`` differentiates through the FFT product.
        levels: k (default 1: an ordinary symmetric Toeplitz matrix of a ``(*batch, g)`` column).

    T is symmetric by construction; it is positive semi-definite when the column is that of a
    positive-definite stationary kernel on a regular grid.
    """

    shift_invariant = True  # T[p + o, p + o'] depends on o - o' only (InterpolatedOperator.diagonal)

    def __init__(self, column: torch.Tensor, levels: int = 1):
        if not isinstance(column, torch.Tensor) or not column.is_floating_point():
            raise TypeError(f"column: expected a floating point tensor, got {type(column).__name__}")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels: expected an int >= 1, got {levels!r}")
        if column.dim() < levels or any(g < 1 for g in column.shape[column.dim() - levels:]):
            raise ValueError(f"column: expected shape (*batch, g_1, ..., g_{levels}) with sizes >= 1, "
                             f"got {tuple(column.shape)}")
        self.column, self.levels = column, levels
        self.grid_shape = tuple(column.shape[column.dim() - levels:])
        self.size = math.prod(self.grid_shape)
        self.shape = torch.Size((*column.shape[:column.dim() - levels], self.size, self.size))
        self.dtype, self.device = column.dtype, column.device
        self.sizes = tuple(embedding_size(g) for g in self.grid_shape)
        self._spectrum = None  # real spectrum of the detached embedding, on first use
        strides = [1] * levels
        for k in range(levels - 2, -1, -1):
            strides[k] = strides[k + 1] * self.grid_shape[k + 1]
        self.strides = tuple(strides)

    # ----- products --------------------------------------------------------------------
    def spectrum(self, column: torch.Tensor | None = None) -> torch.Tensor:
        """The (real) FFT of the circulant embedding, ``(*batch, L_1, ..., L_{k-1}, L_k // 2 + 1)``.
        Of the detached column (cached) unless ``column`` is given (then differentiable)."""
        if column is None:
            if self._spectrum is None:
                self._spectrum = self.spectrum(self.column.detach())
            return self._spectrum
        dims = tuple(range(-self.levels, 0))
        return torch.fft.rfftn(embed(column, self.levels, self.sizes), s=self.sizes, dim=dims).real

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """T rhs, differentiable in the column when it requires grad and grad mode is on (the
        solvers run without grad: they use the cached spectrum of the detached column)."""
        differentiable = self.column.requires_grad and torch.is_grad_enabled()
        return self._product(self.spectrum(self.column if differentiable else None), rhs)

    def _product(self, spectrum: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """T rhs for rhs ``(*b, G, t)`` with T given by its ``spectrum``; the columns in chunks."""
        k, t = self.levels, rhs.shape[-1]
        batch = torch.broadcast_shapes(spectrum.shape[:spectrum.dim() - k], rhs.shape[:-2])
        dims = tuple(range(-k, 0))
        spec = spectrum.unsqueeze(-k - 1)  # (*batch, 1, L...) against (*b, t, L...)
        chunk = max(1, FFT_CHUNK_ENTRIES // max(1, spectrum.shape[-k:].numel()))
        outs = []
        for start in range(0, t, chunk):
            part = rhs[..., start:start + chunk]
            x = part.transpose(-1, -2).reshape(*part.shape[:-2], part.shape[-1], *self.grid_shape)
            y = torch.fft.irfftn(torch.fft.rfftn(x, s=self.sizes, dim=dims) * spec, s=self.sizes, dim=dims)
            for level, g in enumerate(self.grid_shape):
                y = y.narrow(y.dim() - k + level, 0, g)
            outs.append(y.reshape(*y.shape[:y.dim() - k], self.size).transpose(-1, -2))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
        return out.expand(*batch, *out.shape[-2:]) if out.shape[:-2] != batch else out

    # ----- entries ---------------------------------------------------------------------
    def _offset_index(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The flat generator index of entry (i, j) for broadcastable long tensors i, j."""
        out = None
        for g, stride in zip(self.grid_shape, self.strides):
            diff = ((i // stride) % g - (j // stride) % g).abs() * stride
            out = diff if out is None else out + diff
        return out

    def entries(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """T[i, j] for long tensors i, j broadcastable to a shape S: ``(*batch, *S)`` (differentiable
        in the column, as any indexing is)."""
        flat = self.column.reshape(*self.batch_shape, self.size)
        return flat[..., self._offset_index(i, j)]

    def diagonal(self) -> torch.Tensor:
        first = self.column.detach().reshape(*self.batch_shape, self.size)[..., :1]
        return first.expand(*self.batch_shape, self.size)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """index (k,) or ``(*batch, k)`` long -> ``(*batch, k, G)``."""
        cols = torch.arange(self.size, device=index.device)
        offsets = self._offset_index(index.unsqueeze(-1), cols)  # (*bi, k, G)
        flat = self.column.detach().reshape(*self.batch_shape, 1, self.size)
        batch = torch.broadcast_shapes(self.batch_shape, index.shape[:-1])
        shape = (*batch, index.shape[-1], self.size)
        return flat.expand(shape).gather(-1, offsets.expand(shape))

    def to_dense(self) -> torch.Tensor:
        idx = torch.arange(self.size, device=self.device)
        return self.entries(idx.unsqueeze(-1), idx)

    # ----- gradients -------------------------------------------------------------------
    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.column,) if self.column.requires_grad else ()

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        """d/d column of sum_i left_i^T T right_i, by autograd through the FFT product (left
        ``(*b, G, t)``, right ``(*b, G, t)``; batch dimensions beyond the column's are summed)."""
        if not self.column.requires_grad:
            return ()
        with torch.enable_grad():
            column = self.column.detach().requires_grad_()
            value = (left.detach() * self._product(self.spectrum(column), right.detach())).sum()
            return torch.autograd.grad(value, column)
