# Low-rank operators: scale * W W^T, and L L^T + diag(d) with Woodbury solves and exact log det.
# LowRankPlusDiag is the pivoted-Cholesky preconditioner; LowRank serves covariance downdates.
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import NotPSDError
from ..preconditioners.base import Preconditioner
from ..shapes import broadcast_shapes
from .base import Operator

# rows of L per float64 block of LowRankPlusDiag's capacitance matrix L^T D^-1 L and solves
ROW_CHUNK = 1 << 17
# LowRankPlusDiag keeps D^-1 L and D^-1 L C^-1 in float64 (2 n k doubles) for its solves while
# they take at most this many bytes: a solve is then six tensor operations, where the blocked
# form (no such copies, for n = 1M and rank 800: 13 GB) takes about twice as many. CG solves with
# the preconditioner once per iteration, and at moderate n on a GPU the host's per-operation
# cost, not the arithmetic, sets the pace of an iteration.
SOLVE_CACHE_BYTES = 1 << 29


def _expand_index(index: Tensor, batch_shape: torch.Size) -> Tensor:
    """index (k,) or ``(*batch, k)`` long -> ``(*batch, k)``."""
    if not isinstance(index, Tensor) or index.dtype != torch.long:
        raise TypeError("index: expected a torch.long tensor")
    return index.expand(*batch_shape, index.shape[-1])


def _gather_rows(factor: Tensor, index: Tensor) -> Tensor:
    """Rows of factor ``(*batch, n, k)`` at index ``(*batch, m)`` -> ``(*batch, m, k)``."""
    return factor.gather(-2, index.unsqueeze(-1).expand(*index.shape, factor.shape[-1]))


def _check_factor(factor: Tensor, name: str) -> None:
    """A factor must be a tensor of shape ``(*batch, n, k)``."""
    if not isinstance(factor, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(factor).__name__}")
    if factor.dim() < 2:
        raise ValueError(f"{name}: expected shape (*batch, n, k), got {tuple(factor.shape)}")


class LowRank(Operator):
    """A = scale * W W^T with W ``(*batch, n, k)`` and a python float scale (e.g. -1 for a downdate)."""

    def __init__(self, factor: Tensor, scale: float = 1.0):
        _check_factor(factor, "factor")
        if not isinstance(scale, (int, float)):
            raise TypeError(f"scale: expected a python float, got {type(scale).__name__}")
        self.factor = factor
        self.scale = float(scale)
        n = factor.shape[-2]
        self.shape = torch.Size((*factor.shape[:-2], n, n))
        self.dtype = factor.dtype
        self.device = factor.device

    def _matmul(self, rhs: Tensor) -> Tensor:
        """A rhs for rhs ``(*batch, n, t)`` -> ``(*batch, n, t)``."""
        return self.scale * (self.factor @ (self.factor.transpose(-1, -2) @ rhs))

    def diagonal(self) -> Tensor:
        """``(*batch, n)``."""
        return self.scale * self.factor.square().sum(-1)

    def rows(self, index: Tensor) -> Tensor:
        """index (k,) or ``(*batch, k)`` -> ``(*batch, k, n)``."""
        index = _expand_index(index, self.batch_shape)
        return self.scale * (_gather_rows(self.factor, index) @ self.factor.transpose(-1, -2))


