# A Cholesky factor extended by new rows and columns of K_hat without refactoring: conditioning
# an exact GP on q new observations costs O(n^2 q), not O((n + q)^3).
"""Extended Cholesky factors.

For K_hat' = [[K_hat, C], [C^T, D]] with K_hat = L L^T, the factor of K_hat' is

    L' = [[L, 0], [B^T, S]],   B = L^{-1} C,   S S^T = D - B^T B,

so solves with K_hat' need L, B (n x q) and S (q x q) only. ``ExtendedSystem`` keeps them apart
(never an (n + q) x (n + q) matrix): one L serves every batch element of B and S, as fantasy
models (the same L, a batch of new points) need, and extending an extended system nests.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..errors import NumericalWarning
from ..linalg import safe_cholesky
from .records import CholeskyInfo


@dataclass(frozen=True)
class ExtendedSystem:
    """A factored K_hat' = [[K_hat, C], [C^T, D]] from ``base`` (a system with ``whiten``,
    ``whiten_t``, ``solve``, ``size`` and ``info``: a ``CholeskySystem`` or another
    ``ExtendedSystem``), ``left`` = B ``(*batch, n, q)`` and ``corner`` = S ``(*batch, q, q)``
    (lower triangular), all float64."""

    base: object
    left: torch.Tensor
    corner: torch.Tensor
    info: CholeskyInfo

    @property
    def size(self) -> int:
        return self.base.size + self.corner.shape[-1]

    def whiten(self, rhs: torch.Tensor) -> torch.Tensor:
        """L'^{-1} rhs for rhs ``(*batch, n + q, t)``, float64."""
        n = self.base.size
        rhs = rhs.double()
        top = self.base.whiten(rhs[..., :n, :])
        rest = rhs[..., n:, :] - self.left.transpose(-1, -2) @ top
        return torch.cat([top.expand(*rest.shape[:-2], *top.shape[-2:]),
                          torch.linalg.solve_triangular(self.corner, rest, upper=False)], -2)

    def whiten_t(self, rhs: torch.Tensor) -> torch.Tensor:
        """L'^{-T} rhs for rhs ``(*batch, n + q, t)``, float64."""
        n = self.base.size
        rhs = rhs.double()
        low = torch.linalg.solve_triangular(self.corner.transpose(-1, -2), rhs[..., n:, :], upper=True)
        top = self.base.whiten_t(rhs[..., :n, :] - self.left @ low)
        return torch.cat([top, low.expand(*top.shape[:-2], *low.shape[-2:])], -2)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """K_hat'^{-1} rhs ``(*batch, n + q, t)``, float64."""
        return self.whiten_t(self.whiten(rhs))


def extend(system, cross: torch.Tensor, corner: torch.Tensor) -> ExtendedSystem:
    """The factored [[K_hat, C], [C^T, D]] from ``system`` (K_hat's, jitter j included), C = ``cross``
    ``(*batch, n, q)`` and D = ``corner`` ``(*batch, q, q)`` (the new points' kernel matrix plus
    their noise), in O(n^2 q + q^3). The system's jitter j is added to D's diagonal as well, so
    the result factors K_hat' + j I as a fresh factorization with jitter j would; when the Schur
    complement D + j I - B^T B needs more, it gets it alone (NumericalWarning, and ``info.jitter``
    reports the larger value)."""
    left = system.whiten(cross.double())
    jitter = system.info.jitter
    schur = corner.double() - left.transpose(-1, -2) @ left
    if jitter:
        schur = schur + jitter * torch.eye(schur.shape[-1], dtype=schur.dtype, device=schur.device)
    schur = 0.5 * (schur + schur.transpose(-1, -2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NumericalWarning)
        low, extra = safe_cholesky(schur)
    if extra:
        warnings.warn(f"condition_on_observations: the new points' block of K_hat needed jitter {extra:.3g} "
                      "beyond the model's (new points duplicate old ones, or the noise is tiny); the "
                      "conditioned model's predictions are those of K_hat with that jitter on the new rows",
                      NumericalWarning, stacklevel=4)
    del caught
    info = CholeskyInfo(max(jitter, extra), system.info.structure, system.info.eigen_clamped)
    return ExtendedSystem(system, left, low, info)
