# Cross-check against GPyTorch (skipped where it is not installed): with the same data and
# hyperparameters, flashgp's Cholesky mll, its gradient and the posterior equal GPyTorch's.
import pytest
import torch

import flashgp as fg
from flashgp import kernels as K

gpytorch = pytest.importorskip("gpytorch")
gk = gpytorch.kernels
F64 = torch.float64
N, D, M = 150, 3, 25


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, D, generator=g, dtype=F64) * 3 - 1.5
    y = torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * torch.randn(N, generator=g, dtype=F64)
    x_test = torch.rand(M, D, generator=g, dtype=F64) * 3.4 - 1.7
    return x, y, x_test


class GPyTorchModel(gpytorch.models.ExactGP):
    def __init__(self, x, y, kernel, likelihood):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = kernel

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


LS = torch.tensor([0.6, 1.1, 1.7], dtype=F64)


def t(value):
    """A float64 tensor: GPyTorch's setters turn python floats into float32 first."""
    return torch.tensor(value, dtype=F64)


def pair(kind):
    """(flashgp kernel, GPyTorch kernel, function setting both to the same hyperparameters)."""
    if kind == "rbf_ard":
        f, g = K.Scale(K.RBF(ard_dims=D)), gk.ScaleKernel(gk.RBFKernel(ard_num_dims=D))

        def setup():
            f.base.lengthscale, g.base_kernel.lengthscale = LS, LS.reshape(1, D)
            f.outputscale, g.outputscale = 1.4, t(1.4)
    elif kind.startswith("matern"):
        nu = {"matern05": 0.5, "matern15": 1.5, "matern25": 2.5}[kind]
        f, g = K.Scale(K.Matern(nu=nu, ard_dims=D)), gk.ScaleKernel(gk.MaternKernel(nu=nu, ard_num_dims=D))

        def setup():
            f.base.lengthscale, g.base_kernel.lengthscale = LS, LS.reshape(1, D)
            f.outputscale, g.outputscale = 0.8, t(0.8)
    elif kind == "rq":
        f, g = K.Scale(K.RQ(ard_dims=D)), gk.ScaleKernel(gk.RQKernel(ard_num_dims=D))

        def setup():
            f.base.lengthscale, g.base_kernel.lengthscale = LS, LS.reshape(1, D)
            f.base.alpha, g.base_kernel.alpha = 0.7, t(0.7)
            f.outputscale, g.outputscale = 1.2, t(1.2)
    elif kind == "periodic":
        f, g = K.Scale(K.Periodic()), gk.ScaleKernel(gk.PeriodicKernel())

        def setup():
            # GPyTorch 1.15 divides sin^2 by the lengthscale (not its square): l_gpytorch = l^2
            f.base.lengthscale, g.base_kernel.lengthscale = 0.9, t(0.81)
            f.base.period, g.base_kernel.period_length = 1.3, t(1.3)
            f.outputscale, g.outputscale = 1.1, t(1.1)
    elif kind == "linear":
        f, g = K.Linear(), gk.LinearKernel()

        def setup():
            f.variance, g.variance = 0.6, t(0.6)
    elif kind == "polynomial":
        f, g = K.Polynomial(power=2), gk.PolynomialKernel(power=2)

        def setup():
            f.offset, g.offset = 0.5, t(0.5)
    elif kind == "sum":
        f = K.Scale(K.RBF(ard_dims=D)) + K.Scale(K.Matern(nu=1.5))
        g = gk.ScaleKernel(gk.RBFKernel(ard_num_dims=D)) + gk.ScaleKernel(gk.MaternKernel(nu=1.5))

        def setup():
            f.kernels[0].base.lengthscale, g.kernels[0].base_kernel.lengthscale = LS, LS.reshape(1, D)
            f.kernels[0].outputscale, g.kernels[0].outputscale = 0.9, t(0.9)
            f.kernels[1].base.lengthscale, g.kernels[1].base_kernel.lengthscale = 0.4, t(0.4)
            f.kernels[1].outputscale, g.kernels[1].outputscale = 0.2, t(0.2)
    else:
        raise KeyError(kind)
    return f, g, setup


