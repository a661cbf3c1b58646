# The algebra of a sparse variational GP (Hensman et al. 2013/2015): from q(u) = N(m, S) and the
# inducing inputs Z, the marginals q(f(x)) = N(mu, var) at any inputs and KL(q(u) || p(u)).
"""Sparse variational GP terms.

With K_zz = L L^T (float64 Cholesky) and q(u) = N(m, S), S = R R^T:

* whitened (u = L v, q over v, prior N(0, I)):   alpha = L^{-T} m,            P2 = L^{-T} R;
* unwhitened (q over u, prior N(0, K_zz)):        alpha = K_zz^{-1} m,         P2 = K_zz^{-1} R;

and in both P1 = L^{-T}. At inputs x the marginals of q(f) are

    mu(x)  = mean(x) + K_xz alpha,
    var(x) = k(x, x) - |K_xz P1|^2 + |K_xz P2|^2   (row-wise squared norms),

the form ``models.inducing_posterior.InducingPosterior`` predicts with. The M x M algebra is
float64; the cross-covariance K_xz (b x M) and its product with [P1, P2] (an M x 2M matrix, cast
once) are in the model's dtype, the per-point cost 2 b M^2 flops of one GEMM.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..linalg.inducing import float64_kernel, inducing_cholesky
from .distributions import kl_divergence


@dataclass
class VariationalTerms:
    """What one state of q(u), Z and the kernel gives, for any inputs: ``alpha`` ``(*batch, M, 1)``,
    ``proj`` = [P1, P2] ``(*batch, M, 2M)`` (float64), ``kl`` ``(*batch,)`` (float64, per latent) and
    the absolute ``jitter`` added to K_zz's diagonal."""

    alpha: torch.Tensor
    proj: torch.Tensor
    kl: torch.Tensor
    jitter: float


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
        alpha, p2 = p1 @ mean.unsqueeze(-1), p1 @ root
    else:
        inverse = p1 @ p1.transpose(-1, -2)  # K_zz^{-1}
        alpha, p2 = inverse @ mean.unsqueeze(-1), inverse @ root
    batch = torch.broadcast_shapes(p1.shape[:-2], p2.shape[:-2])
    proj = torch.cat([p1.expand(*batch, *p1.shape[-2:]), p2.expand(*batch, *p2.shape[-2:])], -1)
    return VariationalTerms(alpha, proj, kl, added)


def marginals(kernel, mean_fn, z: torch.Tensor, terms: VariationalTerms, x: torch.Tensor):
    """Mean and variance of q(f) at inputs x ``(*batch, b, d)``, each ``(*batch, b)`` in x's dtype
    (float64 models: float64 throughout), differentiable. Variances are clamped at 0 from below
    (round-off where q(f) is nearly certain)."""
    dtype = x.dtype
    cross = kernel(x, z.to(dtype))  # (*batch, b, M)
    m = z.shape[-2]
    w = cross @ terms.proj.to(dtype)
    mu = mean_fn(x) + (cross @ terms.alpha.to(dtype)).squeeze(-1)
    var = kernel(x, diag=True) - w[..., :m].square().sum(-1) + w[..., m:].square().sum(-1)
    return mu, var.clamp_min(0)
