# Posterior variances on the CG path with a certified error: each test point's solve runs until a
# Gauss-Radau bound on the error of k*^T K_hat^{-1} k* is below CG.variance_tol of its variance.
"""Certified CG variances.

The posterior variance k** - k*^T K_hat^{-1} k* is a difference of nearly equal terms, so the
relative residual of the solve says little about it (the README's quickstart stopped after 5
iterations at eval_tol 1e-3 with variances 1.75-3x the exact ones). For any x, the quadratic form
q(x) = 2 k*^T x - x^T K_hat x is below k*^T K_hat^{-1} k* by exactly ||x - K_hat^{-1} k*||^2 in
the K_hat norm, and preconditioned CG bounds that error from above by Gauss-Radau quadrature
(``linalg.quad_form``) given mu <= lambda_min(P^{-1} K_hat). So each variance k** - q is an upper
bound of the exact one, and its error is at most the bound; a test point's solve stops once the
bound is below ``variance_tol`` times the smallest variance it allows.

mu is known for no preconditioner (the smallest noise: K is PSD) and for a pivoted-Cholesky
preconditioner without blocks (1: K - L L^T is PSD); both are used at SPECTRUM_SAFETY times
their value for round-off in K and P. For the block and Vecchia preconditioners no bound is
known; mu is then estimated from the smallest Ritz value of a short preconditioned Lanczos run
(an estimate: the Ritz value is above lambda_min), and diagnostics say "estimate".
"""
from __future__ import annotations

import warnings

import torch

from ..errors import NumericalWarning
from ..linalg.mbcg import mbcg
from ..linalg.quad_form import QuadFormResult, quad_form_cg, variance_acceptance

# mu used = SPECTRUM_SAFETY times the floor known in exact arithmetic (float32 K and P move the
# spectrum of P^{-1} K_hat by a few eps * ||K|| / noise)
SPECTRUM_SAFETY = 0.5
ESTIMATE_STEPS = 30  # preconditioned Lanczos steps of the spectrum estimate
ESTIMATE_SEED = 0


def spectrum_floor(op, precond, noise: torch.Tensor) -> tuple[torch.Tensor, str]:
    """(mu (*batch,), "bound" or "estimate"): a lower bound of the eigenvalues of P^{-1} K_hat
    (K_hat = op, P = precond or I, noise (*batch, n) the diagonal added to K in op)."""
    batch = op.batch_shape
    if precond is None:
        return SPECTRUM_SAFETY * noise.min(-1).values.expand(batch), "bound"
    if precond.spectrum_floor is not None:
        return torch.full(batch, SPECTRUM_SAFETY * precond.spectrum_floor, dtype=op.dtype,
                          device=op.device), "bound"
    gen = torch.Generator(device=op.device).manual_seed(ESTIMATE_SEED)
    start = torch.randn(*batch, op.shape[-1], 1, dtype=op.dtype, device=op.device, generator=gen)
    run = mbcg(op.matmul, start, precond=precond.solve, tol=0.0, max_iters=ESTIMATE_STEPS,
               min_iters=ESTIMATE_STEPS, n_tridiag=1, warn=False)
    ritz = torch.linalg.eigvalsh(run.tridiag[..., 0, :, :].double().cpu()).min(-1).values
    return SPECTRUM_SAFETY * ritz.to(op.device, op.dtype), "estimate"


def certified_solves(op, precond, mu: torch.Tensor, cross: torch.Tensor, prior: torch.Tensor,
                     tol: float, max_iters: int, x0: torch.Tensor | None = None) -> QuadFormResult:
    """Solves K_hat^{-1} k*_i for the rows of ``cross`` (*batch, m, n) = K(x*, X), each run until
    its variance prior_i - q_i (prior (*batch, m) = k(x*_i, x*_i)) is certified to ``tol``.
    x0 (*batch, n, m): a starting guess (a Lanczos root's or a cheaper method's solutions)."""
    return quad_form_cg(op.matmul, cross.transpose(-1, -2), mu, variance_acceptance(prior, tol),
                        precond, x0=x0, max_iters=max_iters)


def relative_bounds(result: QuadFormResult, prior: torch.Tensor) -> torch.Tensor:
    """error bound / (smallest variance it allows), per test point (*batch, m) (inf at 0)."""
    low = (prior - result.quad - result.error_bound).clamp_min(0)
    return torch.where(low > 0, result.error_bound / torch.where(low > 0, low, 1.0), torch.inf)


def report(diagnostics: dict, results: list[QuadFormResult], bounds: torch.Tensor, tol: float,
           mu_kind: str, dtype: torch.dtype, max_iters: int) -> None:
    """Record the certificate in ``diagnostics`` and warn once (with the numbers) when some
    variances are not within ``tol``: variance_error_bound (largest relative bound),
    variance_uncertified (how many points miss tol), variance_cg_iterations (largest per point),
    variance_spectrum ("bound" or "estimate", where mu came from)."""
    iterations = max(r.iterations for r in results)
    missed = bounds > tol
    uncertified = int(missed.sum())
    largest = float(bounds.max()) if bounds.numel() else 0.0
    diagnostics.update(variance_cg_iterations=iterations, variance_error_bound=largest,
                       variance_uncertified=uncertified, variance_spectrum=mu_kind,
                       variance_converged=uncertified == 0)
    if not uncertified:
        return
    remedies = [f"raise CG(max_iters=...) (now {max_iters}; the longest solve ran {iterations})",
                "strengthen the preconditioner (a larger PivotedCholesky rank)"]
    if dtype != torch.float64:
        remedies.append("use float64 inputs (a variance far below k(x*, x*) is not resolved in "
                        f"{str(dtype).replace('torch.', '')})")
    warnings.warn(f"{uncertified} of {bounds.numel()} posterior variances could not be certified to "
                  f"CG(variance_tol={tol:g}): their relative error bound reaches {largest:.3g} (median over "
                  f"those points {float(bounds[missed].median()):.3g}); the variances returned are upper "
                  f"bounds of the exact ones. To fix: {', '.join(remedies)}", NumericalWarning, stacklevel=5)
