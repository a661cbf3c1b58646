# The exact engine: a float64 Cholesky factorization of K_hat (with reported jitter escalation), or
# for a multitask kernel on a full task grid with one noise per task the eigendecompositions of its
# two Kronecker factors (``linalg.kronecker_eigen``): both exact, the second O(n³ + t³).
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NotPSDError
from ..linalg import safe_cholesky
from ..linalg.kronecker_eigen import KroneckerEigen, KroneckerInvQuadLogdet
from .base import Engine
from .records import CholeskyInfo


@dataclass(frozen=True)
class CholeskySystem:
    """L ``(*batch, n, n)`` float64 with L L^T = K_hat (+ jitter), and the record of its build."""

    chol: torch.Tensor
    info: CholeskyInfo

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """K_hat^{-1} rhs in float64, rhs ``(*batch, n, t)``."""
        return torch.cholesky_solve(rhs.double(), self.chol)

    def whiten(self, rhs: torch.Tensor) -> torch.Tensor:
        """L^{-1} rhs ``(*batch, n, t)`` float64: its columns' inner products are rhsᵀ K_hat^{-1} rhs."""
        return torch.linalg.solve_triangular(self.chol, rhs.double(), upper=False)

    def whiten_t(self, rhs: torch.Tensor) -> torch.Tensor:
        """L^{-T} rhs ``(*batch, n, t)`` float64 (so that solve = whiten_t(whiten(rhs)))."""
        return torch.linalg.solve_triangular(self.chol.transpose(-1, -2), rhs.double(), upper=True)

    @property
    def size(self) -> int:
        """n, the order of K_hat."""
        return self.chol.shape[-1]


@dataclass(frozen=True)
class KroneckerSystem:
    """K_hat = B ⊗ K_x + diag(d) ⊗ I factored by ``linalg.kronecker_eigen.KroneckerEigen`` (float64),
    with the same ``solve`` and ``whiten`` as ``CholeskySystem``."""

    eig: KroneckerEigen
    info: CholeskyInfo

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        return self.eig.solve(rhs)

    def whiten(self, rhs: torch.Tensor) -> torch.Tensor:
        return self.eig.whiten(rhs)


def kronecker_parts(kernel, x, noise):
    """(K_x, B, d), float64 and differentiable, when the kernel gives Kronecker factors at x
    (``kernels.Multitask.exact_factors``: a full task grid) and ``noise`` ``(t n,)`` is constant
    within each task; else None."""
    factors = getattr(kernel, "exact_factors", None)
    parts = factors(x) if callable(factors) and noise.dim() == 1 else None
    if parts is None:
        return None
    kx, b = parts
    t, n = b.shape[-1], kx.shape[-1]
    per_task = noise.reshape(t, n)
    if not torch.equal(per_task, per_task[:, :1].expand(t, n)):
        return None
    return kx, b, per_task[:, 0].double()


class CholeskyEngine(Engine):
    """Exact inference for ``fg.Cholesky`` configurations: O(n^3) time, n^2 float64 memory."""

    name = "cholesky"
    exact = True

    def factor(self, kernel, x, noise) -> CholeskySystem:
        """The Cholesky factor of K(x, x) + diag(noise), differentiable.

        The kernel is evaluated on float64 inputs whatever the dtype of x: float32 distances lose
        ~eps32 |x / lengthscale|^2, which for points many lengthscales apart turns a well-conditioned
        K into one no jitter can factor.
        """
        parts = kronecker_parts(kernel, x, noise)
        if parts is not None:
            return self._kronecker(*parts)
        k_hat = kernel(x.double()) + torch.diag_embed(noise.double())
        if not bool(torch.isfinite(k_hat).all()):
            raise NotPSDError("the kernel matrix or the noise has NaN or infinite entries at the current "
                              "hyperparameters (a parameter that is NaN or infinite, or kernel values "
                              "that overflow the dtype)")
        chol, jitter = safe_cholesky(k_hat, max_tries=self.config.max_tries, jitter=self.config.jitter)
        return CholeskySystem(chol, CholeskyInfo(jitter))

    def _kronecker(self, kx, b, noise) -> KroneckerSystem:
        _check_finite(kx, b, noise)
        eig = KroneckerEigen.build(kx, b, noise)
        return KroneckerSystem(eig, CholeskyInfo(0.0, structure="kronecker", eigen_clamped=eig.clamped))

    def inv_quad_logdet(self, kernel, x, noise, resid, state=None, generator=None):
        """(inv_quad, logdet, CholeskyInfo), in the dtype of x; ``state`` and ``generator`` are unused.
        A Kronecker-structured K_hat (``kronecker_parts``) takes the eigendecomposition path."""
        parts = kronecker_parts(kernel, x, noise)
        if parts is not None:
            system = self._kronecker(*parts)
            inv_quad, logdet = KroneckerInvQuadLogdet.apply(*parts, resid.double(), system.eig)
            return inv_quad.to(x.dtype), logdet.to(x.dtype), system.info
        system = self.factor(kernel, x, noise)
        white = torch.linalg.solve_triangular(system.chol, resid.double().unsqueeze(-1), upper=False)
        inv_quad = white.squeeze(-1).pow(2).sum(-1)
        logdet = 2 * system.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return inv_quad.to(x.dtype), logdet.to(x.dtype), system.info

    def system(self, kernel, x, noise, state=None) -> CholeskySystem:
        with torch.no_grad():
            return self.factor(kernel, x, noise)


def _check_finite(kx, b, noise) -> None:
    for name, value in (("the kernel matrix", kx), ("the task covariance", b), ("the noise", noise)):
        if not bool(torch.isfinite(value.detach()).all()):
            raise NotPSDError(f"{name} has NaN or infinite entries at the current hyperparameters (a parameter "
                              "that is NaN or infinite, or kernel values that overflow the dtype)")
