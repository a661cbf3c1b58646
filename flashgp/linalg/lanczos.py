# Lanczos tridiagonalization with full re-orthogonalization, and the root of Q T^{-1} Q^T.
# Used for low-rank root decompositions of inverses (predictive covariances, samples).
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

from ..errors import NumericalWarning


def floor_eigenvalues(evals: Tensor, what: str) -> Tensor:
    """Clamp eigenvalues below eps * max|eigenvalue| (per matrix) up to that floor.

    evals: ``(*batch, k)``. Warns with a NumericalWarning giving the count and the minimum when
    any were clamped; ``what`` names the caller in the message. Returns ``(*batch, k)``.
    """
    eps = torch.finfo(evals.dtype).eps
    scale = evals.abs().amax(-1, keepdim=True)
    floor = eps * torch.where(scale > 0, scale, torch.ones_like(scale))
    low = evals < floor
    if bool(low.any()):
        warnings.warn(
            f"{what}: clamped {int(low.sum())} eigenvalue(s) below {float(floor.min()):.3g} "
            f"(min eigenvalue {float(evals.min()):.3g}); the matrix is numerically singular or not PD",
            NumericalWarning,
            stacklevel=3,
        )
    return torch.maximum(evals, floor)


SMALL_EIGH_MAX = 128  # larger matrices keep their device: a CPU eigh grows as k^3


