# Tests for fg.ExactGP: the Cholesky path against a hand-written float64 GP (mll, gradients,
# posterior, predictive, samples), batches, likelihoods, means, caching, diagnostics, fg.Auto.
import math
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Linear, Matern, Periodic, Scale
from flashgp.likelihoods import FixedNoise, Gaussian
from flashgp.means import Constant, Zero
from flashgp.means import Linear as LinearMean

from gp_reference import F64, data, gen, rbf_matrix, rbf_model, reference, reference_posterior


# ----- mll and gradients ------------------------------------------------------------------------

def test_mll_matches_hand_written():
    x, y, x_test = data()
    model = rbf_model(x, y)
    ls = torch.tensor([0.7, 1.3], dtype=F64)
    k = rbf_matrix(x, x, ls, 1.7)
    noise = torch.full((200,), 0.05, dtype=F64)
    ref, _, _ = reference(k, k[:1], k[:1, :1], y, torch.full((200,), 0.2, dtype=F64), None, noise)
    mll = model.mll()
    assert mll.shape == () and mll.dtype == F64
    torch.testing.assert_close(mll.detach(), ref, rtol=1e-12, atol=0)
    assert model.diagnostics["path"] == "cholesky"


def test_mll_gradients_match_autograd_of_hand_written():
    x, y, _ = data(seed=1)
    model = rbf_model(x, y)
    params = dict(model.named_parameters())
    assert set(params) == {"kernel.raw_outputscale", "kernel.base.raw_lengthscale",
                           "likelihood.raw_noise", "mean.raw_constant"}
    grads = torch.autograd.grad(model.mll(), list(params.values()))
    # the hand-written model, as a function of the same raw parameters
    raw = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    ls = torch.nn.functional.softplus(raw["kernel.base.raw_lengthscale"])
    out = torch.nn.functional.softplus(raw["kernel.raw_outputscale"])
    noise = model.likelihood.noise_floor + torch.nn.functional.softplus(raw["likelihood.raw_noise"])
    k = rbf_matrix(x, x, ls, out)
    ref, _, _ = reference(k, k[:1], k[:1, :1], y, raw["mean.raw_constant"].expand(200), None, noise.expand(200))
    ref_grads = torch.autograd.grad(ref, list(raw.values()))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_mll_float32_data_uses_float64_cholesky():
    x, y, _ = data(seed=2)
    model64 = rbf_model(x, y)
    model32 = fg.ExactGP(x.float(), y.float(), Scale(RBF(ard_dims=2)), solver=fg.Cholesky(),
                         likelihood=fg.likelihoods.Gaussian(noise_floor=model64.likelihood.noise_floor))
    model32.load_state_dict(model64.state_dict())
    assert next(model32.parameters()).dtype == torch.float32
    mll32 = model32.mll()
    assert mll32.dtype == torch.float32
    torch.testing.assert_close(mll32.double(), model64.mll().detach(), rtol=1e-5, atol=0)


# ----- posterior and predictive -------------------------------------------------------------------

@pytest.fixture()
def fitted():
    x, y, x_test = data(seed=3)
    model = rbf_model(x, y)
    ls = torch.tensor([0.7, 1.3], dtype=F64)
    _, mean, cov = reference(rbf_matrix(x, x, ls, 1.7), rbf_matrix(x_test, x, ls, 1.7),
                             rbf_matrix(x_test, x_test, ls, 1.7), y,
                             torch.full((200,), 0.2, dtype=F64), torch.full((30,), 0.2, dtype=F64),
                             torch.full((200,), 0.05, dtype=F64))
    return model, x_test, mean, cov


