# SGPR predictions: the posterior of the collapsed bound from quantities computed once per
# parameter state (triangular solves of two m x m Cholesky factors), test points in chunks.
from __future__ import annotations

import torch

from ..distributions import FactorDowndated, Posterior
from ..linalg.inducing import float64_kernel
from ..objectives import collapsed_terms
from ..operators import KernelOperator
from .finite import check_noise_values
from .prediction import chunk_points


class SGPRPrediction:
    """Everything test-independent for SGPR predictions at one state ``snapshot``.

    With K_zz = L L^T, M = L^{-1} K_zx S^{-1} K_xz L^{-T}, v = L^{-1} K_zx S^{-1} r and
    B = I + M = L_B L_B^T, the bound's optimal posterior at test inputs is

        mean = m(x*) + K_*z a,                 a = L^{-T} L_B^{-T} L_B^{-1} v,
        cov  = K_** - K_*z P1 P1^T K_z* + K_*z P2 P2^T K_z*,   P1 = L^{-T},  P2 = L^{-T} L_B^{-T}

    (the Nystrom variance K_*z K_zz^{-1} K_z* taken away, what the data leave of it,
    K_*z (K_zz + K_zx S^{-1} K_xz)^{-1} K_z*, added back). Triangular solves only (no
    eigendecomposition). ``alpha`` ``(*batch, m, 1)`` and ``proj`` = [P1, P2] ``(*batch, m, 2m)``
    are float64; predictions are computed in float64 and returned in the model's dtype. The
    training noise is checked once per cache (finite, > 0).
    """

    def __init__(self, model, snapshot, rows: int):
        self.snapshot, self.kernel, self.mean_fn, self.dtype = snapshot, model.kernel, model.mean, model.dtype
        n = model.num_train
        check_noise_values(model.likelihood.noise_diag(n).detach())
        self.z = model.inducing_points.detach()
        parts = collapsed_terms(self.kernel, self.mean_fn, model.likelihood, model.train_x, model.train_y, self.z,
                                model.jitter, rows)
        chol, chol_b, v, added = parts.chol, parts.chol_b, parts.v, parts.jitter
        m = self.z.shape[-2]
        eye = torch.eye(m, dtype=torch.float64, device=chol.device)
        p1 = torch.linalg.solve_triangular(chol.transpose(-1, -2), eye.expand_as(chol), upper=True)
        p2 = torch.linalg.solve_triangular(chol_b, p1.transpose(-1, -2), upper=False)  # L_B^{-1} L^{-1}
        p2 = p2.transpose(-1, -2)  # L^{-T} L_B^{-T}
        c = torch.linalg.solve_triangular(chol_b, v.unsqueeze(-1), upper=False)
        self.alpha = p2 @ c
        self.proj = torch.cat([p1.expand_as(p2), p2], -1)
        self.signs = torch.cat([torch.ones(m, dtype=self.dtype, device=chol.device),
                                -torch.ones(m, dtype=self.dtype, device=chol.device)])
        self.diagnostics: dict = {"n": n, "path": "sgpr", "inducing": m, "jitter": added}

    def factor(self, x: torch.Tensor) -> torch.Tensor:
        """K_*z [P1, P2] ``(*batch, c, 2m)`` in the model's dtype for test inputs x ``(*batch, c, d)``."""
        return (float64_kernel(self.kernel, x, self.z) @ self.proj).to(self.dtype)

    def posterior(self, x: torch.Tensor) -> Posterior:
        """The posterior at test inputs x ``(*batch, t, d)`` (no gradients)."""
        m = self.z.shape[-2]
        batch = int(torch.Size(torch.broadcast_shapes(x.shape[:-2], self.proj.shape[:-2])).numel())
        chunk = chunk_points(2 * m, batch)
        means, variances = [], []
        for start in range(0, x.shape[-2], chunk):
            part = x[..., start:start + chunk, :]
            cross = float64_kernel(self.kernel, part, self.z)  # (*batch, c, m)
            means.append(self.mean_fn(part).double() + (cross @ self.alpha).squeeze(-1))
            w = (cross @ self.proj).square()
            down = w[..., :m].sum(-1) - w[..., m:].sum(-1)
            variances.append(float64_kernel(self.kernel, part, diag=True) - down)
        mean = torch.cat(means, -1).to(self.dtype)
        var = torch.cat(variances, -1).to(self.dtype)
        covariance = FactorDowndated(KernelOperator(self.kernel, x), x, self.factor, var, chunk, signs=self.signs)
        self.diagnostics["variance_method"] = "sgpr"
        return Posterior(mean, covariance, diagnostics=self.diagnostics)
