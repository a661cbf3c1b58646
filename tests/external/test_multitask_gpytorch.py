# Cross-checks of fg.MultitaskGP against GPyTorch at identical parameters (exact computations):
# the Kronecker multitask model (MultitaskKernel + MultitaskGaussianLikelihood(rank=0), with and
# without GPyTorch's global noise, and LCMKernel for an LMC) on a grid, and the Hadamard model
# (base kernel times IndexKernel on (x, task)) on heterotopic rows: mll, gradients of the plain
# parameters (W, the task means), posterior means, variances and cross-task covariances.
# GPyTorch orders the flattened values point-major (interleaved), flashgp task-major: only
# totals, (m, t) tables and per-point task covariances are compared.
import contextlib

import pytest
import torch

import flashgp as fg
from multitask_helpers import correlated_tasks, gen
from flashgp.kernels import LMC, RBF, Matern, Multitask
from flashgp.likelihoods import Gaussian

gpytorch = pytest.importorskip("gpytorch")

F64 = torch.float64
N, T, D = 15, 3, 2
NOISE = torch.tensor([0.05, 0.12, 0.02], dtype=F64)
MEANS = torch.tensor([0.3, -0.2, 0.1], dtype=F64)


def data(n=N, seed=0):
    """x (n, 2) on [0, 2]^2 and y (n, 3): three correlated smooth functions plus noise."""
    return correlated_tasks(n, seed)


def task_parameters(seed, rank):
    g = gen(seed)
    w = torch.randn(T, rank, generator=g, dtype=F64) * 0.7
    v = torch.rand(T, generator=g, dtype=F64) * 0.3 + 0.1
    ls = torch.rand(1, D, generator=g, dtype=F64) + 0.4
    return w, v, ls


def g_base(kind):
    return gpytorch.kernels.RBFKernel(ard_num_dims=D) if kind == "rbf" else \
        gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=D)


def fg_base(kind):
    return RBF(ard_dims=D) if kind == "rbf" else Matern(nu=2.5, ard_dims=D)


def set_flashgp(member, w, v, ls):
    with torch.no_grad():
        member.task_factor.copy_(w)
    member.task_variance = v
    member.base.lengthscale = ls


def set_gpytorch(kernel, w, v, ls):
    """A GPyTorch MultitaskKernel's W, v and lengthscales."""
    with torch.no_grad():
        kernel.task_covar_module.covar_factor.copy_(w)
    kernel.task_covar_module.var = v
    kernel.data_covar_module.lengthscale = ls


class KroneckerModel(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, kernel):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.MultitaskMean(gpytorch.means.ConstantMean(), num_tasks=T)
        self.covar_module = kernel

    def forward(self, x):
        return gpytorch.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))


class HadamardModel(gpytorch.models.ExactGP):
    def __init__(self, inputs, y, likelihood, base, rank):
        super().__init__(inputs, y, likelihood)
        self.mean_module = gpytorch.means.ZeroMean()
        self.base, self.tasks = base, gpytorch.kernels.IndexKernel(num_tasks=T, rank=rank)

    def forward(self, x, i):
        covar = self.base(x).mul(self.tasks(i))
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), covar)


def exact():
    """GPyTorch settings for exact values: Cholesky everywhere, no fast predictive variances."""
    stack = contextlib.ExitStack()
    for setting in (gpytorch.settings.fast_computations(False, False, False),
                    gpytorch.settings.max_cholesky_size(10**6), gpytorch.settings.fast_pred_var(False)):
        stack.enter_context(setting)
    return stack


def kronecker_pair(kind="matern", rank=2, global_noise=None, lmc=False):
    """(flashgp model, GPyTorch model, x, y) at the same parameters; with ``global_noise`` GPyTorch
    also adds that to every task and flashgp's per-task noise holds the sum."""
    x, y = data()
    if lmc:
        params = [task_parameters(1, 1), task_parameters(2, 1)]
        kernel = LMC(*(Multitask(fg_base(kind), T, 1) for _ in params))
        g_kernel = gpytorch.kernels.LCMKernel([g_base(kind), g_base(kind)], num_tasks=T, rank=1)
        members, g_members = kernel.members, g_kernel.covar_module_list
    else:
        params = [task_parameters(1, rank)]
        kernel = Multitask(fg_base(kind), T, rank)
        g_kernel = gpytorch.kernels.MultitaskKernel(g_base(kind), num_tasks=T, rank=rank)
        members, g_members = [kernel], [g_kernel]
    model = fg.MultitaskGP(x, y, kernel, likelihood=Gaussian(batch_shape=(T,), noise_floor=0.0),
                           solver=fg.Cholesky())
    g_lik = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=T, rank=0,
                                                              has_global_noise=global_noise is not None)
    g_model = KroneckerModel(x, y, g_lik, g_kernel).double()
    for member, g_member, p in zip(members, g_members, params):
        set_flashgp(member, *p)
        set_gpytorch(g_member, *p)
    g_lik.task_noises = NOISE
    model.likelihood.noise = NOISE
    if global_noise is not None:
        g_lik.noise = torch.tensor([global_noise], dtype=F64)
        model.likelihood.noise = NOISE + g_lik.noise.detach()  # the exact total GPyTorch adds
    model.mean.base.constant = MEANS
    with torch.no_grad():
        for a, m in enumerate(g_model.mean_module.base_means):
            m.constant.fill_(MEANS[a])
    return model, g_model, x, y


def gpytorch_mll(g_model, *inputs, y):
    g_model.train()
    g_model.likelihood.train()
    with exact():
        return gpytorch.mlls.ExactMarginalLogLikelihood(g_model.likelihood, g_model)(g_model(*inputs), y)


