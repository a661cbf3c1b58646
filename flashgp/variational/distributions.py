# Variational distributions q(u) = N(m, S) over the inducing values of a sparse variational GP,
# one per latent function: a full Cholesky root, a diagonal (mean-field) or natural parameters.
from __future__ import annotations

import torch
from torch import nn

from ..errors import NotPSDError
from ..shapes import as_batch_shape


class VariationalDistribution(nn.Module):
    """q(u) = N(m, S) over M inducing values, independently for each of ``batch_shape`` latents.

    ``moments()`` returns the float64 mean ``(*batch, M)``, a root R ``(*batch, M, M)`` with
    R R^T = S (not necessarily triangular) and log det S ``(*batch,)``, differentiable in the
    parameters. ``initialize(mean, covariance)`` sets q to N(mean, covariance) (float64 inputs,
    ``(*batch, M)`` and ``(*batch, M, M)``). The parameters have the model's dtype; every
    moment is computed in float64.
    """

    #: the name the model's configuration and ``SVGP(variational=...)`` use
    kind = ""

    def __init__(self, num_inducing: int, batch_shape=()):
        super().__init__()
        if isinstance(num_inducing, bool) or not isinstance(num_inducing, int) or num_inducing < 1:
            raise ValueError(f"num_inducing: expected a positive int, got {num_inducing!r}")
        self.num_inducing = num_inducing
        self.batch_shape = as_batch_shape(batch_shape)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def initialize(self, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        raise NotImplementedError

    def _shape(self, *tail: int) -> torch.Size:
        return torch.Size((*self.batch_shape, *tail))

    def extra_repr(self) -> str:
        return f"num_inducing={self.num_inducing}, batch_shape={tuple(self.batch_shape)}"


class CholeskyVariational(VariationalDistribution):
    """Full covariance S = R R^T with R lower triangular (``variational_root``, its upper triangle
    ignored) and mean ``variational_mean``; starts at N(0, I). O(M^2) parameters per latent."""

    kind = "cholesky"

    def __init__(self, num_inducing: int, batch_shape=()):
        super().__init__(num_inducing, batch_shape)
        m = num_inducing
        self.variational_mean = nn.Parameter(torch.zeros(self._shape(m)))
        self.variational_root = nn.Parameter(torch.eye(m).expand(self._shape(m, m)).clone())

    def moments(self):
        root = self.variational_root.double().tril()
        logdet = 2 * root.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
        return self.variational_mean.double(), root, logdet

    def initialize(self, mean, covariance):
        with torch.no_grad():
            self.variational_mean.copy_(mean.expand(self.variational_mean.shape))
            self.variational_root.copy_(_cholesky(covariance).expand(self.variational_root.shape))


class MeanFieldVariational(VariationalDistribution):
    """Diagonal S = diag(s^2) (``variational_std`` s, its sign irrelevant) and mean
    ``variational_mean``; starts at N(0, I). O(M) parameters per latent, cheaper but looser."""

    kind = "meanfield"

    def __init__(self, num_inducing: int, batch_shape=()):
        super().__init__(num_inducing, batch_shape)
        self.variational_mean = nn.Parameter(torch.zeros(self._shape(num_inducing)))
        self.variational_std = nn.Parameter(torch.ones(self._shape(num_inducing)))

    def moments(self):
        std = self.variational_std.double()
        return self.variational_mean.double(), torch.diag_embed(std), 2 * std.abs().log().sum(-1)

    def initialize(self, mean, covariance):
        with torch.no_grad():
            self.variational_mean.copy_(mean.expand(self.variational_mean.shape))
            std = covariance.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
            self.variational_std.copy_(std.expand(self.variational_std.shape))


class _NaturalToMoments(torch.autograd.Function):
    """(theta1, theta2) -> (m, S) with S = (-2 theta2)^{-1}, m = S theta1, whose backward gives
    the gradients with respect to the expectation parameters eta1 = m, eta2 = S + m m^T instead
    of theta: a plain gradient step on theta is then a natural-gradient step (Salimbeni et al.
    2018). With m = eta1 and S = eta2 - eta1 eta1^T: dL/deta2 = dL/dS (symmetrized) and
    dL/deta1 = dL/dm - 2 sym(dL/dS) m."""

    @staticmethod
    def forward(ctx, theta1, theta2):
        precision = -(theta2 + theta2.transpose(-1, -2))  # -2 sym(theta2)
        factor, info = torch.linalg.cholesky_ex(precision)
        if bool(info.any()):
            raise NotPSDError("natural_matrix: -2 natural_matrix is not positive definite (a natural-gradient "
                              "step left the set of Gaussians); lower natural_lr")
        cov = torch.cholesky_inverse(factor)
        mean = (cov @ theta1.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(mean)
        return mean, cov

    @staticmethod
    def backward(ctx, grad_mean, grad_cov):
        (mean,) = ctx.saved_tensors
        grad_cov = 0.5 * (grad_cov + grad_cov.transpose(-1, -2))
        grad_eta1 = grad_mean - 2 * (grad_cov @ mean.unsqueeze(-1)).squeeze(-1)
        return grad_eta1, grad_cov


class NaturalVariational(VariationalDistribution):
    """Full-covariance q stored as natural parameters theta1 = S^{-1} m (``natural_vector``) and
    theta2 = -S^{-1} / 2 (``natural_matrix``). Their ``.grad`` after a backward pass holds the
    gradient with respect to the expectation parameters (m, S + m m^T), so that
    ``flashgp.variational.NaturalAdam`` (``fg.fit(..., natural_lr=...)``) takes natural-gradient
    steps; Adam on these parameters would not be meaningful (fit refuses it). Starts at N(0, I).
    """

    kind = "natural"

    def __init__(self, num_inducing: int, batch_shape=()):
        super().__init__(num_inducing, batch_shape)
        m = num_inducing
        self.natural_vector = nn.Parameter(torch.zeros(self._shape(m)))
        self.natural_matrix = nn.Parameter((-0.5 * torch.eye(m)).expand(self._shape(m, m)).clone())

    def moments(self):
        mean, cov = _NaturalToMoments.apply(self.natural_vector.double(), self.natural_matrix.double())
        root = _cholesky(cov)
        return mean, root, 2 * root.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def initialize(self, mean, covariance):
        with torch.no_grad():
            precision = torch.cholesky_inverse(_cholesky(covariance))
            self.natural_vector.copy_((precision @ mean.unsqueeze(-1)).squeeze(-1).expand(self.natural_vector.shape))
            self.natural_matrix.copy_((-0.5 * precision).expand(self.natural_matrix.shape))


def _cholesky(matrix: torch.Tensor) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(matrix)
    if bool(info.any()):
        raise NotPSDError("variational covariance: not positive definite; lower the learning rate")
    return factor


VARIATIONAL = {cls.kind: cls for cls in (CholeskyVariational, MeanFieldVariational, NaturalVariational)}


def kl_divergence(mean: torch.Tensor, root: torch.Tensor, logdet: torch.Tensor,
                  prior_chol: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mean, R R^T) || N(0, K)) per latent, ``(*batch,)``, float64.

    mean ``(*batch, M)``, root R ``(*batch, M, M)``, logdet = log det(R R^T) ``(*batch,)``;
    ``prior_chol``: L with K = L L^T ``(*batch, M, M)``, or None for K = I (a whitened q).
    KL = (tr(K^{-1} S) + m^T K^{-1} m - M + log det K - log det S) / 2.
    """
    m = mean.shape[-1]
    if prior_chol is None:
        trace, quad, prior_logdet = root.square().sum((-1, -2)), mean.square().sum(-1), 0.0
    else:
        solved = torch.linalg.solve_triangular(prior_chol, torch.cat([mean.unsqueeze(-1), root], -1), upper=False)
        trace, quad = solved[..., 1:].square().sum((-1, -2)), solved[..., 0].square().sum(-1)
        prior_logdet = 2 * prior_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + quad - m + prior_logdet - logdet)

