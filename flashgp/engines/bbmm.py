# The BBMM engine: modified batched preconditioned CG with stochastic Lanczos quadrature for the
# training objective, preconditioned CG for prediction solves; K_hat is touched only through
# products with a KernelOperator (dense, blocked or fused Triton backends).
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from ..errors import NumericalWarning
from ..linalg import lanczos
from ..linalg.inv_quad_logdet import cg_solve, inv_quad_logdet
from ..linalg.lanczos import lanczos_root_with_half
from ..operators import AddedDiag, KernelOperator, kernel_operator
from .base import Engine, seconds_since
from .preconditioning import build_preconditioner, record_iterations, state_for
from .records import CGSolveInfo, CGTrainingInfo, PreconditionerBuild

# fused-kernel precisions whose rounding of K is too coarse for the training solves
COARSE_PRECISIONS = ("tf32", "bf16")
# the seed of the Lanczos root's starting vector (a deterministic root per parameter state)
LANCZOS_SEED = 0


@dataclass(frozen=True)
class LanczosRoot:
    """R ``(*batch, n, k)`` with R R^T ~ K_hat^{-1} from k Lanczos steps (full re-orthogonalization),
    with ``back`` and ``half`` (``linalg.lanczos.lanczos_root_with_half``: what gives the root of
    the first k // 2 steps, to see whether it has converged); ``complete``: the Lanczos run
    covered all n dimensions or stopped at an invariant subspace (R R^T = K_hat^{-1} then)."""

    root: torch.Tensor
    back: torch.Tensor
    half: torch.Tensor
    complete: bool


@dataclass
class CGSystem:
    """K_hat as an operator for CG: ``op`` = AddedDiag(kernel_op, noise) ``(*batch, n, n)``, the
    ``kernel_op`` inside it, the preconditioner (or None) and the record of its build."""

    op: AddedDiag
    kernel_op: KernelOperator
    precond: object
    build: PreconditionerBuild


