# The exact engine: a float64 Cholesky factorization of K_hat (with reported jitter escalation).
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NotPSDError
from ..linalg import safe_cholesky
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
        k_hat = kernel(x.double()) + torch.diag_embed(noise.double())
        if not bool(torch.isfinite(k_hat).all()):
            raise NotPSDError("the kernel matrix or the noise has NaN or infinite entries at the current "
                              "hyperparameters (a parameter that is NaN or infinite, or kernel values "
                              "that overflow the dtype)")
        chol, jitter = safe_cholesky(k_hat, max_tries=self.config.max_tries, jitter=self.config.jitter)
        return CholeskySystem(chol, CholeskyInfo(jitter))

    def inv_quad_logdet(self, kernel, x, noise, resid, state=None, generator=None):
        """(inv_quad, logdet, CholeskyInfo), in the dtype of x; ``state`` and ``generator`` are unused."""
        system = self.factor(kernel, x, noise)
        white = torch.linalg.solve_triangular(system.chol, resid.double().unsqueeze(-1), upper=False)
        inv_quad = white.squeeze(-1).pow(2).sum(-1)
        logdet = 2 * system.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return inv_quad.to(x.dtype), logdet.to(x.dtype), system.info

    def system(self, kernel, x, noise, state=None) -> CholeskySystem:
        with torch.no_grad():
            return self.factor(kernel, x, noise)
