# Quadratic forms b^T A^{-1} b by preconditioned CG with a certified error bound per column
# (Gauss-Radau quadrature), for posterior variances k** - k*^T K_hat^{-1} k* whose error, not
# whose residual, is what a user reads.
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

MatFn = Callable[[Tensor], Tensor]
# a variance computed as k** - q in a dtype resolves about this many eps of k**: the absolute
# part of the stopping test (below it a relative tolerance cannot be met in that dtype)
RESOLUTION_EPS = 100


@dataclass
class QuadFormResult:
    """The outcome of :func:`quad_form_cg` for t columns b_i (shapes ``(*batch, t)`` unless noted).

    solution: ``(*batch, n, t)`` x_i ~ A^{-1} b_i.
    residual: ``(*batch, n, t)`` b_i - A x_i, recomputed by one product at the end (not the recurrence).
    quad: 2 b_i^T x_i - x_i^T A x_i = b_i^T A^{-1} b_i - ||x_i - A^{-1} b_i||_A^2, a lower bound
        of b_i^T A^{-1} b_i for any x_i (from the recomputed residual).
    error_bound: an upper bound of b_i^T A^{-1} b_i - quad_i = ||x_i - A^{-1} b_i||_A^2
        (Gauss-Radau; certified when ``mu`` is a true lower bound of the spectrum of P^{-1} A).
    certified: whether error_bound met the stopping test (bool).
    iterations: CG iterations of the longest-running column (int); column_iterations per column.
    """

    solution: Tensor
    residual: Tensor
    quad: Tensor
    error_bound: Tensor
    certified: Tensor
    iterations: int
    column_iterations: Tensor


def _precond_fn(precond) -> MatFn:
    if precond is None:
        return lambda v: v
    return precond if callable(precond) else precond.solve


def _radau_update(radau: Tensor, gamma: Tensor, delta: Tensor, mu: Tensor) -> Tensor:
    """The next Gauss-Radau coefficient (Meurant and Tichy's CGQ recurrence): the error bound of
    iteration k is radau_k r_k^T z_k; radau_0 = 1 / mu and
    radau_{k+1} = (radau_k - gamma_k) / (mu (radau_k - gamma_k) + delta_{k+1}),
    gamma the CG step length, delta = r_{k+1}^T z_{k+1} / r_k^T z_k. Clamped at 0 (a bound
    of 0 once radau_k <= gamma_k, which only round-off or a too-large mu produce)."""
    gap = (radau - gamma).clamp_min(0)
    den = mu * gap + delta
    return torch.where(den > 0, gap / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(gap))


def _per_column(value, rhs: Tensor) -> Tensor | None:
    """A float or ``(*batch,)`` tensor as ``(*batch, 1)`` (or a 0-d tensor), broadcasting over columns."""
    if value is None:
        return None
    value = torch.as_tensor(value, dtype=rhs.dtype, device=rhs.device)
    return value.reshape(*value.shape, 1) if value.dim() else value


def _bound(radau: Tensor, rz: Tensor, r: Tensor, mu: Tensor | None, floor: Tensor | None) -> Tensor:
    """The error bound ``(*batch, t)``: Gauss-Radau radau * r^T P^{-1} r (with mu) and/or
    ||r||^2 / floor, the smaller of those available."""
    bounds = []
    if mu is not None:
        bounds.append((radau * rz).clamp_min(0))
    if floor is not None:
        bounds.append(r.square().sum(-2) / floor)
    return bounds[0] if len(bounds) == 1 else torch.minimum(*bounds)


