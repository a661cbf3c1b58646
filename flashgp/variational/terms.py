# The algebra of a sparse variational GP (Hensman et al. 2013/2015): from q(u) = N(m, S) and the
# inducing inputs Z, the marginals q(f(x)) = N(mu, var) at any inputs and KL(q(u) || p(u)).
"""Sparse variational GP terms.

With K_zz = L L^T (float64 Cholesky) and q(u) = N(m, S), S = R R^T:

* whitened (u = L v, q over v, prior N(0, I)):   alpha = L^{-T} m,      G = R;
* unwhitened (q over u, prior N(0, K_zz)):        alpha = K_zz^{-1} m,   G = L^{-1} R;

and in both P1 = L^{-T}, P2 = P1 G. At inputs x the marginals of q(f) are

    mu(x)  = mean(x) + K_xz alpha,
    var(x) = k(x, x) - |A|^2 + |A G|^2,   A = K_xz P1   (row-wise squared norms),

the form ``models.inducing_posterior.InducingPosterior`` predicts with (from alpha and
``proj`` = [P1, P2]). The M x M algebra is float64; the cross-covariance K_xz (b x M), A and A G
are in the model's dtype (P1 and G cast once), two GEMMs of 2 b M^2 flops per batch. Training
takes A G rather than K_xz P2: the same flops per point, without forming P2 = P1 G (2 M^3 float64
flops, and twice that in the backward pass).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..linalg.inducing import float64_kernel, inducing_cholesky
from .distributions import kl_divergence


@dataclass
class VariationalTerms:
    """What one state of q(u), Z and the kernel gives, for any inputs: ``alpha`` ``(*batch, M, 1)``,
    ``p1`` = L^{-T} and ``inner`` = G ``(*batch, M, M)`` (float64), ``kl`` ``(*batch,)`` (float64, per
    latent) and the absolute ``jitter`` added to K_zz's diagonal (None where unknown)."""

    alpha: torch.Tensor
    p1: torch.Tensor
    inner: torch.Tensor
    kl: torch.Tensor
    jitter: float | None

    @property
    def proj(self) -> torch.Tensor:
        """[P1, P2] = [P1, P1 G] ``(*batch, M, 2M)``, what predictions take."""
        p2 = self.p1 @ self.inner
        batch = p2.shape[:-2]
        return torch.cat([self.p1.expand(*batch, *self.p1.shape[-2:]), p2], -1)


def variational_terms(kernel, z: torch.Tensor, variational, whiten: bool, jitter: float | None) -> VariationalTerms:
    """``VariationalTerms`` for inducing inputs z ``(*batch, M, d)``, the variational distribution
    ``variational`` (``moments()``: mean, root, log det) and the kernel; differentiable in all."""
    chol, added = inducing_cholesky(float64_kernel(kernel, z), jitter)
    return terms_from_factor(chol, added, variational, whiten)


def unchecked_terms(kernel, z: torch.Tensor, variational, whiten: bool, jitter: float) -> tuple[VariationalTerms,
                                                                                                  torch.Tensor]:
    """``variational_terms`` without reading anything back from the device (for CUDA graphs): K_zz
    gets ``jitter`` times its mean diagonal always, and the factorization's failure is returned
    as a tensor instead of raised (``info`` of ``torch.linalg.cholesky_ex``, nonzero: failed);
    ``jitter`` of the terms is then None (unknown to the host)."""
    kzz = float64_kernel(kernel, z)
    scale = kzz.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
    eye = torch.eye(kzz.shape[-1], dtype=kzz.dtype, device=kzz.device)
    chol, info = torch.linalg.cholesky_ex(kzz + jitter * scale * eye)
    return terms_from_factor(chol, None, variational, whiten), info


def terms_from_factor(chol: torch.Tensor, added, variational, whiten: bool) -> VariationalTerms:
    """``VariationalTerms`` from K_zz's Cholesky factor ``chol`` (``added``: its jitter)."""
    mean, root, logdet = variational.moments()
    kl = kl_divergence(mean, root, logdet, None if whiten else chol)
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device)
    p1 = torch.linalg.solve_triangular(chol.transpose(-1, -2), eye.expand_as(chol), upper=True)  # L^{-T}
    if whiten:
        return VariationalTerms(p1 @ mean.unsqueeze(-1), p1, root, kl, added)
    inner = p1.transpose(-1, -2) @ torch.cat([mean.unsqueeze(-1), root], -1)  # L^{-1} [m, R]
    return VariationalTerms(p1 @ inner[..., :1], p1, inner[..., 1:], kl, added)


def marginals(kernel, mean_fn, z: torch.Tensor, terms: VariationalTerms, x: torch.Tensor):
    """Mean and variance of q(f) at inputs x ``(*batch, b, d)``, each ``(*batch, b)`` in x's dtype
    (float64 models: float64 throughout), differentiable. Variances are clamped at 0 from below
    (round-off where q(f) is nearly certain)."""
    dtype = x.dtype
    cross = kernel(x, z.to(dtype))  # (*batch, b, M)
    a = cross @ terms.p1.to(dtype)
    mu = mean_fn(x) + (cross @ terms.alpha.to(dtype)).squeeze(-1)
    var = kernel(x, diag=True) - a.square().sum(-1) + (a @ terms.inner.to(dtype)).square().sum(-1)
    return mu, var.clamp_min(0)
