# Exact Gaussian algebra for K_hat = B ⊗ K_x + D ⊗ I (a multitask kernel on a full grid of t tasks
# and n points, one noise variance per task) through the eigendecompositions of two small matrices.
"""With D = diag(d) the per-task noise and B~ = D^-1/2 B D^-1/2 = Q_B diag(lam) Q_Bᵀ, K_x = Q_K
diag(mu) Q_Kᵀ:

    K_hat = (D^1/2 ⊗ I)(B~ ⊗ K_x + I)(D^1/2 ⊗ I),
    K_hat^-1 = (P ⊗ Q_K) S (P ⊗ Q_K)ᵀ,  P = D^-1/2 Q_B,  S = diag(1 / (lam_p mu_k + 1)),
    log det K_hat = sum_pk log(lam_p mu_k + 1) + n sum_a log d_a.

O(n³ + t³) time and n² + t² memory instead of (n t)³ and (n t)². Vectors of length n t are
task-major (entry a n + i: task a, point i), as ``kernels.Multitask`` lays out a grid.

Gradients (``KroneckerInvQuadLogdet``) are formed from these closed forms, not by differentiating
the eigendecompositions (whose derivatives divide by eigenvalue gaps and blow up for the nearly
equal small eigenvalues of smooth kernels): with A the solve K_hat^-1 r reshaped to (t, n),

    d inv_quad:  dK_x = -Aᵀ B A,   dB = -A K_x Aᵀ,   dd_a = -sum_i A_ai²,   dr = 2 K_hat^-1 r;
    d log det:   dK_x = Q_K diag(sum_p lam_p S_pk) Q_Kᵀ,   dB = P diag(sum_k mu_k S_pk) Pᵀ,
                 dd_a = sum_pk P_ap² S_pk.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KroneckerEigen:
    """The factorization above, float64: p = P ``(t, t)``, lam ``(t,)``, q = Q_K ``(n, n)``, mu ``(n,)``
    (clamped at 0: round-off makes a PSD K_x's smallest eigenvalues slightly negative; ``clamped``
    counts them), s = S ``(t, n)``."""

    p: torch.Tensor
    lam: torch.Tensor
    q: torch.Tensor
    mu: torch.Tensor
    s: torch.Tensor
    noise: torch.Tensor
    clamped: int

    @classmethod
    def build(cls, kx: torch.Tensor, b: torch.Tensor, noise: torch.Tensor) -> KroneckerEigen:
        """From K_x ``(n, n)``, B ``(t, t)`` and the task noise d ``(t,)`` (> 0), all float64."""
        kx, b, noise = kx.detach(), b.detach(), noise.detach()
        root = noise.rsqrt()
        lam, qb = torch.linalg.eigh(root.unsqueeze(-1) * b * root.unsqueeze(-2))
        mu, q = torch.linalg.eigh(0.5 * (kx + kx.T))
        clamped = int((mu < 0).sum())
        lam, mu = lam.clamp_min(0), mu.clamp_min(0)
        s = 1.0 / (lam.unsqueeze(-1) * mu.unsqueeze(-2) + 1.0)
        return cls(root.unsqueeze(-1) * qb, lam, q, mu, s, noise, clamped)

    @property
    def shape(self) -> tuple[int, int]:
        return self.p.shape[0], self.q.shape[0]

    def rotate(self, rhs: torch.Tensor) -> torch.Tensor:
        """(P ⊗ Q_K)ᵀ rhs for rhs ``(t n, c)``, as ``(t, n, c)``."""
        t, n = self.shape
        return torch.einsum("ap,anc,nk->pkc", self.p, rhs.reshape(t, n, -1), self.q)

    def unrotate(self, z: torch.Tensor) -> torch.Tensor:
        """(P ⊗ Q_K) z for z ``(t, n, c)``, as ``(t n, c)``."""
        t, n = self.shape
        return torch.einsum("ap,pkc,nk->anc", self.p, z, self.q).reshape(t * n, -1)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """K_hat^-1 rhs, rhs ``(t n, c)`` -> float64 ``(t n, c)``."""
        return self.unrotate(self.s.unsqueeze(-1) * self.rotate(rhs.double()))

    def whiten(self, rhs: torch.Tensor) -> torch.Tensor:
        """W ``(t n, c)`` with Wᵀ W = rhsᵀ K_hat^-1 rhs: S^1/2 (P ⊗ Q_K)ᵀ rhs (as a Cholesky factor's
        L^-1 rhs serves predictions)."""
        t, n = self.shape
        return (self.s.sqrt().unsqueeze(-1) * self.rotate(rhs.double())).reshape(t * n, -1)

    def logdet(self) -> torch.Tensor:
        n = self.shape[1]
        return self.s.log().neg().sum() + n * self.noise.log().sum()


class KroneckerInvQuadLogdet(torch.autograd.Function):
    """(rᵀ K_hat^-1 r, log det K_hat) for K_hat = B ⊗ K_x + diag(d) ⊗ I, differentiable in K_x ``(n, n)``,
    B ``(t, t)``, d ``(t,)`` and r ``(t n,)`` (all float64), by the closed forms in the module docstring;
    ``eig``: their ``KroneckerEigen`` when the caller has it (else it is built here)."""

    @staticmethod
    def forward(ctx, kx, b, noise, resid, eig=None):
        eig = KroneckerEigen.build(kx, b, noise) if eig is None else eig
        alpha = eig.solve(resid.unsqueeze(-1)).squeeze(-1)
        ctx.eig = eig
        ctx.save_for_backward(kx, b, alpha)
        return (resid * alpha).sum(), eig.logdet()

    @staticmethod
    def backward(ctx, grad_quad, grad_logdet):
        kx, b, alpha = ctx.saved_tensors
        eig = ctx.eig
        t, n = eig.shape
        a = alpha.reshape(t, n)
        grad_kx = grad_quad * -(a.T @ b @ a) + grad_logdet * (eig.q * (eig.lam.unsqueeze(-1) * eig.s).sum(0)) @ eig.q.T
        grad_b = grad_quad * -(a @ kx @ a.T) + grad_logdet * (eig.p * (eig.mu * eig.s).sum(-1)) @ eig.p.T
        grad_noise = grad_quad * -(a * a).sum(-1) + grad_logdet * (eig.p.square() @ eig.s).sum(-1)
        grad_resid = grad_quad * 2 * alpha
        return grad_kx, grad_b, grad_noise, grad_resid, None
