# A sparse inverse Cholesky factor U (K_hat^{-1} ~ U^T U, one short row per point), applied by
# gathers and scatters: the Vecchia preconditioner's form (built in linalg.vecchia).
"""U ``(*batch, n, n)`` stored by rows: row i has weights w_i (s,) at the points index_i (s,).

U is triangular in some order of the points (each row's points other than i come before i in
it), with a positive entry at i, so U is invertible and P = (U^T U)^{-1} is SPD with

    P^{-1} r = U^T (U r)               (gathers, then scatters: O(n s t) for t columns)
    log det P = -2 sum_i log U_ii

and no triangular solve is ever needed: CG runs on the whitened operator U K_hat U^T with
N(0, I) probes (``linalg.inv_quad_logdet``), which is preconditioned CG with N(0, P) probes
in another basis. Index entries equal to n are padding (weight 0).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..preconditioners.base import Preconditioner

# gathered (point, neighbour, column) entries per chunk of rows of U r and U^T r (float32: 256 MB)
APPLY_CHUNK_ENTRIES = 1 << 26


class SparseInverseCholesky(Preconditioner):
    """P^{-1} = U^T U for a row-sparse U; see the module docstring.

    Args:
        index: ``(*batch, n, s)`` long, the points of each row (the row's own point last); n pads.
        weights: ``(*batch, n, s)`` the entries of U there (0 at padding; the last one U_ii > 0).
        build_info: what the build reports (jittered_blocks, max_jitter, diagonal_blocks, and
            neighbors: the predecessors per point, s - 1).

    A ``Preconditioner`` with ``split`` True (CG runs on U K_hat U^T), ``rank`` 0 (no low-rank
    part), ``block_size`` 0 and ``spectrum_floor`` None (unknown, see ``LowRankPlusDiag``).
    Its ``sample`` draws U^{-1} e, e ~ N(0, I), by a dense solve (tests and small n only: CG
    with a split preconditioner needs only ``mul`` and ``mul_t``).
    """

    split = True
    rank = 0
    block_size = 0
    spectrum_floor = None  # no known lower bound of the spectrum of P^{-1} K_hat
    kind = "sparse_inverse"

    def __init__(self, index: Tensor, weights: Tensor, build_info: dict | None = None):
        if index.shape != weights.shape or index.dim() < 2:
            raise ValueError(f"index, weights: expected equal shapes (*batch, n, s), got "
                             f"{tuple(index.shape)} and {tuple(weights.shape)}")
        self.index, self.weights = index, weights
        self.n = index.shape[-2]
        self.safe_index = index.clamp_max(self.n - 1)
        self.build_info = {} if build_info is None else build_info
        self.dtype, self.device = weights.dtype, weights.device
        self.shape = torch.Size((*index.shape[:-2], self.n, self.n))

    def _chunks(self, t: int) -> list[slice]:
        step = max(1, APPLY_CHUNK_ENTRIES // (self.index.shape[-1] * max(t, 1)))
        return [slice(start, start + step) for start in range(0, self.n, step)]

    def _check(self, rhs: Tensor) -> None:
        if not isinstance(rhs, Tensor) or rhs.dim() < 2 or rhs.shape[-2] != self.n:
            shape = tuple(rhs.shape) if isinstance(rhs, Tensor) else type(rhs).__name__
            raise ValueError(f"rhs: expected shape (*batch, {self.n}, t), got {shape}")

    def _row_chunks(self, rhs: Tensor):
        """rhs broadcast to the common batch shape, and per chunk of rows of U: (rows, the
        flat gather/scatter index ``(*batch, c s, t)``, the weights ``(*batch, c, s, 1)`` in rhs's dtype)."""
        self._check(rhs)
        batch = torch.broadcast_shapes(rhs.shape[:-2], self.index.shape[:-2])
        rhs = rhs.expand(*batch, *rhs.shape[-2:])
        t, s = rhs.shape[-1], self.index.shape[-1]
        chunks = []
        for rows in self._chunks(t):
            idx = self.safe_index[..., rows, :].expand(*batch, -1, s).flatten(-2)
            w = self.weights[..., rows, :].to(rhs.dtype).unsqueeze(-1)
            chunks.append((rows, idx.unsqueeze(-1).expand(*batch, idx.shape[-1], t), w))
        return rhs, chunks

    def mul(self, rhs: Tensor) -> Tensor:
        """U rhs: rhs ``(*batch, n, t)`` -> ``(*batch, n, t)``, out_i = sum_j w_ij rhs[index_ij]."""
        rhs, chunks = self._row_chunks(rhs)
        out = torch.empty_like(rhs)
        for rows, idx, w in chunks:
            out[..., rows, :] = (rhs.gather(-2, idx).unflatten(-2, w.shape[-3:-1]) * w).sum(-2)
        return out

    def mul_t(self, rhs: Tensor) -> Tensor:
        """U^T rhs: rhs ``(*batch, n, t)`` -> ``(*batch, n, t)``, scattering w_ij rhs_i to index_ij."""
        rhs, chunks = self._row_chunks(rhs)
        out = torch.zeros_like(rhs)
        for rows, idx, w in chunks:
            out.scatter_add_(-2, idx, (w * rhs[..., rows, :].unsqueeze(-2)).flatten(-3, -2))
        return out

    def solve(self, rhs: Tensor) -> Tensor:
        """P^{-1} rhs = U^T (U rhs), rhs ``(*batch, n, t)`` -> ``(*batch, n, t)``."""
        return self.mul_t(self.mul(rhs))

    def logdet(self) -> Tensor:
        """log det P = -2 sum_i log U_ii ``(*batch,)``, in float64 from the stored entries."""
        return -2.0 * self.weights[..., -1].double().log().sum(-1)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws z = U^{-1} e ~ N(0, P), e ~ N(0, I), shape ``(*batch, n, num_samples)`` (a dense
        solve: small n only)."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")
        e = torch.randn(*self.shape[:-1], num_samples, dtype=self.dtype, device=self.device,
                        generator=generator)
        dense = self.to_dense().double()
        return torch.linalg.solve(dense, e.double()).to(self.dtype)

    def to_dense(self) -> Tensor:
        """U as a dense ``(*batch, n, n)`` matrix (tests and small problems)."""
        dense = torch.zeros(*self.index.shape[:-1], self.n + 1, dtype=self.dtype, device=self.device)
        dense.scatter_add_(-1, self.index, self.weights)
        return dense[..., :self.n]
