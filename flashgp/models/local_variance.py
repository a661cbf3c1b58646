# Predictive variances of f* from each test point's nearest training points (local conditioning):
# var(f* | y_N) for the k training points N nearest to x*, an upper bound on var(f* | y).
"""Local (nearest-neighbour) predictive variances.

For a test point x* and any subset N of the training points, conditioning on fewer observations
can only leave more uncertainty: var(f* | y_N) >= var(f* | y), with equality when N holds every
training point. For stationary kernels on dense data the nearest points screen off the rest,
so a few hundred neighbours (in lengthscale-scaled distance) come close to the exact variance
where a low-rank Lanczos root (LOVE) cannot: LOVE needs a root rank that grows with the number
of lengthscale-sized cells the data fill, local conditioning a neighbour count that grows with
the points per cell. The cost is O(m k (n + k^2)) for m test points, no n x n matrix and no root.

Neighbours come from an exact search (``neighbors.nearest_neighbors``); each test point then
gets a float64 Cholesky of its k x k K_NN + noise (in batches of ``batch_points`` points).
Only marginal variances come out (no covariances between test points).
"""
from __future__ import annotations

import torch

from ..backends.stationary import StationaryParts
from ..kernels.scale import Scale
from ..kernels.stationary import Stationary
from ..linalg.cholesky import safe_cholesky
from ..linalg.neighbors import nearest_neighbors
from ..engines.records import LocalVarianceInfo

LOCAL_BATCH = 1024      # test points per batch of k x k float64 Cholesky factorizations (CUDA)
# Off CUDA a batch's K_NN is held to about this many bytes: the k x k blocks and their
# temporaries then stay in cache and in memory the process already has. On 2 CPU cores (n =
# 20,000, 2,000 test points, Matern 5/2, k = 256) this function took 2.56 s in batches of 4
# (2 MiB) and 15.9-19.3 s in batches of 1024, whose 100-500 MB temporaries were dominated by page
# faults on first touch (`python benchmarks/local_variance_speed.py --device cpu --n 20000 --test
# 2000 --neighbors 64 256 --no-blocked`, against the same run with CPU_BATCH_BYTES = 2**40).
CPU_BATCH_BYTES = 2 * 1024**2


def batch_points(k: int, device: torch.device) -> int:
    """Test points per batch of k x k factorizations: LOCAL_BATCH on CUDA, else as many as fit
    CPU_BATCH_BYTES of float64 K_NN (at least 1)."""
    if torch.device(device).type == "cuda":
        return LOCAL_BATCH
    return max(1, min(LOCAL_BATCH, CPU_BATCH_BYTES // (8 * k * k)))


def search_inputs(kernel, x: torch.Tensor) -> torch.Tensor:
    """The coordinates neighbours are searched in: for a stationary kernel (bare or in one
    Scale) the lengthscale-scaled columns it sees, else x itself. x (n, d) -> (n, D)."""
    scale, base = (kernel, kernel.base) if isinstance(kernel, Scale) else (None, kernel)
    if isinstance(base, Stationary):
        z = StationaryParts(scale, base).scaled_inputs(x)
        return z.reshape(z.shape[-2:]) if z.dim() > 2 else z
    return x


@torch.no_grad()
def local_variances(kernel, train_x: torch.Tensor, noise: torch.Tensor, x: torch.Tensor,
                    neighbors: int, solutions: bool = False) -> tuple:
    """var(f* | y_N) (m,) for test inputs x (m, d), N the ``neighbors`` training points nearest
    to each x* (``search_inputs``), with the observation noise ``noise`` (n,) of the training
    points; and a ``LocalVarianceInfo`` record (neighbors: k; jitter_points: how many test points
    were in batches (``batch_points``) whose K_NN + noise needed jitter (one jitter per batch,
    ``safe_cholesky``); change: how far the variances may still be from converged, which
    ``model.diagnostics`` calls variance_local_change). train_x (n, d); an unbatched model only.

    change: the median over test points of the variance of f* that the farther
    half of the neighbours removed, relative to the variance of y* (with the mean noise). The
    Cholesky factor of the nearest k // 2 is the leading block of L, so the variance from those
    alone comes with no extra work. 0 when the neighbours are all n training points.

    Computed in float64: k** - |L^{-1} k_N*|^2 with L the Cholesky factor of K_NN + diag(noise_N).
    With neighbors = n this is the exact posterior variance.

    ``solutions``: also return (index (m, k) long, weights (m, k) in the dtype of x): the local
    solves (K_NN + diag(noise_N))^{-1} k_N* on each test point's neighbours, a starting guess
    for certified CG variances (``models.certified``).
    """
    n = train_x.shape[-2]
    if train_x.dim() != 2 or x.dim() != 2 or noise.numel() != n:
        raise ValueError(f"local_variances: expected train_x (n, d), x (m, d) and noise of n = {n} "
                         f"values, got shapes {tuple(train_x.shape)}, {tuple(x.shape)}, "
                         f"{tuple(noise.shape)}")
    noise = noise.reshape(n)
    k = min(int(neighbors), n)
    index = nearest_neighbors(search_inputs(kernel, train_x), search_inputs(kernel, x), k)
    variances = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    tails = torch.empty_like(variances)  # the downdate of the farther half of the neighbours
    weights = torch.empty(x.shape[0], k, dtype=x.dtype, device=x.device) if solutions else None
    jittered, batch = 0, batch_points(k, x.device)
    for r in range(0, x.shape[0], batch):
        near = index[r:r + batch]                                   # (b, k)
        xn = train_x[near].double()                                 # (b, k, d)
        xs = x[r:r + batch].double()                                # (b, d)
        k_nn = kernel(xn, xn) + torch.diag_embed(noise[near].double())
        chol, jitter = safe_cholesky(k_nn)
        jittered += int(bool(jitter)) * near.shape[0]
        white = torch.linalg.solve_triangular(chol, kernel(xn, xs.unsqueeze(-2)), upper=False)
        down = white.squeeze(-1).square()                           # (b, k)
        variances[r:r + batch] = kernel.diag(xs) - down.sum(-1)
        tails[r:r + batch] = down[:, k // 2:].sum(-1)
        if solutions:
            weights[r:r + batch] = torch.linalg.solve_triangular(chol.transpose(-1, -2), white,
                                                                 upper=True).squeeze(-1).to(x.dtype)
    change = 0.0 if k == n else float((tails / (variances.clamp_min(0) + noise.mean())).median())
    info = LocalVarianceInfo(k, int(jittered), change)
    if solutions:
        return variances.to(x.dtype), info, (index, weights)
    return variances.to(x.dtype), info