def quad_form_cg(matmul: MatFn, rhs: Tensor, mu, accept: Callable[[Tensor, Tensor], Tensor],
                 precond=None, x0: Tensor | None = None, max_iters: int = 1000,
                 floor=None) -> QuadFormResult:
    """b_i^T A^{-1} b_i for the columns b_i of ``rhs`` ``(*batch, n, t)``, each column iterating until
    ``accept`` certifies its error bound.

    matmul: V ``(*batch, n, t')`` -> A V, A symmetric positive definite; precond: P^{-1} (callable or
    an object with ``.solve``) or None. mu: a lower bound of the eigenvalues of P^{-1} A (a float
    or a ``(*batch,)`` tensor): with it, ||x_k - A^{-1} b||_A^2 <= radau_k r_k^T P^{-1} r_k at every
    iteration (Gauss-Radau quadrature, Meurant and Tichy); the error of the quadratic form 2 b^T x
    - x^T A x is that A-norm error, so the bound holds for what is returned, not for a residual.
    floor: a lower bound of the eigenvalues of A itself, for preconditioners whose mu is unknown
    (mu None): the error r^T A^{-1} r is then bounded by ||r_k||^2 / floor (looser: more
    iterations, but a bound for any preconditioner). With both, the smaller bound is used.
    accept: (quad ``(*batch, t)``, error_bound ``(*batch, t)``) -> bool ``(*batch, t)``: which columns may
    stop. x0: a starting guess ``(*batch, n, t)`` (e.g. from a Lanczos root or nearby points); its
    error is bounded by r0^T P^{-1} r0 / mu before any iteration. A column stops when accepted,
    when its residual reaches round-off (r^T P^{-1} r below (4 eps)^2 of its start) or breaks
    down (p^T A p <= 0), or after ``max_iters``; one host synchronization per iteration.
    """
    if mu is None and floor is None:
        raise ValueError("mu, floor: expected at least one lower bound of the spectrum, got None for both")
    precond = _precond_fn(precond)
    mu, floor = _per_column(mu, rhs), _per_column(floor, rhs)
    freeze = (4 * torch.finfo(rhs.dtype).eps) ** 2
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs.clone() if x0 is None else rhs - matmul(x)
    z = precond(r)
    rz = (r * z).sum(-2)
    quad = (rhs * x).sum(-2) + (x * r).sum(-2)  # 2 b^T x - x^T A x
    radau = torch.ones_like(rz) / (mu if mu is not None else 1.0)
    bound = _bound(radau, rz, r, mu, floor)
    live = (rz > 0) & ~accept(quad, bound)
    threshold = rz * freeze
    counts = torch.zeros_like(rz, dtype=torch.long)
    p = z
    iterations = 0
    while iterations < max_iters and bool(live.any()):
        ap = matmul(p)
        pap = (p * ap).sum(-2)
        stepping = live & (pap > 0)
        gamma = torch.where(stepping, rz / torch.where(stepping, pap, torch.ones_like(pap)), 0.0)
        x = torch.addcmul(x, gamma.unsqueeze(-2), p)
        r = torch.addcmul(r, gamma.unsqueeze(-2), ap, value=-1)
        quad = quad + gamma * rz  # each step removes gamma_k r_k^T z_k of the A-norm error
        z = precond(r)
        rz_new = (r * z).sum(-2)
        delta = torch.where(stepping, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), 0.0)
        if mu is not None:
            radau = torch.where(stepping, _radau_update(radau, gamma, delta, mu), radau)
        bound = torch.where(stepping, _bound(radau, rz_new, r, mu, floor), bound)
        counts = counts + stepping.long()
        live = stepping & (rz_new > threshold) & ~accept(quad, bound)
        p = torch.addcmul(z, torch.where(live, delta, 0.0).unsqueeze(-2), p)
        rz = torch.where(stepping, rz_new, rz)
        iterations += 1
    # the recurrences drift from the true residual in finite precision: one more product gives
    # the residual, the quadratic form and the round-off part of the error directly
    r = rhs - matmul(x)
    quad = (rhs * x).sum(-2) + (x * r).sum(-2)
    certified = accept(quad, bound)
    return QuadFormResult(x, r, quad, bound, certified, iterations, counts)


def variance_acceptance(prior: Tensor, rtol: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The stopping test for variances v_i = prior_i - quad_i (prior ``(*batch, t)``, e.g. k(x*, x*)):
    a column is accepted once error_bound <= rtol * (v_i - error_bound) + RESOLUTION_EPS * eps *
    prior_i, i.e. the variance returned is within rtol of the smallest variance the bound allows
    (up to the dtype's resolution of k** - quad)."""
    resolution = RESOLUTION_EPS * torch.finfo(prior.dtype).eps * prior.abs()

    def accept(quad: Tensor, bound: Tensor) -> Tensor:
        return bound <= rtol * (prior - quad - bound).clamp_min(0) + resolution

    return accept
