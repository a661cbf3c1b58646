# Choosing inducing inputs from the data: k-means++ seeding (spread in input space) or randomly
# pivoted Cholesky (spread in the kernel's feature space, at the current hyperparameters).
from __future__ import annotations

import torch
from torch import Tensor

from .operators import KernelOperator
from .preconditioners.rpcholesky import randomly_pivoted_cholesky

INIT_METHODS = ("kmeans++", "rpcholesky")
# the selection looks at a uniform subsample of at most this many training points (the cost of
# both rules is O(sample * m * d); their n x m state would not fit at n = 10M, m = 2,000)
SELECTION_SAMPLE = 200_000


def _subsample(x: Tensor, generator: torch.Generator) -> Tensor:
    """At most SELECTION_SAMPLE rows of x (n, d), drawn without replacement."""
    n = x.shape[0]
    if n <= SELECTION_SAMPLE:
        return x
    index = torch.randperm(n, generator=generator)[:SELECTION_SAMPLE].to(x.device)
    return x[index]


def kmeans_pp(x: Tensor, m: int, generator: torch.Generator) -> Tensor:
    """Indices (m,) of k-means++ seeds among the rows of x (n, d): the first uniformly, each next
    one with probability proportional to its squared distance to the nearest seed so far (points
    already chosen, and duplicates of them, are never drawn again while others remain)."""
    n = x.shape[0]
    xd = x.double()
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    nearest = (xd - xd[first]).square().sum(-1)
    for _ in range(1, m):
        weights = nearest.clamp_min(0).cpu()
        if float(weights.sum()) <= 0:  # every point coincides with a seed: take unchosen ones
            weights = torch.ones(n, dtype=torch.float64)
            weights[torch.tensor(chosen)] = 0
        pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, (xd - xd[pick]).square().sum(-1))
    return torch.tensor(chosen, device=x.device)


def select_inducing(x: Tensor, m: int, method: str = "kmeans++", kernel=None, seed: int = 0) -> Tensor:
    """m inducing inputs ``(*batch, m, d)`` chosen among the training inputs x ``(*batch, n, d)``, each
    batch element on its own.

    method: "kmeans++" (k-means++ seeding: spread over the inputs, needs no kernel) or
    "rpcholesky" (randomly pivoted Cholesky of ``kernel`` at its current hyperparameters: points
    drawn in proportion to how badly the ones chosen so far explain them, the selection of Chen,
    Epperly, Tropp and Webber). Both look at a random subsample of SELECTION_SAMPLE points when
    n is larger; ``seed`` makes the choice reproducible. The points are copies of rows of x.
    """
    if method not in INIT_METHODS:
        raise ValueError(f"init: expected one of {INIT_METHODS}, got {method!r}")
    if method == "rpcholesky" and kernel is None:
        raise ValueError("init: 'rpcholesky' needs the kernel (its hyperparameters decide the selection)")
    n = x.shape[-2]
    if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= n:
        raise ValueError(f"inducing: expected a number of inducing points in [1, n = {n}], got {m!r}")
    if method == "rpcholesky" and (x.dim() > 2 or len(kernel.batch_shape)):
        raise ValueError("init: 'rpcholesky' chooses for one GP; batch models take init='kmeans++' or "
                         "inducing points given as a tensor")
    generator = torch.Generator().manual_seed(seed)
    flat = x.reshape(-1, n, x.shape[-1])
    picks = []
    for element in flat:
        sample = _subsample(element, generator)
        if method == "kmeans++":
            index = kmeans_pp(sample, m, generator)
        else:
            with torch.no_grad():
                op = KernelOperator(kernel, sample, backend="blocked")
                _, pivots, count = randomly_pivoted_cholesky(op, m, seed=int(torch.randint(2**31, (1,), generator=generator)))
            index = pivots[: int(count)]
            if index.numel() < m:  # the kernel's rank ran out: fill with k-means++ seeds
                extra = kmeans_pp(sample, m, generator)
                fresh = extra[~torch.isin(extra, index)]
                index = torch.cat([index, fresh[: m - index.numel()]])
        picks.append(sample[index].clone())
    return torch.stack(picks).reshape(*x.shape[:-2], m, x.shape[-1])
