# The two inference paths of an exact GP: float64 Cholesky (small n, exact) and BBMM (CG).
# Each returns the data-fit term r^T K_hat^-1 r and log det K_hat, and fills a diagnostics dict.
from __future__ import annotations

import math
import time
import warnings

import torch

from ..errors import NotPSDError, NumericalWarning
from ..linalg import PivotCache, pivoted_cholesky_preconditioner, safe_cholesky
from ..linalg.inv_quad_logdet import inv_quad_logdet
from ..operators import AddedDiag, KernelOperator
from ..solvers import CG, Cholesky, Vecchia


def seconds_since(start: float, device: torch.device) -> float:
    """Seconds from ``start`` (a ``time.perf_counter()`` reading) until the work queued on
    ``device`` has finished (CUDA runs asynchronously: without the wait, a timing would be
    that of queueing the kernels)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def cholesky_factor(kernel, x, noise, solver: Cholesky, diagnostics: dict):
    """L (float64) with L L^T = K(x, x) + diag(noise) (+ reported jitter). Differentiable.

    The kernel is evaluated on float64 inputs whatever the dtype of x: float32 distances lose
    ~eps32 |x / lengthscale|^2, which for points many lengthscales apart turns a well-conditioned
    K into one no jitter can factor.
    """
    k_hat = kernel(x.double()) + torch.diag_embed(noise.double())
    if not bool(torch.isfinite(k_hat).all()):
        raise NotPSDError("the kernel matrix has NaN or infinite entries at the current "
                          "hyperparameters (check for overflowing lengthscales or outputscale)")
    chol, jitter = safe_cholesky(k_hat, max_tries=solver.max_tries, jitter=solver.jitter)
    diagnostics.update(path="cholesky", backend="dense", jitter=jitter, cg_iterations=0, residual=0.0)
    return chol


def cholesky_terms(kernel, x, noise, resid, solver: Cholesky, diagnostics: dict):
    """(inv_quad, logdet), each (*batch,), in the dtype of x, by a float64 Cholesky."""
    chol = cholesky_factor(kernel, x, noise, solver, diagnostics)
    white = torch.linalg.solve_triangular(chol, resid.double().unsqueeze(-1), upper=False)
    inv_quad = white.squeeze(-1).pow(2).sum(-1)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return inv_quad.to(x.dtype), logdet.to(x.dtype)


def cg_operator(kernel, x, noise, solver: CG, pivots: PivotCache | None = None,
                rank: int | None = None):
    """(K_hat operator, kernel operator, preconditioner or None) for the CG path.

    ``pivots``: a model's PivotCache, which may rebuild the preconditioner from earlier pivots
    (None: fresh greedy pivots, of ``rank``, default ``solver.precond.rank``).
    """
    kernel_op = KernelOperator(kernel, x, backend=solver.backend, precision=solver.precision,
                               memory_budget=solver.memory_budget)
    precond = None
    if isinstance(solver.precond, Vecchia):
        precond = (pivots if pivots is not None else PivotCache()).vecchia(kernel_op, noise, solver.precond)
    elif solver.precond is not None:
        with torch.no_grad():
            if pivots is None:
                rank = solver.precond.rank if rank is None else rank
                precond = pivoted_cholesky_preconditioner(kernel_op, noise.detach(), rank,
                                                          solver.precond.block_size)
            else:
                precond = pivots.preconditioner(kernel_op, noise, solver.precond)
    return AddedDiag(kernel_op, noise), kernel_op, precond


# fused-kernel precisions whose rounding of K is too coarse for the training solves
COARSE_PRECISIONS = ("tf32", "bf16")


def cg_terms(kernel, x, noise, resid, solver: CG, diagnostics: dict, generator=None,
             pivots: PivotCache | None = None):
    """(inv_quad, logdet), each (*batch,), by BBMM (mBCG + stochastic Lanczos quadrature).

    ``pivots``: the model's PivotCache (see ``cg_operator``); it is told the CG iterations.
    """
    pivots = PivotCache() if pivots is None else pivots  # a fresh one chooses greedy pivots
    start = time.perf_counter()
    op, kernel_op, precond = cg_operator(kernel, x, noise, solver, pivots)
    precond_seconds = seconds_since(start, x.device)
    if kernel_op.backend == "triton" and kernel_op.precision in COARSE_PRECISIONS:
        warnings.warn(f"CG(precision={kernel_op.precision!r}) in training: products with a 10-bit (or "
                      "narrower) mantissa perturb K_hat by more than a small noise variance, and the "
                      "log marginal likelihood and its gradient can be wrong without CG noticing "
                      "(relative mll errors of 0.03-12 measured at n = 5,000-20,000, noise 0.01; "
                      "benchmarks/results/precision_accuracy_h200.md). Use precision='tf32x3' or 'fp32'",
                      NumericalWarning, stacklevel=3)
    resid = resid.expand(*op.batch_shape, resid.shape[-1])  # batched through kernel/likelihood only
    info = {}
    inv_quad, logdet = inv_quad_logdet(op, resid, precond, probes=solver.probes, tol=solver.tol,
                                       max_iters=solver.max_iters, lanczos_iters=solver.lanczos_iters,
                                       generator=generator, info=info,
                                       reorthogonalize=solver.reorthogonalize)
    if precond is not None and not isinstance(solver.precond, Vecchia):
        pivots.record_iterations(info["iterations"], floor=solver.lanczos_iters,
                                 max_rank=solver.precond.max_rank)
    remaining = pivots.remaining_error if precond is not None and pivots.remaining_error else (None, None)
    diagnostics.update(path="cg", backend=kernel_op.backend, precision=kernel_op.precision,
                       jitter=0.0, cg_iterations=info["iterations"],
                       residual=info["residual"], mean_residual=info["mean_residual"],
                       converged=info["converged"], cg_breakdowns=info["breakdowns"],
                       precond_rank=0 if precond is None else precond.rank,
                       precond_block_size=getattr(precond, "block_size", 0),
                       precond_neighbors=precond_neighbors(precond),
                       precond_block_repairs=block_repairs(precond),
                       precond_pivots=None if precond is None else pivots.source,
                       precond_seconds=precond_seconds,
                       precond_remaining_error=remaining[0], precond_stop_threshold=remaining[1],
                       logdet_tail_change=info["logdet_tail_change"])
    return inv_quad, logdet


def precond_neighbors(precond) -> int:
    """The predecessors per point of a Vecchia preconditioner (0 for other preconditioners)."""
    return getattr(precond, "build_info", {}).get("neighbors", 0) if precond is not None else 0


def block_repairs(precond) -> dict | None:
    """How many diagonal blocks of a block preconditioner needed jitter or kept only their
    diagonal ({"jittered_blocks", "max_jitter", "diagonal_blocks"}; None: no blocks)."""
    info = getattr(precond, "build_info", None)
    if info is None:
        return None
    return {"jittered_blocks": info.get("jittered_blocks", 0), "max_jitter": info.get("max_jitter", 0.0),
            "diagonal_blocks": info.get("diagonal_blocks", 0)}


def marginal_log_likelihood(inv_quad, logdet, n: int) -> torch.Tensor:
    """log p(y) / n from the two terms: -(inv_quad + logdet + n log 2 pi) / (2 n)."""
    return -0.5 * (inv_quad + logdet + n * math.log(2 * math.pi)) / n
