# A Gaussian over m test points given by its mean and a covariance operator
# prior(x*, x*) - A B^T (the downdate by the training data, covariances.py), plus optional noise.
from __future__ import annotations

import math
import numbers
import warnings

import torch

from ..errors import NotPSDError, NumericalWarning
from ..linalg.cholesky import safe_cholesky
from ..operators.base import Operator
from .covariances import (MAX_DENSE_BYTES, DenseDowndated, Downdated, FactorDowndated, MarginalOnly,  # noqa: F401
                          PosteriorCovariance, _size)

# joint samples need a dense m x m covariance and its Cholesky factor: at most this many points
MAX_DENSE_SAMPLE = 8192
# ``sample`` refuses to return more values than this (num_samples * batch * m; 2**27 values are
# 1 GiB in float64), and draws SAMPLE_CHUNK_VALUES at a time (its float64 temporaries)
MAX_SAMPLE_VALUES = 2**27
SAMPLE_CHUNK_VALUES = 2**22


class Posterior:
    """A multivariate normal over test points.

    Attributes:
        mean: ``(*batch, m)``.
        covariance: an Operator ``(*batch, m, m)`` (use ``.to_dense()`` for small m).
        noise: ``(*batch, m)`` observation noise added to the variance (predictive), or None.
        diagnostics: dict shared with the model (variance clamps are recorded there).

    Variances are never negative (``latent_variance`` clamps round-off below 0 and counts it in
    diagnostics) and never silently NaN (a NaN or infinite variance raises ValueError). A
    differentiable posterior (``model.posterior(x)`` with x requiring grad) keeps its graph:
    mean, variance, ``covariance.to_dense()`` and ``rsample`` are differentiable in x; its
    clamped variances are set to the dtype's smallest normal number with gradient 0.
    """

    def __init__(self, mean: torch.Tensor, covariance: Operator, noise: torch.Tensor | None = None,
                 diagnostics: dict | None = None):
        self.mean = mean
        self.covariance = covariance
        self.diagnostics = {} if diagnostics is None else diagnostics
        self._latent = None
        self.noise = noise

    @property
    def noise(self) -> torch.Tensor | None:
        """Observation noise variances ``(*batch, m)`` added to ``variance``, or None (latent)."""
        return self._noise

    @noise.setter
    def noise(self, value: torch.Tensor | None) -> None:
        if value is not None and not bool((torch.isfinite(value) & (value >= 0)).all()):
            raise ValueError(f"noise: expected finite non-negative noise variances, got min {float(value.min()):.3g}")
        self._noise = value
        self._variance = None
        self._root = None

    @property
    def latent_variance(self) -> torch.Tensor:
        """Marginal variances of f ``(*batch, m)``, without noise; computed once. Negative values
        (round-off) are clamped to 0 and counted in diagnostics (variance_clamped,
        variance_min_before_clamp); NaN or infinity raises ValueError."""
        if self._latent is None:
            var = self.covariance.diagonal()
            low, high = (float(v) for v in torch.aminmax(var.detach())) if var.numel() else (0.0, 0.0)  # NaN propagates
            if not (math.isfinite(low) and math.isfinite(high)):
                bad = int((~torch.isfinite(var)).sum())
                raise ValueError(f"variance: {bad} of {var.numel()} posterior variances are NaN or "
                                 "infinite (non-finite parameters, or kernel values overflowing "
                                 f"{str(var.dtype).replace('torch.', '')}); check the model's parameters and "
                                 "scale the inputs")
            negative = int((var < 0).sum()) if low < 0 else 0
            self.diagnostics["variance_clamped"] = negative
            if negative:
                self.diagnostics["variance_min_before_clamp"] = float(var.detach().min())
            # differentiable variances stop at the smallest normal number, not 0: sqrt and log then
            # stay finite, and the clamped entries (counted above) get gradient 0
            self._latent = var.clamp_min(torch.finfo(var.dtype).tiny if var.requires_grad else 0.0)
        return self._latent

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances ``(*batch, m)``: ``latent_variance`` plus ``noise`` (if any); never
        negative or NaN."""
        if self._variance is None:
            var = self.latent_variance
            self._variance = var if self.noise is None else var + self.noise
        return self._variance

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()

    def confidence_region(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) of the central ``level`` interval of each marginal, each ``(*batch, m)``."""
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
        per_sample = self.mean.numel()
        total = num_samples * per_sample
        if total > MAX_SAMPLE_VALUES:
            itemsize = self.mean.dtype.itemsize
            raise ValueError(
                f"num_samples: {num_samples:,} samples of {per_sample:,} values make {total:,} values "
                f"({_size(total * itemsize)} in {str(self.mean.dtype).replace('torch.', '')}), above the limit of "
                f"{MAX_SAMPLE_VALUES:,} (distributions.posterior.MAX_SAMPLE_VALUES); draw at most "
                f"{max(1, MAX_SAMPLE_VALUES // per_sample):,} at a time (a loop of sample(k, generator=g)) "
                "or sample fewer test points")
        cov = self.covariance.to_dense().detach().double()
        cov = 0.5 * (cov + cov.transpose(-1, -2))  # iterative solves leave it slightly asymmetric
        if self.noise is not None:
            cov = cov + torch.diag_embed(self.noise.detach().double())
        chol = self._sampling_root(cov)
        mean = self.mean.detach()
        step = max(1, SAMPLE_CHUNK_VALUES // per_sample)  # samples per draw: bounded temporaries
        draws = []
        for begin in range(0, num_samples, step):
            eps = torch.randn(min(step, num_samples - begin), *chol.shape[:-1], 1, dtype=torch.float64,
                              device=chol.device, generator=generator)
            draws.append(mean + (chol @ eps).squeeze(-1).to(mean.dtype))
        return draws[0] if len(draws) == 1 else torch.cat(draws)

    def rsample(self, sample_shape=torch.Size(), base_samples: torch.Tensor | None = None) -> torch.Tensor:
        """Reparameterised joint samples ``(*sample_shape, *batch, m)``: mean + L eps with L the
        Cholesky factor of the covariance (plus ``noise``, if set) and eps standard normal
        (``base_samples`` of that shape, else drawn). Differentiable: gradients reach whatever the
        mean and covariance depend on (the test inputs of a differentiable posterior). The factor
        is taken in float64 and cast to the mean's dtype; jitter (1e-8 times 10^k, k = 0..3, of the
        mean variance) is added when the covariance is not
        numerically positive definite, and recorded in ``diagnostics["rsample_jitter"]``; a
        covariance that no jitter fixes raises ``NotPSDError``."""
        try:
            sample_shape = torch.Size(sample_shape)
        except TypeError:
            raise TypeError(f"sample_shape: expected a torch.Size or a tuple of ints, got {sample_shape!r}") from None
        shape = torch.Size((*sample_shape, *self.mean.shape))
        if self.mean.shape[-1] > MAX_DENSE_SAMPLE:
            raise ValueError(f"rsample: joint samples need a dense {self.mean.shape[-1]} x {self.mean.shape[-1]} "
                             f"covariance; sample at most {MAX_DENSE_SAMPLE} points at a time")
        if base_samples is None:
            eps = torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device)
        else:
            if not isinstance(base_samples, torch.Tensor):
                raise TypeError(f"base_samples: expected a tensor, got {type(base_samples).__name__}")
            if base_samples.shape != shape:
                raise ValueError(f"base_samples: expected shape {tuple(shape)} (sample_shape + the mean's "
                                 f"shape), got {tuple(base_samples.shape)}")
            eps = base_samples.to(self.mean.dtype)
        root = self._reparameterised_root()
        return self.mean + (root @ eps.unsqueeze(-1).to(root.dtype)).squeeze(-1).to(self.mean.dtype)

    def _reparameterised_root(self) -> torch.Tensor:
        """L ``(*batch, m, m)`` float64 with L L^T = covariance (+ noise), differentiable (see
        ``rsample``); kept when nothing it came from needs gradients."""
        if getattr(self, "_root", None) is not None:
            return self._root
        cov = self.covariance.to_dense().double()
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        if self.noise is not None:
            cov = cov + torch.diag_embed(self.noise.double())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumericalWarning)  # recorded below instead
            root, jitter = safe_cholesky(cov, max_tries=4)
        if jitter:
            self.diagnostics["rsample_jitter"] = jitter
        if not root.requires_grad:
            self._root = root
        return root

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
        """Sum of marginal Gaussian log densities of y ``(*batch, m)`` (independent marginals)."""
        y = torch.as_tensor(y, dtype=self.mean.dtype, device=self.mean.device)
        try:
            torch.broadcast_shapes(y.shape, self.mean.shape)
        except RuntimeError:
            raise ValueError(f"y: expected values of shape {tuple(self.mean.shape)} like the mean, "
                             f"got {tuple(y.shape)}") from None
        var = self.variance
        return (-0.5 * ((y - self.mean) ** 2 / var + torch.log(2 * math.pi * var))).sum(-1)
