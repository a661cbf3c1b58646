# Randomly pivoted Cholesky (Chen, Epperly, Tropp and Webber 2022), in the blocked form with
# rejection of Epperly, Tropp and Webber 2024 ("accelerated RPCholesky"), and its configuration
# fg.RPCholesky: a pivoted-Cholesky preconditioner whose pivots are sampled, not chosen greedily.
"""Pivots drawn with probability proportional to the residual diagonal d = diag(K - L L^T).

Plain RPCholesky draws one pivot, adds its column and updates d: k sequential steps, like the
greedy rule, but without its tendency to pick outliers (the largest residual is often a point
far from the rest, whose column helps only itself). The accelerated form draws a round of
ROUND_CANDIDATES candidates i.i.d. from d at once and accepts them one after another by
rejection: candidate j is kept with probability h_j / d_j, where h_j is its residual diagonal
after the candidates kept before it in the round are eliminated (from the small matrix of the
candidates' residual kernel entries; a repeated candidate has h = 0 and is rejected). The kept
pivots have the distribution of plain RPCholesky's, and each round costs one ``op.rows`` call
for the kept ones plus the candidates' b x b block, so about (k + 1) n kernel entries in all.

The factor is the partial Cholesky factor at its pivots (a Nystrom factor), so K - L L^T is PSD
and P = L L^T + diag(noise) has every eigenvalue of P^{-1} K_hat >= 1, as for the greedy rule;
the pivots can be reused at later hyperparameters by ``nystrom_factor``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..operators.base import Operator
from ..operators.low_rank import _gather_rows
from .base import check_number
from .pivot_config import PivotConfig
from .pivoted_cholesky import NYSTROM_JITTER_ULPS, _check_rank, _whitened_columns

ROUND_CANDIDATES = 32  # candidate pivots drawn per round
JITTER_RETRIES = 6     # a round's kept block that cannot be factored gets 10x more jitter, this often
STALL_ROUNDS = 8       # rounds in a row that keep nothing (round-off) before the run stops


def _candidate_block(op: Operator, cand: Tensor) -> Tensor:
    """K[c, c] ``(*batch, b, b)`` float64 for candidates cand ``(*batch, b)``: from the operator's
    ``diagonal_blocks`` where it has them (b^2 kernel entries), else from its rows."""
    if hasattr(op, "diagonal_blocks"):
        return op.diagonal_blocks(cand.unsqueeze(-2))[..., 0, :, :]
    rows = op.rows(cand)
    return rows.gather(-1, cand.unsqueeze(-2).expand(*cand.shape, cand.shape[-1])).double()


def _accept(block: Tensor, proposal: Tensor, uniform: Tensor, live: Tensor, room: Tensor) -> Tensor:
    """Rejection within a round: ``(*batch, b)`` bool, the kept candidates.

    block: the candidates' residual kernel block ``(*batch, b, b)`` float64 (changed in place);
    proposal: their residual diagonal when drawn ``(*batch, b)``; uniform: U(0, 1) draws ``(*batch, b)``;
    live: ``(*batch,)`` elements still factored; room: ``(*batch,)`` long, at most this many kept per element.
    """
    b = block.shape[-1]
    keep = torch.zeros(proposal.shape, dtype=torch.bool, device=block.device)
    taken = torch.zeros(live.shape, dtype=torch.long, device=block.device)
    tiny = torch.finfo(torch.float64).tiny
    for j in range(b):
        h = block[..., j, j]
        ok = live & (taken < room) & (h > 0) & (uniform[..., j] * proposal[..., j] < h)
        keep[..., j] = ok
        taken += ok
        col = block[..., :, j] / h.clamp_min(tiny).sqrt().unsqueeze(-1)
        update = col.unsqueeze(-1) * col.unsqueeze(-2)
        block.sub_(torch.where(ok[..., None, None], update, 0.0))
    return keep


def _new_columns(op: Operator, factor: Tensor, m: int, kept: Tensor, ok: Tensor) -> Tensor:
    """The factor's columns for the kept pivots kept ``(*batch, a)`` (padding where ``ok`` is False:
    zero columns): (K[:, kept] - L L[kept]^T) chol(its kept block)^{-T}, ``(*batch, n, a)``."""
    rows = op.rows(kept).masked_fill(~ok.unsqueeze(-1), 0.0)  # (*batch, a, n)
    done = factor[..., :m]
    resid = rows - _gather_rows(done, kept) @ done.transpose(-1, -2)  # (G^T) (*batch, a, n)
    resid = resid.masked_fill(~ok.unsqueeze(-1), 0.0)
    a = kept.shape[-1]
    inner = resid.gather(-1, kept.unsqueeze(-2).expand(*kept.shape, a)).double()
    pair = ok.unsqueeze(-1) & ok.unsqueeze(-2)
    eye = torch.eye(a, dtype=torch.float64, device=factor.device)
    inner = torch.where(pair, 0.5 * (inner + inner.transpose(-1, -2)), eye)
    scale = inner.diagonal(dim1=-2, dim2=-1).amax(-1)
    jitter = scale * (a * NYSTROM_JITTER_ULPS * torch.finfo(op.dtype).eps)
    for _ in range(JITTER_RETRIES):
        shift = torch.where(ok, jitter.unsqueeze(-1), 0.0)
        chol, failed = torch.linalg.cholesky_ex(inner + torch.diag_embed(shift))
        if not bool((failed != 0).any()):
            columns = _whitened_columns(resid, chol, op.dtype)
            if columns is not None:
                return columns
            break
        jitter = jitter * 10
    raise ValueError("RPCholesky: the residual block of the sampled pivots cannot be factored "
                     "(non-finite kernel entries or hyperparameters?)")


@torch.no_grad()
def randomly_pivoted_cholesky(op: Operator, rank: int, seed: int = 0, tol: float = 1e-8,
                              info: dict | None = None,
                              candidates: int = ROUND_CANDIDATES) -> tuple[Tensor, Tensor, Tensor]:
    """Randomly pivoted partial Cholesky of ``op``: (factor, pivots, counts), the contract of
    ``pivoted_cholesky_with_pivots``.

    op: a symmetric PSD Operator ``(*batch, n, n)`` (``diagonal``, ``rows``, and ``diagonal_blocks``
    if it has them); rank: columns wanted (capped at n); seed: the draws come from a CPU
    generator with this seed (the same pivots on every run of the same operator). Each batch
    element draws its own pivots and stops when its largest residual diagonal entry is below
    ``tol`` times its trace. factor ``(*batch, n, k)``; pivots ``(*batch, k)`` long; counts ``(*batch,)``:
    the leading real pivots per element (an element that stopped early has zero columns after
    its count). ``info`` receives remaining_error and stop_threshold, as for the greedy rule,
    and rounds. ``candidates``: candidates drawn per round.
    """
    _check_rank(rank)
    _check_rank(candidates)
    if not isinstance(op, Operator):
        raise TypeError(f"op: expected a flashgp Operator, got {type(op).__name__}")
    batch, n, device = op.batch_shape, op.shape[-1], op.device
    k = min(rank, n)
    resid = op.diagonal().clone().expand(*batch, n).clone()
    trace = resid.sum(-1)
    # columns in the order drawn; a batch element that keeps fewer candidates in a round than
    # another gets zero columns there (``real`` False), so the width may pass k: it grows as needed
    factor = torch.zeros(*batch, n, k, dtype=op.dtype, device=device)
    pivots = torch.zeros(*batch, k, dtype=torch.long, device=device)
    real = torch.zeros(*batch, k, dtype=torch.bool, device=device)
    count = torch.zeros(batch, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(seed)
    m, rounds, stalled = 0, 0, 0
    while stalled < STALL_ROUNDS:
        live = (resid.amax(-1) > tol * trace) & (count < k)
        if not bool(live.any()):
            break
        b = min(max(candidates, 1), int((k - count[live]).max()))
        weights = resid.double().clamp_min(0).cpu().reshape(-1, n)
        weights = torch.where(live.cpu().reshape(-1, 1), weights, 1.0)
        cand = torch.multinomial(weights, b, replacement=True, generator=gen).reshape(*batch, b).to(device)
        uniform = torch.rand(*batch, b, dtype=torch.float64, generator=gen).to(device)
        low = _gather_rows(factor[..., :m], cand).double()
        block = _candidate_block(op, cand) - low @ low.transpose(-1, -2)
        keep = _accept(block, resid.gather(-1, cand).double(), uniform, live, k - count)
        rounds += 1
        a = int(keep.sum(-1).max())
        stalled = 0 if a else stalled + 1
        if a == 0:
            continue
        order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :a]
        kept, ok = cand.gather(-1, order), keep.gather(-1, order)
        if m + a > factor.shape[-1]:  # only in batches: room for the elements that fell behind
            factor, pivots, real = _widened(factor, pivots, real, m + a)
        columns = _new_columns(op, factor, m, kept, ok)
        factor[..., m:m + a] = columns
        pivots[..., m:m + a], real[..., m:m + a] = kept, ok
        count += ok.sum(-1)
        resid.sub_(columns.square().sum(-1)).clamp_(min=0)
        hits = torch.zeros(resid.shape, dtype=torch.long, device=device).scatter_add_(-1, kept, ok.long())
        resid.masked_fill_(hits > 0, 0.0)  # the new pivots are exact (padding may repeat them)
        m += a
    if info is not None:
        info.update(remaining_error=float(resid.amax()), stop_threshold=float((tol * trace).amax()),
                    rounds=rounds)
    return _compacted(factor[..., :m], pivots[..., :m], real[..., :m])


def _widened(factor: Tensor, pivots: Tensor, real: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """The three with their last dimension grown to at least ``width`` (doubling), zero-filled."""
    extra = max(width, 2 * factor.shape[-1]) - factor.shape[-1]
    return (torch.cat([factor, factor.new_zeros(*factor.shape[:-1], extra)], -1),
            torch.cat([pivots, pivots.new_zeros(*pivots.shape[:-1], extra)], -1),
            torch.cat([real, real.new_zeros(*real.shape[:-1], extra)], -1))


def _compacted(factor: Tensor, pivots: Tensor, real: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each element's real columns first (stable), width the largest count: (factor, pivots, counts)."""
    counts = real.sum(-1)
    if bool(real.all()):
        return factor, pivots, counts
    width = int(counts.max()) if counts.numel() else 0
    order = torch.argsort((~real).to(torch.int8), dim=-1, stable=True)[..., :width]
    factor = factor.gather(-1, order.unsqueeze(-2).expand(*factor.shape[:-1], width))
    return factor, pivots.gather(-1, order), counts


