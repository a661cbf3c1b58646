# The Woodbury algebra of finite-feature models (K = F F^T, F (n, P)): the Gram matrix F^T W F and
# F^T W r accumulated over row blocks in float64, and the Cholesky factor of I + F^T W F.
"""Finite-feature (Bayesian linear) GP algebra.

With features F = f(X) ``(*batch, n, P)`` (``Kernel.features``), a diagonal noise S and residuals
r = y - m(X), K_hat = F F^T + S is solved through the P x P matrix A = I + F^T S^{-1} F:

    log det K_hat = log det A + sum(log S),
    r^T K_hat^{-1} r = r^T S^{-1} r - g^T A^{-1} g,      g = F^T S^{-1} r,

exact in float64 at O(n P^2 + P^3) time and O(P^2 + block) memory (A >= I, so its Cholesky factor
always exists and needs no jitter). F^T S^{-1} F and g are accumulated over row blocks of X
(``linalg.inducing.accumulate_blocks``: each block's features are evaluated, used and dropped,
and recomputed in the backward pass).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .inducing import WeightedGram, accumulate_blocks


class _FeatureCall(nn.Module):
    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel

    def forward(self, x):
        return self.kernel.features(x)


def float64_features(kernel, x: Tensor) -> Tensor:
    """kernel.features(x) ``(*batch, n, P)`` in float64, differentiable in the kernel's parameters
    and x whatever their dtype (the parameters are cast, not copied)."""
    x = x.double()
    tensors = {**dict(kernel.named_parameters()), **dict(kernel.named_buffers())}
    if all(t.dtype == torch.float64 for t in tensors.values() if t.is_floating_point()):
        return kernel.features(x)
    cast = {f"kernel.{name}": t.double() if t.is_floating_point() else t for name, t in tensors.items()}
    return functional_call(_FeatureCall(kernel), cast, (x,))


def _feature_block(kernel, x, z, weights, resid):
    return WeightedGram.apply(float64_features(kernel, x), weights, resid)


def feature_gram(kernel, x: Tensor, weights: Tensor, resid: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """(F^T W F ``(*batch, P, P)``, F^T W r ``(*batch, P)``), float64, for F = kernel.features(x) with
    x ``(*batch, n, d)``, W = diag(weights ``(*batch, n)``), r = resid ``(*batch, n)``, over blocks of
    ``rows`` points; differentiable in the kernel's parameters, x, weights and resid."""
    n = x.shape[-2]
    batch = torch.broadcast_shapes(x.shape[:-2], kernel.batch_shape, weights.shape[:-1], resid.shape[:-1])
    weights, resid = weights.double().expand(*batch, n), resid.double().expand(*batch, n)
    gram, g = accumulate_blocks(_feature_block, kernel, x, None, (), weights, resid, rows)
    return 0.5 * (gram + gram.transpose(-1, -2)), g


@dataclass(frozen=True)
class BasisTerms:
    """The float64 pieces of a finite-feature model at one state: residuals r and noise S
    ``(*batch, n)``, the Cholesky factor ``chol`` of A = I + F^T S^{-1} F ``(*batch, P, P)`` and
    c = chol^{-1} F^T S^{-1} r ``(*batch, P)``."""

    resid: Tensor
    noise: Tensor
    chol: Tensor
    c: Tensor

    def inv_quad(self) -> Tensor:
        """r^T K_hat^{-1} r ``(*batch,)``."""
        return (self.resid.square() / self.noise).sum(-1) - self.c.square().sum(-1)

    def logdet(self) -> Tensor:
        """log det K_hat ``(*batch,)``."""
        return 2 * self.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) + self.noise.log().sum(-1)


def basis_terms(kernel, resid: Tensor, noise: Tensor, x: Tensor, rows: int) -> BasisTerms:
    """``BasisTerms`` for features kernel.features(x), residuals ``(*batch, n)`` and noise variances
    ``(*batch, n)`` (any float dtype; computed in float64), differentiable."""
    resid, noise = resid.double(), noise.double()
    gram, g = feature_gram(kernel, x, 1.0 / noise, resid, rows)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(eye + gram)
    c = torch.linalg.solve_triangular(chol, g.unsqueeze(-1), upper=False).squeeze(-1)
    batch = torch.broadcast_shapes(resid.shape[:-1], noise.shape[:-1], chol.shape[:-2])
    n = resid.shape[-1]
    return BasisTerms(resid.expand(*batch, n), noise.expand(*batch, n), chol, c)
