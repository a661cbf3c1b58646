# Posteriors differentiable in the test inputs (models.direct_prediction) and Posterior.rsample:
# against gradcheck, finite differences and a dense float64 autograd reference.
import warnings

import pytest
import torch

import flashgp as fg
from flashgp import kernels as K

F64 = torch.float64


def problem(n=40, d=2, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=F64)
    y = torch.sin(6 * x).sum(-1) + 0.05 * torch.randn(n, generator=g, dtype=F64)
    return x.to(dtype), y.to(dtype)


def model(solver=None, n=40, d=2, dtype=F64, kernel=None):
    x, y = problem(n, d, dtype=dtype)
    kernel = K.Scale(K.Matern(nu=2.5, ard_dims=d)) if kernel is None else kernel
    gp = fg.ExactGP(x, y, kernel, solver=fg.Cholesky() if solver is None else solver)
    with torch.no_grad():
        gp.kernel.base.lengthscale = torch.tensor([0.3, 0.5][:d], dtype=F64)
        gp.kernel.outputscale = 1.3
        gp.likelihood.noise = 0.01
    return gp.eval()


def dense_reference(gp, x):
    """(mean, covariance) of the exact posterior by dense float64 autograd-friendly algebra."""
    X, y = gp.train_x.double(), gp.train_y.double()
    k_hat = gp.kernel(X) + gp.likelihood.noise.double() * torch.eye(X.shape[0], dtype=F64)
    cross = gp.kernel(x.double(), X)
    mean = gp.mean(x.double()) + cross @ torch.linalg.solve(k_hat, y - gp.mean(X))
    cov = gp.kernel(x.double()) - cross @ torch.linalg.solve(k_hat, cross.transpose(-1, -2))
    return mean, cov


def points(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def outputs(gp):
    def f(x):
        post = gp.posterior(x)
        return post.mean, post.variance, post.covariance.to_dense()
    return f


def test_gradcheck_cholesky_mean_variance_covariance():
    gp = model()
    x = points(5, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(outputs(gp), (x,))
    xb = points(3, 2, 2).requires_grad_(True)  # 3 test sets of 2 points
    assert torch.autograd.gradcheck(outputs(gp), (xb,))


def test_gradients_equal_dense_autograd_and_finite_differences():
    gp = model()
    x = points(6, 2).requires_grad_(True)
    post = gp.posterior(x)
    weights = points(6, seed=3)
    objective = (weights * post.mean).sum() + (weights * post.variance).sum() + post.covariance.to_dense().sum()
    grad = torch.autograd.grad(objective, x)[0]
    xr = x.detach().clone().requires_grad_(True)
    mean, cov = dense_reference(gp, xr)
    ref = (weights * mean).sum() + (weights * cov.diagonal()).sum() + cov.sum()
    grad_ref = torch.autograd.grad(ref, xr)[0]
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-8)
    # central finite differences of the whole objective, coordinate by coordinate
    h = 1e-6
    fd = torch.zeros_like(grad)
    with torch.no_grad():
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                values = []
                for sign in (1, -1):
                    shifted = x.detach().clone()
                    shifted[i, j] += sign * h
                    p = gp.posterior(shifted)
                    values.append((weights * p.mean).sum() + (weights * p.variance).sum()
                                  + p.covariance.to_dense().sum())
                fd[i, j] = (values[0] - values[1]) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-6)


def test_values_equal_the_posterior_without_gradients():
    gp = model()
    x = points(7, 2)
    plain = gp.posterior(x)
    direct = gp.posterior(x.clone().requires_grad_(True))
    assert direct.mean.requires_grad and direct.variance.requires_grad
    torch.testing.assert_close(direct.mean.detach(), plain.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(direct.covariance.to_dense().detach(), plain.covariance.to_dense(), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("solver", [fg.CG(eval_tol=1e-10, variance_tol=None), fg.CG(eval_tol=1e-10, variance_tol=1e-8),
                                    fg.CG(eval_tol=1e-10, exact_var_max=0, variance_tol=None, root_rank=200)],
                         ids=["cg", "certified", "love"])
def test_cg_path_gradients_match_the_dense_reference(solver):
    gp = model(solver, n=150)
    x = points(4, 2).requires_grad_(True)
    post = gp.posterior(x)
    grad = torch.autograd.grad(post.mean.sum() + post.variance.sum(), x)[0]
    xr = x.detach().clone().requires_grad_(True)
    mean, cov = dense_reference(gp, xr)
    grad_ref = torch.autograd.grad(mean.sum() + cov.diagonal().sum(), xr)[0]
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-5)


def test_float32_model_gives_float32_gradients_close_to_float64():
    gp32 = model(dtype=torch.float32)
    gp64 = model()
    x = points(5, 2)
    x32 = x.float().requires_grad_(True)
    post = gp32.posterior(x32)
    assert post.mean.dtype == torch.float32
    g32 = torch.autograd.grad(post.mean.sum() + post.variance.sum(), x32)[0]
    x64 = x.clone().requires_grad_(True)
    p64 = gp64.posterior(x64)
    g64 = torch.autograd.grad(p64.mean.sum() + p64.variance.sum(), x64)[0]
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.double(), g64, rtol=1e-3, atol=1e-3)


