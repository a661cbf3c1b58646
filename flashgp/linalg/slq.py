# Stochastic Lanczos quadrature: tr f(A) from the Lanczos tridiagonals of probe vectors.
# slq_logdet is the log-determinant case used by the BBMM marginal likelihood.
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .lanczos import floor_eigenvalues, small_eigh


def _check_args(tridiag: Tensor, weights: Tensor) -> None:
    """Validate slq's arguments, naming the bad one."""
    if not isinstance(tridiag, Tensor) or tridiag.dim() < 3 or tridiag.shape[-1] != tridiag.shape[-2]:
        shape = tuple(tridiag.shape) if isinstance(tridiag, Tensor) else type(tridiag).__name__
        raise ValueError(f"tridiag: expected a tensor of shape (*batch, t, k, k), got {shape}")
    if not isinstance(weights, Tensor) or weights.shape[-1:] != tridiag.shape[-3:-2]:
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"weights: expected shape (*batch, {tridiag.shape[-3]}) to match tridiag, got {shape}")


def _quadrature(tridiag: Tensor, fn: Callable[[Tensor], Tensor], floor: bool) -> Tensor:
    """e1^T fn(T) e1 for each T in ``(*batch, t, k, k)`` -> ``(*batch, t)``, via eigh (``small_eigh``)."""
    evals, evecs = small_eigh(tridiag)
    if floor:
        evals = floor_eigenvalues(evals, "slq_logdet")
    return (evecs[..., 0, :].square() * fn(evals)).sum(-1)


def slq(tridiag: Tensor, weights: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Mean over probes of weights_i * e1^T fn(T_i) e1.

    tridiag: ``(*batch, t, k, k)`` Lanczos tridiagonals (e.g. ``CGResult.tridiag``); weights: ``(*batch, t)``
    squared start-vector norms (e.g. ``CGResult.init_norm_sq``); fn maps eigenvalues elementwise.
    With probes z ~ N(0, I) this estimates tr fn(A). Returns ``(*batch,)``.
    """
    _check_args(tridiag, weights)
    return (weights * _quadrature(tridiag, fn, floor=False)).mean(-1)


def slq_logdet(tridiag: Tensor, weights: Tensor) -> Tensor:
    """Stochastic Lanczos quadrature estimate of log det: mean_i weights_i e1^T log(T_i) e1.

    tridiag: ``(*batch, t, k, k)``, weights: ``(*batch, t)``. With a preconditioner P, probes z ~ N(0, P)
    and preconditioned CG on A, the T_i belong to P^{-1/2} A P^{-1/2} and weights = z^T P^{-1} z,
    so this estimates log det(P^{-1} A) (add log det P for log det A). Eigenvalues below
    eps * max|eigenvalue| are clamped (NumericalWarning with the count and the minimum).
    Returns ``(*batch,)``.
    """
    _check_args(tridiag, weights)
    return (weights * _quadrature(tridiag, torch.log, floor=True)).mean(-1)



def slq_logdet_tail_change(tridiag: Tensor, weights: Tensor, drop: int) -> Tensor:
    """How much the last ``drop`` Lanczos steps moved the SLQ log-det estimate: |estimate from
    the full k x k tridiagonals - estimate from their leading (k - drop) x (k - drop) blocks|.

    A cheap convergence check of the quadrature (its error shrinks with k, so a large move late
    means the estimate has not settled). Probes whose last step is inactive (mBCG froze the
    column: the Krylov space was exhausted and the quadrature is exact) count as settled, and
    so does everything when k < 2 * drop. tridiag: ``(*batch, t, k, k)``, weights: ``(*batch, t)``.
    Eigenvalues are floored quietly (``slq_logdet`` reports the floor). Returns ``(*batch,)``.
    """
    _check_args(tridiag, weights)
    k = tridiag.shape[-1]
    if k < 2 * drop:
        return torch.zeros(weights.shape[:-1], dtype=weights.dtype, device=weights.device)

    def quiet_log(evals: Tensor) -> Tensor:
        floor = torch.finfo(evals.dtype).eps * evals.abs().amax(-1, keepdim=True).clamp_min(1e-30)
        return torch.log(evals.clamp_min(0) + floor)

    full = _quadrature(tridiag, quiet_log, floor=False)
    head = _quadrature(tridiag[..., : k - drop, : k - drop], quiet_log, floor=False)
    still_running = tridiag[..., -1, -2] != 0  # frozen steps are decoupled (off-diagonal 0)
    return (weights * torch.where(still_running, full - head, torch.zeros_like(full))).mean(-1).abs()