def build(kind, seed=0):
    x, y, x_test = data(seed)
    f_kernel, g_kernel, setup = pair(kind)
    model = fg.ExactGP(x, y, f_kernel, solver=fg.Cholesky(),
                       likelihood=fg.likelihoods.Gaussian(noise_floor=1e-4))  # GPyTorch's floor
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    g_model = GPyTorchModel(x, y, g_kernel, likelihood).double()
    setup()
    model.likelihood.noise, likelihood.noise = 0.07, t(0.07)
    model.mean.constant, g_model.mean_module.constant = 0.25, t(0.25)
    return model, g_model, x, y, x_test


def gpytorch_mll(g_model, x, y):
    g_model.train()
    g_model.likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(g_model.likelihood, g_model)
    with gpytorch.settings.max_cholesky_size(10**6):
        return mll(g_model(x), y)


KINDS = ["rbf_ard", "matern05", "matern15", "matern25", "rq", "periodic", "linear", "polynomial", "sum"]


@pytest.mark.parametrize("kind", KINDS)
def test_mll_equals_gpytorch(kind):
    model, g_model, x, y, _ = build(kind)
    ours = model.mll().detach()
    theirs = gpytorch_mll(g_model, x, y).detach()
    assert abs(float((ours - theirs) / theirs)) < 1e-6


@pytest.mark.parametrize("kind", ["rbf_ard", "matern25"])
def test_mll_gradient_equals_gpytorch(kind):
    # both libraries map raw parameters through softplus (the noise with a 1e-4 floor), so with
    # equal raw values the raw gradients must agree too
    model, g_model, x, y, _ = build(kind)
    ours = dict(model.named_parameters())
    theirs = dict(g_model.named_parameters())
    names = {
        "kernel.raw_outputscale": "covar_module.raw_outputscale",
        "kernel.base.raw_lengthscale": "covar_module.base_kernel.raw_lengthscale",
        "likelihood.raw_noise": "likelihood.noise_covar.raw_noise",
        "mean.raw_constant": "mean_module.raw_constant",
    }
    for a, b in names.items():
        torch.testing.assert_close(ours[a].detach().reshape(-1), theirs[b].detach().reshape(-1), rtol=1e-10, atol=1e-12)
    model.mll().backward()
    gpytorch_mll(g_model, x, y).backward()
    for a, b in names.items():
        torch.testing.assert_close(ours[a].grad.reshape(-1), theirs[b].grad.reshape(-1), rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("kind", ["rbf_ard", "matern15", "rq", "periodic", "sum"])
def test_posterior_equals_gpytorch(kind):
    model, g_model, x, y, x_test = build(kind)
    g_model.eval()
    g_model.likelihood.eval()
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6), gpytorch.settings.fast_pred_var(False):
        latent = g_model(x_test)
        predictive = g_model.likelihood(latent)
        g_mean, g_var, g_cov = latent.mean, latent.variance, latent.covariance_matrix
        g_pred_var = predictive.variance
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, g_mean, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(post.variance, g_var, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(post.covariance.to_dense(), g_cov, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(model.predict(x_test).variance, g_pred_var, rtol=1e-6, atol=1e-9)


def test_cg_mll_close_to_gpytorch_exact():
    # our BBMM estimate against GPyTorch's exact value on a larger problem (n = 1000)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1000, D, generator=g, dtype=F64) * 2 - 1
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(1000, generator=g, dtype=F64)
    f_kernel, g_kernel, setup = pair("matern25")
    model = fg.ExactGP(x, y, f_kernel, solver=fg.CG(tol=0.01, probes=20, precond=fg.PivotedCholesky(100)))
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    g_model = GPyTorchModel(x, y, g_kernel, likelihood).double()
    setup()
    model.likelihood.noise, likelihood.noise = 0.05, t(0.05)
    theirs = gpytorch_mll(g_model, x, y).detach()
    ours = model.mll(generator=torch.Generator().manual_seed(0)).detach()
    assert abs(float((ours - theirs) / theirs)) < 0.01
