# SGPR predictions: the posterior of the collapsed bound, q(f*) = N(K_*z a, k** - K_*z P P^T K_z*),
# from two m x m quantities computed once per parameter state, test points taken in chunks.
from __future__ import annotations

import torch

from ..distributions import FactorDowndated, Posterior
from ..linalg.cholesky import safe_cholesky
from ..linalg.inducing import float64_kernel, inducing_terms
from ..objectives import inducing_cholesky
from ..operators import KernelOperator
from .finite import check_noise_values
from .prediction import chunk_points


class SGPRPrediction:
    """Everything test-independent for SGPR predictions at one state ``snapshot``.

    With K_zz = L L^T, M = A S^{-1} A^T = U diag(lam) U^T (A = L^{-1} K_zx) and v = A S^{-1} r,
    the bound's optimal posterior at test inputs is

        mean = m(x*) + K_*z a,             a = L^{-T} U diag(1 / (1 + lam)) U^T v,
        cov  = K_** - K_*z P P^T K_z*,     P = L^{-T} U diag(sqrt(lam / (1 + lam))),

    (the Nystrom variance K_*z K_zz^{-1} K_z* minus what the data add, K_*z L^{-T} (I - B^{-1})
    L^{-1} K_z* with B = I + M = U (1 + lam) U^T). ``alpha`` ``(*batch, m, 1)`` and ``proj``
    ``(*batch, m, m)`` are float64; predictions are computed in float64 and returned in the model's
    dtype. The training noise is checked once per cache (finite, > 0).
    """

    def __init__(self, model, snapshot, rows: int):
        self.snapshot, self.kernel, self.mean_fn, self.dtype = snapshot, model.kernel, model.mean, model.dtype
        n = model.num_train
        noise = model.likelihood.noise_diag(n).detach()
        check_noise_values(noise)
        self.z = model.inducing_points.detach()
        resid = (model.train_y - model.mean(model.train_x)).double()
        chol, added = inducing_cholesky(float64_kernel(self.kernel, self.z), model.jitter, safe_cholesky)
        gram, v, _ = inducing_terms(self.kernel, model.train_x, self.z, chol, 1.0 / noise.double(), resid, rows)
        lam, vecs = torch.linalg.eigh(gram)
        lam = lam.clamp_min(0.0)
        inner = vecs @ ((vecs.transpose(-1, -2) @ v.unsqueeze(-1)) / (1.0 + lam).unsqueeze(-1))
        self.alpha = torch.linalg.solve_triangular(chol.transpose(-1, -2), inner, upper=True)
        self.proj = torch.linalg.solve_triangular(chol.transpose(-1, -2),
                                                  vecs * (lam / (1.0 + lam)).sqrt().unsqueeze(-2), upper=True)
        self.diagnostics: dict = {"n": n, "path": "sgpr", "inducing": self.z.shape[-2], "jitter": added}

    def factor(self, x: torch.Tensor) -> torch.Tensor:
        """K_*z P ``(*batch, c, m)`` in the model's dtype for test inputs x ``(*batch, c, d)``."""
        return (float64_kernel(self.kernel, x, self.z) @ self.proj).to(self.dtype)

    def posterior(self, x: torch.Tensor) -> Posterior:
        """The posterior at test inputs x ``(*batch, t, d)`` (no gradients)."""
        m = self.z.shape[-2]
        batch = int(torch.Size(torch.broadcast_shapes(x.shape[:-2], self.proj.shape[:-2])).numel())
        chunk = chunk_points(m, batch)
        means, variances = [], []
        for start in range(0, x.shape[-2], chunk):
            part = x[..., start:start + chunk, :]
            cross = float64_kernel(self.kernel, part, self.z)  # (*batch, c, m)
            means.append(self.mean_fn(part).double() + (cross @ self.alpha).squeeze(-1))
            down = (cross @ self.proj).square().sum(-1)
            variances.append(float64_kernel(self.kernel, part, diag=True) - down)
        mean = torch.cat(means, -1).to(self.dtype)
        var = torch.cat(variances, -1).to(self.dtype)
        covariance = FactorDowndated(KernelOperator(self.kernel, x), x, self.factor, var, chunk)
        self.diagnostics["variance_method"] = "sgpr"
        return Posterior(mean, covariance, diagnostics=self.diagnostics)
