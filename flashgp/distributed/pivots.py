# Pivots kept across training steps with the rows split across processes: the PivotCache of one
# process with its three build steps done on sharded rows (fresh pivots by the sharded greedy run,
# rebuilds from cached pivots without communication, the sharded Woodbury preconditioner).
from __future__ import annotations

import torch
from torch import Tensor

from ..operators.kernel import KernelOperator
from ..preconditioners.pivot_state import PivotCache
from ..preconditioners.pivoted_cholesky import nystrom_factor
from .group import Shards
from .operator import ShardedKernelOperator
from .precond import ShardedLowRankPlusDiag, sharded_pivoted_cholesky


@torch.no_grad()
def sharded_nystrom_factor(op: ShardedKernelOperator, pivots: Tensor, counts: Tensor | None = None) -> Tensor | None:
    """This process's rows ``(n_local, k)`` of the pivoted Cholesky factor at given (global) pivots,
    L = K[:, P] chol(K[P, P])^{-T} as ``nystrom_factor`` builds it on one process, or None on
    every process when any of them cannot (K[P, P] not factorable, a non-finite row block).

    Every process evaluates K[P, P] from the inputs it holds (the same matrix everywhere) and
    its columns K(x_P, x_local) of K[P, :]; the only collective is one all-reduce of the
    failure flag, so that all processes reuse their pivots or all choose anew."""
    x_p = op.x_all[pivots]
    inner = KernelOperator(op.kernel, x_p, backend="blocked").to_dense()
    factor = nystrom_factor(op, pivots, counts, inner=inner)
    failed = torch.tensor([0.0 if factor is not None else 1.0], dtype=torch.float64, device=op.device)
    if float(op.shards.row_sum(failed)) > 0:
        return None
    return factor


class ShardedPivotCache(PivotCache):
    """``PivotCache`` (pivots reused for ``refresh_every`` builds, staleness, rank growth up to
    ``max_rank``, checkpoint state) for a ``ShardedKernelOperator``: every process holds the same
    cache (the same pivots, counters and decisions, which depend only on all-reduced numbers),
    keyed by the global n, so its ``state_dict`` is that of one process's cache and resumes on
    any number of processes (and on one, in an ``fg.ExactGP``). Greedy pivots only; no blocks.
    """

    def __init__(self, shards: Shards):
        super().__init__("greedy")
        self.shards = shards

    def _key(self, op, rank: int) -> tuple:
        return (tuple(op.batch_shape), self.shards.n, op.dtype, op.device, rank)

    def _rebuild(self, kernel_op, pivots, counts):
        return sharded_nystrom_factor(kernel_op, pivots, counts)

    def _fresh(self, kernel_op, config, rank: int, info: dict):
        return sharded_pivoted_cholesky(kernel_op, rank, info=info)

    def _assemble(self, kernel_op, noise: Tensor, rank: int, config, factor: Tensor | None):
        if factor is None:
            factor = torch.zeros(*kernel_op.batch_shape, self.shards.n_local, 0, dtype=kernel_op.dtype,
                                 device=kernel_op.device)
        return ShardedLowRankPlusDiag(factor, noise.expand(*factor.shape[:-1]), self.shards, spectrum_floor=1.0)