def small_eigh(t: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``(*batch, k)`` and eigenvectors ``(*batch, k, k)`` of symmetric matrices t
    ``(*batch, k, k)``, e.g. Lanczos tridiagonals, in t's device and dtype. Up to k = SMALL_EIGH_MAX
    they are computed on the CPU in float64: on a GPU, batched eigh of a few dozen small
    matrices launches hundreds of tiny kernels (about 4 ms a call for 11 tridiagonals of size
    64 on an H200, ``python benchmarks/profile_step.py --data UCI_FOLDER --dataset protein``),
    and float64 keeps the small eigenvalues that a log determinant weighs most."""
    if t.shape[-1] > SMALL_EIGH_MAX:
        return torch.linalg.eigh(t)
    evals, evecs = torch.linalg.eigh(t.to("cpu", torch.float64))
    return evals.to(t.device, t.dtype), evecs.to(t.device, t.dtype)


def _orthogonalize(v: Tensor, basis: Tensor, row_sum: Callable | None = None) -> Tensor:
    """Classical Gram-Schmidt twice: remove from v ``(*batch, n)`` its components along basis
    ``(*batch, n, j)`` (``row_sum``: as for ``lanczos``)."""
    for _ in range(2):
        coefficients = basis.transpose(-1, -2) @ v.unsqueeze(-1)
        if row_sum is not None:
            coefficients = row_sum(coefficients)
        v = v - (basis @ coefficients).squeeze(-1)
    return v


def _norm(v: Tensor, row_sum: Callable | None) -> Tensor:
    return v.norm(dim=-1) if row_sum is None else row_sum(v.square().sum(-1)).sqrt()


def _check_args(init: Tensor, num_iters: int) -> None:
    """Validate lanczos's arguments, naming the bad one."""
    if not isinstance(init, Tensor):
        raise TypeError(f"init: expected a torch.Tensor, got {type(init).__name__}")
    if init.dim() < 1:
        raise ValueError(f"init: expected shape (*batch, n), got {tuple(init.shape)}")
    if not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters: expected a positive integer, got {num_iters!r}")


def _assemble(qs: list[Tensor], alphas: list[Tensor], betas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack k basis vectors ``(*batch, n)`` and coefficients ``(*batch,)`` into Q ``(*batch, n, k)``, T ``(*batch, k, k)``."""
    q = torch.stack(qs, -1)
    diag = torch.stack(alphas, -1)
    t = torch.diag_embed(diag)
    if len(betas) > 1:
        off = torch.stack(betas[:-1], -1)
        t = t + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return q, t


def lanczos(
    matmul: Callable[[Tensor], Tensor], init: Tensor, num_iters: int, tol: float | None = None,
    row_sum: Callable[[Tensor], Tensor] | None = None, n: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Lanczos on a symmetric A with full re-orthogonalization.

    matmul: V ``(*batch, n, 1)`` -> A V (a callable, or an Operator). init: ``(*batch, n)`` start vectors.
    Runs k <= min(num_iters, n) steps. Returns Q ``(*batch, n, k)`` with orthonormal columns and
    T ``(*batch, k, k)`` symmetric tridiagonal with Q^T A Q = T. When a batch element breaks down
    (the next beta is below ``tol``, default 8 eps sqrt(n) times a running estimate of ||A||) it
    gets zero columns in Q and an identity block in T, so Q T^{-1} Q^T is unaffected.

    Rows split across processes (``flashgp.distributed``): ``row_sum`` turns a partial sum over
    this process's rows into the sum over all rows (the inner products, norms and
    re-orthogonalization coefficients), ``n`` is the number of rows of all processes, and
    init, matmul's vectors and Q hold this process's rows; T is then the same on every process.
    """
    _check_args(init, num_iters)
    if not callable(matmul):
        matmul = matmul.matmul
    n = init.shape[-1] if n is None else n
    eps = torch.finfo(init.dtype).eps
    norm = _norm(init, row_sum)
    alive = norm > 0
    q = init / torch.where(alive, norm, torch.ones_like(norm)).unsqueeze(-1)
    norm_est = torch.zeros_like(norm)
    qs, alphas, betas = [], [], []
    for _ in range(min(num_iters, n)):
        qs.append(q)
        v = matmul(q.unsqueeze(-1)).squeeze(-1)
        norm_est = torch.maximum(norm_est, _norm(v, row_sum))
        dot = (q * v).sum(-1)
        dot = dot if row_sum is None else row_sum(dot)
        alphas.append(torch.where(alive, dot, torch.ones_like(norm)))
        v = _orthogonalize(v, torch.stack(qs, -1), row_sum)
        beta = _norm(v, row_sum)
        limit = 8 * eps * n**0.5 * norm_est if tol is None else torch.full_like(beta, tol)
        alive = alive & (beta > limit)
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        betas.append(beta)
        q = torch.where(alive.unsqueeze(-1), v / torch.where(alive, beta, 1.0).unsqueeze(-1), 0.0)
        if not bool(alive.any()):
            break
    return _assemble(qs, alphas, betas)


def lanczos_root_inverse(q: Tensor, t: Tensor) -> Tensor:
    """A root R of Q T^{-1} Q^T: R R^T = Q T^{-1} Q^T.

    q: ``(*batch, n, k)``, t: ``(*batch, k, k)`` from :func:`lanczos`. Uses T = V diag(e) V^T, so
    R = Q V diag(e^{-1/2}) of shape ``(*batch, n, k)``. Eigenvalues below eps * max|e| are clamped
    (NumericalWarning with the count and the minimum).
    """
    _check_tridiagonal(q, t)
    return q @ _inverse_root_mix(t)[0]


def _check_tridiagonal(q: Tensor, t: Tensor) -> None:
    if q.shape[-1] != t.shape[-1] or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"t: expected shape (*batch, {q.shape[-1]}, {q.shape[-1]}) to match q, got {tuple(t.shape)}")


def _inverse_root_mix(t: Tensor) -> tuple[Tensor, Tensor]:
    """(V diag(e^{-1/2}), e) for T = V diag(e) V^T ``(*batch, k, k)``, e floored as documented above."""
    evals, evecs = small_eigh(t)
    evals = floor_eigenvalues(evals, "lanczos_root_inverse")
    return evecs * evals.rsqrt().unsqueeze(-2), evals


def lanczos_root_with_half(q: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(R, back, half): R = ``lanczos_root_inverse(q, t)`` and what turns C R into the root of
    the first h = k // 2 Lanczos vectors, to see whether the root has converged.

    back ``(*batch, k, k)`` = diag(e^{1/2}) V^T, so (C R) back = C Q for any C ``(*batch, m, n)``;
    half ``(*batch, h, h)`` = V_h diag(e_h^{-1/2}) for T[:h, :h] = V_h diag(e_h) V_h^T, so
    (C Q)[..., :h] half = C R_h with R_h R_h^T = Q_h T_h^{-1} Q_h^T. The quadratic form
    c^T Q T^{-1} Q^T c does not decrease with the Krylov dimension; how much it still grows from
    h to k (m x k work per row of C, no further products with the operator) tells how far it
    is from c^T A^{-1} c.
    """
    _check_tridiagonal(q, t)
    mix, evals = _inverse_root_mix(t)
    back = (mix * evals.unsqueeze(-2)).transpose(-1, -2)  # V e^{-1/2} e = V e^{1/2}, transposed
    h = t.shape[-1] // 2  # 0 for a one-vector root: nothing to compare it with
    half = _inverse_root_mix(t[..., :h, :h])[0] if h else t[..., :0, :0]
    return q @ mix, back, half
