# The pivoted-Cholesky preconditioner with the training rows split across processes: the greedy
# pivots chosen over all n rows (one all-gather of each process's best candidate per step), each
# process holding its rows of the factor, and P = L L^T + diag(noise) solved by Woodbury with the
# sums over rows all-reduced. Equal, to round-off, to what one process builds on all rows.
from __future__ import annotations

import torch
from torch import Tensor

from ..operators.low_rank import LowRankPlusDiag
from ..preconditioners.base import tagged
from ..preconditioners.pivot_config import PivotedCholesky
from ..preconditioners.pivoted_cholesky import LIVE_CHECK_EVERY, _check_rank, _with_pivots
from .group import Shards
from .operator import ShardedKernelOperator

def _global_candidate(shards: Shards, factor: Tensor, err: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The row with the largest remaining diagonal error over every process, and its factor row:
    (value ``(*batch,)``, global index ``(*batch,)`` long, factor row ``(*batch, width)``).

    Each process offers its local argmax (torch.argmax: the first of equal maxima, and NaN counts
    as the largest) with its global index and its row of the factor, packed into one float64
    vector; one all-gather; the winner is the argmax over the processes in rank order, so of equal
    maxima the lowest global index wins, and a NaN the first NaN: exactly ``err.argmax(-1)`` over
    all n rows on one process. Float64 holds the index exactly below 2^53 and a float32 value
    exactly."""
    local = err.argmax(-1)  # (*batch,)
    value = err.gather(-1, local.unsqueeze(-1))  # (*batch, 1)
    index = local.unsqueeze(-1) + shards.start
    row = factor.gather(-2, local[..., None, None].expand(*local.shape, 1, factor.shape[-1])).squeeze(-2)
    packet = torch.cat([value.double(), index.double(), row.double()], -1)  # (*batch, 2 + width)
    every = shards.stack(packet)  # (world, *batch, 2 + width)
    winner = every[..., 0].argmax(0)  # (*batch,)
    best = every.gather(0, winner[None, ..., None].expand(1, *every.shape[1:])).squeeze(0)
    return best[..., 0].to(err.dtype), best[..., 1].long(), best[..., 2:].to(factor.dtype)


@torch.no_grad()
def sharded_pivoted_cholesky(op: ShardedKernelOperator, rank: int, tol: float = 1e-8,
                             info: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The greedy partial pivoted Cholesky of K with its rows split across processes:
    (this process's rows of the factor ``(*batch, n_local, k)``, the pivots ``(*batch, k)`` long,
    global row indices, the same on every process, counts ``(*batch,)`` long).

    The same steps as ``preconditioners.pivoted_cholesky_with_pivots`` on all n rows (pivot =
    the largest remaining diagonal over all rows, the same early stop at ``tol`` times the trace,
    the same zero columns for a batch element that stopped early), so the pivots are those one
    process picks and the factor rows equal its rows to round-off. Per step: one all-gather of a
    (2 + rank)-float candidate per process (the winner's factor row travels with it) and one kernel
    row K(x_pivot, x_local) evaluated locally (every process holds x_all). Before the steps one
    all-reduce of the trace; ``info`` (optional) receives remaining_error (one more all-gather)
    and stop_threshold. A collective: every process calls it together.
    """
    _check_rank(rank)
    if not isinstance(op, ShardedKernelOperator):
        raise TypeError(f"op: expected a ShardedKernelOperator, got {type(op).__name__}")
    shards, batch = op.shards, op.batch_shape
    n_local = shards.n_local
    err = op.diagonal().clone().expand(*batch, n_local).clone()
    trace = shards.row_sum(err.sum(-1))
    factor = torch.zeros(*batch, n_local, min(rank, shards.n), dtype=op.dtype, device=op.device)
    live = torch.ones(batch, dtype=torch.bool, device=op.device)
    columns_used = torch.zeros((), dtype=torch.long, device=op.device)
    pivots, lives = [], []
    for m in range(factor.shape[-1]):
        pivot_err, pivot, pivot_row = _global_candidate(shards, factor, err)
        live = live & (pivot_err > tol * trace)  # the global max is the candidate's value
        if m % LIVE_CHECK_EVERY == 0 and not bool(live.any()):  # the same on every process
            break
        columns_used += live.any()
        live = live & (pivot_err > 0)
        row = op.rows(pivot.unsqueeze(-1)).squeeze(-2)  # K(x_pivot, x_local) (*batch, n_local)
        done_part = (factor[..., :m] @ pivot_row[..., :m].unsqueeze(-1)).squeeze(-1)
        column = (row - done_part) / pivot_err.clamp_min(torch.finfo(err.dtype).tiny).sqrt().unsqueeze(-1)
        column = torch.where(live.unsqueeze(-1), column, torch.zeros_like(column))
        factor[..., m] = column
        err.sub_(column.square()).clamp_(min=0)
        # the pivot's owner zeroes its error (a dead element keeps the value it had)
        mine = (pivot >= shards.start) & (pivot < shards.stop)
        local = (pivot - shards.start).clamp(0, n_local - 1).unsqueeze(-1)
        kept = torch.where(live, torch.zeros_like(pivot_err), pivot_err)
        err.scatter_(-1, local, torch.where(mine, kept, err.gather(-1, local).squeeze(-1)).unsqueeze(-1))
        pivots.append(pivot)
        lives.append(live)
    if info is not None:
        remaining = shards.stack(err.amax(-1)).amax(0)
        info.update(remaining_error=float(remaining.amax()), stop_threshold=float((tol * trace).amax()))
    k = int(columns_used) if not bool(live.any()) else factor.shape[-1]
    return _with_pivots(factor, pivots, lives, k)


class ShardedLowRankPlusDiag(LowRankPlusDiag):
    """P = L L^T + diag(d) with its n rows split across processes: this process holds its rows of
    L, ``(*batch, n_local, k)``, and of d, ``(*batch, n_local)`` (positive). The
    ``Preconditioner`` protocol on sharded rows (``linalg.inv_quad_logdet`` with ``row_sum``):

    - ``solve(rhs_local)``: its rows of P^{-1} rhs by Woodbury, D^-1 rhs - D^-1 L C^-1 (L^T D^-1 rhs)
      with C = I + L^T D^-1 L; C (k x k, once) and L^T D^-1 rhs (k x t, per solve) are sums over
      rows: one all-reduce each. ``LowRankPlusDiag``'s own code on this process's rows (float64,
      the cached or row-blocked Woodbury parts), with its sums over rows (``_sum_rows``)
      all-reduced.
    - ``logdet()``: log det C + the all-reduced sum of log d; the same on every process.
    - ``sample(num, generator)``: its rows of L e1 + sqrt(d) e2 with e1 ``(k, num)`` and e2
      ``(n, num)`` drawn in full, in ``LowRankPlusDiag.sample``'s order, from the generator seeded
      alike on every process: the rows of the draws one process makes.

    shape is ``(*batch, n_local, n_local)`` (its rows in, its rows out, as the sharded operator);
    ``sharded_rows`` is ``shards.rows``. ``spectrum_floor`` 1 for a pivoted Cholesky factor.
    Every method but ``info`` is a collective.
    """

    def __init__(self, factor: Tensor, diag: Tensor, shards: Shards, spectrum_floor: float | None = None):
        if factor.dim() < 2 or factor.shape[-2] != shards.n_local or diag.shape[-1] != shards.n_local:
            raise ValueError(f"factor, diag: expected (*batch, {shards.n_local}, k) and (*batch, {shards.n_local}), "
                             f"got {tuple(factor.shape)} and {tuple(diag.shape)}")
        super().__init__(factor, diag, spectrum_floor)
        self.shards, self.sharded_rows = shards, shards.rows

    def _sum_rows(self, partial: Tensor) -> Tensor:
        return self.shards.row_sum(partial)

    def _matmul(self, rhs: Tensor) -> Tensor:
        """This process's rows of P rhs (one all-reduce of L^T rhs)."""
        return self.factor @ self._sum_rows(self.factor.transpose(-1, -2) @ rhs) + self.diag.unsqueeze(-1) * rhs

    def rows(self, index: Tensor) -> Tensor:
        raise NotImplementedError("ShardedLowRankPlusDiag.rows: the rows of P are spread over processes")

    def _drawn_rows(self) -> tuple[int, slice]:
        return self.shards.n, slice(self.shards.start, self.shards.stop)


SUPPORTED = "fg.PivotedCholesky(rank=k) without blocks (block_size=0), or None"


def check_config(config) -> None:
    """Raise NotImplementedError unless ``config`` is None or a preconditioner configuration the
    sharded rows support (``SUPPORTED``)."""
    if config is not None and (type(config) is not PivotedCholesky or config.block_size):
        raise NotImplementedError(f"precond: with rows split across processes only {SUPPORTED} is "
                                  f"supported yet, got {config!r}")


def sharded_preconditioner(config, op: ShardedKernelOperator, noise_local: Tensor, info: dict | None = None,
                           state=None, rank: int | None = None) -> ShardedLowRankPlusDiag | None:
    """The preconditioner of K_hat = K + diag(noise) for ``config`` on sharded rows, without
    gradient, or None for None. Supported: ``fg.PivotedCholesky`` with ``block_size=0``.

    state: a ``ShardedPivotCache`` (training: pivots reused for ``config.refresh_every`` builds,
    grown up to ``config.max_rank``, as a model's ``PivotCache`` does on one process), or None:
    fresh greedy pivots of ``rank`` (default ``config.rank``; what ``exact_mll`` builds with a
    fresh state). ``info`` receives the pivots, the rank and (with a state) precond_pivots:
    "greedy" or "reused"."""
    check_config(config)
    if config is None:
        return None
    with torch.no_grad():
        noise_local = noise_local.detach()
        if state is not None:
            precond = state.preconditioner(op, noise_local, config)
            pivots, source = state.pivots, state.source
        else:
            rank = config.rank if rank is None else rank
            if rank == 0:
                factor = torch.zeros(*op.batch_shape, op.shards.n_local, 0, dtype=op.dtype, device=op.device)
                pivots = torch.zeros(*op.batch_shape, 0, dtype=torch.long, device=op.device)
            else:
                factor, pivots, _ = sharded_pivoted_cholesky(op, rank)
            precond = ShardedLowRankPlusDiag(factor, noise_local.expand(*factor.shape[:-1]), op.shards,
                                             spectrum_floor=1.0)
            source = "greedy" if rank else None
    if info is not None:
        info.update(precond_rank=precond.rank, pivots=pivots, precond_pivots=source)
    return tagged(precond, config.kind)
