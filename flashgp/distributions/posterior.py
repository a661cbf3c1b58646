# A Gaussian over m test points given by its mean and a covariance operator
# prior(x*, x*) - A B^T (the downdate by the training data), plus optional noise.
from __future__ import annotations

import math
import numbers
import warnings

import torch

from ..errors import NotPSDError, NumericalWarning
from ..linalg.cholesky import safe_cholesky
from ..operators.base import Operator
from ..shapes import broadcast_shapes

MAX_DENSE_SAMPLE = 8192


class Downdated(Operator):
    """prior - left @ right^T, shape (*batch, m, m), never formed densely.

    prior: Operator (*batch, m, m) (the kernel at the test points); left, right: (*batch, m, k).
    With left == right == K_*X R (R R^T ~ K_hat^{-1}) this is the posterior covariance.
    ``variances`` (*batch, m): more accurate marginal variances (certified CG solves). The
    operator is then S (prior - left right^T) S with S = diag(sqrt(variances / its diagonal)):
    the correlations of the low-rank form with these variances, PSD whenever it is (a congruence;
    replacing the diagonal alone made LOVE covariances indefinite, down to -0.19 of the largest
    eigenvalue in benchmarks/variance_accuracy.py).
    """

    def __init__(self, prior: Operator, left: torch.Tensor, right: torch.Tensor,
                 variances: torch.Tensor | None = None):
        self.prior, self.left, self.right = prior, left, right
        self.shape = torch.Size((*broadcast_shapes(prior.batch_shape, left.shape[:-2]), *prior.shape[-2:]))
        self.dtype, self.device = prior.dtype, prior.device
        self.scale = None
        if variances is not None:
            base = self._low_rank_diagonal()
            ok = (base > 0) & (variances > 0)
            self.scale = torch.where(ok, (variances.clamp_min(0) / torch.where(ok, base, 1.0)).sqrt(), 0.0)

    def _low_rank_diagonal(self):
        return self.prior.diagonal() - (self.left * self.right).sum(-1)

    def _matmul(self, rhs):
        if self.scale is not None:
            rhs = self.scale.unsqueeze(-1) * rhs
        out = self.prior._matmul(rhs) - self.left @ (self.right.transpose(-1, -2) @ rhs)
        return out if self.scale is None else self.scale.unsqueeze(-1) * out

    def diagonal(self):
        diag = self._low_rank_diagonal()
        return diag if self.scale is None else diag * self.scale.square()

    def rows(self, index):
        down = self.left[..., index, :] if index.dim() == 1 else self.left.gather(
            -2, index.unsqueeze(-1).expand(*index.shape, self.left.shape[-1]))
        out = self.prior.rows(index) - down @ self.right.transpose(-1, -2)
        if self.scale is None:
            return out
        picked = self.scale[..., index] if index.dim() == 1 else self.scale.gather(-1, index)
        return picked.unsqueeze(-1) * out * self.scale.unsqueeze(-2)


class DenseDowndated(Operator):
    """prior - D with D (*batch, m, m) a dense symmetric downdate (certified CG solves:
    D = K_*X X + X^T R for solutions X and residuals R = K_*X^T - K_hat X, which is
    K_*X K_hat^{-1} K_X* minus a PSD error term, so prior - D is PSD whenever the exact
    posterior covariance is)."""

    def __init__(self, prior: Operator, downdate: torch.Tensor):
        self.prior, self.downdate = prior, 0.5 * (downdate + downdate.transpose(-1, -2))
        self.shape = torch.Size((*broadcast_shapes(prior.batch_shape, downdate.shape[:-2]), *prior.shape[-2:]))
        self.dtype, self.device = prior.dtype, prior.device

    def _matmul(self, rhs):
        return self.prior._matmul(rhs) - self.downdate @ rhs

    def diagonal(self):
        return self.prior.diagonal() - self.downdate.diagonal(dim1=-2, dim2=-1)

    def rows(self, index):
        down = self.downdate[..., index, :] if index.dim() == 1 else self.downdate.gather(
            -2, index.unsqueeze(-1).expand(*index.shape, self.downdate.shape[-1]))
        return self.prior.rows(index) - down