class LowRankPlusDiag(Operator, Preconditioner):
    """A = L L^T + diag(d) with L ``(*batch, n, k)`` and d ``(*batch, n)`` positive.

    A ``Preconditioner`` too (of the pivoted-Cholesky, randomly pivoted Cholesky and Nystrom
    kinds): solve, exact log det, exact N(0, A) samples.

    Solves use the Woodbury identity through a k x k Cholesky of C = I + L^T D^{-1} L
    (computed once, on first use); log det is exact.

    ``spectrum_floor``: as a preconditioner of some K_hat, a known mu <= lambda_min(P^{-1} K_hat)
    or None (unknown); the builder that knows K_hat - P sets it (``pivoted_cholesky_preconditioner``:
    1). Certified CG variances (``linalg.quad_form``) need it.
    """

    kind = "low_rank"

    def __init__(self, factor: Tensor, diag: Tensor, spectrum_floor: float | None = None):
        _check_factor(factor, "factor")
        if not isinstance(diag, Tensor):
            raise TypeError(f"diag: expected a torch.Tensor, got {type(diag).__name__}")
        if diag.shape[-1:] != factor.shape[-2:-1]:
            raise ValueError(f"diag: expected shape (*batch, {factor.shape[-2]}), got {tuple(diag.shape)}")
        if not bool((diag > 0).all()):
            raise ValueError(f"diag: expected positive entries, min is {float(diag.min()):.3g}")
        batch = broadcast_shapes(factor.shape[:-2], diag.shape[:-1])
        self.factor = factor.expand(*batch, *factor.shape[-2:])
        self.diag = diag.expand(*batch, diag.shape[-1])
        n = factor.shape[-2]
        self.shape = torch.Size((*batch, n, n))
        self.dtype = factor.dtype
        self.device = factor.device
        self.spectrum_floor = spectrum_floor
        self._chol: Tensor | None = None
        self._solve: tuple[Tensor, Tensor] | None = None
        self._woodbury: tuple[Tensor, Tensor] | None = None  # (D^-1 L, D^-1 L C^-1), float64

    @property
    def rank(self) -> int:
        """k, the number of columns of the factor."""
        return self.factor.shape[-1]

    def _matmul(self, rhs: Tensor) -> Tensor:
        """A rhs for rhs ``(*batch, n, t)`` -> ``(*batch, n, t)``."""
        return self.factor @ (self.factor.transpose(-1, -2) @ rhs) + self.diag.unsqueeze(-1) * rhs

    def diagonal(self) -> Tensor:
        """``(*batch, n)``."""
        return self.diag + self.factor.square().sum(-1)

    def rows(self, index: Tensor) -> Tensor:
        """index (k,) or ``(*batch, k)`` -> ``(*batch, k, n)``."""
        index = _expand_index(index, self.batch_shape)
        out = _gather_rows(self.factor, index) @ self.factor.transpose(-1, -2)
        return out.scatter_add(-1, index.unsqueeze(-1), self.diag.gather(-1, index).unsqueeze(-1))

    def _capacitance_cholesky(self) -> Tensor:
        """Lower Cholesky factor of C = I_k + L^T D^{-1} L, shape ``(*batch, k, k)``, in float64:
        C's condition number grows like n * outputscale / noise and passes 1 / eps(float32)
        for large n and small noise."""
        if self._chol is None:
            gram = torch.zeros(*self.batch_shape, self.rank, self.rank, dtype=torch.float64, device=self.device)
            for rows in self._row_chunks():  # float64 temporaries of one chunk
                scaled = self.factor[..., rows, :].double() / self.diag[..., rows].double().sqrt().unsqueeze(-1)
                gram += scaled.transpose(-1, -2) @ scaled
            gram = torch.eye(self.rank, dtype=torch.float64, device=self.device) + self._sum_rows(gram)
            chol, info = torch.linalg.cholesky_ex(gram)
            if bool((info != 0).any()):  # C >= I in exact arithmetic: only non-finite or overflowing entries fail
                finite = bool(torch.isfinite(gram).all())
                raise NotPSDError(f"preconditioner: I + L^T D^-1 L could not be factored (its entries are "
                                  f"{'finite, up to ' + format(float(gram.abs().max()), '.3g') if finite else 'not finite'}"
                                  "): the noise is too small or the kernel's values too large for float64 at "
                                  "these hyperparameters")
            self._chol = chol
        return self._chol

    def _sum_rows(self, partial: Tensor) -> Tensor:
        """A sum over this operator's rows -> the sum over all of them: itself here (the rows of
        a preconditioner split across processes add the others', ``ShardedLowRankPlusDiag``)."""
        return partial

    def _row_chunks(self) -> list[slice]:
        return [slice(start, start + ROW_CHUNK) for start in range(0, self.n_rows, ROW_CHUNK)]

    def _solve_parts(self) -> tuple[Tensor, Tensor]:
        """(D^-1 ``(*batch, n, 1)``, C^-1 ``(*batch, k, k)``), float64, so that
        A^{-1} rhs = D^-1 rhs - D^-1 L (C^-1 (L^T D^-1 rhs)).

        Float64 whatever the dtype: in the directions of L the two terms cancel down to
        1 / (lambda + d) from 1 / d, so float32 would lose eps32 * (1 + lambda / d) of relative
        accuracy there (5% at n = 50,000, noise 0.0086, seen to make CG stall) and A^{-1} could
        turn indefinite. L itself stays in its dtype: unless D^-1 L and D^-1 L C^-1 fit
        SOLVE_CACHE_BYTES as float64, ``solve`` converts it to float64 in blocks of ROW_CHUNK
        rows, so no n x k float64 matrix is kept (3.2 GB at n = 1M, k = 400; at the cost of
        re-reading L, small next to a kernel product)."""
        if self._solve is None:
            inv_diag = self.diag.double().reciprocal().unsqueeze(-1)
            self._solve = (inv_diag, torch.cholesky_inverse(self._capacitance_cholesky()))
        return self._solve

    def solve(self, rhs: Tensor) -> Tensor:
        """A^{-1} rhs for rhs ``(*batch, n, t)`` -> ``(*batch, n, t)`` (Woodbury, computed in float64)."""
        if not isinstance(rhs, Tensor) or rhs.dim() < 2 or rhs.shape[-2] != self.n_rows:
            shape = tuple(rhs.shape) if isinstance(rhs, Tensor) else type(rhs).__name__
            raise ValueError(f"rhs: expected shape (*batch, {self.n_rows}, t), got {shape}")
        inv_diag, c_inv = self._solve_parts()
        rhs64 = rhs.double()
        scaled = inv_diag * rhs64  # D^-1 rhs
        no_graph = not (self.factor.requires_grad or self.diag.requires_grad)  # cached parts hold none
        if self._woodbury is None and no_graph and 16 * self.factor.numel() <= SOLVE_CACHE_BYTES:
            left = self.factor.double() * inv_diag  # D^-1 L
            self._woodbury = (left, left @ c_inv)
        if self._woodbury is not None:  # D^-1 rhs - (D^-1 L C^-1) ((D^-1 L)^T rhs)
            left, right = self._woodbury
            return (scaled - right @ self._sum_rows(left.transpose(-1, -2) @ rhs64)).to(rhs.dtype)
        chunks = self._row_chunks()
        projected = self._sum_rows(sum(self.factor[..., rows, :].double().transpose(-1, -2) @ scaled[..., rows, :]
                                       for rows in chunks))  # L^T D^-1 rhs (*batch, k, t)
        coef = c_inv @ projected
        return torch.cat([(scaled[..., rows, :] - inv_diag[..., rows, :] * (self.factor[..., rows, :].double() @ coef))
                          .to(rhs.dtype) for rows in chunks], -2)

    def logdet(self) -> Tensor:
        """log det A = sum log d + log det C, shape ``(*batch,)``."""
        chol_diag = self._capacitance_cholesky().diagonal(dim1=-2, dim2=-1)
        return (self._sum_rows(self.diag.double().log().sum(-1)) + 2.0 * chol_diag.log().sum(-1)).to(self.dtype)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws z ~ N(0, A) as L e1 + sqrt(d) e2, shape ``(*batch, n, num_samples)``."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")
        opts = dict(dtype=self.dtype, device=self.device, generator=generator)
        e1 = torch.randn(*self.batch_shape, self.rank, num_samples, **opts)
        total, own = self._drawn_rows()
        e2 = torch.randn(*self.batch_shape, total, num_samples, **opts)[..., own, :]
        return self.factor @ e1 + self.diag.sqrt().unsqueeze(-1) * e2

    def _drawn_rows(self) -> tuple[int, slice]:
        """(rows e2 is drawn for, this operator's rows of them): all n here (a preconditioner
        split across processes draws all rows and keeps its own, so its draws are rows of one
        process's)."""
        return self.n_rows, slice(None)
