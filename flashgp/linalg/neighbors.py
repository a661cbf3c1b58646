# Exact k-nearest-neighbour search for local predictive variances: a uniform grid of cells for
# few dimensions (candidates from the 3^D cells around each query, checked), blocked otherwise.
"""k nearest points (Euclidean) of each query, exact up to float32 rounding of distances.

``nearest_neighbors`` takes the grid search for D <= GRID_MAX_D and at least GRID_MIN_POINTS
points, else (and for every query the grid cannot certify) the blocked search over all points.

Grid search: cells of side h hold about 2 k / V_D points each on average (V_D the volume of the
unit ball: 0.48 k for D = 3), so a ball of radius h holds about 2 k. A query's candidates are
the points of its own cell and the 3^D - 1 around it. Any point outside those cells is at least
rho away, rho being the query's distance to the outer faces of that block of cells (faces on the
grid's border count as infinitely far: no point lies beyond them). So when the k-th nearest
candidate is within rho, the k candidates are the k nearest of all points; the queries where it
is not (sparse or clustered data) go to the blocked search.
"""
from __future__ import annotations

import itertools
import math

import torch

SEARCH_ROWS = 2048      # blocked search: queries per block
SEARCH_COLS = 65536     # blocked search: points per block (SEARCH_ROWS x SEARCH_COLS distances)
GRID_MAX_D = 4          # grid search up to this many dimensions (3^D cells per query)
GRID_MIN_POINTS = 20000  # below this the blocked search is cheap enough
GRID_ENTRIES = 2**24    # grid search: query-candidate distances per block
MAX_CELLS = 2**22


def _check(points, queries, k):
    n = points.shape[0]
    if points.dim() != 2 or queries.dim() != 2 or points.shape[1] != queries.shape[1]:
        raise ValueError(f"queries: expected (m, D) beside points (n, D), got {tuple(queries.shape)} "
                         f"and {tuple(points.shape)}")
    if isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= {n} (the number of points), got {k}")


@torch.no_grad()
def nearest_neighbors(points: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """(m, k) long: for each query, the indices of its k nearest points, nearest first.
    points (n, D), queries (m, D), 1 <= k <= n. Ties go either way."""
    _check(points, queries, k)
    points, queries = points.float(), queries.float()
    if points.shape[1] <= GRID_MAX_D and points.shape[0] >= GRID_MIN_POINTS:
        return grid_neighbors(points, queries, k)
    return blocked_neighbors(points, queries, k)


@torch.no_grad()
def blocked_neighbors(points: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """``nearest_neighbors`` over all points: distances |q|^2 + |p|^2 - 2 q.p in blocks (about
    1e-7 |p|^2 off in float32, |p| measured from the points' mean), the k smallest of each block
    merged with the best so far."""
    _check(points, queries, k)
    centre = points.float().mean(0)
    points, queries = points.float() - centre, queries.float() - centre
    n, m = points.shape[0], queries.shape[0]
    p_sq = points.square().sum(-1)
    out = torch.empty(m, k, dtype=torch.long, device=points.device)
    for r in range(0, m, SEARCH_ROWS):
        q = queries[r:r + SEARCH_ROWS]
        q_sq = q.square().sum(-1, keepdim=True)
        best_d = torch.empty(q.shape[0], 0, device=points.device)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=points.device)
        for c in range(0, n, SEARCH_COLS):
            d2 = torch.addmm(q_sq + p_sq[c:c + SEARCH_COLS], q, points[c:c + SEARCH_COLS].T, alpha=-2.0)
            block_d, block_i = d2.topk(min(k, d2.shape[1]), dim=1, largest=False)
            cand_d, cand_i = torch.cat([best_d, block_d], 1), torch.cat([best_i, block_i + c], 1)
            best_d, pos = cand_d.topk(min(k, cand_d.shape[1]), dim=1, largest=False, sorted=True)
            best_i = cand_i.gather(1, pos)
        out[r:r + SEARCH_ROWS] = best_i
    return out


@torch.no_grad()
def grid_neighbors(points: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """``nearest_neighbors`` by the grid search of the module docstring (blocked search for the
    queries it cannot certify, and for all of them when the cells would be too many or too
    unevenly filled)."""
    _check(points, queries, k)
    points, queries = points.float(), queries.float()
    n, dim = points.shape
    lo, hi = points.amin(0), points.amax(0)
    extent = (hi - lo).clamp_min(1e-30)
    # cells of 2 k / V_D points on average (V_D: the unit ball's volume), so that the ball of
    # radius side, which the 3^D cells always hold, holds about 2 k points
    per_cell = max(2 * k / (math.pi ** (dim / 2) / math.gamma(dim / 2 + 1)), 4)
    side = float((extent.prod() * per_cell / n) ** (1 / dim))
    shape = torch.ceil(extent / side).clamp_min(1).long()
    if side <= 0 or int(shape.prod()) > MAX_CELLS:
        return blocked_neighbors(points, queries, k)
    strides = torch.cumprod(torch.cat([shape.new_ones(1), shape[:-1]]), 0)

    def cell_coords(x):
        return torch.div(x - lo, side, rounding_mode="floor").long().clamp_(min=0).minimum(shape - 1)

    cell = (cell_coords(points) * strides).sum(-1)
    order = cell.argsort()
    counts = torch.bincount(cell, minlength=int(shape.prod()))
    starts = counts.cumsum(0) - counts
    width = int(counts.max())  # the fullest cell
    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=dim)), device=points.device)
    if 3**dim * width > n // 2 or 3**dim * width < k:  # the grid saves little, or holds too few
        return blocked_neighbors(points, queries, k)
    sorted_points = points[order]
    out = torch.empty(queries.shape[0], k, dtype=torch.long, device=points.device)
    certified = torch.empty(queries.shape[0], dtype=torch.bool, device=points.device)
    rows = max(1, GRID_ENTRIES // (3**dim * width))
    slot = torch.arange(width, device=points.device)
    for r in range(0, queries.shape[0], rows):
        q = queries[r:r + rows]
        qc = cell_coords(q)                                          # (b, D)
        near = qc.unsqueeze(1) + offsets                             # (b, 3^D, D)
        inside = ((near >= 0) & (near < shape)).all(-1)
        ids = (near.clamp(min=0).minimum(shape - 1) * strides).sum(-1)
        count = torch.where(inside, counts[ids], 0)                  # (b, 3^D)
        pos = starts[ids].unsqueeze(-1) + slot                       # (b, 3^D, width)
        valid = (slot < count.unsqueeze(-1)).flatten(1)
        pos = pos.flatten(1).clamp_max(n - 1)
        d2 = (sorted_points[pos] - q.unsqueeze(1)).square().sum(-1)  # (b, 3^D width)
        d2 = torch.where(valid, d2, torch.inf)
        best_d, best = d2.topk(k, dim=1, largest=False, sorted=True)
        out[r:r + rows] = order[pos.gather(1, best)]
        # rho: the distance to the outer faces of the 3^D cells, border faces infinitely far
        below = torch.where(qc > 0, q - (lo + (qc - 1) * side), torch.inf)
        above = torch.where(qc < shape - 1, lo + (qc + 2) * side - q, torch.inf)
        rho = torch.minimum(below, above).amin(-1)
        certified[r:r + rows] = best_d[:, -1] <= rho.square()       # inf (too few candidates) fails
    rest = (~certified).nonzero().squeeze(-1)
    if rest.numel():
        out[rest] = blocked_neighbors(points, queries[rest], k)
    return out
