# The pivoted-Cholesky preconditioner: greedy partial pivoted Cholesky of a kernel operator plus
# the noise, and its rebuild from stored pivots (Nystrom). Only the diagonal and a few rows are
# evaluated (O(n k^2)).
from __future__ import annotations

import torch
from torch import Tensor

from ..operators.base import Operator
from ..operators.low_rank import LowRankPlusDiag
from .blocks import block_preconditioner


LIVE_CHECK_EVERY = 8  # pivoted Cholesky steps between host checks for early termination
NYSTROM_JITTER_ULPS = 1.0  # nystrom_factor's jitter: k * this * eps(dtype) * max diag of K[P, P]
NYSTROM_CHUNK = 1 << 17  # points per float64 block of nystrom_factor's whitening product
NYSTROM_ROWS = 64  # pivots per op.rows call of nystrom_factor (bounds the temporaries of a kernel
                   # row evaluation to a few of these x n, not k x n: at n = 1M, k = 800 each
                   # full-size temporary is 3.2 GB)


def _check_rank(rank: int) -> None:
    """rank must be a non-negative python int."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank: expected a non-negative integer, got {rank!r}")


def _pivot_step(op: Operator, factor: Tensor, err: Tensor, m: int, live: Tensor) -> tuple[Tensor, Tensor]:
    """Fill column m of factor ``(*batch, n, k)`` in place from the largest remaining error.

    err: ``(*batch, n)`` remaining diagonal of A - L L^T, updated in place. live: ``(*batch,)`` bool,
    the batch elements still being factored (others get a zero column). Returns (live after this
    step ``(*batch,)`` bool: column m is a real pivot column, the pivots ``(*batch,)`` long).
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
    return live, pivot


@torch.no_grad()
def pivoted_cholesky(op: Operator, rank: int, tol: float = 1e-8) -> Tensor:
    """Greedy partial pivoted Cholesky: L ``(*batch, n, k)`` with L L^T ~ A, k <= min(rank, n).

    op: a symmetric PSD Operator of shape ``(*batch, n, n)``; only ``op.diagonal()`` and
    ``op.rows(index)`` with index ``(*batch, 1)`` are used, so the cost is k row evaluations
    plus O(n k^2). Each batch element picks its own pivots and stops when its largest
    remaining diagonal error is below ``tol`` times its trace; the whole run stops when all
    have (k is then the number of columns computed). The factor carries no gradient.
    """
    return pivoted_cholesky_with_pivots(op, rank, tol)[0]


