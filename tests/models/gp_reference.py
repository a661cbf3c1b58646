# Shared fixtures of the ExactGP tests: data generators, a hand-written float64 GP reference and an
# RBF model with fixed hyperparameters.
import math

import torch

import flashgp as fg
from flashgp.kernels import RBF, Scale
from flashgp.likelihoods import Gaussian
from flashgp.means import Constant

F64 = torch.float64
LOG2PI = math.log(2 * math.pi)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def data(n=200, d=2, seed=0, batch=(), m=30):
    g = gen(seed)
    x = torch.rand(*batch, n, d, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[..., 0]) * torch.cos(x[..., -1]) + 0.1 * torch.randn(*batch, n, generator=g, dtype=F64)
    x_test = torch.rand(*batch, m, d, generator=g, dtype=F64) * 4.4 - 2.2
    return x, y, x_test


def rbf_matrix(a, b, lengthscale, outputscale):
    """outputscale * exp(-|a - b|^2 / (2 l^2)) by explicit broadcasting (a: (n, d), b: (m, d))."""
    diff = (a.unsqueeze(-2) - b.unsqueeze(-3)) / lengthscale
    return outputscale * torch.exp(-0.5 * diff.pow(2).sum(-1))


def reference(k_train, k_cross, k_test, y, mean_train, mean_test, noise):
    """Hand-written float64 GP regression.

    k_train (n, n), k_cross (m, n), k_test (m, m), noise (n,). Returns mll / n (differentiable
    through the inputs), posterior mean (m,) and covariance (m, m).
    """
    n = y.shape[-1]
    k_hat = k_train + torch.diag(noise)
    chol = torch.linalg.cholesky(k_hat)
    resid = y - mean_train
    alpha = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)
    logdet = 2 * torch.log(torch.diagonal(chol)).sum()
    mll = -0.5 * (resid @ alpha + logdet + n * LOG2PI) / n
    mean = (0 if mean_test is None else mean_test) + k_cross @ alpha
    cov = k_test - k_cross @ torch.cholesky_solve(k_cross.T, chol)
    return mll, mean, cov


def rbf_model(x, y, lengthscale=(0.7, 1.3), outputscale=1.7, noise=0.05, constant=0.2, **kwargs):
    kernel = Scale(RBF(ard_dims=x.shape[-1]))
    kwargs.setdefault("solver", fg.Cholesky())
    model = fg.ExactGP(x, y, kernel, **kwargs)
    kernel.base.lengthscale = torch.tensor(lengthscale, dtype=F64)
    kernel.outputscale = outputscale
    if isinstance(model.likelihood, Gaussian):
        model.likelihood.noise = noise
    if isinstance(model.mean, Constant):
        model.mean.constant = constant
    return model


def reference_posterior(x, y, x_test, lengthscale, outputscale=1.7, noise=0.05, constant=0.2):
    ls = torch.as_tensor(lengthscale, dtype=F64)
    n, m = x.shape[0], x_test.shape[0]
    _, mean, cov = reference(rbf_matrix(x, x, ls, outputscale), rbf_matrix(x_test, x, ls, outputscale),
                             rbf_matrix(x_test, x_test, ls, outputscale), y,
                             torch.full((n,), constant, dtype=F64), torch.full((m,), constant, dtype=F64),
                             torch.full((n,), noise, dtype=F64))
    return mean, cov.diagonal()
