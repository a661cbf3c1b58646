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

When the features factor as F = B D (a hyperparameter-free basis B ``(n, R)`` and weights D
``(R, P)``, ``Kernel.factored_features``), the noise is one variance s and the mean a constant c,
every term follows from statistics of the data computed once (``basis_statistics``: B^T B, B^T y,
B^T 1, y^T y, 1^T y; O(n R^2)), and each evaluation costs O(R^2 P + P^3), whatever n
(``statistic_terms``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .inducing import WeightedGram, accumulate_blocks


class _KernelCall(nn.Module):
    def __init__(self, kernel, method: str):
        super().__init__()
        self.kernel, self.method = kernel, method

    def forward(self, x):
        return getattr(self.kernel, self.method)(x)


def float64_call(kernel, method: str, x: Tensor):
    """kernel.<method>(x) with x and the kernel's parameters in float64, differentiable in both
    whatever their dtype (the parameters are cast, not copied)."""
    x = x.double()
    tensors = {**dict(kernel.named_parameters()), **dict(kernel.named_buffers())}
    if all(t.dtype == torch.float64 for t in tensors.values() if t.is_floating_point()):
        return getattr(kernel, method)(x)
    cast = {f"kernel.{name}": t.double() if t.is_floating_point() else t for name, t in tensors.items()}
    return functional_call(_KernelCall(kernel, method), cast, (x,))


def float64_features(kernel, x: Tensor) -> Tensor:
    """kernel.features(x) ``(*batch, n, P)`` in float64 (``float64_call``)."""
    return float64_call(kernel, "features", x)


def float64_weights(kernel, x: Tensor) -> Tensor | None:
    """D ``(*batch, R, P)`` of ``kernel.factored_features`` in float64 (x: any rows of the inputs, for
    their columns), differentiable in the kernel's parameters; None where the features do not factor."""
    parts = float64_call(kernel, "factored_features", x)
    return None if parts is None else parts[1]


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
    """The float64 pieces of a finite-feature model at one state: the Cholesky factor ``chol`` of
    A = I + F^T S^{-1} F ``(*batch, P, P)``, c = chol^{-1} F^T S^{-1} r ``(*batch, P)``, r^T S^{-1} r and
    log det S ``(*batch,)``."""

    chol: Tensor
    c: Tensor
    resid_quad: Tensor
    noise_logdet: Tensor

    def inv_quad(self) -> Tensor:
        """r^T K_hat^{-1} r ``(*batch,)``."""
        return self.resid_quad - self.c.square().sum(-1)

    def logdet(self) -> Tensor:
        """log det K_hat ``(*batch,)``."""
        return 2 * self.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) + self.noise_logdet


def _terms(gram: Tensor, g: Tensor, resid_quad: Tensor, noise_logdet: Tensor) -> BasisTerms:
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(eye + gram)
    c = torch.linalg.solve_triangular(chol, g.unsqueeze(-1), upper=False).squeeze(-1)
    return BasisTerms(chol, c, resid_quad, noise_logdet)


def basis_terms(kernel, resid: Tensor, noise: Tensor, x: Tensor, rows: int) -> BasisTerms:
    """``BasisTerms`` for features kernel.features(x), residuals ``(*batch, n)`` and noise variances
    ``(*batch, n)`` (any float dtype; computed in float64), differentiable."""
    resid, noise = resid.double(), noise.double()
    gram, g = feature_gram(kernel, x, 1.0 / noise, resid, rows)
    return _terms(gram, g, (resid.square() / noise).sum(-1), noise.log().sum(-1))


@dataclass(frozen=True)
class BasisStatistics:
    """Data statistics of a factored feature map F = B D (``Kernel.factored_features``), float64:
    B^T B ``(*b, R, R)``, B^T y and B^T 1 ``(*b, R)``, y^T y and 1^T y ``(*b,)``, and n. With a
    homoscedastic noise s and a constant mean c they give every term of the likelihood: F^T S^{-1} F
    = D^T B^T B D / s, F^T S^{-1} r = D^T (B^T y - c B^T 1) / s, r^T S^{-1} r = (y^T y - 2 c 1^T y + n c^2) / s."""

    gram: Tensor
    by: Tensor
    b1: Tensor
    yy: Tensor
    ysum: Tensor
    n: int


def basis_statistics(kernel, x: Tensor, y: Tensor, rows: int) -> BasisStatistics | None:
    """``BasisStatistics`` of x ``(*b, n, d)`` and y ``(*b, n)`` over blocks of ``rows`` points (no
    gradients), or None when the kernel's features do not factor."""
    n = x.shape[-2]
    total = None
    with torch.no_grad():
        for start in range(0, n, rows):
            parts = kernel.factored_features(x[..., start:start + rows, :].double())
            if parts is None:
                return None
            basis, part_y = parts[0], y[..., start:start + rows].double()
            block = (basis.mT @ basis, (basis.mT @ part_y.unsqueeze(-1)).squeeze(-1), basis.sum(-2))
            total = block if total is None else tuple(a + b for a, b in zip(total, block))
        y = y.double()
    return BasisStatistics(*total, y.square().sum(-1), y.sum(-1), n)


def statistic_terms(stats: BasisStatistics, weights: Tensor, noise: Tensor, constant: Tensor) -> BasisTerms:
    """``BasisTerms`` from ``stats`` and the current weights D ``(*batch, R, P)`` (float64), noise
    variance s ``(*batch,)`` and constant mean c ``(*batch,)``: O(R^2 P + P^3), differentiable in D,
    s and c."""
    s, c = noise.double(), constant.double()
    gram = weights.mT @ stats.gram @ weights / s[..., None, None]
    g = (weights.mT @ (stats.by - c[..., None] * stats.b1).unsqueeze(-1)).squeeze(-1) / s[..., None]
    resid_quad = (stats.yy - 2 * c * stats.ysum + stats.n * c.square()) / s
    return _terms(0.5 * (gram + gram.mT), g, resid_quad, stats.n * s.log())
