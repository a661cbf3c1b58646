# The BBMM core: rhs^T K^{-1} rhs and log det K from one mBCG call, as a custom autograd
# function whose backward needs only the operator's bilinear gradients (no n x n graph).
from __future__ import annotations

import warnings

import torch

from ..errors import NumericalWarning
from .mbcg import mbcg
from .slq import slq_logdet, slq_logdet_tail_change

# the SLQ settling check: how far the last SLQ_TAIL_STEPS Lanczos steps may move the log det
# (nats per training point) before a NumericalWarning says the estimate had not settled
SLQ_TAIL_STEPS = 5
SLQ_TAIL_WARN_PER_POINT = 0.01


def probe_vectors(precond, shape: torch.Size, num: int, dtype, device, generator=None,
                  rows: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Probes z ~ N(0, P) (or N(0, I) without a preconditioner), shape ``(*batch, n, num)``.

    rows: ``(start, stop, n_all)`` when ``shape`` holds rows start:stop of n_all (a shard of the
    rows, ``flashgp.distributed``): the full ``(*batch, n_all, num)`` probes are drawn and these
    rows returned, so every process uses the rows one process drawing them all would use. A
    preconditioner must then be a sharded one on these rows (``check_sharded_precond``), whose
    ``sample`` gives these rows of the N(0, P) draws one process makes."""
    if rows is not None:
        if precond is not None:
            check_sharded_precond(precond, rows)
            return precond.sample(num, generator=generator).to(dtype)
        start, stop, n_all = rows
        full = torch.randn(*shape[:-1], n_all, num, dtype=dtype, device=device, generator=generator)
        return full[..., start:stop, :]
    if precond is not None:
        return precond.sample(num, generator=generator).to(dtype)
    return torch.randn(*shape, num, dtype=dtype, device=device, generator=generator)


def check_sharded_precond(precond, rows: tuple[int, int, int]) -> None:
    """A preconditioner for rows split across processes must hold those rows: its
    ``sharded_rows`` equal to ``rows`` (``flashgp.distributed``'s sharded pivoted Cholesky, whose
    solve, log det and samples sum over every process's rows); any other raises."""
    held = getattr(precond, "sharded_rows", None)
    if held is None or tuple(held) != tuple(rows) or getattr(precond, "split", False):
        raise NotImplementedError(
            f"inv_quad_logdet: rows split across processes ({tuple(rows)}) take only a preconditioner "
            f"sharded on the same rows (flashgp.distributed.sharded_mll(precond=fg.PivotedCholesky(rank=k)), "
            f"which builds a ShardedLowRankPlusDiag), got {type(precond).__name__}"
            + ("" if held is None else f" on rows {tuple(held)}"))


def _split_mbcg(op, precond, rhs: torch.Tensor, settings: dict):
    """mBCG for a split preconditioner P^{-1} = U^T U (``precond.split``): CG on U K U^T with
    [U rhs, e], e ~ N(0, I), which is preconditioned CG on K with [rhs, U^{-1} e] and N(0, P)
    probes in another basis. Returns (CGResult, K^{-1} [rhs, U^{-1} e], P^{-1} U^{-1} e = U^T e)."""
    probes = torch.randn(*rhs.shape, settings["probes"], dtype=rhs.dtype, device=rhs.device,
                         generator=settings.get("generator"))
    result = mbcg(lambda v: precond.mul(op.matmul(precond.mul_t(v))),
                  torch.cat([precond.mul(rhs.unsqueeze(-1)), probes], -1),
                  tol=settings["tol"], max_iters=settings["max_iters"],
                  min_iters=settings["lanczos_iters"], n_tridiag=probes.shape[-1], warn=False,
                  reorthogonalize=settings["reorthogonalize"])
    return result, precond.mul_t(result.solution), precond.mul_t(probes)


class _InvQuadLogdet(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op, precond, settings, info, rhs, *inputs):
        if precond is not None and precond.split:
            result, solution, whitened = _split_mbcg(op, precond, rhs, settings)
        else:
            probes = probe_vectors(precond, rhs.shape, settings["probes"], rhs.dtype, rhs.device,
                                   settings.get("generator"), settings.get("rows"))
            solve = precond.solve if precond is not None else None
            result = mbcg(op.matmul, torch.cat([rhs.unsqueeze(-1), probes], -1), precond=solve,
                          tol=settings["tol"], max_iters=settings["max_iters"],
                          min_iters=settings["lanczos_iters"], n_tridiag=probes.shape[-1], warn=False,
                          reorthogonalize=settings["reorthogonalize"], row_sum=settings.get("row_sum"))
            solution = result.solution
            whitened = precond.solve(probes) if precond is not None else probes
        weights = result.init_norm_sq[..., 1:]
        logdet = slq_logdet(result.tridiag, weights)
        if precond is not None:
            logdet = logdet + precond.logdet().to(logdet.dtype)
        inv_quad = (rhs * solution[..., 0]).sum(-1)
        if settings.get("row_sum") is not None:  # the rows of every process
            inv_quad = settings["row_sum"](inv_quad)
        tail = slq_logdet_tail_change(result.tridiag, weights, SLQ_TAIL_STEPS)
        info.update(logdet_tail_change=float(tail.max()), lanczos_steps=result.tridiag.shape[-1])
        info.update(iterations=result.iterations, residual=float(result.residual[..., 0].max()),
                    mean_residual=float(result.residual.mean()), converged=bool(result.converged),
                    breakdowns=result.breakdowns, trouble=result.trouble())
        ctx.op = op
        ctx.save_for_backward(solution, whitened)
        return inv_quad, logdet

    @staticmethod
    def backward(ctx, grad_inv_quad, grad_logdet):
        solution, whitened = ctx.saved_tensors
        op = ctx.op
        if op is None:
            raise RuntimeError("inv_quad_logdet: a second backward pass through the same result; its "
                               "operator (for a dense backend the n x n kernel matrix) is released "
                               "after the first one. Evaluate it again (e.g. model.mll()) instead")
        # release the operator with this pass: a training loop's previous loss (and with it this
        # graph node) often lives on while the next step builds its operator, which kept two
        # stored kernel matrices alive at once (a peak of twice K's memory)
        ctx.op = None
        alpha, probe_solves = solution[..., :1], solution[..., 1:]
        batch = solution.shape[:-2]
        zeros = torch.zeros(batch, dtype=solution.dtype, device=solution.device)
        g_iq = zeros if grad_inv_quad is None else grad_inv_quad.expand(batch)
        g_ld = zeros if grad_logdet is None else grad_logdet.expand(batch)
        t = probe_solves.shape[-1]
        # d(r^T K^-1 r) = -a^T dK a ; d log det K = tr(K^-1 dK) ~ 1/t sum (K^-1 z)^T dK (P^-1 z)
        left = torch.cat([alpha * -g_iq[..., None, None], probe_solves * (g_ld / t)[..., None, None]], -1)
        right = torch.cat([alpha, whitened], -1)
        grads = op.bilinear_grad(left, right)
        grad_rhs = 2 * alpha[..., 0] * g_iq[..., None]
        return (None, None, None, None, grad_rhs, *grads)


def inv_quad_logdet(op, rhs: torch.Tensor, precond=None, probes: int = 10, tol: float = 1.0,
                    max_iters: int = 1000, lanczos_iters: int = 20, generator=None,
                    info: dict | None = None, reorthogonalize: bool = False,
                    row_sum=None, rows: tuple[int, int, int] | None = None):
    """rhs^T K^{-1} rhs and an estimate of log det K, both differentiable, by BBMM.

    Args:
        op: the ``(*batch, n, n)`` SPD operator K (e.g. AddedDiag(KernelOperator, noise)). Gradients
            flow to ``op.grad_inputs()`` through ``op.bilinear_grad``.
        rhs: ``(*batch, n)``, e.g. y - mean; gradients flow to it.
        precond: a preconditioner P (its solve, exact log det and N(0, P) samples are used;
            a split one, P^{-1} = U^T U, gives U and U^T products instead, see
            ``_split_mbcg``), or None.
        probes, tol, max_iters, lanczos_iters, reorthogonalize: mBCG settings (see ``flashgp.CG``).
        generator: torch.Generator for the probe vectors (fixed probes -> deterministic loss).
        info: optional dict that receives iterations, residual (of the solve column),
            mean_residual, converged, breakdowns, trouble, lanczos_steps and
            logdet_tail_change (|change of the log-det estimate over the last SLQ_TAIL_STEPS
            Lanczos steps|, max over the batch; above SLQ_TAIL_WARN_PER_POINT * n it warns).
        row_sum, rows: rows split across processes (``flashgp.distributed.sharded_mll``): ``op``
            maps this process's rows of a vector to its rows of the product, ``rhs`` holds its rows
            ``rows = (start, stop, n_all)``, ``row_sum`` reduces partial sums over rows to sums over
            all of them (see ``mbcg``), the probes are this process's rows of the probes one
            process would draw, and ``op.bilinear_grad`` must return the gradients summed over
            all processes. A preconditioner must be sharded on the same rows
            (``check_sharded_precond``: ``flashgp.distributed``'s pivoted Cholesky, whose solve and
            log det sum over all rows and whose samples are this process's rows of the draws one
            process makes). None (default): one process holds every row.
            The backward pass needs nothing more: the SLQ weights and inv_quad are reduced here,
            and the bilinear terms are the operator's to reduce.

    Returns:
        (inv_quad ``(*batch,)``, logdet ``(*batch,)``).
    """
    info = {} if info is None else info
    if (row_sum is None) != (rows is None):
        raise ValueError("inv_quad_logdet: row_sum and rows go together (both None on one process)")
    if rows is not None and precond is not None:
        check_sharded_precond(precond, rows)
    settings = dict(probes=probes, tol=tol, max_iters=max_iters, lanczos_iters=lanczos_iters,
                    generator=generator, reorthogonalize=reorthogonalize, row_sum=row_sum, rows=rows)
    inv_quad, logdet = _InvQuadLogdet.apply(op, precond, settings, info, rhs, *op.grad_inputs())
    if info["trouble"]:
        warn_cg_trouble("log marginal likelihood", info["trouble"], rhs.dtype)
    n = rhs.shape[-1] if rows is None else rows[2]
    if info["logdet_tail_change"] > SLQ_TAIL_WARN_PER_POINT * n:
        warnings.warn(f"SLQ log determinant had not settled: its last {SLQ_TAIL_STEPS} of "
                      f"{info['lanczos_steps']} Lanczos steps moved it by "
                      f"{info['logdet_tail_change']:.3g} nats ({info['logdet_tail_change'] / n:.3g} per "
                      f"point, warning above {SLQ_TAIL_WARN_PER_POINT}). To fix: raise "
                      f"CG(lanczos_iters=...) or strengthen the preconditioner (a larger PivotedCholesky rank, "
                      f"or Vecchia(neighbors) for dense data in few dimensions)", NumericalWarning, stacklevel=2)
    return inv_quad, logdet


def warn_cg_trouble(what: str, trouble: str, dtype: torch.dtype, stacklevel: int = 3) -> None:
    """The one NumericalWarning for a CG run that did not converge or broke down: what was being
    solved, the residual reached (``trouble``, from ``CGResult.trouble``) and what to change."""
    remedies = ["raise CG(max_iters=...)", "use a larger preconditioner rank (CG(precond=PivotedCholesky(rank))) "
                "or, for dense data in few dimensions, CG(precond=Vecchia(neighbors))"]
    if dtype != torch.float64:
        remedies.append("use float64 inputs")
    remedies.append("or use fg.Cholesky() for small n; a tiny noise variance makes K_hat ill-conditioned")
    warnings.warn(f"CG for the {what}: {trouble}. To fix: {', '.join(remedies)}",
                  NumericalWarning, stacklevel=stacklevel)


def cg_solve(op, rhs: torch.Tensor, precond=None, tol: float = 0.01, max_iters: int = 1000,
             info: dict | None = None, what: str = "solve", reorthogonalize: bool = False) -> torch.Tensor:
    """K^{-1} rhs by preconditioned CG (no gradients). rhs ``(*batch, n, t)`` -> ``(*batch, n, t)``.

    ``info`` receives iterations, residual (max over columns), converged and breakdowns; trouble
    (no convergence, breakdowns) is one NumericalWarning naming ``what`` was solved.
    ``reorthogonalize``: see ``mbcg`` (memory grows with t times the iterations).
    """
    with torch.no_grad():
        result = mbcg(op.matmul, rhs, precond=None if precond is None else precond.solve, tol=tol,
                      max_iters=max_iters, warn=False, reorthogonalize=reorthogonalize)
    if info is not None:
        info.update(iterations=result.iterations, residual=float(result.residual.max()),
                    converged=bool(result.converged), breakdowns=result.breakdowns)
    trouble = result.trouble()
    if trouble:
        warn_cg_trouble(what, trouble, rhs.dtype)
    return result.solution