@dataclass(frozen=True)
class RPCholesky(PivotConfig):
    """Preconditioner P = L L^T + noise, L the rank-``rank`` randomly pivoted Cholesky factor of
    K (``preconditioners.rpcholesky``): pivots sampled in proportion to the residual diagonal
    of K - L L^T, in rounds of ROUND_CANDIDATES candidates with rejection, about (rank + 1) n
    kernel entries. Like ``PivotedCholesky``, K - L L^T is PSD, so every eigenvalue of
    P^{-1} K_hat is >= 1 (certified variances use Gauss-Radau bounds), and log det P and
    N(0, P) probes are exact. Where the greedy rule spends pivots on isolated points (large
    residuals that explain little of K), sampling spreads them over the mass of the data.

    Args:
        rank, refresh_every, max_rank, eval_rank, block_size: as for ``PivotedCholesky``
            (pivots sampled afresh every ``refresh_every`` builds, or when stale, and reused in
            between as a Nystrom factor at the new hyperparameters; rank growth; the rank of
            the posterior mean solve; diagonal blocks). ``model.diagnostics["precond_pivots"]``
            says "sampled" or "reused".
        seed: the seed of the pivot draws (CPU generator): a build at the same operator draws
            the same pivots.
    """

    kind = "rpcholesky"
    pivot_rule = "sampled"

    rank: int = 100
    refresh_every: int = 10
    max_rank: int | None = None
    eval_rank: int | None = None
    block_size: int = 0
    seed: int = 0

    def __post_init__(self):
        self._check_pivot_fields()
        check_number(self, "seed", integer=True, allow_zero=True)

    def fresh_factor(self, kernel_op, rank: int, info: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(factor, pivots, counts) of a randomly pivoted Cholesky of rank ``rank``."""
        return randomly_pivoted_cholesky(kernel_op, rank, self.seed, info=info)