def test_clamped_variances_keep_finite_gradients():
    x, y = problem(30)
    gp = fg.ExactGP(x, y, K.Scale(K.RBF(ard_dims=2)), likelihood=fg.likelihoods.FixedNoise(torch.full((30,), 1e-14)),
                    solver=fg.Cholesky())
    with torch.no_grad():
        gp.kernel.base.lengthscale = 1.0
    gp.eval()
    at = x[:10].clone().requires_grad_(True)  # training inputs: the variance is round-off around 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = gp.posterior(at)
    std = post.stddev
    assert bool((post.variance > 0).all())
    grad = torch.autograd.grad(std.sum(), at)[0]
    assert bool(torch.isfinite(grad).all())


def test_clamp_sets_the_smallest_normal_number_with_zero_gradient():
    from flashgp.distributions import Posterior, PosteriorCovariance

    class Diagonal(PosteriorCovariance):
        def __init__(self, values):
            self.values, self.shape, self.dtype, self.device = values, torch.Size((3, 3)), values.dtype, values.device

        def _diagonal(self):
            return self.values

    raw = torch.tensor([0.5, -1e-15, 0.2], dtype=F64, requires_grad=True)
    post = Posterior(torch.zeros(3, dtype=F64), Diagonal(raw * 1.0))
    assert post.latent_variance[1] == torch.finfo(F64).tiny
    assert post.diagnostics["variance_clamped"] == 1 and post.diagnostics["variance_min_before_clamp"] < 0
    grad = torch.autograd.grad(post.stddev.sum(), raw)[0]
    assert bool(torch.isfinite(grad).all()) and grad[1] == 0 and grad[0] > 0


def test_inducing_models_are_differentiable():
    x, y = problem(60)
    sgpr = fg.SGPR(x, y, K.Scale(K.RBF(ard_dims=2)), inducing=x[:12]).eval()
    svgp = fg.SVGP(K.Scale(K.RBF(ard_dims=2)), x[:12].clone(), x=x, y=y).eval()
    for gp in (sgpr, svgp):
        xt = points(4, 2).requires_grad_(True)
        assert torch.autograd.gradcheck(outputs(gp), (xt,))
        plain = gp.posterior(xt.detach())
        torch.testing.assert_close(gp.posterior(xt).covariance.to_dense().detach(), plain.covariance.to_dense(),
                                   rtol=1e-10, atol=1e-12)


def test_local_variances_refuse_gradients():
    gp = model(fg.CG(local_neighbors=8), n=60)
    with pytest.raises(ValueError, match="not differentiable in x"):
        gp.posterior(points(3, 2).requires_grad_(True))


def test_rsample_is_reparameterised():
    gp = model()
    x = points(4, 2).requires_grad_(True)
    post = gp.posterior(x)
    base = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    draws = post.rsample(torch.Size([3]), base_samples=base)
    chol = torch.linalg.cholesky(post.covariance.to_dense().detach())
    torch.testing.assert_close(draws.detach(), post.mean.detach() + base @ chol.T, rtol=1e-8, atol=1e-8)
    assert torch.autograd.gradcheck(lambda x: gp.posterior(x).rsample(torch.Size([3]), base_samples=base), (x,))
    zero = post.rsample(torch.Size([2]), base_samples=torch.zeros(2, 4, dtype=F64))
    torch.testing.assert_close(zero.detach(), post.mean.detach().expand(2, 4))
    with pytest.raises(ValueError, match="base_samples: expected shape"):
        post.rsample(torch.Size([2]), base_samples=torch.zeros(3, 4, dtype=F64))


def test_rsample_covariance_and_predictive_noise():
    gp = model()
    post = gp.predict(points(3, 2))
    draws = post.rsample(torch.Size([40000]))
    assert draws.shape == (40000, 3)
    cov = post.covariance.to_dense() + torch.diag(post.noise)
    torch.testing.assert_close(torch.cov(draws.T), cov, rtol=0.05, atol=0.02 * float(cov.diagonal().max()))


def test_certified_test_sets_in_one_pass_agree_with_separate_sets():
    gp = model(fg.CG(precond=fg.PivotedCholesky(rank=5)), n=300)
    sets = torch.rand(6, 3, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    joint = gp.posterior(sets)
    assert gp.diagnostics["variance_method"] == "cg"
    for i in range(6):
        one = gp.posterior(sets[i])
        torch.testing.assert_close(joint.mean[i], one.mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(joint.covariance.to_dense()[i], one.covariance.to_dense(), rtol=1e-4, atol=1e-6)
        _, cov = dense_reference(gp, sets[i])
        assert float(((joint.variance[i] - cov.diagonal()) / cov.diagonal()).abs().max()) < 0.01  # variance_tol