def test_posterior_matches_reference(fitted):
    model, x_test, mean, cov = fitted
    post = model.posterior(x_test)
    assert post.mean.shape == (30,) and post.variance.shape == (30,)
    torch.testing.assert_close(post.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(post.variance, cov.diagonal(), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(post.covariance.to_dense(), cov, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(post.stddev, cov.diagonal().sqrt(), rtol=1e-7, atol=1e-8)
    assert not post.mean.requires_grad and not post.variance.requires_grad
    # covariance operator: products, diagonal and rows agree with the dense matrix
    v = torch.randn(30, 2, dtype=F64)
    torch.testing.assert_close(post.covariance.matmul(v), cov @ v, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(post.covariance.rows(torch.tensor([4, 0])), cov[[4, 0]], rtol=1e-7, atol=1e-9)


def test_posterior_at_training_points_interpolates_with_small_noise():
    x, _, _ = data(n=40, seed=4)
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1])  # noise-free targets, smooth at this lengthscale
    model = rbf_model(x, y, noise=2e-4, constant=0.0)
    post = model.posterior(x)
    assert float((post.mean - y).abs().max()) < 0.01
    assert float(post.variance.max()) < 4e-4


def test_predict_adds_noise(fitted):
    model, x_test, mean, cov = fitted
    pred = model.predict(x_test)
    torch.testing.assert_close(pred.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(pred.variance, cov.diagonal() + 0.05, rtol=1e-7, atol=1e-10)
    # the latent posterior is unchanged by predict
    torch.testing.assert_close(model.posterior(x_test).variance, cov.diagonal(), rtol=1e-7, atol=1e-10)


def test_confidence_region(fitted):
    model, x_test, mean, cov = fitted
    post = model.posterior(x_test)
    lower, upper = post.confidence_region()
    half = 1.959963984540054 * cov.diagonal().sqrt()
    torch.testing.assert_close(lower, mean - half, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(upper, mean + half, rtol=1e-7, atol=1e-9)
    lower, upper = model.predict(x_test).confidence_region(level=0.5)
    half = 0.6744897501960817 * (cov.diagonal() + 0.05).sqrt()
    torch.testing.assert_close(upper - lower, 2 * half, rtol=1e-7, atol=1e-9)
    for level in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"\blevel\b"):
            post.confidence_region(level)


def test_sample_shapes_and_moments():
    x, y, x_test = data(seed=5, m=4)
    model = rbf_model(x, y)
    post = model.posterior(x_test)
    assert post.sample().shape == (1, 4)
    draws = post.sample(20000, generator=gen(6))
    assert draws.shape == (20000, 4) and draws.dtype == F64
    cov = post.covariance.to_dense()
    std = cov.diagonal().sqrt()
    # Monte Carlo: mean within 5 standard errors, covariance within 5% of the largest variance
    assert bool(((draws.mean(0) - post.mean).abs() < 5 * std / math.sqrt(20000)).all())
    emp = torch.cov(draws.T)
    assert float((emp - cov).abs().max()) < 0.05 * float(cov.diagonal().max())
    # predictive samples carry the noise
    pred_draws = model.predict(x_test).sample(20000, generator=gen(7))
    torch.testing.assert_close(pred_draws.var(0), cov.diagonal() + 0.05, rtol=0.05, atol=0)
    # a generator makes sampling reproducible
    assert torch.equal(post.sample(3, generator=gen(8)), post.sample(3, generator=gen(8)))
    with pytest.raises(ValueError, match=r"\bnum_samples\b"):
        post.sample(0)


def test_one_dimensional_test_inputs_accepted_for_d1():
    x, y, _ = data(d=1, seed=9)
    model = rbf_model(x, y, lengthscale=(0.5,))
    x_test = torch.linspace(-2, 2, 7, dtype=F64)
    torch.testing.assert_close(model.posterior(x_test).mean, model.posterior(x_test[:, None]).mean)


# ----- likelihoods and means --------------------------------------------------------------------

def test_fixed_noise_likelihood():
    x, y, x_test = data(n=150, seed=13, m=12)
    noise = 0.01 + 0.2 * torch.rand(150, generator=gen(14), dtype=F64)
    model = rbf_model(x, y, likelihood=FixedNoise(noise))
    assert [n for n, _ in model.named_parameters()] == ["kernel.raw_outputscale", "kernel.base.raw_lengthscale",
                                                         "mean.raw_constant"]
    ls = torch.tensor([0.7, 1.3], dtype=F64)
    ref_mll, mean, cov = reference(rbf_matrix(x, x, ls, 1.7), rbf_matrix(x_test, x, ls, 1.7),
                                   rbf_matrix(x_test, x_test, ls, 1.7), y,
                                   torch.full((150,), 0.2, dtype=F64), torch.full((12,), 0.2, dtype=F64), noise)
    torch.testing.assert_close(model.mll().detach(), ref_mll, rtol=1e-12, atol=0)
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(post.variance, cov.diagonal(), rtol=1e-7, atol=1e-10)
    # predict: given test noise is added; without it, the mean training noise
    test_noise = torch.linspace(0.01, 0.1, 12, dtype=F64)
    torch.testing.assert_close(model.predict(x_test, noise=test_noise).variance, cov.diagonal() + test_noise,
                               rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(model.predict(x_test).variance, cov.diagonal() + noise.mean(),
                               rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match=r"\bnoise\b"):
        model.predict(x_test, noise=torch.ones(5, dtype=F64))
    with pytest.raises(ValueError, match=r"\bnoise\b"):
        FixedNoise(torch.tensor([0.1, -0.1]))


def test_fixed_noise_cg_path():
    x, y, _ = data(n=200, seed=15)
    noise = 0.02 + 0.1 * torch.rand(200, generator=gen(16), dtype=F64)
    model = rbf_model(x, y, likelihood=FixedNoise(noise))
    ref = model.mll().detach()
    model.solver = fg.CG(tol=0.01, probes=30, precond=fg.PivotedCholesky(50))
    assert abs(float((model.mll(generator=gen(0)).detach() - ref) / ref)) < 0.01


@pytest.mark.parametrize("mean_name", ["zero", "constant", "linear"])
def test_means(mean_name):
    x, y, x_test = data(n=150, seed=17, m=10)
    y = y + 0.8 * x[:, 0] - 0.3  # a trend for the linear mean
    if mean_name == "zero":
        mean = Zero()
        train_m, test_m = torch.zeros(150, dtype=F64), torch.zeros(10, dtype=F64)
    elif mean_name == "constant":
        mean = Constant(constant=-0.7)
        train_m, test_m = torch.full((150,), -0.7, dtype=F64), torch.full((10,), -0.7, dtype=F64)
    else:
        mean = LinearMean(2)
        w, b = torch.tensor([0.8, -0.2], dtype=F64), -0.3
        train_m, test_m = x @ w + b, x_test @ w + b
    model = rbf_model(x, y, mean=mean)
    if mean_name == "constant":
        model.mean.constant = -0.7
    if mean_name == "linear":
        with torch.no_grad():
            model.mean.weights.copy_(w)
            model.mean.bias.fill_(b)
    ls = torch.tensor([0.7, 1.3], dtype=F64)
    ref_mll, ref_mean, _ = reference(rbf_matrix(x, x, ls, 1.7), rbf_matrix(x_test, x, ls, 1.7),
                                     rbf_matrix(x_test, x_test, ls, 1.7), y, train_m, test_m,
                                     torch.full((150,), 0.05, dtype=F64))
    torch.testing.assert_close(model.mll().detach(), ref_mll, rtol=1e-12, atol=0)
    torch.testing.assert_close(model.posterior(x_test).mean, ref_mean, rtol=1e-9, atol=1e-10)
    n_mean_params = {"zero": 0, "constant": 1, "linear": 2}[mean_name]
    assert len(list(model.mean.parameters())) == n_mean_params


def test_linear_mean_gradient():
    x, y, _ = data(n=100, seed=18)
    model = rbf_model(x, y, mean=LinearMean(2))
    model.mll().backward()
    w = model.mean.weights.detach().clone().requires_grad_(True)
    b = model.mean.bias.detach().clone().requires_grad_(True)
    k = rbf_matrix(x, x, torch.tensor([0.7, 1.3], dtype=F64), 1.7)
    ref, _, _ = reference(k, k[:1], k[:1, :1], y, x @ w + b, None, torch.full((100,), 0.05, dtype=F64))
    gw, gb = torch.autograd.grad(ref, [w, b])
    torch.testing.assert_close(model.mean.weights.grad, gw, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(model.mean.bias.grad, gb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel_name", ["matern", "periodic_plus_linear"])
def test_other_kernels_mll_and_posterior(kernel_name):
    x, y, x_test = data(n=120, seed=19, m=9)
    if kernel_name == "matern":
        kernel = Scale(Matern(nu=1.5))
    else:
        kernel = Scale(Periodic()) + Linear()
    model = fg.ExactGP(x, y, kernel, mean=Zero(), solver=fg.Cholesky())
    with torch.no_grad():
        k = kernel(x)
        k_cross, k_test = kernel(x_test, x), kernel(x_test)
    noise = model.likelihood.noise.detach().expand(120)
    ref_mll, mean, cov = reference(k, k_cross, k_test, y, torch.zeros(120, dtype=F64), torch.zeros(9, dtype=F64), noise)
    torch.testing.assert_close(model.mll().detach(), ref_mll, rtol=1e-12, atol=0)
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(post.variance, cov.diagonal(), rtol=1e-7, atol=1e-10)


# ----- caching ----------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", [fg.Cholesky(), fg.CG(tol=0.01, precond=fg.PivotedCholesky(60))],
                         ids=["cholesky", "cg"])
def test_cache_invalidated_by_property_setter(solver):
    x, y, x_test = data(n=150, seed=20, m=10)
    model = rbf_model(x, y, solver=solver)
    first = model.posterior(x_test)
    first_mean = first.mean.clone()
    assert torch.equal(model.posterior(x_test).mean, first_mean)  # cached: the same state
    model.kernel.base.lengthscale = torch.tensor([0.4, 0.9], dtype=F64)
    second = model.posterior(x_test)
    assert not torch.allclose(second.mean, first_mean)
    mean, var = reference_posterior(x, y, x_test, [0.4, 0.9])
    tol = 1e-9 if isinstance(solver, fg.Cholesky) else 1e-3
    torch.testing.assert_close(second.mean, mean, rtol=0, atol=tol * 10)
    torch.testing.assert_close(second.variance, var, rtol=0, atol=tol * 10)


def test_cache_invalidated_by_optimizer_step_and_noise_and_data():
    x, y, x_test = data(n=100, seed=21, m=8)
    model = rbf_model(x, y)
    model.posterior(x_test)
    # an in-place update of a raw parameter (what an optimizer does)
    with torch.no_grad():
        model.kernel.raw_outputscale.add_(0.5)
    out = float(model.kernel.outputscale.detach())
    mean, var = reference_posterior(x, y, x_test, [0.7, 1.3], outputscale=out)
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(post.variance, var, rtol=1e-7, atol=1e-10)
    # the noise and the mean
    model.likelihood.noise = 0.3
    model.mean.constant = -0.1
    mean, var = reference_posterior(x, y, x_test, [0.7, 1.3], outputscale=out, noise=0.3, constant=-0.1)
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(post.variance, var, rtol=1e-7, atol=1e-10)
    # new training data
    x2, y2, _ = data(n=60, seed=22)
    model.set_train_data(x2, y2)
    mean, var = reference_posterior(x2, y2, x_test, [0.7, 1.3], outputscale=out, noise=0.3, constant=-0.1)
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, mean, rtol=1e-9, atol=1e-10)
    assert model.num_train == 60


def test_cache_follows_solver_change():
    x, y, x_test = data(n=150, seed=23, m=10)
    model = rbf_model(x, y)
    model.posterior(x_test)
    assert model.diagnostics["path"] == "cholesky"
    model.solver = fg.CG(tol=0.01)
    model.posterior(x_test)
    assert model.diagnostics["path"] == "cg"


# ----- diagnostics and solver choice -------------------------------------------------------------

DIAGNOSTIC_KEYS = {"path", "cg_iterations", "residual", "jitter", "seconds"}


def test_diagnostics_cholesky():
    x, y, x_test = data(n=100, seed=24)
    model = rbf_model(x, y)
    model.mll()
    d = model.diagnostics
    assert DIAGNOSTIC_KEYS <= set(d)
    assert d["path"] == "cholesky" and d["cg_iterations"] == 0 and d["jitter"] == 0.0 and d["seconds"] > 0
    model.posterior(x_test)
    assert DIAGNOSTIC_KEYS <= set(model.diagnostics) and model.diagnostics["path"] == "cholesky"


def test_diagnostics_cg():
    x, y, x_test = data(n=300, seed=25)
    model = rbf_model(x, y, solver=fg.CG(tol=0.01, precond=fg.PivotedCholesky(20), exact_var_max=0))
    model.mll()
    d = model.diagnostics
    assert DIAGNOSTIC_KEYS <= set(d)
    assert d["path"] == "cg" and d["cg_iterations"] >= 1 and d["residual"] < 0.01 and d["seconds"] > 0
    assert d["jitter"] == 0.0
    assert d["converged"] and 0 <= d["mean_residual"] < 0.01  # the stopping test's quantity
    assert d["precond_rank"] == 20 and 0 < d["precond_seconds"] < d["seconds"]
    assert d["precond_pivots"] == "greedy" and 0 < d["precond_stop_threshold"] < d["precond_remaining_error"]
    model.mll()
    assert model.diagnostics["precond_pivots"] == "reused"
    assert model.diagnostics["precond_remaining_error"] is None  # known only for greedy builds
    d = model.diagnostics
    model.posterior(x_test)
    d = model.diagnostics
    assert DIAGNOSTIC_KEYS <= set(d) and d["path"] == "cg" and d["cg_iterations"] >= 1
    assert d["residual"] < 1e-3  # eval_tol
    # the first prediction's parts: preconditioner, mean solve and (exact_var_max=0) the
    # Lanczos root, each within the whole call's seconds
    assert d["variance_method"] == "lanczos+cg"  # LOVE, then certified (CG.variance_tol)
    parts = [d["precond_seconds"], d["mean_solve_seconds"], d["root_seconds"]]
    assert all(p > 0 for p in parts) and sum(parts) < d["seconds"]


def test_diagnostics_cg_stopped_early():
    """Cut short, the mll reports the mean residual CG stopped on, above tol, and converged False."""
    x, y, _ = data(n=300, seed=25)
    model = rbf_model(x, y, solver=fg.CG(tol=1e-8, max_iters=2, lanczos_iters=0, precond=None))
    with pytest.warns(fg.NumericalWarning):
        model.mll()
    d = model.diagnostics
    assert d["cg_iterations"] == 2 and not d["converged"] and d["mean_residual"] >= 1e-8
    assert d["residual"] > 0


def test_jitter_is_reported():
    # duplicated points, a long lengthscale and a vanishing fixed noise: K_hat is numerically
    # singular, the Cholesky needs jitter
    x = torch.linspace(0, 1, 20, dtype=F64).repeat(2).reshape(40, 1)
    y = torch.sin(6 * x[:, 0])
    model = fg.ExactGP(x, y, Scale(RBF(lengthscale=3.0)), likelihood=FixedNoise(torch.full((40,), 1e-30, dtype=F64)),
                       solver=fg.Cholesky())
    with pytest.warns(fg.NumericalWarning, match="jitter"):
        mll = model.mll()
    assert torch.isfinite(mll) and model.diagnostics["jitter"] > 0


@pytest.mark.parametrize("n,path", [(100, "cholesky"), (150, "cholesky"), (151, "cg")])
def test_auto_solver(n, path):
    x, y, x_test = data(n=n, seed=26)
    model = rbf_model(x, y, solver=fg.Auto(max_cholesky_n=150, cg=fg.CG(tol=0.01)))
    model.mll()
    assert model.diagnostics["path"] == path
    model.posterior(x_test)
    assert model.diagnostics["path"] == path


def test_default_solver_is_auto():
    x, y, _ = data(n=50, seed=27)
    model = fg.ExactGP(x, y, Scale(RBF()))
    assert isinstance(model.solver, fg.Auto)
    model.mll()
    assert model.diagnostics["path"] == "cholesky"
    assert fg.Auto().resolve(2000) == fg.Auto().cholesky and isinstance(fg.Auto().resolve(2001), fg.CG)


def test_model_exposes_components_and_follows_dtype():
    x, y, _ = data(n=30, seed=28)
    kernel, lik, mean = Scale(RBF()), Gaussian(), Zero()
    model = fg.ExactGP(x, y, kernel, likelihood=lik, mean=mean)
    assert model.kernel is kernel and model.likelihood is lik and model.mean is mean
    assert all(p.dtype == F64 for p in model.parameters())
    model32 = fg.ExactGP(x.float(), y.float(), Scale(RBF()))
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    assert model32.posterior(x[:3].float()).mean.dtype == torch.float32


def test_no_warning_on_well_conditioned_problem():
    x, y, x_test = data(n=100, seed=29)
    model = rbf_model(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.mll().backward()
        model.posterior(x_test).variance


def test_float32_cholesky_path_matches_float64_on_an_ill_conditioned_problem():
    # points thousands of lengthscales from the centre and a tiny noise: the Cholesky path works in
    # float64 (kernel, cross covariance, alpha), so float32 data only costs float32 rounding
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(54, 1, generator=gen, dtype=F64) * 7.6 - 3.8).float()
    y = torch.sin(40 * x[:, 0].double()).float()
    x_test = torch.cat([torch.tensor([[3.5068], [-1.0]]), x[:4]])
    answers = []
    for dtype in (torch.float32, F64):
        model = fg.ExactGP(x.to(dtype), y.to(dtype), Scale(Matern(nu=0.5, lengthscale=0.003), outputscale=35.7),
                           likelihood=FixedNoise(torch.full((54,), 2.7e-5, dtype=dtype)), solver=fg.Cholesky())
        post = model.posterior(x_test.to(dtype))
        answers.append((float(model.mll().detach()), post.mean.double(), post.variance.double()))
    (mll32, mean32, var32), (mll64, mean64, var64) = answers
    assert mll32 == pytest.approx(mll64, rel=1e-5)
    torch.testing.assert_close(mean32, mean64, rtol=0, atol=1e-4 * 35.7 ** 0.5)
    torch.testing.assert_close(var32, var64, rtol=0, atol=1e-4 * 35.7)


def test_sample_recovers_from_an_indefinite_covariance():
    # an inexact CG downdate can leave small negative eigenvalues that jitter does not fix
    from flashgp.distributions import Posterior
    from flashgp.operators import Dense
    basis = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
    cov = basis @ torch.diag(torch.tensor([1.0, 0.5, 0.2, 1e-3, 2e-4, -0.05], dtype=torch.float64)) @ basis.T
    post = Posterior(torch.zeros(6, dtype=torch.float64), Dense(cov))
    with pytest.warns(fg.NumericalWarning, match="negative eigenvalue"):
        draws = post.sample(4000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 6) and torch.isfinite(draws).all()
    assert post.diagnostics["sample_eigen_clamped"] == 1
    psd = basis @ torch.diag(torch.tensor([1.0, 0.5, 0.2, 1e-3, 2e-4, 0.0], dtype=torch.float64)) @ basis.T
    torch.testing.assert_close(draws.T @ draws / 4000, psd, atol=0.06, rtol=0)


def test_max_rank_grows_the_preconditioner_during_training():
    """A preconditioner too weak for the hyperparameters (short lengthscale, small noise) doubles
    its rank at each fresh factor up to max_rank; CG then needs fewer iterations."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 2, dtype=F64, generator=g)
    y = torch.sin(6 * x).sum(-1) + 0.01 * torch.randn(300, dtype=F64, generator=g)
    solver = fg.CG(tol=0.01, eval_tol=1e-6, precond=fg.PivotedCholesky(2, max_rank=8), backend="dense")
    model = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF(lengthscale=0.08)), solver=solver)
    model.likelihood.noise = torch.tensor(2e-4, dtype=F64)
    seen = []
    for _ in range(4):
        model.mll(generator=torch.Generator().manual_seed(1))
        d = model.diagnostics
        seen.append((d["precond_rank"], d["precond_pivots"], d["cg_iterations"]))
    assert [s[:2] for s in seen] == [(2, "greedy"), (4, "greedy"), (8, "greedy"), (8, "reused")]
    assert seen[2][2] < seen[0][2]
    # the posterior mean solve uses the grown rank too; a model that never grew keeps rank 2
    fresh = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF(lengthscale=0.08)), solver=solver)
    fresh.likelihood.noise = torch.tensor(2e-4, dtype=F64)
    grown_mean, fresh_mean = model.posterior(x[:5]).mean, fresh.posterior(x[:5]).mean
    assert model.diagnostics["precond_rank"] == 8 and fresh.diagnostics["precond_rank"] == 2
    assert model.diagnostics["cg_iterations"] < fresh.diagnostics["cg_iterations"]
    model.solver = fg.Cholesky()
    exact_mean = model.posterior(x[:5]).mean
    torch.testing.assert_close(grown_mean, exact_mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(fresh_mean, exact_mean, atol=1e-4, rtol=0)


def test_eval_rank_sets_the_rank_of_the_posterior_mean_solve():
    """PivotedCholesky(eval_rank=...) preconditions the prediction solve at that rank (larger:
    fewer CG iterations, same mean), whatever rank training used; it survives save/load."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 2, dtype=F64, generator=g)
    y = torch.sin(6 * x).sum(-1) + 0.01 * torch.randn(300, dtype=F64, generator=g)
    means, iterations = {}, {}
    for eval_rank in (None, 100):
        solver = fg.CG(eval_tol=1e-6, precond=fg.PivotedCholesky(2, eval_rank=eval_rank), backend="dense")
        model = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF(lengthscale=0.08)), solver=solver)
        model.likelihood.noise = torch.tensor(2e-4, dtype=F64)
        means[eval_rank] = model.posterior(x[:5]).mean
        iterations[eval_rank] = model.diagnostics["cg_iterations"]
        assert model.diagnostics["precond_rank"] == (2 if eval_rank is None else 100)
    assert iterations[100] < iterations[None] / 2
    model.solver = fg.Cholesky()
    exact_mean = model.posterior(x[:5]).mean
    for mean in means.values():
        torch.testing.assert_close(mean, exact_mean, atol=1e-4, rtol=0)
    from flashgp.serialize import solver_from_config, solver_to_config
    config = fg.CG(precond=fg.PivotedCholesky(2, eval_rank=30))
    assert solver_from_config(solver_to_config(config)) == config
    with pytest.raises(ValueError, match="eval_rank"):
        fg.PivotedCholesky(2, eval_rank=-1)
