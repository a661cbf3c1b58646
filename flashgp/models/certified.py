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
their value for round-off in K and P. For the block and Vecchia preconditioners no bound of
that spectrum is known (a Ritz estimate from a short Lanczos run was tried: it overestimated
lambda_min, and a "certified" variance was 27% off at noise 1e-4 with blocks); their solves are
certified by ||r||^2 / (smallest noise) instead, the error bound of the residual in the plain
K_hat norm, and diagnostics say variance_bound "residual".

The solves x ~ K_hat^{-1} k* also correct the posterior mean: k*^T alpha + x^T (r - K_hat alpha)
is off the exact mean by (k* - K_hat x)^T (K_hat^{-1} r - alpha) only, the product of two small
errors (``PredictionCache._mean_correction``). At noise 1e-4 the mean solve at eval_tol 1e-3
left the mean 0.53 posterior standard deviations off; corrected it was 8e-4 off.
"""
from __future__ import annotations

import warnings

import torch

from ..errors import NumericalWarning
from ..engines.records import VarianceCertificate
from ..linalg.quad_form import QuadFormResult, quad_form_cg, variance_acceptance

# mu used = SPECTRUM_SAFETY times the floor known in exact arithmetic (float32 K and P move the
# spectrum of P^{-1} K_hat by a few eps * ||K|| / noise)
SPECTRUM_SAFETY = 0.5
# warn when the bound of a corrected posterior mean's error exceeds this many posterior standard
# deviations (the bound is loose: 0.19 where the error was 8e-4, benchmarks/variance_accuracy.py)
MEAN_WARN_SD = 1.0


def spectrum_floor(op, precond, noise: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, str]:
    """(mu, floor, kind): mu ``(*batch,)`` <= the eigenvalues of P^{-1} K_hat, or None where the
    preconditioner knows none (blocks, Vecchia); floor ``(*batch,)`` <= the eigenvalues of K_hat
    (the smallest noise: K is PSD); kind "gauss-radau" (mu known) or "residual" (only floor:
    the bound ||r||^2 / floor, looser, so the solves take more iterations). Both at
    SPECTRUM_SAFETY times their exact-arithmetic value. (op: K_hat ``(*batch, n, n)``, noise
    ``(*batch, n)`` its added diagonal.)"""
    floor = SPECTRUM_SAFETY * noise.min(-1).values.expand(op.batch_shape)
    if precond is None:
        return floor, floor, "gauss-radau"
    if precond.spectrum_floor is None:
        return None, floor, "residual"
    mu = torch.full(op.batch_shape, SPECTRUM_SAFETY * precond.spectrum_floor, dtype=op.dtype, device=op.device)
    return mu, floor, "gauss-radau"


def certified_solves(op, precond, spectrum: tuple, cross: torch.Tensor, prior: torch.Tensor,
                     tol: float, max_iters: int, x0: torch.Tensor | None = None) -> QuadFormResult:
    """Solves K_hat^{-1} k*_i for the rows of ``cross`` ``(*batch, m, n)`` = K(x*, X), each run until
    its variance prior_i - q_i (prior ``(*batch, m)`` = k(x*_i, x*_i)) is certified to ``tol``.
    x0 ``(*batch, n, m)``: a starting guess (a Lanczos root's or a cheaper method's solutions).
    spectrum: ``spectrum_floor``'s (mu, floor, kind)."""
    mu, floor, _ = spectrum
    return quad_form_cg(op.matmul, cross.transpose(-1, -2), mu, variance_acceptance(prior, tol),
                        precond, x0=x0, max_iters=max_iters, floor=floor)


def energy_bound(resid: torch.Tensor, precond, spectrum: tuple) -> torch.Tensor:
    """A bound ``(*batch,)`` of r^T K_hat^{-1} r, the squared K_hat-norm error of a solve with
    residual r ``(*batch, n, 1)``: r^T P^{-1} r / mu where mu is known, else ||r||^2 / floor."""
    mu, floor, _ = spectrum
    plain = resid.square().sum((-2, -1)) / floor
    if mu is None:
        return plain
    whitened = resid if precond is None else precond.solve(resid)
    return torch.minimum(plain, (resid * whitened).sum((-2, -1)) / mu)


def lowest_variance(result: QuadFormResult, prior: torch.Tensor) -> torch.Tensor:
    """The smallest variance the error bound allows, prior - quad - bound, clamped at 0 ``(*batch, m)``."""
    return (prior - result.quad - result.error_bound).clamp_min(0)


def relative_bounds(result: QuadFormResult, prior: torch.Tensor) -> torch.Tensor:
    """error bound / ``lowest_variance``, per test point ``(*batch, m)`` (inf where that is 0)."""
    low = lowest_variance(result, prior)
    return torch.where(low > 0, result.error_bound / torch.where(low > 0, low, 1.0), torch.inf)


def report(diagnostics: dict, results: list[QuadFormResult], bounds: torch.Tensor, tol: float,
           kind: str, dtype: torch.dtype, max_iters: int, mean_bound: torch.Tensor | None = None,
           stacklevel: int = 6) -> None:
    """Record the certificate in ``diagnostics`` and warn once (with the numbers) when some
    variances were not accepted (``quad_form.variance_acceptance``: within ``tol``, or within
    the dtype's resolution): variance_error_bound (largest relative bound),
    variance_uncertified (how many points were not accepted), variance_cg_iterations (largest per point),
    variance_bound ("gauss-radau" or "residual", see ``spectrum_floor``), mean_error_bound (the
    largest bound of the corrected posterior mean's error, in posterior standard deviations)."""
    iterations = max(r.iterations for r in results)
    # what the stopping test accepted (the relative bound, or the dtype's resolution of k** - q)
    missed = ~torch.cat([r.certified for r in results], -1).expand(bounds.shape)
    uncertified = int(missed.sum())
    largest = float(bounds.max()) if bounds.numel() else 0.0
    worst_mean = float(mean_bound.max()) if mean_bound is not None and mean_bound.numel() else None
    diagnostics.update(VarianceCertificate(iterations, largest, uncertified, kind, worst_mean).as_dict())
    # (uncertified variances bound nothing about the mean either: their warning says so)
    if uncertified == 0 and worst_mean is not None and worst_mean > MEAN_WARN_SD:
        warnings.warn(f"the posterior mean may be off by up to {worst_mean:.3g} posterior standard deviations "
                      f"(a bound from the mean solve's and the variance solves' errors; warning above "
                      f"{MEAN_WARN_SD:g}). To fix: lower CG(eval_tol=...)"
                      + ("" if dtype == torch.float64 else " or use float64 inputs"),
                      NumericalWarning, stacklevel=stacklevel)
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
                  f"bounds of the exact ones, and the posterior mean's error is not bounded either. "
                  f"To fix: {', '.join(remedies)}", NumericalWarning, stacklevel=stacklevel)
