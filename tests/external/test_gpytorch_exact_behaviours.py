# Behaviours that GPyTorch's exact-GP regression tests check (test/examples/
# test_simple_gp_regression.py, test_batch_gp_regression.py, the fixed-noise and white-noise
# regression tests, gpytorch/test/model_test_case.py), checked here for flashgp.ExactGP, plus
# cross-checks against GPyTorch's ExactGP that tests/models/test_gpytorch_crosscheck.py does not
# already make (Matern 1/2 and 5/2 and product posteriors, fixed noise, batches, a training run).
import copy
import dataclasses
import math

import pytest
import torch

import flashgp as fg
from flashgp import kernels as K
from peer_cases import F64, assert_psd, exact_model, gen, mae, scaled_kernel, sine_data

gpytorch = pytest.importorskip("gpytorch")
gk = gpytorch.kernels


def fitted_sine_model(x, y, kernel=None, solver=None, likelihood=None, iters=50, setup=None):
    """GPyTorch's recipe: Scale(RBF) + constant mean, Adam at lr 0.1 for ``iters`` steps."""
    kernel = kernel if kernel is not None else K.Scale(K.RBF())
    model = fg.ExactGP(x, y, kernel, likelihood=likelihood, solver=solver)
    if setup is not None:
        setup(model)
    fg.fit(model, optimizer="adam", lr=0.1, iters=iters, progress=False, seed=0)
    return model


class GModel(gpytorch.models.ExactGP):
    def __init__(self, x, y, kernel, likelihood, batch_shape=torch.Size()):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=batch_shape)
        self.covar_module = kernel

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def gpytorch_mll(g_model, x, y):
    g_model.train()
    g_model.likelihood.train()
    with gpytorch.settings.max_cholesky_size(10**6):
        return gpytorch.mlls.ExactMarginalLogLikelihood(g_model.likelihood, g_model)(g_model(x), y)


def gpytorch_posterior(g_model, x_test, **likelihood_kwargs):
    """(latent mean, latent covariance, predictive variance) of GPyTorch at exact settings."""
    g_model.eval()
    g_model.likelihood.eval()
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6), gpytorch.settings.fast_pred_var(False):
        latent = g_model(x_test)
        predictive = g_model.likelihood(latent, **likelihood_kwargs)
        return latent.mean, latent.covariance_matrix, predictive.variance


def t(value):
    return torch.as_tensor(value, dtype=F64)


# ----- simple regression: train, then predict -----------------------------------------------------

@pytest.mark.parametrize("n, noise", [(11, 0.0), (100, 0.1)], ids=["11-noise-free", "100-noisy"])
def test_sine_regression_after_adam(n, noise):
    x, y, x_test, y_test = sine_data(n=n, noise=noise)
    model = fitted_sine_model(x, y)
    for name, p in model.named_parameters():  # every hyperparameter took part in the fit
        assert p.grad is not None and float(p.grad.norm()) > 0, name
    pred = model.predict(x_test)
    assert mae(pred.mean, y_test) < 0.05
    # the latent variance is small where the data are
    assert float(model.posterior(x_test).variance.max()) < 0.05 * float(model.kernel.outputscale.detach())


def test_sine_regression_from_far_initial_values():
    # GPyTorch starts this test at hyperparameters "they shouldn't be": lengthscale e, noise e
    x, y, x_test, y_test = sine_data(n=100, noise=0.1)

    def far(model):
        model.kernel.base.lengthscale = math.e
        model.likelihood.noise = math.e
    model = fitted_sine_model(x, y, setup=far)
    assert mae(model.predict(x_test).mean, y_test) < 0.05


@pytest.mark.parametrize("kind", ["matern05", "matern15", "matern25", "rq"])
def test_sine_regression_other_stationary_kernels(kind):
    x, y, x_test, y_test = sine_data(n=100, noise=0.1)
    model = fitted_sine_model(x, y, kernel=scaled_kernel(kind, None, 1.0, 1.0))
    assert mae(model.predict(x_test).mean, y_test) < 0.05


