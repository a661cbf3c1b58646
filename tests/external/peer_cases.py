# Shared pieces of the external-behaviour tests (test_sklearn_gpr_behaviours.py and
# test_gpytorch_exact_behaviours.py): the peers' toy data sets and flashgp kernels with
# hyperparameters set at full float64 precision.
import math

import numpy as np
import torch

import flashgp as fg
from flashgp import kernels as K

F64 = torch.float64

# scikit-learn's 1-D toy problem: six training inputs, five test inputs between them, y = x sin x
SK_X = np.array([[1.0], [3.0], [5.0], [6.0], [7.0], [8.0]])
SK_X2 = np.array([[2.0], [4.0], [5.5], [6.5], [7.5]])
SK_Y = (SK_X * np.sin(SK_X)).ravel()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def sine_data(n=11, high=1.0, noise=0.0, seed=0, m=51):
    """GPyTorch's regression problem: y = sin(2 pi x) on a grid of n points over [0, high] (plus
    Gaussian noise of standard deviation ``noise``), and the noise-free function on m test points.
    Inputs are (n, 1) and (m, 1) float64 tensors."""
    x = torch.linspace(0, high, n, dtype=F64)
    y = torch.sin(2 * math.pi * x) + noise * torch.randn(n, generator=gen(seed), dtype=F64)
    x_test = torch.linspace(0, high, m, dtype=F64)
    return x[:, None], y, x_test[:, None], torch.sin(2 * math.pi * x_test)


def base_kernel(kind, d):
    """A flashgp base kernel of ``kind`` (rbf, matern05/15/25, rq; ARD over d columns except rq)."""
    if kind == "rbf":
        return K.RBF(ard_dims=d)
    if kind.startswith("matern"):
        return K.Matern(nu={"matern05": 0.5, "matern15": 1.5, "matern25": 2.5}[kind], ard_dims=d)
    if kind == "rq":
        return K.RQ()
    raise KeyError(kind)


def scaled_kernel(kind, d, lengthscale, outputscale, alpha=None):
    """Scale(base) in float64 with the hyperparameters set after the cast, so Python floats keep
    all their digits (values given to constructors are stored in the default dtype first)."""
    kernel = K.Scale(base_kernel(kind, d)).double()
    kernel.base.lengthscale = torch.as_tensor(lengthscale, dtype=F64)
    kernel.outputscale = outputscale
    if alpha is not None:
        kernel.base.alpha = alpha
    return kernel


def exact_model(x, y, kernel, noise, mean=None, solver=None):
    """ExactGP with a float64 Gaussian likelihood of noise variance ``noise`` (floor 0)."""
    likelihood = fg.likelihoods.Gaussian(noise_floor=0.0).double()
    model = fg.ExactGP(x, y, kernel, likelihood=likelihood, mean=mean if mean is not None else fg.means.Zero(),
                       solver=solver if solver is not None else fg.Cholesky())
    model.likelihood.noise = noise
    return model


def mae(a, b):
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().mean())


def assert_psd(cov, rtol=1e-10):
    """cov (m, m) is symmetric and has no eigenvalue below -rtol times its largest."""
    cov = torch.as_tensor(cov, dtype=F64)
    torch.testing.assert_close(cov, cov.transpose(-1, -2), rtol=1e-10, atol=1e-12 * float(cov.abs().max()))
    evals = torch.linalg.eigvalsh(0.5 * (cov + cov.transpose(-1, -2)))
    assert float(evals.min()) >= -rtol * float(evals.max().abs()), f"min eigenvalue {float(evals.min()):.3g}"