@pytest.mark.parametrize("case", ["matern_rank2", "rbf_rank1", "global_noise", "lmc"])
def test_kronecker_mll_and_gradients(case):
    """The grid mll (flashgp's eigen path; the LMC's dense Cholesky) equals GPyTorch's
    ExactMarginalLogLikelihood (both per value, n t), and so do its gradients for W and the
    task means (parameters both store as they are)."""
    kwargs = {"matern_rank2": {}, "rbf_rank1": dict(kind="rbf", rank=1), "global_noise": dict(global_noise=0.01),
              "lmc": dict(lmc=True)}[case]
    model, g_model, x, y = kronecker_pair(**kwargs)
    mll = model.mll()
    assert model.diagnostics.get("structure") == (None if case == "lmc" else "kronecker")
    expected = gpytorch_mll(g_model, x, y=y)
    assert abs(float((mll - expected).detach())) < 1e-10
    members = model.kernel.members if case == "lmc" else [model.kernel]
    g_members = g_model.covar_module.covar_module_list if case == "lmc" else [g_model.covar_module]
    ours = torch.autograd.grad(mll, [m.task_factor for m in members] + [model.mean.base.raw_constant])
    theirs = torch.autograd.grad(expected, [m.task_covar_module.covar_factor for m in g_members]
                                 + [m.constant for m in g_model.mean_module.base_means])
    for got, want in zip(ours[:-1], theirs[:len(members)]):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(ours[-1], torch.stack([c.reshape(()) for c in theirs[len(members):]]), rtol=1e-8,
                               atol=1e-12)


@pytest.mark.parametrize("case", ["matern_rank2", "global_noise"])
def test_kronecker_posterior(case):
    """Posterior means, variances and cross-task covariances (m, t, t), and predictive variances,
    equal GPyTorch's MultitaskMultivariateNormal at the same test points."""
    model, g_model, _, _ = kronecker_pair(global_noise=0.01 if case == "global_noise" else None)
    xs = torch.rand(6, D, generator=gen(3), dtype=F64) * 2.4 - 0.2
    g_model.eval()
    g_model.likelihood.eval()
    with torch.no_grad(), exact():
        latent = g_model(xs)
        predictive = g_model.likelihood(latent)
        mean, var, cov = latent.mean, latent.variance, latent.covariance_matrix
        pred_var = predictive.variance
    post, pred = model.posterior(xs), model.predict(xs)
    torch.testing.assert_close(post.mean, mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(post.variance, var, rtol=1e-8, atol=1e-12)
    blocks = cov.reshape(6, T, 6, T).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # interleaved: point i, task a
    torch.testing.assert_close(post.task_covariance(), blocks, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(pred.variance, pred_var, rtol=1e-8, atol=1e-12)


def hadamard_pair(kind="matern", rank=2, n=24):
    """Heterotopic rows: flashgp with task_index, GPyTorch's Hadamard model (base(x) * IndexKernel(i))
    with a fixed per-row noise equal to each row's task noise; zero means in both."""
    x, y = data(n, seed=4)
    tasks = torch.randint(0, T, (n,), generator=gen(5))
    tasks[:T] = torch.arange(T)
    y = y[torch.arange(n), tasks]
    w, v, ls = task_parameters(6, rank)
    kernel = Multitask(fg_base(kind), T, rank)
    model = fg.MultitaskGP(x, y, kernel, task_index=tasks, mean=fg.means.Zero(), solver=fg.Cholesky(),
                           likelihood=Gaussian(batch_shape=(T,), noise_floor=0.0))
    set_flashgp(kernel, w, v, ls)
    model.likelihood.noise = NOISE
    g_lik = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(noise=NOISE[tasks], learn_additional_noise=False)
    g_model = HadamardModel((x, tasks.unsqueeze(-1)), y, g_lik, g_base(kind), rank).double()
    with torch.no_grad():
        g_model.tasks.covar_factor.copy_(w)
    g_model.tasks.var = v
    g_model.base.lengthscale = ls
    return model, g_model, x, y, tasks


@pytest.mark.parametrize("kind, rank", [("matern", 2), ("rbf", 3)])
def test_hadamard_mll_and_posterior(kind, rank):
    """Heterotopic data: flashgp's mll equals GPyTorch's Hadamard model's (both per row), with the
    same gradient for W; posterior(x, task_index) means and variances equal GPyTorch's at (x, i)."""
    model, g_model, x, y, tasks = hadamard_pair(kind, rank)
    assert model.grid_points is None
    mll = model.mll()
    expected = gpytorch_mll(g_model, x, tasks.unsqueeze(-1), y=y)
    assert abs(float((mll - expected).detach())) < 1e-10
    got = torch.autograd.grad(mll, model.kernel.task_factor)[0]
    want = torch.autograd.grad(expected, g_model.tasks.covar_factor)[0]
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-12)
    xs = torch.rand(8, D, generator=gen(7), dtype=F64) * 2
    ts = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2])
    g_model.eval()
    with torch.no_grad(), exact():
        latent = g_model(xs, ts.unsqueeze(-1))
        mean, var = latent.mean, latent.variance
    post = model.posterior(xs, task_index=ts)
    torch.testing.assert_close(post.mean, mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(post.variance, var, rtol=1e-8, atol=1e-12)
    every = model.posterior(xs)  # all tasks at each point: the same values in the (m, t) table
    torch.testing.assert_close(every.mean[torch.arange(8), ts], mean, rtol=0, atol=1e-9)
