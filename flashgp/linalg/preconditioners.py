# Preconditioners for CG: greedy partial pivoted Cholesky of a kernel operator plus the noise.
# Only the operator's diagonal and a few of its rows are ever evaluated (O(n k^2) work).
from __future__ import annotations

import torch
from torch import Tensor

from ..operators.base import Operator
from ..operators.low_rank import LowRankPlusDiag


LIVE_CHECK_EVERY = 8  # pivoted Cholesky steps between host checks for early termination


def _check_rank(rank: int) -> None:
    """rank must be a non-negative python int."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank: expected a non-negative integer, got {rank!r}")


def _pivot_step(op: Operator, factor: Tensor, err: Tensor, m: int, live: Tensor) -> Tensor:
    """Fill column m of factor (*batch, n, k) in place from the largest remaining error.

    err: (*batch, n) remaining diagonal of A - L L^T, updated in place. live: (*batch,) bool,
    the batch elements still being factored (others get a zero column). Returns the pivots (*batch,).
    """
    pivot = err.argmax(-1)
    pivot_err = err.gather(-1, pivot.unsqueeze(-1))
    live = live & (pivot_err.squeeze(-1) > 0)
    row = op.rows(pivot.unsqueeze(-1)).squeeze(-2)
    index = pivot[..., None, None].expand(*pivot.shape, 1, factor.shape[-1])
    pivot_row = factor.gather(-2, index)[..., 0, :m]
    done_part = (factor[..., :m] @ pivot_row.unsqueeze(-1)).squeeze(-1)
    column = (row - done_part) / pivot_err.clamp_min(torch.finfo(err.dtype).tiny).sqrt()
    column = torch.where(live.unsqueeze(-1), column, torch.zeros_like(column))
    factor[..., m] = column
    err.sub_(column.square()).clamp_(min=0)
    err.scatter_(-1, pivot.unsqueeze(-1), torch.where(live.unsqueeze(-1), 0.0, pivot_err))
    return live


@torch.no_grad()
def pivoted_cholesky(op: Operator, rank: int, tol: float = 1e-8) -> Tensor:
    """Greedy partial pivoted Cholesky: L (*batch, n, k) with L L^T ~ A, k <= min(rank, n).

    op: a symmetric PSD Operator of shape (*batch, n, n); only ``op.diagonal()`` and
    ``op.rows(index)`` with index (*batch, 1) are used, so the cost is k row evaluations
    plus O(n k^2). Each batch element picks its own pivots and stops when its largest
    remaining diagonal error is below ``tol`` times its trace; the whole run stops when all
    have (k is then the number of columns computed). The factor carries no gradient.
    """
    _check_rank(rank)
    if not isinstance(op, Operator):
        raise TypeError(f"op: expected a flashgp Operator, got {type(op).__name__}")
    n = op.shape[-1]
    err = op.diagonal().clone().expand(*op.batch_shape, n).clone()
    trace = err.sum(-1)
    factor = torch.zeros(*op.batch_shape, n, min(rank, n), dtype=op.dtype, device=op.device)
    live = torch.ones(op.batch_shape, dtype=torch.bool, device=op.device)
    columns_used = torch.zeros((), dtype=torch.long, device=op.device)  # steps with any live element
    for m in range(factor.shape[-1]):
        live = live & (err.amax(-1) > tol * trace)
        # the host looks only every LIVE_CHECK_EVERY steps (each look waits for the device); dead
        # elements get zero columns meanwhile, and liveness only decreases, so columns_used is
        # the first all-dead step
        if m % LIVE_CHECK_EVERY == 0 and not bool(live.any()):
            return factor[..., :int(columns_used)]
        columns_used += live.any()
        live = _pivot_step(op, factor, err, m, live)
    if not bool(live.any()):  # the factor may end in all-zero columns: drop them
        return factor[..., :int(columns_used)]
    return factor


def pivoted_cholesky_preconditioner(kernel_op: Operator, noise: Tensor, rank: int) -> LowRankPlusDiag:
    """P = L L^T + diag(noise) with L the rank-``rank`` pivoted Cholesky of ``kernel_op``.

    kernel_op: (*batch, n, n) PSD Operator; noise: (*batch, n) positive (broadcastable);
    rank is capped at n, and 0 gives the diagonal preconditioner diag(noise).
    Returns a LowRankPlusDiag of shape (*batch, n, n) (use ``.solve`` as mbcg's precond).
    """
    _check_rank(rank)
    if not isinstance(noise, Tensor):
        raise TypeError(f"noise: expected a torch.Tensor, got {type(noise).__name__}")
    n = kernel_op.shape[-1]
    noise = noise.detach()
    if rank == 0:
        factor = torch.zeros(*kernel_op.batch_shape, n, 0, dtype=kernel_op.dtype, device=kernel_op.device)
    else:
        factor = pivoted_cholesky(kernel_op, rank)
    return LowRankPlusDiag(factor, noise)
