# Certified CG variances (CG(variance_tol=...)): every path against float64 Cholesky at the same
# hyperparameters, across noise levels and lengthscales; PSD covariances; warnings when uncertified.
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.errors import NumericalWarning


def model_at(n, noise, lengthscale, solver, seed=0, d=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64)
    y = torch.sin(6 * x).sum(-1) + noise**0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d)).double()
    kernel.outputscale, kernel.base.lengthscale = 2.0, lengthscale
    model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise_floor=1e-6), solver=solver)
    model.likelihood.noise = noise
    return model


def both(model, x, solver):
    """(CG posterior under ``solver``, Cholesky posterior) at x."""
    model.solver = solver
    post = model.posterior(x)
    model.solver = fg.Cholesky()
    return post, model.posterior(x)


def test_quickstart_variances_match_cholesky():
    """The README quickstart's state (hyperparameters its 50 Adam steps reach), default CG."""
    model = model_at(3000, 0.0096, 0.71, fg.CG(tol=1.0, precond=fg.PivotedCholesky(100)))
    model.kernel.outputscale = 2.17
    xt = torch.rand(100, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    post, ref = both(model, xt, fg.CG(tol=1.0, precond=fg.PivotedCholesky(100)))
    rel = (post.variance / ref.variance - 1)
    assert rel.abs().max() < 0.01
    assert (rel > -1e-10).all()  # upper bounds of the exact variances
    assert model.diagnostics["variance_method"] == "cholesky"
    cov = post.covariance.to_dense()
    torch.testing.assert_close(cov, cov.T, rtol=0, atol=0)
    eig = torch.linalg.eigvalsh(cov)
    assert eig.min() > -1e-12 * eig.max()
    torch.testing.assert_close(cov, ref.covariance.to_dense(), rtol=0, atol=0.01 * float(ref.variance.min()))


@pytest.mark.parametrize("noise, lengthscale", [(1e-1, 0.5), (1e-2, 0.2), (1e-4, 0.7), (1e-3, 2.0)])
@pytest.mark.parametrize("precond", [None, fg.PivotedCholesky(50), fg.PivotedCholesky(30, block_size=64)])
def test_cg_variances_within_tolerance(noise, lengthscale, precond):
    model = model_at(800, noise, lengthscale, None)
    xt = torch.rand(40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    solver = fg.CG(precond=precond, max_iters=3000)
    post, ref = both(model, xt, solver)
    model.solver = solver
    model.posterior(xt)
    assert model.diagnostics["variance_uncertified"] == 0
    assert model.diagnostics["variance_bound"] == ("residual" if precond and precond.block_size else "gauss-radau")
    rel = post.variance / ref.variance - 1
    assert rel.abs().max() < 0.01
    assert rel.min() > -1e-8


def test_vecchia_variances_within_tolerance():
    model = model_at(1000, 1e-3, 0.3, None)
    xt = torch.rand(30, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    post, ref = both(model, xt, fg.CG(precond=fg.Vecchia(15)))
    assert (post.variance / ref.variance - 1).abs().max() < 0.01


def test_large_test_sets_are_certified_from_the_lanczos_root():
    solver = fg.CG(precond=fg.PivotedCholesky(50), exact_var_max=64, root_rank=40)
    model = model_at(1000, 1e-3, 0.3, solver)
    xt = torch.rand(150, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    post, ref = both(model, xt, solver)
    assert (post.variance / ref.variance - 1).abs().max() < 0.01
    model.solver = solver
    post = model.posterior(xt)
    assert model.diagnostics["variance_method"] == "lanczos+cg"
    # the covariance: LOVE's correlations with the certified variances
    idx = torch.tensor([3, 70, 149])
    torch.testing.assert_close(post.covariance.rows(idx)[torch.arange(3), idx], post.variance[idx])
    cov = post.covariance.to_dense()
    torch.testing.assert_close(cov.diagonal(), post.variance)
    torch.testing.assert_close(cov, cov.T)
    eig = torch.linalg.eigvalsh(cov)
    assert eig.min() > -1e-10 * eig.max()  # PSD: LOVE's correlations, the certified variances
    uncert = fg.CG(precond=fg.PivotedCholesky(50), exact_var_max=64, root_rank=40, variance_tol=None)
    model.solver = uncert
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        loose = model.posterior(xt).variance
    assert (loose / ref.variance - 1).abs().max() > 0.05  # what the certificate fixes here


def test_local_variances_are_certified_from_the_local_solves():
    solver = fg.CG(precond=fg.PivotedCholesky(50), exact_var_max=32, local_neighbors=20)
    model = model_at(900, 1e-3, 0.3, solver, d=2)
    xt = torch.rand(80, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    post, ref = both(model, xt, solver)
    assert (post.variance / ref.variance - 1).abs().max() < 0.01
    model.solver = solver
    model.posterior(xt)
    assert model.diagnostics["variance_method"] == "local+cg"
    assert model.diagnostics["variance_uncertified"] == 0


@pytest.mark.filterwarnings("ignore:CG for the posterior mean solve")
def test_uncertified_variances_warn_with_the_bound():
    model = model_at(600, 1e-4, 0.3, fg.CG(precond=None, max_iters=3))
    xt = torch.rand(10, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with pytest.warns(NumericalWarning, match=r"could not be certified.*variance_tol=0.01.*max_iters"):
        post = model.posterior(xt)
    assert model.diagnostics["variance_uncertified"] > 0
    assert model.diagnostics["variance_error_bound"] > 0.01
    model.solver = fg.Cholesky()
    assert (post.variance >= model.posterior(xt).variance - 1e-10).all()  # still upper bounds


def test_variance_tol_is_validated_and_saved(tmp_path):
    with pytest.raises(ValueError, match="variance_tol"):
        fg.CG(variance_tol=0)
    model = model_at(300, 1e-2, 0.3, fg.CG(variance_tol=1e-4))
    fg.save(model, tmp_path / "m.fgp")
    assert fg.load(tmp_path / "m.fgp").solver.variance_tol == 1e-4


def test_certified_solves_correct_the_posterior_mean():
    """k*^T alpha + x^T (r - K_hat alpha): the mean error becomes a product of two small errors."""
    model = model_at(1000, 1e-4, 0.7, None)
    xt = torch.rand(60, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    post, ref = both(model, xt, fg.CG(precond=fg.PivotedCholesky(50)))
    sd = ref.variance.sqrt()
    assert ((post.mean - ref.mean).abs() / sd).max() < 0.01
    model.solver = fg.CG(precond=fg.PivotedCholesky(50))
    model.posterior(xt)
    bound = model.diagnostics["mean_error_bound"]
    assert ((post.mean - ref.mean).abs() / sd).max() <= bound
    model.solver = fg.CG(precond=fg.PivotedCholesky(50), variance_tol=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        plain = model.posterior(xt).mean
    assert ((plain - ref.mean).abs() / sd).max() > 0.05  # the uncorrected mean at eval_tol 1e-3