@torch.no_grad()
def pivoted_cholesky_with_pivots(op: Operator, rank: int, tol: float = 1e-8,
                                 info: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``pivoted_cholesky`` that also gives its pivots: (factor, pivots, counts).

    factor: ``(*batch, n, k)`` as ``pivoted_cholesky`` returns it. pivots: ``(*batch, k)`` long, the row
    chosen at each step, in pivot order. counts: ``(*batch,)`` long, how many leading pivots of each
    batch element are real: an element that stopped early (its error fell below ``tol`` before
    the others') has zero columns from ``counts`` on, and its pivots there mean nothing.
    ``nystrom_factor(op, pivots, counts)`` rebuilds the factor (for a changed op) from them.
    ``info``: a dict that receives remaining_error, the largest remaining diagonal error of
    A - L L^T at the end (over the batch; NaN if it holds NaN), and stop_threshold, the largest
    ``tol`` * trace, below which an element stops early.
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
    pivots, lives = [], []  # per step, stacked once at the end (no extra work per step)
    for m in range(factor.shape[-1]):
        live = live & (err.amax(-1) > tol * trace)
        # the host looks only every LIVE_CHECK_EVERY steps (each look waits for the device); dead
        # elements get zero columns meanwhile, and liveness only decreases, so columns_used is
        # the first all-dead step
        if m % LIVE_CHECK_EVERY == 0 and not bool(live.any()):
            break
        columns_used += live.any()
        live, pivot = _pivot_step(op, factor, err, m, live)
        pivots.append(pivot)
        lives.append(live)
    if info is not None:
        info.update(remaining_error=float(err.amax()), stop_threshold=float((tol * trace).amax()))
    # the factor may end in all-zero columns when every element stopped: drop them
    k = int(columns_used) if not bool(live.any()) else factor.shape[-1]
    return _with_pivots(factor, pivots, lives, k)


def _with_pivots(factor: Tensor, pivots: list, lives: list, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """(factor[..., :k], pivots ``(*batch, k)``, counts ``(*batch,)``) from the per-step lists."""
    batch = factor.shape[:-2]
    if k == 0:
        empty = torch.zeros(*batch, 0, dtype=torch.long, device=factor.device)
        return factor[..., :0], empty, torch.zeros(batch, dtype=torch.long, device=factor.device)
    counts = torch.stack(lives[:k], -1).sum(-1)  # liveness only decreases: the real pivots lead
    return factor[..., :k], torch.stack(pivots[:k], -1), counts


def _check_pivots(op: Operator, pivots, counts) -> tuple[Tensor, Tensor | None]:
    """pivots (k,) or ``(*batch, k)`` long -> ``(*batch, k)``; counts None or ``(*batch,)`` long."""
    if not isinstance(pivots, Tensor) or pivots.dtype != torch.long or pivots.dim() < 1:
        raise TypeError("pivots: expected a torch.long tensor of shape (k,) or (*batch, k)")
    try:
        pivots = pivots.expand(*op.batch_shape, pivots.shape[-1])
    except RuntimeError:
        raise ValueError(f"pivots: shape {tuple(pivots.shape)} does not fit the operator's batch "
                         f"shape {tuple(op.batch_shape)}") from None
    if counts is not None:
        if not isinstance(counts, Tensor) or counts.dtype != torch.long:
            raise TypeError("counts: expected a torch.long tensor of shape (*batch,)")
        counts = counts.expand(op.batch_shape)
    return pivots, counts


@torch.no_grad()
def nystrom_factor(op: Operator, pivots: Tensor, counts: Tensor | None = None,
                   inner: Tensor | None = None) -> Tensor | None:
    """The pivoted Cholesky factor for given pivots: L = K[:, P] chol(K[P, P] + j I)^{-T}.

    op: a symmetric PSD Operator K ``(*batch, n, n)``; pivots: (k,) or ``(*batch, k)`` long, distinct
    per batch element (e.g. from ``pivoted_cholesky_with_pivots`` at other hyperparameters);
    counts: optional ``(*batch,)`` long, the number of leading pivots to use per element (the rest
    give zero columns, as in the greedy factor of an element that stopped early); inner: K[P, P]
    ``(*batch, k, k)`` when ``op.rows`` gives only some of K's columns (rows split across
    processes: ``op.rows`` is this process's columns of K[P, :] and L its rows), else None
    (taken from op.rows).

    With the greedy pivots of K itself this is the greedy factor (L[P, :] is lower triangular
    in pivot order and L L^T equals K on the columns P), built from one ``op.rows`` call, a
    k x k Cholesky and a product with its inverse instead of k sequential steps. The k x k
    Cholesky and the product are done in float64 with the jitter j = k * NYSTROM_JITTER_ULPS * eps(op dtype) *
    max diag K[P, P] (2e-14 relative for float64, 1e-5 for float32 at k = 100; it keeps
    L L^T <= K). Returns L ``(*batch, n, k)`` in op's dtype and device, without gradient, or None
    when K[P, P] cannot be factored even so (stale or duplicate pivots, NaN): the caller then
    picks fresh pivots greedily.
    """
    if not isinstance(op, Operator):
        raise TypeError(f"op: expected a flashgp Operator, got {type(op).__name__}")
    pivots, counts = _check_pivots(op, pivots, counts)
    batch, n, k = op.batch_shape, op.shape[-1], pivots.shape[-1]
    if k == 0:
        return torch.zeros(*batch, n, 0, dtype=op.dtype, device=op.device)
    rows = torch.empty(*batch, k, n, dtype=op.dtype, device=op.device)  # K[P, :]
    for start in range(0, k, NYSTROM_ROWS):
        rows[..., start:start + NYSTROM_ROWS, :] = op.rows(pivots[..., start:start + NYSTROM_ROWS])
    if counts is not None:
        unused = torch.arange(k, device=op.device) >= counts.unsqueeze(-1)  # (*batch, k)
        rows.masked_fill_(unused.unsqueeze(-1), 0.0)  # in place: no second k x n copy
    if inner is None:
        inner = rows.gather(-1, pivots.unsqueeze(-2).expand(*batch, k, k))  # K[P, P]
    inner = inner.to(torch.float64)
    if counts is not None:  # the rows of unused pivots are zero already in rows; zero both here
        inner = inner.masked_fill(unused.unsqueeze(-2) | unused.unsqueeze(-1), 0.0)
    inner = 0.5 * (inner + inner.transpose(-1, -2))
    jitter = inner.diagonal(dim1=-2, dim2=-1).amax(-1) * (k * NYSTROM_JITTER_ULPS * torch.finfo(op.dtype).eps)
    shift = jitter.unsqueeze(-1).expand(*batch, k)
    if counts is not None:  # unused pivots: an identity block, zero rows -> zero columns of L
        shift = torch.where(unused, 1.0, shift)
    chol, failed = torch.linalg.cholesky_ex(inner + torch.diag_embed(shift))
    if bool((failed != 0).any()):
        return None
    return _whitened_columns(rows, chol, op.dtype)


def _whitened_columns(rows: Tensor, chol: Tensor, dtype: torch.dtype) -> Tensor | None:
    """(chol^{-1} rows)^T ``(*batch, n, k)`` in ``dtype`` for rows ``(*batch, k, n)``, chol ``(*batch, k, k)``
    lower triangular float64, or None if it is not finite.

    The product with the explicit k x k inverse, in float64 over NYSTROM_CHUNK columns of rows at
    a time, instead of a triangular solve with n right-hand sides: on an H200 (torch 2.11,
    cuBLAS) that solve took 14-17 s for k = 48 and 55 at n = 1M against 0.004-0.009 s for
    k >= 64, and 0.001 s as a product (``python benchmarks/greedy_pivots.py --n 1000000 --rank 100
    --every 25 --lengthscale 0.1181 0.1075 0.1265 --outputscale 1.9793 --solve-ks 48 55 64 70
    100``). The chunks keep the float64
    temporaries to k * NYSTROM_CHUNK entries (one n x k float64 copy is 3.2 GB at k = 400).
    """
    n, k = rows.shape[-1], rows.shape[-2]
    eye = torch.eye(k, dtype=torch.float64, device=rows.device)
    inverse = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
    out = torch.empty(*rows.shape[:-2], n, k, dtype=dtype, device=rows.device)
    finite = torch.ones((), dtype=torch.bool, device=rows.device)
    for start in range(0, n, NYSTROM_CHUNK):
        block = inverse @ rows[..., start:start + NYSTROM_CHUNK].to(torch.float64)  # (*batch, k, c)
        finite &= torch.isfinite(block).all()
        out[..., start:start + NYSTROM_CHUNK, :] = block.transpose(-1, -2)
    return out if bool(finite) else None


def pivoted_cholesky_preconditioner(kernel_op: Operator, noise: Tensor, rank: int,
                                    block_size: int = 0, factor: Tensor | None = None,
                                    blocks: Tensor | None = None):
    """P = L L^T + diag(noise) with L the rank-``rank`` pivoted Cholesky of ``kernel_op``, or,
    with ``block_size`` > 0, P = L L^T + blockdiag(K + diag(noise) - L L^T) over spatial blocks
    of that many points (``block_preconditioner``; kernel_op must be a KernelOperator).

    kernel_op: ``(*batch, n, n)`` PSD Operator; noise: ``(*batch, n)`` positive (broadcastable);
    rank is capped at n, and 0 gives the diagonal preconditioner diag(noise) (block Jacobi with
    blocks). ``factor``: a ready L ``(*batch, n, k)`` to use instead of a greedy run of ``rank``;
    ``blocks``: the block index of an earlier build on the same points, to reuse.
    Returns a LowRankPlusDiag or LowRankPlusBlockDiag of shape ``(*batch, n, n)`` (``.solve`` is
    mbcg's precond; ``.logdet()`` and ``.sample()`` serve the log-det estimate). Without blocks,
    K - L L^T is PSD for a pivoted Cholesky or Nystrom factor (a Schur complement), so K_hat - P
    is too and every eigenvalue of P^{-1} K_hat is >= 1 (in exact arithmetic): its
    ``spectrum_floor`` is 1. With blocks K_hat - P is indefinite (None).
    """
    _check_rank(rank)
    _check_rank(block_size)
    if not isinstance(noise, Tensor):
        raise TypeError(f"noise: expected a torch.Tensor, got {type(noise).__name__}")
    n = kernel_op.shape[-1]
    noise = noise.detach()
    if factor is None and rank == 0:
        factor = torch.zeros(*kernel_op.batch_shape, n, 0, dtype=kernel_op.dtype, device=kernel_op.device)
    elif factor is None:
        factor = pivoted_cholesky(kernel_op, rank)
    if block_size:
        return block_preconditioner(kernel_op, noise, factor, block_size, index=blocks)
    return LowRankPlusDiag(factor, noise, spectrum_floor=1.0)