def test_periodic_kernel_extrapolates():
    # data over [0, 1.5]; predictions over the next 1.5 must carry the learned period on
    g = gen(1)
    x = torch.rand(60, 1, generator=g, dtype=F64) * 1.5
    y = torch.sin(2 * math.pi * x[:, 0] / 0.75) + 0.05 * torch.randn(60, generator=g, dtype=F64)
    x_test = torch.linspace(1.5, 3.0, 40, dtype=F64)[:, None]
    kernel = K.Scale(K.Periodic()).double()
    kernel.base.period = 0.7
    model = fitted_sine_model(x, y, kernel=kernel, iters=100)
    assert mae(model.predict(x_test).mean, torch.sin(2 * math.pi * x_test[:, 0] / 0.75)) < 0.05


def test_sine_regression_on_the_cg_path():
    x, y, x_test, y_test = sine_data(n=100, noise=0.1)
    model = fitted_sine_model(x, y, solver=fg.CG(precond=fg.PivotedCholesky(20)))
    pred = model.predict(x_test)
    assert model.diagnostics["path"] == "cg"
    assert mae(pred.mean, y_test) < 0.05


def test_training_follows_gpytorch():
    # the same start (every raw parameter 0, GPyTorch's default), loss and Adam: the same path
    x, y, _, _ = sine_data(n=11, noise=0.1)
    model = fg.ExactGP(x, y, K.Scale(K.RBF()), solver=fg.Cholesky(),
                       likelihood=fg.likelihoods.Gaussian(noise_floor=1e-4))  # GPyTorch's floor
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    g_model = GModel(x, y, gk.ScaleKernel(gk.RBFKernel()), likelihood).double()
    history = fg.fit(model, optimizer="adam", lr=0.1, iters=50, progress=False)
    optimizer = torch.optim.Adam(g_model.parameters(), lr=0.1)
    for _ in range(50):
        optimizer.zero_grad()
        loss = -gpytorch_mll(g_model, x, y)
        loss.backward()
        optimizer.step()
    ours, theirs = dict(model.named_parameters()), dict(g_model.named_parameters())
    names = {"kernel.raw_outputscale": "covar_module.raw_outputscale",
             "kernel.base.raw_lengthscale": "covar_module.base_kernel.raw_lengthscale",
             "likelihood.raw_noise": "likelihood.noise_covar.raw_noise", "mean.raw_constant": "mean_module.raw_constant"}
    for a, b in names.items():
        torch.testing.assert_close(ours[a].detach().reshape(-1), theirs[b].detach().reshape(-1), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(t(history.loss[-1]), loss.detach(), rtol=1e-6, atol=0)


def test_one_dimensional_training_inputs():
    # GPyTorch takes train_x = torch.linspace(0, 1, 11) as it is
    x, y, x_test, _ = sine_data()
    flat = exact_model(x[:, 0], y, scaled_kernel("rbf", None, 0.3, 1.2), 0.01)
    column = exact_model(x, y, scaled_kernel("rbf", None, 0.3, 1.2), 0.01)
    assert flat.train_x.shape == (11, 1)
    torch.testing.assert_close(flat.posterior(x_test[:, 0]).mean, column.posterior(x_test).mean, rtol=1e-12, atol=0)


def test_constructor_and_setter_give_the_same_model():
    # GPyTorch: initialize(noise=1e-3) and the nested name give equal likelihoods
    x, y, x_test, _ = sine_data()
    built = fg.ExactGP(x, y, K.Scale(K.RBF(lengthscale=0.3), outputscale=1.2),
                       likelihood=fg.likelihoods.Gaussian(noise=1e-3), solver=fg.Cholesky())
    assert float(built.likelihood.noise.detach()) == pytest.approx(1e-3, rel=1e-13)
    given = fg.ExactGP(x, y, K.Scale(K.RBF(lengthscale=1.0), outputscale=1.0))  # exact in float64
    assert float(given.kernel.outputscale.detach()) == 1.0
    assert float(given.kernel.base.lengthscale.detach()) == 1.0
    set_later = copy.deepcopy(built)
    set_later.likelihood.noise, set_later.kernel.base.lengthscale, set_later.kernel.outputscale = 1e-3, 0.3, 1.2
    torch.testing.assert_close(built.mll().detach(), set_later.mll().detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(built.posterior(x_test).mean, set_later.posterior(x_test).mean, rtol=1e-12, atol=1e-13)


# ----- posterior behaviour at given hyperparameters ----------------------------------------------

def test_tiny_lengthscale_and_noise_fit_the_data_and_nothing_else():
    # GPyTorch's "without optimization" test: lengthscale and noise e^-15
    x, y, _, _ = sine_data()
    kernel = scaled_kernel("rbf", None, math.exp(-15), 1.0)
    model = exact_model(x, y, kernel, math.exp(-15), mean=fg.means.Constant())
    pred = model.predict(x)
    torch.testing.assert_close(pred.mean, y, rtol=0, atol=1e-5)
    assert float(pred.variance.max()) < 1e-5
    away = model.posterior(torch.tensor([[1.1]], dtype=F64))  # nowhere near a training point
    torch.testing.assert_close(away.mean, torch.zeros(1, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(away.variance, kernel.outputscale.detach().reshape(1), rtol=1e-12, atol=0)


def test_far_from_the_data_the_posterior_is_the_prior():
    # GPyTorch predicts with the prior when it has no training data (mean 1.5, variance
    # outputscale + noise); a flashgp model always has data, so put them 10^4 lengthscales away
    x, y, _, _ = sine_data()
    kernel = scaled_kernel("matern25", None, 0.2, 0.8)
    model = exact_model(x + 2000.0, y, kernel, 0.3, mean=fg.means.Constant())
    model.mean.constant = 1.5
    x_test = torch.linspace(0, 1, 7, dtype=F64)[:, None]
    pred = model.predict(x_test)
    torch.testing.assert_close(pred.mean, torch.full((7,), 1.5, dtype=F64), rtol=1e-14, atol=0)
    torch.testing.assert_close(pred.variance, torch.full((7,), 0.8 + 0.3, dtype=F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(pred.covariance.to_dense(), kernel(x_test).detach(), rtol=1e-12, atol=1e-14)
    draws = pred.sample(20000, generator=gen(2))  # prior samples carry the prior's covariance
    prior = kernel(x_test).detach() + 0.3 * torch.eye(7, dtype=F64)
    sd = prior.diagonal().sqrt()
    se = ((torch.outer(sd, sd) ** 2 + prior**2) / 20000).sqrt()
    assert bool(((torch.cov(draws.T) - prior).abs() < 5 * se).all())
    assert bool(((draws.mean(0) - 1.5).abs() < 5 * sd / math.sqrt(20000)).all())


def tight_cg(**kwargs):
    """fg.CG solving to 1e-8, with variances certified to 1e-6 where CG has variance_tol."""
    if "variance_tol" in {f.name for f in dataclasses.fields(fg.CG)}:
        kwargs.setdefault("variance_tol", 1e-6)
    return fg.CG(eval_tol=1e-8, **kwargs)


def fixed_model(solver, noise=0.01):
    g = gen(3)
    x = torch.rand(200, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1]) + 0.05 * torch.randn(200, generator=g, dtype=F64)
    model = exact_model(x, y, scaled_kernel("matern25", 2, [0.8, 1.2], 1.3), noise, mean=fg.means.Constant(),
                        solver=solver)
    model.mean.constant = 0.1
    return model, torch.rand(40, 2, generator=g, dtype=F64) * 4.4 - 2.2


@pytest.mark.parametrize("solver", [fg.Cholesky(), fg.CG(eval_tol=1e-8), fg.CG(eval_tol=1e-8, exact_var_max=0)],
                         ids=["cholesky", "cg", "cg-love"])
def test_posterior_covariance_is_psd_and_matches_samples(solver):
    model, x_test = fixed_model(solver)
    post = model.posterior(x_test[:12])
    cov = post.covariance.to_dense()
    assert_psd(cov, rtol=1e-8)
    draws = post.sample(20000, generator=gen(4))
    sd = cov.diagonal().sqrt()
    se = ((torch.outer(sd, sd) ** 2 + cov**2) / 20000).sqrt()
    assert bool(((torch.cov(draws.T) - cov).abs() < 5 * se + 1e-10).all())
    assert bool(((draws.mean(0) - post.mean).abs() < 5 * sd / math.sqrt(20000) + 1e-10).all())


def test_cg_predictions_match_cholesky_at_a_tight_tolerance():
    exact, x_test = fixed_model(fg.Cholesky())
    cg, _ = fixed_model(tight_cg())
    ref, pred = exact.posterior(x_test), cg.posterior(x_test)
    assert cg.diagnostics["path"] == "cg"
    torch.testing.assert_close(pred.mean, ref.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(pred.variance, ref.variance, rtol=1e-5, atol=0)


def test_cg_predictions_match_cholesky_at_the_default_tolerance():
    # up to 73% off before CG(variance_tol) certified them (issue 25)
    exact, x_test = fixed_model(fg.Cholesky(), noise=1e-3)
    cg, _ = fixed_model(fg.CG(), noise=1e-3)
    ref, pred = exact.posterior(x_test), cg.posterior(x_test)
    torch.testing.assert_close(pred.mean, ref.mean, rtol=0, atol=1e-3)  # what eval_tol promises
    torch.testing.assert_close(pred.variance, ref.variance, rtol=1e-2, atol=0)  # latent, relative


def test_love_variances_follow_a_noise_change():
    # GPyTorch's fast_pred_var test: build the cache, raise the noise to softplus(3), predict again
    # (GPyTorch then checks that the predictive variance is close to the noise; here, more
    # strictly, that the latent variances are those of an exact solve at the new noise)
    model, x_test = fixed_model(fg.CG(exact_var_max=0))
    exact, _ = fixed_model(fg.Cholesky())
    before = model.posterior(x_test).variance
    torch.testing.assert_close(before, exact.posterior(x_test).variance, rtol=0.05, atol=0)
    big = float(torch.nn.functional.softplus(t(3.0)))
    model.likelihood.noise = exact.likelihood.noise = big
    pred, ref = model.predict(x_test), exact.predict(x_test)
    assert model.diagnostics["variance_method"].startswith("lanczos")
    assert bool((pred.variance - big > 2 * before).all())  # the data now pin f down far less
    torch.testing.assert_close(pred.variance - big, ref.variance - big, rtol=0.05, atol=0)


def test_predictions_follow_load_state_dict():
    model, x_test = fixed_model(fg.Cholesky())
    model.predict(x_test)  # cached
    other, _ = fixed_model(fg.Cholesky())
    other.likelihood.noise, other.kernel.base.lengthscale = 0.2, t([0.3, 0.5])
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(model.predict(x_test).variance, other.predict(x_test).variance, rtol=1e-12, atol=0)


@pytest.mark.parametrize("cycle", [True, False], ids=["train-eval", "no-cycle"])
def test_train_eval_cycle_drops_a_stale_cache(cycle):
    # an in-place change through .data (no version bump) is seen by the prediction cache with or
    # without GPyTorch's model.train() / model.eval() cycle
    model, x_test = fixed_model(fg.Cholesky())
    model.predict(x_test)  # cached
    model.likelihood.raw_noise.data.fill_(3.0)  # GPyTorch's own test changes the noise this way
    if cycle:
        model.train()
        model.eval()
    fresh, _ = fixed_model(fg.Cholesky())
    fresh.likelihood.raw_noise.data.fill_(3.0)
    torch.testing.assert_close(model.predict(x_test).variance, fresh.predict(x_test).variance, rtol=1e-12, atol=0)
    torch.testing.assert_close(model.posterior(x_test).variance, fresh.posterior(x_test).variance, rtol=1e-12, atol=0)


# ----- fixed (known) observation noise --------------------------------------------------------------

def test_fixed_noise_sine_regression():
    x, y, x_test, y_test = sine_data(n=100, noise=0.1)
    model = fitted_sine_model(x, y, likelihood=fg.likelihoods.FixedNoise(torch.full((100,), 0.01, dtype=F64)))
    assert "likelihood.raw_noise" not in dict(model.named_parameters())  # nothing to learn there
    test_noise = torch.linspace(0.01, 0.5, x_test.shape[0], dtype=F64)
    pred = model.predict(x_test, noise=test_noise)
    assert mae(pred.mean, y_test) < 0.05
    torch.testing.assert_close(pred.variance, model.posterior(x_test).variance + test_noise, rtol=1e-12, atol=0)


def test_fixed_noise_matches_gpytorch():
    g = gen(5)
    x = torch.rand(80, 2, generator=g, dtype=F64) * 3
    y = torch.cos(2 * x[:, 0]) + x[:, 1] + 0.1 * torch.randn(80, generator=g, dtype=F64)
    noise = 0.01 + 0.1 * torch.rand(80, generator=g, dtype=F64)
    x_test, test_noise = torch.rand(12, 2, generator=g, dtype=F64) * 3.4 - 0.2, torch.full((12,), 0.05, dtype=F64)
    ls = t([[0.7, 1.4]])
    kernel = K.Scale(K.RBF(ard_dims=2)).double()
    model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.FixedNoise(noise), solver=fg.Cholesky())
    kernel.base.lengthscale, kernel.outputscale, model.mean.constant = ls, 1.1, 0.4
    g_kernel = gk.ScaleKernel(gk.RBFKernel(ard_num_dims=2))
    g_model = GModel(x, y, g_kernel, gpytorch.likelihoods.FixedNoiseGaussianLikelihood(noise)).double()
    g_kernel.base_kernel.lengthscale, g_kernel.outputscale, g_model.mean_module.constant = ls, t(1.1), t(0.4)
    torch.testing.assert_close(model.mll().detach(), gpytorch_mll(g_model, x, y).detach(), rtol=1e-10, atol=0)
    mean, cov, pred_var = gpytorch_posterior(g_model, x_test, noise=test_noise)
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(post.covariance.to_dense(), cov, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(model.predict(x_test, noise=test_noise).variance, pred_var, rtol=1e-8, atol=0)


# ----- batches of independent GPs -----------------------------------------------------------------

def batch_model(x, y, b, d=1, **kwargs):
    return fg.ExactGP(x, y, K.Scale(K.RBF(ard_dims=d, batch_shape=b)), likelihood=fg.likelihoods.Gaussian(batch_shape=b),
                      mean=fg.means.Constant(batch_shape=b), **kwargs)


@pytest.mark.parametrize("data", ["gpytorch", "100-points"])  # "gpytorch" fit as all noise before
# the data-aware initial values (issue 25)
def test_batch_of_gps_trained_together(data):
    # GPyTorch's batch test: one set over two periods and one over one period, 11 points each
    n, noise = (11, 0.01) if data == "gpytorch" else (100, 0.1)
    first = sine_data(n=n, high=2.0, noise=noise, seed=6)
    second = sine_data(n=n, high=1.0, noise=noise, seed=7)
    x, y = torch.stack([first[0], second[0]]), torch.stack([first[1], second[1]])
    model = batch_model(x, y, (2,))
    fg.fit(model, optimizer="adam", lr=0.1, iters=50, progress=False)
    pred = model.predict(torch.stack([first[2], second[2]]))
    assert pred.mean.shape == (2, 51)
    assert mae(pred.mean[0], first[3]) < 0.05 and mae(pred.mean[1], second[3]) < 0.05


def test_single_model_predicts_a_batch_of_test_sets():
    x, y, _, _ = sine_data(n=30, noise=0.05)
    model = exact_model(x, y, scaled_kernel("rbf", None, 0.25, 1.0), 0.01, mean=fg.means.Constant())
    a, b = torch.linspace(0, 1, 9, dtype=F64)[:, None], torch.linspace(-0.5, 1.5, 9, dtype=F64)[:, None]
    post = model.posterior(torch.stack([a, b]))
    assert post.mean.shape == (2, 9) and post.covariance.to_dense().shape == (2, 9, 9)
    for i, part in enumerate((a, b)):
        single = model.posterior(part)
        torch.testing.assert_close(post.mean[i], single.mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(post.variance[i], single.variance, rtol=1e-10, atol=1e-14)


def test_batch_matches_gpytorch():
    g = gen(8)
    x = torch.rand(2, 60, 2, generator=g, dtype=F64) * 2
    y = torch.sin(3 * x[..., 0]) * x[..., 1] + 0.1 * torch.randn(2, 60, generator=g, dtype=F64)
    x_test = torch.rand(2, 10, 2, generator=g, dtype=F64) * 2.2 - 0.1
    ls, out, noise, const = t([[[0.5, 0.9]], [[1.2, 0.4]]]), t([0.8, 1.5]), t([0.02, 0.2]), t([0.1, -0.3])
    model = batch_model(x, y, (2,), d=2, solver=fg.Cholesky())
    model.kernel.base.lengthscale, model.kernel.outputscale = ls, out
    model.likelihood.noise, model.mean.constant = noise, const
    b = torch.Size([2])
    g_kernel = gk.ScaleKernel(gk.RBFKernel(ard_num_dims=2, batch_shape=b), batch_shape=b)
    likelihood = gpytorch.likelihoods.GaussianLikelihood(batch_shape=b)
    g_model = GModel(x, y, g_kernel, likelihood, batch_shape=b).double()
    g_kernel.base_kernel.lengthscale, g_kernel.outputscale = ls, out
    likelihood.noise, g_model.mean_module.constant = noise[:, None], const
    torch.testing.assert_close(model.mll().detach(), gpytorch_mll(g_model, x, y).detach(), rtol=1e-10, atol=0)
    mean, cov, pred_var = gpytorch_posterior(g_model, x_test)
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(post.covariance.to_dense(), cov, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(model.predict(x_test).variance, pred_var, rtol=1e-8, atol=0)


def test_two_batch_dimensions_equal_separate_gps():
    # GPyTorch's model tests run batch shapes (3,) and (2, 3)
    g = gen(9)
    x = torch.rand(2, 3, 25, 1, generator=g, dtype=F64)
    y = torch.sin(6 * x[..., 0]) + 0.1 * torch.randn(2, 3, 25, generator=g, dtype=F64)
    x_test = torch.rand(2, 3, 6, 1, generator=g, dtype=F64)
    ls = 0.2 + torch.rand(2, 3, 1, 1, generator=g, dtype=F64)
    noise = 0.01 + 0.1 * torch.rand(2, 3, generator=g, dtype=F64)
    model = batch_model(x, y, (2, 3), solver=fg.Cholesky())
    model.kernel.base.lengthscale, model.likelihood.noise = ls, noise
    model.kernel.outputscale = 1.0  # the default 1.0 is stored in float32 (issue 25 (c))
    mll, post = model.mll(), model.posterior(x_test)
    assert mll.shape == (2, 3) and post.mean.shape == (2, 3, 6) and post.covariance.to_dense().shape == (2, 3, 6, 6)
    for i in range(2):
        for j in range(3):
            single = exact_model(x[i, j], y[i, j], scaled_kernel("rbf", 1, ls[i, j], 1.0), noise[i, j],
                                 mean=fg.means.Constant())
            torch.testing.assert_close(mll[i, j].detach(), single.mll().detach(), rtol=1e-12, atol=0)
            sp = single.posterior(x_test[i, j])
            torch.testing.assert_close(post.mean[i, j], sp.mean, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(post.covariance.to_dense()[i, j], sp.covariance.to_dense(), rtol=1e-8, atol=1e-12)
    fg.fit(model, iters=3, progress=False)  # trains as one model: every member's parameters move
    assert bool((model.kernel.base.lengthscale.detach() != ls).all())


# ----- posteriors against GPyTorch for kernels the existing cross-check leaves out -----------------

def kernel_pair(kind):
    """(flashgp kernel, GPyTorch kernel) at equal hyperparameters, both float64."""
    ls = t([0.6, 1.3])
    if kind.startswith("matern"):
        nu = {"matern05": 0.5, "matern25": 2.5}[kind]
        f, g = K.Scale(K.Matern(nu=nu, ard_dims=2)).double(), gk.ScaleKernel(gk.MaternKernel(nu=nu, ard_num_dims=2)).double()
        f.base.lengthscale, g.base_kernel.lengthscale = ls, ls[None]
        f.outputscale, g.outputscale = 0.9, t(0.9)
        return f, g
    # product: RBF on column 0 times periodic on column 1 (GPyTorch divides sin^2 by l, not l^2)
    f = K.Scale(K.RBF(active_dims=[0]) * K.Periodic(active_dims=[1])).double()
    g = gk.ScaleKernel(gk.RBFKernel(active_dims=[0]) * gk.PeriodicKernel(active_dims=[1])).double()
    f.base.kernels[0].lengthscale, g.base_kernel.kernels[0].lengthscale = 0.6, t(0.6)
    f.base.kernels[1].lengthscale, g.base_kernel.kernels[1].lengthscale = 0.9, t(0.81)
    f.base.kernels[1].period, g.base_kernel.kernels[1].period_length = 1.3, t(1.3)
    f.outputscale, g.outputscale = 1.2, t(1.2)
    return f, g


@pytest.mark.parametrize("kind", ["matern05", "matern25", "product"])
def test_posterior_matches_gpytorch(kind):
    # at Matern 1/2's cusp GPyTorch's distances carry round-off: its mll here is 6e-9 (relative)
    # from a direct float64 evaluation, which flashgp's matches to 1e-15
    rtol = 1e-7 if kind == "matern05" else 1e-10
    g = gen(10)
    x = torch.rand(90, 2, generator=g, dtype=F64) * 3 - 1.5
    y = torch.sin(2 * x[:, 0]) + torch.cos(3 * x[:, 1]) + 0.1 * torch.randn(90, generator=g, dtype=F64)
    x_test = torch.rand(15, 2, generator=g, dtype=F64) * 3.4 - 1.7
    f_kernel, g_kernel = kernel_pair(kind)
    model = exact_model(x, y, f_kernel, 0.05, mean=fg.means.Constant(0.0))  # GPyTorch's start
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    g_model = GModel(x, y, g_kernel, likelihood).double()
    likelihood.noise = t(0.05)
    torch.testing.assert_close(model.mll().detach(), gpytorch_mll(g_model, x, y).detach(), rtol=rtol, atol=0)
    mean, cov, pred_var = gpytorch_posterior(g_model, x_test)
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, mean, rtol=rtol, atol=rtol * 1e-2)
    torch.testing.assert_close(post.covariance.to_dense(), cov, rtol=100 * rtol, atol=rtol * 1e-2)
    torch.testing.assert_close(model.predict(x_test).variance, pred_var, rtol=100 * rtol, atol=0)