class MarginalOnly(Operator):
    """A covariance (*batch, m, m) known only by its diagonal ``variances`` (*batch, m): local
    variances (``CG(local_neighbors=...)``) come without covariances between test points."""

    def __init__(self, variances: torch.Tensor):
        self.variances = variances
        self.shape = torch.Size((*variances.shape, variances.shape[-1]))
        self.dtype, self.device = variances.dtype, variances.device

    def _unknown(self, *args):
        raise ValueError("covariance: only marginal variances are known (local variances, "
                         "CG(local_neighbors=k)); for covariances or joint samples predict with "
                         "local_neighbors=0 (LOVE) or within CG(exact_var_max=...)")

    _matmul = rows = _unknown

    def diagonal(self):
        return self.variances


class Posterior:
    """A multivariate normal over test points.

    Attributes:
        mean: (*batch, m).
        covariance: an Operator (*batch, m, m) (use ``.to_dense()`` for small m).
        noise: (*batch, m) observation noise added to the variance (predictive), or None.
        diagnostics: dict shared with the model (variance clamps are recorded there).
    """

    def __init__(self, mean: torch.Tensor, covariance: Operator, noise: torch.Tensor | None = None,
                 diagnostics: dict | None = None):
        self.mean = mean
        self.covariance = covariance
        self.noise = noise
        self.diagnostics = {} if diagnostics is None else diagnostics
        self._variance = None

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances (*batch, m), never negative: clamps are counted in diagnostics."""
        if self._variance is None:
            var = self.covariance.diagonal()
            floor = 0.0
            negative = int((var < floor).sum())
            self.diagnostics["variance_clamped"] = negative
            if negative:
                self.diagnostics["variance_min_before_clamp"] = float(var.min())
            var = var.clamp_min(floor)
            if self.noise is not None:
                var = var + self.noise
            self._variance = var
        return self._variance

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()

    def confidence_region(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) of the central ``level`` interval of each marginal, each (*batch, m)."""
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
            raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
        z = math.sqrt(2) * torch.erfinv(torch.tensor(level, dtype=torch.float64)).item()
        half = z * self.stddev
        return self.mean - half, self.mean + half

    def sample(self, num_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """Joint samples (num_samples, *batch, m) via a float64 Cholesky of the covariance."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        num_samples = int(num_samples)
        m = self.mean.shape[-1]
        if m > MAX_DENSE_SAMPLE:
            raise ValueError(f"sample: joint samples need a dense {m} x {m} covariance; "
                             f"sample at most {MAX_DENSE_SAMPLE} points at a time")
        cov = self.covariance.to_dense().detach().double()
        cov = 0.5 * (cov + cov.transpose(-1, -2))  # iterative solves leave it slightly asymmetric
        if self.noise is not None:
            cov = cov + torch.diag_embed(self.noise.detach().double())
        chol = self._sampling_root(cov)
        eps = torch.randn(num_samples, *chol.shape[:-1], 1, dtype=torch.float64, device=chol.device,
                          generator=generator)
        draws = (chol @ eps).squeeze(-1).to(self.mean.dtype)
        return self.mean.detach() + draws

    def _sampling_root(self, cov: torch.Tensor) -> torch.Tensor:
        """A root R (R R^T = cov) by Cholesky with jitter; if the covariance is indefinite
        beyond what jitter fixes (inexact CG downdates), by an eigendecomposition with the
        negative eigenvalues set to 0. Either recovery is recorded in ``diagnostics``."""
        try:
            chol, jitter = safe_cholesky(cov)
        except NotPSDError:
            evals, evecs = torch.linalg.eigh(cov)
            negative = int((evals < 0).sum())
            self.diagnostics.update(sample_eigen_clamped=negative, sample_min_eigenvalue=float(evals.min()))
            warnings.warn(f"sample: the posterior covariance has {negative} negative eigenvalue(s) "
                          f"(min {float(evals.min()):.3g}); sampling from its PSD part",
                          NumericalWarning, stacklevel=3)
            return evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)
        if jitter:
            self.diagnostics["sample_jitter"] = jitter
        return chol

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Sum of marginal Gaussian log densities of y (*batch, m) (independent marginals)."""
        y = torch.as_tensor(y, dtype=self.mean.dtype, device=self.mean.device)
        try:
            torch.broadcast_shapes(y.shape, self.mean.shape)
        except RuntimeError:
            raise ValueError(f"y: expected values of shape {tuple(self.mean.shape)} like the mean, "
                             f"got {tuple(y.shape)}") from None
        var = self.variance
        return (-0.5 * ((y - self.mean) ** 2 / var + torch.log(2 * math.pi * var))).sum(-1)
