# The Vecchia preconditioner: K_hat^{-1} ~ U^T U with U sparse, each point conditioned on its
# nearest predecessors in a random order of the points (Vecchia 1988; the KL-optimal weights of
# Schaefer, Katzfuss and Owhadi 2021). Build: a neighbour search and n small Choleskys.
"""P = (U^T U)^{-1} from the conditionals of y_i given y at its m nearest predecessors N(i):

    y_i | y_N(i)  ~  N(b_i^T y_N(i), d_i),   b_i = K_hat[N, N]^{-1} K_hat[N, i],
    (U y)_i = (y_i - b_i^T y_N(i)) / sqrt(d_i)

so that U K_hat U^T is the identity where the conditionals are exact. Row i of U is the last
column of Theta^{-1} / sqrt of its last entry, Theta = K_hat on (N(i), i); with the Cholesky
factor C of Theta that is C^{-T} e_last, and U_ii = 1 / C_last,last.

Nearness is measured in the kernel's lengthscale-scaled inputs (``locality_inputs``). The
order is a random permutation (seeded: the same points get the same order on every device).
Predecessors: the first FIRST_BLOCK points of the order search among all earlier ones; after
them, the points of positions [s, 2 s) take the CANDIDATES m nearest among positions [0, 2 s)
(one ``nearest_neighbors`` call per doubling) and keep the first m of those before them: the m
nearest predecessors, or, where fewer than m of the candidates come before (points early in
their doubling, whose predecessors are at least half of [0, 2 s)), the nearest ones found.
Random orders make early points sparse, so their neighbours reach far and later ones near:
the conditionals cover long and short range alike, where a low-rank factor covers only long.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..linalg.neighbors import nearest_neighbors
from ..linalg.spatial import check_count
from ..operators.base import Operator
from ..operators.sparse_inverse import SparseInverseCholesky
from .blocks import BUILD_CHUNK_ENTRIES, _block_cholesky

FIRST_BLOCK = 1024  # leading points of the order whose predecessors are searched exhaustively
CANDIDATES = 2      # later points: the m nearest earlier ones among this many times m nearest


def random_order(n: int, seed: int, device) -> Tensor:
    """A permutation (n,) long drawn on the CPU from ``seed`` (device-independent), on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen).to(device)


@torch.no_grad()
def predecessor_neighbors(z: Tensor, m: int, order: Tensor) -> Tensor:
    """(n, m) long: for each point (by its index in z), its nearest points among those before it
    in ``order``, nearest first, up to m (the module docstring says when fewer); n marks 'none'.
    z (n, D) scaled inputs; order (n,) a permutation."""
    check_count(m, "m")
    n = z.shape[0]
    zp = z[order].float()
    pos = torch.full((n, m), n, dtype=torch.long, device=z.device)  # by position in the order
    first = min(n, max(FIRST_BLOCK, 2 * m))
    if first > 1:
        head = zp[:first]
        d2 = torch.cdist(head, head).square()
        later = torch.arange(first, device=z.device)
        d2.masked_fill_(later[None, :] >= later[:, None], float("inf"))
        k = min(m, first - 1)
        dist, near = d2.topk(k, dim=1, largest=False)
        pos[:first, :k] = torch.where(torch.isfinite(dist), near, n)
    start = first
    while start < n:  # the points at positions [start, stop) against those at [0, stop)
        stop = min(n, 2 * start)
        cand = nearest_neighbors(zp[:stop], zp[start:stop], min(CANDIDATES * m, stop))
        earlier = cand < torch.arange(start, stop, device=z.device).unsqueeze(-1)
        rank = earlier.cumsum(-1) - 1  # the first m earlier candidates, nearest first
        keep = earlier & (rank < m)
        level = torch.full((stop - start, m + 1), n, dtype=torch.long, device=z.device)
        level.scatter_(-1, torch.where(keep, rank, m), torch.where(keep, cand, n))
        pos[start:stop] = level[:, :m]
        start = stop
    # positions -> point indices, rows re-indexed by point
    out = torch.full((n, m), n, dtype=torch.long, device=z.device)
    padded = pos == n
    out[order] = torch.where(padded, n, order[pos.clamp_max(n - 1)])
    return out


