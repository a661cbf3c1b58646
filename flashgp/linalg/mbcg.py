# Modified batched preconditioned conjugate gradients (mBCG, Gardner et al. 2018).
# Solves A X = B for many columns at once and returns the Lanczos tridiagonals of chosen columns.
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..errors import NumericalWarning

MatFn = Callable[[Tensor], Tensor]
# Reduces per-process partial sums over rows to the sum over all rows (``flashgp.distributed``:
# an all-reduce); None on a single process, where the partial sums are the sums.
RowSum = Callable[[Tensor], Tensor] | None
# Before min_iters only a freeze of every column can end a run, and the host asks for that every
# this many iterations (each ask waits for the GPU; in between the host queues work ahead). Frozen
# columns take zero steps, so iterations run past a freeze change nothing but the count.
FREEZE_CHECK_EVERY = 8


@dataclass
class CGResult:
    """The outcome of :func:`mbcg`.

    solution: ``(*batch, n, t)`` approximate A^{-1} rhs.
    tridiag: ``(*batch, n_tridiag, k, k)`` Lanczos tridiagonals of the last n_tridiag columns, or None.
    init_norm_sq: ``(*batch, t)`` r0^T P^{-1} r0 = rhs^T P^{-1} rhs (the SLQ weights).
    iterations: number of CG iterations run.
    residual: ``(*batch, t)`` final relative residual norms ||rhs - A x|| / ||rhs|| (recurrence).
    converged: whether the mean relative residual fell below tol.
    breakdowns: columns frozen because rhs^T P^{-1} rhs or p^T A p was not positive (the
        operator or the preconditioner is numerically indefinite, or produced NaN).
    tol, max_iters: the settings the run used (for messages).
    """

    solution: Tensor
    tridiag: Tensor | None
    init_norm_sq: Tensor
    iterations: int
    residual: Tensor
    converged: bool
    breakdowns: int = 0
    tol: float = 0.0
    max_iters: int = 0

    def trouble(self) -> str | None:
        """What went wrong, in words with the numbers (None when the run converged cleanly)."""
        parts = []
        if not self.converged:
            parts.append(f"no convergence: mean relative residual {float(self.residual.mean()):.3g} >= tol "
                         f"{self.tol:.3g} after {self.iterations} iterations (max_iters {self.max_iters})")
        if self.breakdowns:
            parts.append(f"{self.breakdowns} column(s) broke down (rhs^T P^-1 rhs or p^T A p was not positive: "
                         "the operator or the preconditioner is numerically indefinite, or produced NaN)")
        return "; ".join(parts) or None


def _as_function(obj, method: str, name: str) -> MatFn:
    """A callable from ``obj``: itself if callable, else its ``method`` (e.g. an Operator's matmul)."""
    if callable(obj):
        return obj
    if hasattr(obj, method):
        return getattr(obj, method)
    raise TypeError(f"{name}: expected a callable or an object with .{method}, got {type(obj).__name__}")


def _check_args(rhs: Tensor, tol: float, max_iters: int, min_iters: int, n_tridiag: int) -> None:
    """Validate mbcg's arguments, naming the bad one."""
    if not isinstance(rhs, Tensor):
        raise TypeError(f"rhs: expected a torch.Tensor, got {type(rhs).__name__}")
    if rhs.dim() < 2:
        raise ValueError(f"rhs: expected shape (*batch, n, t), got {tuple(rhs.shape)}")
    if tol < 0:
        raise ValueError(f"tol: expected a non-negative number, got {tol}")
    if max_iters < 1:
        raise ValueError(f"max_iters: expected a positive integer, got {max_iters}")
    if min_iters < 0:
        raise ValueError(f"min_iters: expected a non-negative integer, got {min_iters}")
    if not 0 <= n_tridiag <= rhs.shape[-1]:
        raise ValueError(f"n_tridiag: expected 0 <= n_tridiag <= {rhs.shape[-1]} (columns of rhs), got {n_tridiag}")


def _dot(a: Tensor, b: Tensor, row_sum: RowSum = None) -> Tensor:
    """Column-wise inner products: ``(*batch, n, t)`` x ``(*batch, n, t)`` -> ``(*batch, t)``
    (over the rows of every process when ``row_sum`` reduces the partial sums)."""
    out = (a * b).sum(-2)
    return out if row_sum is None else row_sum(out)


def _norm(a: Tensor, row_sum: RowSum = None) -> Tensor:
    """Column norms ``(*batch, n, t)`` -> ``(*batch, t)`` (torch's norm on a single process)."""
    return a.norm(dim=-2) if row_sum is None else row_sum(a.square().sum(-2)).sqrt()


