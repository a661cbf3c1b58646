# The exact GP's log marginal likelihood by BBMM with the training rows split across processes.
from __future__ import annotations

import torch

from ..linalg.inv_quad_logdet import inv_quad_logdet
from ..objectives import gaussian_log_density
from ..operators.added_diag import AddedDiag
from .group import Shards
from .operator import ShardedKernelOperator
from .precond import check_config, sharded_preconditioner


def sharded_mll(kernel, mean, likelihood, x_local: torch.Tensor, y_local: torch.Tensor, group=None,
                probes: int = 10, tol: float = 1.0, max_iters: int = 1000, lanczos_iters: int = 20,
                generator: torch.Generator | None = None, backend: str = "auto",
                memory_budget: int | None = None, reorthogonalize: bool = False, precond=None,
                precision: str | None = None, shards: Shards | None = None, x_all: torch.Tensor | None = None,
                state=None):
    """log p(y | x) / n of an exact GP whose n training rows are split across the processes of
    ``group``, by BBMM (mBCG + SLQ), with the value and, after ``.backward()``, the parameter
    gradients the same on every process and equal, to round-off, to those of ``exact_mll`` on one
    process with ``fg.CG(precond=precond)`` (a fresh preconditioner state) and the same probes.

    A collective: every process of ``group`` calls it together, each with its contiguous block
    of the rows in rank order (rank 0 the first rows; uneven blocks are fine, each at least one
    row), and the backward pass is collective too.

    Args:
        kernel, mean, likelihood: the model's parts, the same (same values) on every process;
            a conjugate likelihood (``Gaussian``; ``FixedNoise`` holding the noise of all n rows).
        x_local: ``(n_local, d)`` this process's rows of the inputs (not requiring grad).
        y_local: ``(n_local,)`` its targets.
        group: a ``torch.distributed`` process group (None: the default one, which must be
            initialised; with gloo the tensors live on the CPU, with NCCL on this process's GPU).
        probes, tol, max_iters, lanczos_iters, reorthogonalize: the mBCG settings, defaults those
            of ``fg.CG()``.
        generator: a ``torch.Generator`` seeded alike on every process (the probes are this
            process's rows of the ``(n, probes)`` block one process would draw from it); None
            uses torch's global generator, which must then be seeded alike everywhere.
        backend, memory_budget, precision: the local product's ``KernelOperator`` settings
            (precision None: KernelOperator's default).
        state: a ``ShardedPivotCache`` kept between calls (``ShardedExactGP``'s): the pivots are
            then reused for ``precond.refresh_every`` calls and the rank grows up to
            ``precond.max_rank``, as a single-process model's ``PivotCache`` does (the same
            decisions); None: fresh pivots every call.
        shards, x_all: the row split of ``group`` and every process's inputs ``(n, d)`` when
            known (a ``ShardedExactGP``'s): they save the all-gathers of the row counts and of x.
        precond: None (CG without a preconditioner) or ``fg.PivotedCholesky(rank=k)`` (without
            blocks), configured as for ``fg.CG(precond=...)``: P = L L^T + diag(noise) with L the
            greedy pivoted Cholesky factor of K, pivots chosen over all n rows (the pivots and
            L those one process computes; ``ShardedLowRankPlusDiag``). Built without gradient,
            afresh on every call unless ``state`` keeps pivots. Other preconditioners raise
            NotImplementedError.

    Returns:
        (value, info): value a 0-dimensional tensor (batched kernels are untested),
        differentiable in the kernel's, mean's and likelihood's parameters; info the solve's
        record (iterations, residual, converged, ..., as ``inv_quad_logdet`` gives it) with
        n, n_local, rank and world_size, and with a preconditioner precond_rank and pivots
        (``(k,)`` long, global row indices).

    ``ShardedExactGP.mll`` is this function with the model's solver settings (a model that
    ``fg.fit`` trains). Not built yet (later milestones of issue 35): other sharded
    preconditioners, checkpoints, and gradients with respect to the inputs (deep kernels,
    learned inputs).
    """
    if x_local.dim() < 2 or y_local.shape[-1] != x_local.shape[-2]:
        raise ValueError(f"x_local, y_local: expected (n_local, d) and (n_local,), got shapes "
                         f"{tuple(x_local.shape)} and {tuple(y_local.shape)}")
    check_config(precond)  # before the first collective
    if shards is None:
        shards = Shards(x_local.shape[-2], group, device=x_local.device)
    elif shards.n_local != x_local.shape[-2]:
        raise ValueError(f"shards: this process holds {shards.n_local} rows by it, x_local has {x_local.shape[-2]}")
    if x_all is None:
        x_all = shards.gather(x_local, dim=-2)
    options = {} if precision is None else {"precision": precision}
    kernel_op = ShardedKernelOperator(kernel, x_local, shards, x_all, backend=backend, memory_budget=memory_budget,
                                      **options)
    # the mean and the noise over all n rows on every process, then this process's rows: their
    # backward gathers every process's gradient rows, so the parameters get the global gradient
    mean_local = shards.local_rows(mean(x_all), dim=-1)
    noise_local = shards.local_rows(likelihood.noise_diag(shards.n), dim=-1)
    op = AddedDiag(kernel_op, noise_local)
    resid = (y_local - mean_local).expand(*op.batch_shape, shards.n_local)
    info = {}
    built = sharded_preconditioner(precond, kernel_op, noise_local, info, state=state)
    inv_quad, logdet = inv_quad_logdet(op, resid, built, probes=probes, tol=tol, max_iters=max_iters,
                                       lanczos_iters=lanczos_iters, generator=generator, info=info,
                                       reorthogonalize=reorthogonalize, row_sum=shards.row_sum,
                                       rows=shards.rows)
    if state is not None and precond is not None:
        precond.record_iterations(state, info["iterations"], floor=lanczos_iters)
    info.update(n=shards.n, n_local=shards.n_local, rank=shards.rank, world_size=shards.world_size,
                backend=kernel_op.backend)
    return gaussian_log_density(inv_quad, logdet, shards.n), info