class CGEngine(Engine):
    """BBMM inference for ``fg.CG`` configurations (see its fields for every setting)."""

    name = "cg"

    def state_for(self, state):
        """The preconditioner state to use: ``state`` if it serves ``config.precond``, else a
        fresh one (``state`` itself when there is no preconditioner)."""
        return state_for(self.config.precond, state)

    def operator(self, kernel, x, noise, state=None, purpose: str = "train") -> CGSystem:
        """K_hat's operator and its preconditioner, built for ``purpose`` ("train": the mll
        solve; "predict": the posterior mean solve, which may use another rank) from the
        model's preconditioner ``state`` (None: a fresh one)."""
        config = self.config
        start = time.perf_counter()
        kernel_op = kernel_operator(kernel, x, backend=config.backend, precision=config.precision,
                                    memory_budget=config.memory_budget)
        state = self.state_for(state)
        precond, build = build_preconditioner(config.precond, kernel_op, noise, state, purpose)
        seconds = seconds_since(start, x.device)
        build = PreconditionerBuild(**{**build.__dict__, "seconds": seconds})
        return CGSystem(AddedDiag(kernel_op, noise), kernel_op, precond, build)

    def inv_quad_logdet(self, kernel, x, noise, resid, state=None, generator=None):
        """(inv_quad, logdet, CGTrainingInfo) by mBCG + SLQ; the preconditioner state is told
        the iterations (pivot staleness, rank growth)."""
        config = self.config
        state = self.state_for(state)  # a fresh one chooses new pivots / neighbours
        system = self.operator(kernel, x, noise, state, "train")
        if system.kernel_op.backend == "triton" and system.kernel_op.precision in COARSE_PRECISIONS:
            warnings.warn(f"CG(precision={system.kernel_op.precision!r}) in training: products with a 10-bit "
                          "(or narrower) mantissa perturb K_hat by more than a small noise variance, and the "
                          "log marginal likelihood and its gradient can be wrong without CG noticing "
                          "(relative mll errors of 0.03-12 measured at n = 5,000-20,000, noise 0.01, by "
                          "benchmarks/precision_accuracy.py). Use precision='tf32x3' or 'fp32'",
                          NumericalWarning, stacklevel=4)
        resid = resid.expand(*system.op.batch_shape, resid.shape[-1])  # batched through kernel/likelihood only
        info = {}
        inv_quad, logdet = inv_quad_logdet(system.op, resid, system.precond, probes=config.probes,
                                           tol=config.tol, max_iters=config.max_iters,
                                           lanczos_iters=config.lanczos_iters, generator=generator,
                                           info=info, reorthogonalize=config.reorthogonalize)
        record_iterations(config.precond, state, info["iterations"], config.lanczos_iters)
        record = CGTrainingInfo(system.kernel_op.backend, system.kernel_op.precision, CGSolveInfo.from_dict(info),
                                info["mean_residual"], info["logdet_tail_change"], system.build)
        return inv_quad, logdet, record

    def system(self, kernel, x, noise, state=None) -> CGSystem:
        with torch.no_grad():
            return self.operator(kernel, x, noise, state, "predict")

    def solve(self, system: CGSystem, rhs: torch.Tensor, tol: float, what: str,
              reorthogonalize: bool = False, x0: torch.Tensor | None = None) -> tuple[torch.Tensor, CGSolveInfo]:
        """(K_hat^{-1} rhs, CGSolveInfo) by preconditioned CG to relative residual ``tol``; rhs
        ``(*batch, n, t)``. Not converging warns, naming ``what`` was solved.

        x0 (broadcastable to rhs): a starting guess. CG then solves for the correction against
        the residual r0 = rhs - K_hat x0 with the tolerance scaled by min over columns of
        ||rhs|| / ||r0||, so the relative residual reached against rhs is still ``tol`` (the
        recorded residual is that bound); no iterations when x0 already meets it."""
        info = {}
        if x0 is None:
            solution = cg_solve(system.op, rhs, system.precond, tol, self.config.max_iters, info, what=what,
                                reorthogonalize=reorthogonalize)
            return solution, CGSolveInfo.from_dict(info)
        with torch.no_grad():
            x0 = x0.to(rhs.dtype).expand_as(rhs)
            start = rhs - system.op.matmul(x0)
            ratio = float((rhs.norm(dim=-2) / start.norm(dim=-2).clamp_min(torch.finfo(rhs.dtype).tiny)).min())
        if tol * ratio >= 1:
            info.update(iterations=0, residual=1 / ratio, converged=True, breakdowns=0)
            return x0.clone(), CGSolveInfo.from_dict(info)
        step = cg_solve(system.op, start, system.precond, tol * ratio, self.config.max_iters, info, what=what,
                        reorthogonalize=reorthogonalize)
        info["residual"] = info["residual"] / ratio
        return x0 + step, CGSolveInfo.from_dict(info)

    def root(self, system: CGSystem, rank: int) -> LanczosRoot:
        """A rank-``rank`` Lanczos root of K_hat^{-1} (LOVE; no gradients), from a seeded random
        start. (A preconditioned variant, K_hat^{-1} ~ P^{-1} + Z (T^{-1} - I) Z^T, was tried and
        was less accurate for predictive variances at equal rank; see the issue notes.)"""
        op = system.op
        n = op.shape[-1]
        with torch.no_grad():
            gen = torch.Generator(device=op.device).manual_seed(LANCZOS_SEED)
            init = torch.randn(*op.shape[:-1], generator=gen, device=op.device, dtype=op.dtype)
            steps = min(rank, n)
            q, t = lanczos(op.matmul, init, steps)
            # n vectors, or fewer than asked (every element broke down: an invariant subspace)
            return LanczosRoot(*lanczos_root_with_half(q, t), complete=q.shape[-1] == n or q.shape[-1] < steps)
