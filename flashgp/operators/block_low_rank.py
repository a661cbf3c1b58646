# P = L L^T + B with B block diagonal over spatial blocks of points: the pivoted-Cholesky
# preconditioner with the short-range part of K that L misses. Woodbury solves, exact log det.
from __future__ import annotations

import torch
from torch import Tensor

from ..preconditioners.base import Preconditioner
from .base import Operator
from .low_rank import LowRankPlusDiag

# blocks of the whitener converted to float64 at a time (bounds the temporaries of a solve:
# this many b x b float64 matrices, 256 MB at b = 256)
WHITEN_CHUNK_ENTRIES = 1 << 25
# whiteners stored below float64 are kept as one float64 copy too while it takes at most this many
# bytes (n b doubles: n <= 262,144 at b = 256), so a CG iteration's solve converts nothing
WHITENER_CACHE_BYTES = 1 << 29


class LowRankPlusBlockDiag(Operator, Preconditioner):
    """A = L L^T + B, B = blockdiag(B_1, ..., B_m) over blocks of points, stored as the lower
    triangular whiteners W_j = chol(B_j)^{-1} and the whitened factor M = W L.

    A = W^{-1} (I + M M^T) W^{-T}, so A^{-1} v = W^T (I + M M^T)^{-1} W v (a Woodbury solve on
    an identity base), log det A = log det(I + M^T M) - 2 sum log diag W, and W^{-1} (e1 + M e2)
    with e1, e2 standard normal is a draw from N(0, A). The matrix A is defined by the stored W
    and M themselves, so these three stay consistent whatever their rounding.

    Args:
        index: ``(*batch, m, b)`` long, the points of each block; entries equal to n (the number of
            points) are padding, which must only fill the end of the last block.
        whitener: ``(*batch, m, b, b)`` lower triangular with a positive diagonal; identity rows and
            columns at padding.
        whitened_factor: ``(*batch, m * b, k)``, rows in block order, zero at padding.
        n: the number of points.
        build_info: how the blocks were factored (``block_preconditioner``'s info), kept as
            ``self.build_info``.
    """

    # K_hat - P = (K_hat - L L^T) minus its diagonal blocks: indefinite, so no known lower
    # bound of the spectrum of P^{-1} K_hat (see LowRankPlusDiag.spectrum_floor)
    spectrum_floor = None
    kind = "low_rank_blocks"

    def __init__(self, index: Tensor, whitener: Tensor, whitened_factor: Tensor, n: int,
                 build_info: dict | None = None):
        m, b = index.shape[-2:]
        if whitener.shape[-3:] != (m, b, b) or whitened_factor.shape[-2] != m * b:
            raise ValueError(f"whitener / whitened_factor: expected (*batch, {m}, {b}, {b}) and "
                             f"(*batch, {m * b}, k), got {tuple(whitener.shape)} and "
                             f"{tuple(whitened_factor.shape)}")
        batch = whitened_factor.shape[:-2]
        self.index, self.whitener = index.expand(*batch, m, b), whitener
        self.inner = LowRankPlusDiag(whitened_factor, torch.ones(
            m * b, dtype=whitened_factor.dtype, device=whitened_factor.device))
        self.shape = torch.Size((*batch, n, n))
        self.dtype, self.device = whitened_factor.dtype, whitened_factor.device
        self.build_info: dict = {} if build_info is None else build_info
        small = 8 * whitener.numel() <= WHITENER_CACHE_BYTES
        self._whitener64 = whitener.double() if small else None  # whitener itself if float64

    @property
    def rank(self) -> int:
        """k, the number of columns of the low-rank factor."""
        return self.inner.rank

    @property
    def block_size(self) -> int:
        return self.index.shape[-1]

    # ----- block order -------------------------------------------------------------
    def _to_blocks(self, v: Tensor) -> Tensor:
        """v ``(*batch, n, t)`` -> ``(*batch, m, b, t)`` in block order, zero at padding."""
        padded = torch.cat([v, v.new_zeros(*v.shape[:-2], 1, v.shape[-1])], -2)
        flat = self.index.flatten(-2)
        padded = padded.expand(*flat.shape[:-1], *padded.shape[-2:])
        out = padded.gather(-2, flat.unsqueeze(-1).expand(*flat.shape, v.shape[-1]))
        return out.unflatten(-2, self.index.shape[-2:])

    def _from_blocks(self, u: Tensor) -> Tensor:
        """u ``(*batch, m, b, t)`` in block order -> ``(*batch, n, t)``; padding dropped."""
        flat = self.index.flatten(-2)
        out = u.new_zeros(*flat.shape[:-1], self.n_rows + 1, u.shape[-1])
        out.scatter_(-2, flat.unsqueeze(-1).expand(*flat.shape, u.shape[-1]), u.flatten(-3, -2))
        return out[..., :-1, :]

    def _chunks(self) -> list[slice]:
        m, b = self.index.shape[-2:]
        step = max(1, WHITEN_CHUNK_ENTRIES // (b * b))
        return [slice(start, start + step) for start in range(0, m, step)]

    def _whitener_blocks(self, blocks: slice) -> Tensor:
        """W_j for the blocks j in ``blocks``, float64."""
        if self._whitener64 is not None:
            return self._whitener64[..., blocks, :, :]
        return self.whitener[..., blocks, :, :].double()

    def _whiten(self, u: Tensor, transpose: bool = False) -> Tensor:
        """W u (or W^T u) for u ``(*batch, m, b, t)`` float64, in chunks of blocks."""
        parts = []
        for blocks in self._chunks():
            w = self._whitener_blocks(blocks)
            parts.append((w.transpose(-1, -2) if transpose else w) @ u[..., blocks, :, :])
        return torch.cat(parts, -3)

    def _unwhiten(self, u: Tensor, transpose: bool = False) -> Tensor:
        """W^{-1} u (or W^{-T} u) for u ``(*batch, m, b, t)`` float64 (triangular solves)."""
        parts = []
        for blocks in self._chunks():
            w = self._whitener_blocks(blocks)
            w = w.transpose(-1, -2) if transpose else w
            parts.append(torch.linalg.solve_triangular(w, u[..., blocks, :, :], upper=transpose))
        return torch.cat(parts, -3)

    # ----- the operator ------------------------------------------------------------
    def _matmul(self, rhs: Tensor) -> Tensor:
        """A rhs = W^{-1} (I + M M^T) W^{-T} rhs, rhs ``(*batch, n, t)`` (float64 inside)."""
        u = self._unwhiten(self._to_blocks(rhs.double()), transpose=True)
        flat = u.flatten(-3, -2)
        m = self.inner.factor.double()
        flat = flat + m @ (m.transpose(-1, -2) @ flat)
        return self._from_blocks(self._unwhiten(flat.unflatten(-2, u.shape[-3:-1]))).to(rhs.dtype)

    def solve(self, rhs: Tensor) -> Tensor:
        """A^{-1} rhs for rhs ``(*batch, n, t)`` -> ``(*batch, n, t)``, computed in float64."""
        if not isinstance(rhs, Tensor) or rhs.dim() < 2 or rhs.shape[-2] != self.n_rows:
            shape = tuple(rhs.shape) if isinstance(rhs, Tensor) else type(rhs).__name__
            raise ValueError(f"rhs: expected shape (*batch, {self.n_rows}, t), got {shape}")
        u = self._whiten(self._to_blocks(rhs.double()))
        inner = self.inner.solve(u.flatten(-3, -2)).unflatten(-2, u.shape[-3:-1])
        return self._from_blocks(self._whiten(inner, transpose=True)).to(rhs.dtype)

    def logdet(self) -> Tensor:
        """log det A = log det(I + M^T M) - 2 sum log diag W, shape ``(*batch,)``."""
        whitener = -2.0 * self.whitener.diagonal(dim1=-2, dim2=-1).double().log().sum((-1, -2))
        return (self.inner.logdet().double() + whitener).to(self.dtype)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws z ~ N(0, A) as W^{-1} (e1 + M e2), shape ``(*batch, n, num_samples)``."""
        e = self.inner.sample(num_samples, generator=generator).double()  # ~ N(0, I + M M^T)
        return self._from_blocks(self._unwhiten(e.unflatten(-2, self.index.shape[-2:]))).to(self.dtype)

    def diagonal(self) -> Tensor:
        """``(*batch, n)``: the diagonal of W^{-1} W^{-T} plus the squared row norms of W^{-1} M."""
        eye = torch.eye(self.block_size, dtype=torch.float64, device=self.device)
        inv = self._unwhiten(eye.expand(*self.whitener.shape))  # W^{-1} blocks
        low = self._unwhiten(self.inner.factor.double().unflatten(-2, self.index.shape[-2:]))
        diag = inv.square().sum(-1) + low.square().sum(-1)  # (*batch, m, b)
        return self._from_blocks(diag.unsqueeze(-1)).squeeze(-1).to(self.dtype)
