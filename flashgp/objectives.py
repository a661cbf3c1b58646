# Training objectives, as functions of a model's parts: the model composes an engine, a likelihood
# and one of these: exact_mll (ExactGP), sgpr_elbo (SGPR), basis_mll (BasisGP); the variational ELBO
# joins them.
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .linalg.basis import BasisTerms
from .linalg.inducing import block_rows, float64_kernel, inducing_cholesky, inducing_terms


def gaussian_log_density(inv_quad: torch.Tensor, logdet: torch.Tensor, n: int) -> torch.Tensor:
    """log N(y; m, K_hat) / n from its two terms r^T K_hat^{-1} r and log det K_hat ``(*batch,)``:
    -(inv_quad + logdet + n log 2 pi) / (2 n)."""
    return -0.5 * (inv_quad + logdet + n * math.log(2 * math.pi)) / n


def exact_mll(engine, kernel, mean, likelihood, x: torch.Tensor, y: torch.Tensor, state=None,
              generator: torch.Generator | None = None, noise: torch.Tensor | None = None):
    """The exact log marginal likelihood per point, log p(y | x) / n = log N(y; m(x), K + S) / n,
    and the engine's record of the solve.

    engine: an ``flashgp.engines.Engine``; kernel, mean: the prior; likelihood: a conjugate
    (Gaussian) likelihood, S = diag(likelihood.noise_diag(n)); x ``(*batch, n, d)``, y ``(*batch, n)``;
    state: the model's preconditioner state; generator: fixes the engine's random probes; noise:
    S's diagonal ``(*batch, n)`` when the model gives it (None: the likelihood's).
    Returns (value ``(*batch,)``, differentiable; the info record).
    """
    n = x.shape[-2]
    resid = y - mean(x)
    noise = likelihood.noise_diag(n) if noise is None else noise
    inv_quad, logdet, info = engine.inv_quad_logdet(kernel, x, noise, resid, state=state, generator=generator)
    return gaussian_log_density(inv_quad, logdet, n), info


def basis_mll(terms: BasisTerms, n: int) -> torch.Tensor:
    """The exact log marginal likelihood per point of a finite-feature model, log N(y; m(x),
    F F^T + S) / n, from its Woodbury terms (``linalg.basis``: ``basis_terms`` over the data in
    blocks, or ``statistic_terms`` from statistics computed once); ``(*batch,)`` float64."""
    return gaussian_log_density(terms.inv_quad(), terms.logdet(), n)


def sgpr_elbo(kernel, mean, likelihood, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
              jitter: float | None = None, rows: int | None = None):
    """Titsias' collapsed evidence lower bound per point, ``(*batch,)``, and a record of the solve.

    ELBO = log N(y; m(x), Q + S) - tr(S^{-1} (K - Q)) / 2 with Q = K_xz K_zz^{-1} K_zx the
    Nystrom approximation at the inducing inputs z ``(*batch, m, d)`` and S = diag(noise) (a
    conjugate likelihood; heteroscedastic FixedNoise included). It is <= log p(y) and equals it
    when Q = K. Computed exactly in float64 by the Woodbury identity (``linalg.inducing``):
    with B = I + M (m x m) and c = chol(B)^{-1} v,

        log det(Q + S) = log det B + sum log s_i,
        r^T (Q + S)^{-1} r = r^T S^{-1} r - |c|^2,
        tr(S^{-1} (K - Q)) = sum k(x_i, x_i) / s_i - tr M.

    M and v come from ``linalg.inducing.inducing_terms`` (the Gram path while K_zz is well
    conditioned, the whitened one otherwise). x ``(*batch, n, d)``, y ``(*batch, n)``; jitter: added to K_zz's diagonal relative to its mean
    (None: only if K_zz does not factor, with a warning, ``linalg.safe_cholesky``); rows: points
    per block of the cross-covariance (None: ``linalg.inducing.block_rows``). Returns (value,
    differentiable; dict with jitter (what K_zz got), blocks, inducing, terms: "gram" or
    "whitened"). O(n m^2 + m^3).
    """
    n, m = x.shape[-2], z.shape[-2]
    parts = collapsed_terms(kernel, mean, likelihood, x, y, z, jitter, rows)
    noise, chol_b = parts.noise, parts.chol_b
    c = torch.linalg.solve_triangular(chol_b, parts.v.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2 * chol_b.diagonal(dim1=-2, dim2=-1).log().sum(-1) + noise.log().sum(-1)
    inv_quad = (parts.resid.square() / noise).sum(-1) - c.square().sum(-1)
    trace = (float64_kernel(kernel, x, diag=True) / noise).sum(-1) - parts.gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    value = gaussian_log_density(inv_quad, logdet, n) - 0.5 * trace / n
    return value, {"jitter": parts.jitter, "blocks": -(-n // parts.rows), "inducing": m, "terms": parts.path}


@dataclass
class CollapsedTerms:
    """What the collapsed bound and its posterior share (float64): resid = y - m(x) and noise
    ``(*batch, n)``, chol = L with L L^T = K_zz (+ ``jitter``, the absolute value added), gram = M
    and v (``linalg.inducing.inducing_terms``, by ``path``), chol_b = chol(I + M), rows per block."""

    resid: torch.Tensor
    noise: torch.Tensor
    chol: torch.Tensor
    jitter: float
    gram: torch.Tensor
    v: torch.Tensor
    path: str
    chol_b: torch.Tensor
    rows: int


def collapsed_terms(kernel, mean, likelihood, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                    jitter: float | None = None, rows: int | None = None) -> CollapsedTerms:
    """The float64 terms of ``sgpr_elbo`` (same arguments), differentiable where the inputs are."""
    n, m = x.shape[-2], z.shape[-2]
    resid = (y - mean(x)).double()
    noise = likelihood.noise_diag(n).double()
    chol, added = inducing_cholesky(float64_kernel(kernel, z), jitter)
    batch = int(torch.Size(torch.broadcast_shapes(x.shape[:-2], z.shape[:-2])).numel())
    rows = block_rows(m, batch, device=x.device) if rows is None else rows
    gram, v, path = inducing_terms(kernel, x, z, chol, 1.0 / noise, resid, rows)
    eye = torch.eye(m, dtype=torch.float64, device=gram.device)
    chol_b = torch.linalg.cholesky(eye + gram)
    return CollapsedTerms(resid, noise, chol, added, gram, v, path, chol_b, rows)


def variational_elbo(likelihood, y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, kl: torch.Tensor,
                     num_data: int) -> torch.Tensor:
    """The variational ELBO per training point, estimated on a batch of b points: the mean over
    the batch of E_q(f)[log p(y | f)] (summed over independent outputs) minus the KL divergences
    of all latents over n = ``num_data``; a scalar, differentiable.

    y: the batch's targets as the likelihood takes them; mean, var: q(f)'s marginals ``(b,)`` or
    ``(C, b)``; kl ``(*latents,)`` float64. The data term is computed in the dtype of ``mean``.
    """
    ell = likelihood.expected_log_prob(y, mean, var)
    points = ell.shape[-1]
    return ell.sum() / points - kl.sum().to(ell.dtype) / num_data
