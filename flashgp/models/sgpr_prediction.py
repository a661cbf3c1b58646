# SGPR predictions: the posterior of the collapsed bound from quantities computed once per
# parameter state (triangular solves of two m x m Cholesky factors), test points in chunks.
from __future__ import annotations

import torch

from ..objectives import collapsed_terms
from .finite import check_noise_values
from .inducing_posterior import InducingPosterior


class SGPRPrediction(InducingPosterior):
    """Everything test-independent for SGPR predictions at one state ``snapshot``.

    With K_zz = L L^T, M = L^{-1} K_zx S^{-1} K_xz L^{-T}, v = L^{-1} K_zx S^{-1} r and
    B = I + M = L_B L_B^T, the bound's optimal posterior at test inputs is

        mean = m(x*) + K_*z a,                 a = L^{-T} L_B^{-T} L_B^{-1} v,
        cov  = K_** - K_*z P1 P1^T K_z* + K_*z P2 P2^T K_z*,   P1 = L^{-T},  P2 = L^{-T} L_B^{-T}

    (the Nystrom variance K_*z K_zz^{-1} K_z* taken away, what the data leave of it,
    K_*z (K_zz + K_zx S^{-1} K_xz)^{-1} K_z*, added back). Triangular solves only (no
    eigendecomposition); ``InducingPosterior`` predicts from ``alpha`` and [P1, P2]. The
    training noise is checked once per cache (finite, > 0).
    """

    def __init__(self, model, snapshot, rows: int):
        self.snapshot = snapshot
        n = model.num_train
        check_noise_values(model.likelihood.noise_diag(n).detach())
        z = model.inducing_points.detach()
        parts = collapsed_terms(model.kernel, model.mean, model.likelihood, model.train_x, model.train_y, z,
                                model.jitter, rows)
        chol, chol_b, v = parts.chol, parts.chol_b, parts.v
        m = z.shape[-2]
        eye = torch.eye(m, dtype=torch.float64, device=chol.device)
        p1 = torch.linalg.solve_triangular(chol.transpose(-1, -2), eye.expand_as(chol), upper=True)
        p2 = torch.linalg.solve_triangular(chol_b, p1.transpose(-1, -2), upper=False)  # L_B^{-1} L^{-1}
        p2 = p2.transpose(-1, -2)  # L^{-T} L_B^{-T}
        c = torch.linalg.solve_triangular(chol_b, v.unsqueeze(-1), upper=False)
        diagnostics = {"n": n, "path": "sgpr", "inducing": m, "jitter": parts.jitter}
        super().__init__(model.kernel, model.mean, z, p2 @ c, torch.cat([p1.expand_as(p2), p2], -1), model.dtype,
                         diagnostics, "sgpr")
