# Training objectives, as functions of a model's parts: the model composes an engine, a likelihood
# and one of these. exact_mll now; the ELBO and the collapsed sparse bound (SGPR) join it.
from __future__ import annotations

import math

import torch


def gaussian_log_density(inv_quad: torch.Tensor, logdet: torch.Tensor, n: int) -> torch.Tensor:
    """log N(y; m, K_hat) / n from its two terms r^T K_hat^{-1} r and log det K_hat (*batch,):
    -(inv_quad + logdet + n log 2 pi) / (2 n)."""
    return -0.5 * (inv_quad + logdet + n * math.log(2 * math.pi)) / n


def exact_mll(engine, kernel, mean, likelihood, x: torch.Tensor, y: torch.Tensor, state=None,
              generator: torch.Generator | None = None):
    """The exact log marginal likelihood per point, log p(y | x) / n = log N(y; m(x), K + S) / n,
    and the engine's record of the solve.

    engine: an ``flashgp.engines.Engine``; kernel, mean: the prior; likelihood: a conjugate
    (Gaussian) likelihood, S = diag(likelihood.noise_diag(n)); x (*batch, n, d), y (*batch, n);
    state: the model's preconditioner state; generator: fixes the engine's random probes.
    Returns (value (*batch,), differentiable; the info record).
    """
    n = x.shape[-2]
    resid = y - mean(x)
    noise = likelihood.noise_diag(n)
    inv_quad, logdet, info = engine.inv_quad_logdet(kernel, x, noise, resid, state=state, generator=generator)
    return gaussian_log_density(inv_quad, logdet, n), info