class _ResidualBasis:
    """The residuals r_j of a CG run and z_j = P^{-1} r_j, scaled so that r_j^T z_j = 1, per column
    (shapes ``(*batch, n, t, k)`` after k additions), for full re-orthogonalization: in exact
    arithmetic r_i^T z_j = 0 for i != j; with inexact (e.g. low-precision) products that is lost
    and CG slows down or stalls, which projecting each new residual restores."""

    def __init__(self, row_sum: RowSum = None):
        self.row_sum = row_sum
        self.r: Tensor | None = None
        self.z: Tensor | None = None

    def add(self, r: Tensor, z: Tensor, rz: Tensor) -> None:
        """Append r, z ``(*batch, n, t)`` scaled by rz^{-1/2} ``(*batch, t)``; columns with rz <= 0 add zeros."""
        scale = torch.where(rz > 0, rz.clamp_min(torch.finfo(rz.dtype).tiny).rsqrt(), 0.0).unsqueeze(-2)
        new_r, new_z = (r * scale).unsqueeze(-1), (z * scale).unsqueeze(-1)
        self.r = new_r if self.r is None else torch.cat([self.r, new_r], -1)
        self.z = new_z if self.z is None else torch.cat([self.z, new_z], -1)

    def project(self, r: Tensor, z: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
        """(r - sum_j r_j (z_j^T r), z - sum_j z_j (z_j^T r)) in the ``columns`` ``(*batch, t)`` bool
        that are iterating (frozen ones keep their residual): r made P^{-1}-orthogonal to the
        basis (classical Gram-Schmidt, once), z = P^{-1} r kept consistent without another solve."""
        coef = (self.z * r.unsqueeze(-1)).sum(-3, keepdim=True)  # (*batch, 1, t, k)
        if self.row_sum is not None:
            coef = self.row_sum(coef)
        coef = coef * columns.unsqueeze(-2).unsqueeze(-1)
        return r - (self.r * coef).sum(-1), z - (self.z * coef).sum(-1)


def _build_tridiag(alphas: list[Tensor], betas: list[Tensor], active: list[Tensor]) -> Tensor:
    """Assemble Lanczos tridiagonals from CG coefficients.

    alphas, betas, active: k tensors of shape ``(*batch, m)``. An inactive (frozen) step gets a
    diagonal 1 and no coupling, so e1^T f(T) e1 is unchanged for f(1) = 0.
    Returns ``(*batch, m, k, k)``.
    """
    alpha = torch.stack(alphas, -1)
    beta = torch.stack(betas, -1)
    mask = torch.stack(active, -1)
    safe_alpha = torch.where(mask, alpha, torch.ones_like(alpha))
    prev = torch.zeros_like(alpha)
    prev[..., 1:] = beta[..., :-1] / safe_alpha[..., :-1]
    diag = torch.where(mask, 1.0 / safe_alpha + prev, torch.ones_like(alpha))
    off = beta[..., :-1].clamp_min(0).sqrt() / safe_alpha[..., :-1]
    off = torch.where(mask[..., 1:], off, torch.zeros_like(off))
    return torch.diag_embed(diag) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)


def _identity_tridiag(rhs: Tensor, n_tridiag: int) -> Tensor:
    """``(*batch, n_tridiag, 1, 1)`` identity tridiagonals, for when no iteration ran."""
    shape = (*rhs.shape[:-2], n_tridiag, 1, 1)
    return torch.ones(shape, dtype=rhs.dtype, device=rhs.device)