@torch.no_grad()
def vecchia_index(z: Tensor, m: int, seed: int = 0) -> Tensor:
    """``(*batch, n, m + 1)`` long: each point's predecessors (``predecessor_neighbors``, n pads)
    followed by the point itself, for scaled inputs z ``(*batch, n, D)``; one order for all."""
    n = z.shape[-2]
    order = random_order(n, seed, z.device)
    flat = z.reshape(-1, n, z.shape[-1])
    rows = torch.arange(n, device=z.device).unsqueeze(-1)
    parts = [torch.cat([predecessor_neighbors(zb, m, order), rows], -1) for zb in flat]
    return torch.stack(parts).reshape(*z.shape[:-2], n, m + 1)


@torch.no_grad()
def vecchia_preconditioner(kernel_op: Operator, noise: Tensor, neighbors: int, seed: int = 0,
                           index: Tensor | None = None) -> SparseInverseCholesky:
    """The Vecchia preconditioner of K_hat = K + diag(noise), ``neighbors`` predecessors per point.

    kernel_op: the KernelOperator K ``(*batch, n, n)`` (``locality_inputs`` for the search,
    ``diagonal_blocks`` for the (m + 1) x (m + 1) blocks of each point and its predecessors);
    noise: ``(*batch, n)`` positive. ``index``: the ``(*batch, n, m + 1)`` result of an earlier
    ``vecchia_index`` on the same points, reused (the search is most of a build). The blocks
    are factored in float64 (``blocks._block_cholesky``: jitter, else the
    diagonal, counted in ``build_info``); U is stored in the operator's dtype, n (m + 1)
    weights and indices. Returns a SparseInverseCholesky.
    """
    check_count(neighbors, "neighbors")
    if not hasattr(kernel_op, "diagonal_blocks") or not hasattr(kernel_op, "locality_inputs"):
        raise TypeError(f"kernel_op: the Vecchia preconditioner needs a KernelOperator, got "
                        f"{type(kernel_op).__name__}")
    batch, n = kernel_op.batch_shape, kernel_op.shape[-1]
    m = min(neighbors, n - 1) if n > 1 else 1
    if index is None or index.shape[-2:] != (n, m + 1) or index.device != kernel_op.device:
        index = vecchia_index(kernel_op.locality_inputs(), m, seed)
    index = index.expand(*batch, n, m + 1)
    noise = noise.detach().expand(*batch, n)
    weights = torch.empty(*batch, n, m + 1, dtype=kernel_op.dtype, device=kernel_op.device)
    info = {"neighbors": m}
    eye = torch.eye(m + 1, dtype=torch.float64, device=kernel_op.device)
    last = eye[:, -1:].expand(*batch, 1, m + 1, 1)
    step = max(1, BUILD_CHUNK_ENTRIES // (m + 1) ** 2)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        idx = index[..., rows, :]
        ok = idx < n
        safe = idx.clamp_max(n - 1)
        diag = noise.gather(-1, safe.flatten(-2)).double().unflatten(-1, idx.shape[-2:])
        blocks = kernel_op.diagonal_blocks(safe)  # (*batch, c, m + 1, m + 1) float64
        scale = blocks.diagonal(dim1=-2, dim2=-1).amax(-1)
        blocks.diagonal(dim1=-2, dim2=-1).add_(diag)
        blocks = torch.where(ok.unsqueeze(-1) & ok.unsqueeze(-2), blocks, eye)  # padding: identity
        blocks = 0.5 * (blocks + blocks.transpose(-1, -2))
        chol = _block_cholesky(blocks, scale, torch.where(ok, diag, 1.0), info)
        row = torch.linalg.solve_triangular(chol.transpose(-1, -2), last.expand(*chol.shape[:-1], 1),
                                            upper=True)
        weights[..., rows, :] = (row.squeeze(-1) * ok).to(weights.dtype)
    if not bool(torch.isfinite(weights).all()) or not bool((weights[..., -1] > 0).all()):
        raise ValueError("Vecchia preconditioner: non-finite or non-positive weights (non-finite "
                         "inputs or hyperparameters?)")
    return SparseInverseCholesky(index, weights, build_info=info)
