# Dense float64 references of an SGPR (Titsias' collapsed bound and its optimal posterior), built
# from the n x n matrices directly, for check_model and the accuracy tests.
from __future__ import annotations

import math

import torch
from torch import Tensor


def _parts(model, x_test: Tensor | None = None):
    """Dense K_xx, K_xz, K_zz (+ the model's jitter rule), noise, residual of ``model``."""
    x, z = model.train_x, model.inducing_points
    kzz = model.kernel(z)
    if model.jitter is not None:
        scale = kzz.detach().diagonal(dim1=-2, dim2=-1).mean()
        kzz = kzz + model.jitter * scale * torch.eye(z.shape[-2], dtype=kzz.dtype)
    noise = model.likelihood.noise_diag(x.shape[-2])
    return model.kernel(x), model.kernel(x, z), kzz, noise, model.train_y - model.mean(x)


def sgpr_loss_reference(model) -> Tensor:
    """-ELBO / n of an SGPR by dense algebra: -(log N(y; m, Q + S) - tr(S^{-1}(K - Q)) / 2) / n
    with Q = K_xz K_zz^{-1} K_zx, ``(*batch,)``, differentiable (float64 copy for a reference)."""
    k, kxz, kzz, noise, resid = _parts(model)
    n = resid.shape[-1]
    q = kxz @ torch.linalg.solve(kzz, kxz.mT)
    chol = torch.linalg.cholesky(q + torch.diag_embed(noise))
    alpha = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    trace = ((k - q).diagonal(dim1=-2, dim2=-1) / noise).sum(-1)
    return 0.5 * ((resid * alpha).sum(-1) + logdet + n * math.log(2 * math.pi) + trace) / n


def sgpr_posterior_reference(model, x: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, variance) ``(*batch, m)`` of an SGPR's posterior at x: with Sigma = (K_zz + K_zx S^{-1}
    K_xz)^{-1}, mean = m(x) + K_*z Sigma K_zx S^{-1} r and variance = k** - K_*z K_zz^{-1} K_z*
    + K_*z Sigma K_z*."""
    with torch.no_grad():
        _, kxz, kzz, noise, resid = _parts(model)
        x = x.to(model.train_x)
        ktz = model.kernel(x, model.inducing_points)
        sigma = torch.linalg.inv(kzz + kxz.mT @ (kxz / noise.unsqueeze(-1)))
        mean = model.mean(x) + (ktz @ (sigma @ (kxz.mT @ (resid / noise).unsqueeze(-1)))).squeeze(-1)
        prior = model.kernel(x, diag=True)
        var = (prior - (ktz * torch.linalg.solve(kzz, ktz.mT).mT).sum(-1) + (ktz * (sigma @ ktz.mT).mT).sum(-1))
    return mean, var