def mbcg(
    matmul: MatFn,
    rhs: Tensor,
    precond: MatFn | None = None,
    tol: float = 1e-2,
    max_iters: int = 1000,
    min_iters: int = 0,
    n_tridiag: int = 0,
    max_tridiag_iters: int | None = None,
    warn: bool = True,
    reorthogonalize: bool = False,
    row_sum: RowSum = None,
) -> CGResult:
    """Preconditioned CG on all columns of ``rhs`` in lock step (one product per iteration).

    matmul: V ``(*batch, n, t)`` -> A V, A symmetric positive definite (or an Operator).
    rhs: ``(*batch, n, t)``. precond: R ``(*batch, n, t)`` -> P^{-1} R (callable, or an object with
    ``.solve``); None means P = I. Starts from x0 = 0.
    Stops once at least ``min_iters`` iterations ran and the mean relative residual over all
    columns and batch elements is below ``tol``, or after ``max_iters`` (NumericalWarning), or
    when every column has frozen (noticed within FREEZE_CHECK_EVERY iterations before
    ``min_iters``, at once after): a column freezes (alpha = beta = 0, no NaN) once r^T P^{-1} r
    falls to (4 eps)^2 times its initial value, or when rhs^T P^{-1} rhs or p^T A p is not
    positive (a breakdown). The Lanczos tridiagonals of the last ``n_tridiag`` columns are
    recorded for the first ``max_tridiag_iters`` (default ``max_iters``) iterations; with a
    preconditioner they are those of P^{-1/2} A P^{-1/2} started at P^{-1/2} rhs.
    With ``warn`` (default) one NumericalWarning reports non-convergence and breakdowns together;
    callers that report them themselves pass ``warn=False`` and read ``CGResult.trouble()``.
    ``reorthogonalize``: project every new residual against all earlier ones (full
    re-orthogonalization, as Maddox et al. 2022 use with low-precision products); it costs
    memory for 2 ``(*batch, n, t)`` tensors per iteration and O(n t k) work at iteration k.
    ``row_sum``: for rows split across processes (``flashgp.distributed``): each process passes
    its rows of rhs, ``matmul`` and ``precond`` map its rows to its rows of the products, and
    ``row_sum`` turns every partial sum over its rows (inner products, norms, re-orthogonalization
    coefficients) into the sum over all rows (an all-reduce), so the scalar recurrences, and with
    them the iterations and the tridiagonals, are the same on every process. None (default): one
    process holds every row.
    Returns a :class:`CGResult`.
    """
    _check_args(rhs, tol, max_iters, min_iters, n_tridiag)
    matmul = _as_function(matmul, "matmul", "matmul")
    precond = (lambda v: v) if precond is None else _as_function(precond, "solve", "precond")
    max_tridiag_iters = max_iters if max_tridiag_iters is None else max_tridiag_iters
    freeze = (4 * torch.finfo(rhs.dtype).eps) ** 2

    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = precond(r)
    rz = _dot(r, z, row_sum)
    rz0 = rz.clone()
    basis = _ResidualBasis(row_sum) if reorthogonalize else None
    if basis is not None:
        basis.add(r, z, rz)
    threshold = rz0 * freeze
    b_norm = _norm(rhs, row_sum)
    safe_b = torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    breakdowns = ((b_norm > 0) & ~(rz0 > 0)).sum()  # a tensor: read once at the end
    live = (rz > threshold) & (b_norm > 0)  # columns still iterating
    broken = torch.zeros_like(live)  # columns frozen by a non-positive p^T A p
    p = z
    residual = torch.where(b_norm > 0, torch.ones_like(b_norm), torch.zeros_like(b_norm))
    alphas, betas, active = [], [], []
    iterations = 0
    stop = not bool(live.any())

    # few, fused tensor operations per iteration (on a GPU each is a kernel launch, and at
    # moderate n the launches, not the arithmetic, set the pace); at most one host
    # synchronization: the stopping test (before min_iters, every FREEZE_CHECK_EVERY iterations).
    # Out-of-place updates: p may alias r when there is no preconditioner.
    while iterations < max_iters and not stop:
        ap = matmul(p)
        pap = _dot(p, ap, row_sum)
        stepping = live & (pap > 0)
        broken = broken | (live ^ stepping)
        alpha = torch.where(stepping, rz / pap, 0.0)
        x = torch.addcmul(x, alpha.unsqueeze(-2), p)
        r = torch.addcmul(r, alpha.unsqueeze(-2), ap, value=-1)
        z = precond(r)
        if basis is not None:
            r, z = basis.project(r, z, stepping)
        rz_new = _dot(r, z, row_sum)
        live = stepping & (rz_new > threshold)
        if basis is not None:
            basis.add(r, z, torch.where(live, rz_new, 0.0))
        beta = torch.where(live, rz_new / rz, 0.0)
        p = torch.addcmul(z, beta.unsqueeze(-2), p)
        rz = torch.where(live, rz_new, rz)
        iterations += 1
        if n_tridiag and iterations <= max_tridiag_iters:
            alphas.append(alpha[..., -n_tridiag:])
            betas.append(beta[..., -n_tridiag:])
            active.append(stepping[..., -n_tridiag:])
        if iterations >= min_iters:
            residual = _norm(r, row_sum) / safe_b
            stop = bool(~live.any() | (residual.mean() < tol))
        elif iterations % FREEZE_CHECK_EVERY == 0:  # only frozen columns can stop it here
            stop = bool(~live.any())

    if 0 < iterations < min_iters:  # stopped by a freeze before the residual was next needed
        residual = _norm(r, row_sum) / safe_b
    breakdowns = breakdowns + broken.sum()
    breakdowns = int(breakdowns)
    converged = float(residual.mean()) < tol
    tridiag = None
    if n_tridiag:
        tridiag = _build_tridiag(alphas, betas, active) if alphas else _identity_tridiag(rhs, n_tridiag)
    result = CGResult(x, tridiag, rz0, iterations, residual, converged, breakdowns, tol, max_iters)
    if warn and (breakdowns or (not converged and iterations == max_iters)):
        warnings.warn(f"mbcg: {result.trouble()}", NumericalWarning, stacklevel=2)
    return result
