# The posterior of an inducing-point model at test inputs, from two test-independent quantities:
# f* = m(x*) + K_*z alpha, cov = K_** - K_*z P1 P1^T K_z* + K_*z P2 P2^T K_z*. SGPR (the collapsed
# bound's optimum) and SVGP (the variational q(u)) differ only in how alpha, P1 and P2 are made.
from __future__ import annotations

import torch

from ..distributions import FactorDowndated, Posterior
from ..linalg.inducing import float64_kernel
from ..operators import KernelOperator
from .direct_prediction import TestSolve
from .prediction import chunk_points


class InducingPosterior:
    """Predictions from inducing inputs z ``(*batch, m, d)``, ``alpha`` ``(*batch, m, 1)`` and
    ``proj`` = [P1, P2] ``(*batch, m, 2m)`` (float64): mean m(x*) + K_*z alpha, covariance
    K_** - K_*z P1 P1^T K_z* + K_*z P2 P2^T K_z*, never formed (``FactorDowndated`` with signs).
    Test points are taken in chunks; everything is computed in float64 and returned in ``dtype``.
    ``diagnostics``: the dict the posteriors carry (``variance_method`` is set to ``method``).
    """

    def __init__(self, kernel, mean_fn, z: torch.Tensor | None, alpha: torch.Tensor, proj: torch.Tensor,
                 dtype: torch.dtype, diagnostics: dict, method: str):
        self.kernel, self.mean_fn, self.z, self.alpha, self.proj = kernel, mean_fn, z, alpha, proj
        self.dtype, self.diagnostics, self.method = dtype, diagnostics, method
        self.m = proj.shape[-1] // 2
        ones = torch.ones(self.m, dtype=dtype, device=proj.device)
        self.signs = torch.cat([ones, -ones])

    def cross(self, x: torch.Tensor) -> torch.Tensor:
        """K(x*, z) ``(*batch, c, m)`` float64 for test inputs x ``(*batch, c, d)`` (a subclass may
        give another cross term of the same shape: ``BasisGP``'s features)."""
        return float64_kernel(self.kernel, x, self.z)

    # ----- direct posteriors (models.direct_prediction) ---------------------------------
    direct_ok = True

    def direct_matches(self, m: int) -> bool:
        return True

    def direct_cross(self, x: torch.Tensor) -> torch.Tensor:
        """The cross term of a direct posterior at x ``(*t, *batch, c, d)``, differentiable in x."""
        return self.cross(x)

    def work_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64

    def test_solve(self, rhs: torch.Tensor, m: int, prior: torch.Tensor) -> TestSolve:
        """(P1 P1^T - P2 P2^T) rhs for rhs = K_z* ``(*batch, m, c)``: the downdate's middle matrix."""
        p1, p2 = self.proj[..., :self.m], self.proj[..., self.m:]
        rhs = rhs.double()
        return TestSolve(p1 @ (p1.transpose(-1, -2) @ rhs) - p2 @ (p2.transpose(-1, -2) @ rhs), self.method)

    def factor(self, x: torch.Tensor) -> torch.Tensor:
        """K_*z [P1, P2] ``(*batch, c, 2m)`` in the model's dtype for test inputs x ``(*batch, c, d)``."""
        return (self.cross(x) @ self.proj).to(self.dtype)

    def posterior(self, x: torch.Tensor) -> Posterior:
        """The posterior at test inputs x ``(*batch, t, d)`` (no gradients)."""
        m = self.m
        batch = int(torch.Size(torch.broadcast_shapes(x.shape[:-2], self.proj.shape[:-2])).numel())
        chunk = chunk_points(2 * m, batch)
        means, variances = [], []
        for start in range(0, x.shape[-2], chunk):
            part = x[..., start:start + chunk, :]
            cross = self.cross(part)  # (*batch, c, m)
            means.append(self.mean_fn(part).double() + (cross @ self.alpha).squeeze(-1))
            w = (cross @ self.proj).square()
            down = w[..., :m].sum(-1) - w[..., m:].sum(-1)
            variances.append(float64_kernel(self.kernel, part, diag=True) - down)
        mean = torch.cat(means, -1).to(self.dtype)
        var = torch.cat(variances, -1).to(self.dtype)
        covariance = FactorDowndated(KernelOperator(self.kernel, x), x, self.factor, var, chunk, signs=self.signs)
        self.diagnostics["variance_method"] = self.method
        return Posterior(mean, covariance, diagnostics=self.diagnostics)
