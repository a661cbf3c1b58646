# fg.priors.botorch_defaults against BoTorch's SingleTaskGP: at the same hyperparameter values the
# log prior equals the sum of GPyTorch's prior log densities, and n mll + log prior equals n times
# GPyTorch's ExactMarginalLogLikelihood (which adds the priors and divides by n).
import math
import warnings

import pytest
import torch

import flashgp as fg

botorch = pytest.importorskip("botorch")
gpytorch = pytest.importorskip("gpytorch")
from botorch.models import SingleTaskGP  # noqa: E402
from gpytorch.mlls import ExactMarginalLogLikelihood  # noqa: E402

F64 = torch.float64
N, D = 20, 3
VALUES = {"lengthscale": [0.4, 1.3, 0.8], "noise": 0.03, "constant": 0.2}


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(N, D, generator=gen, dtype=F64)
    y = torch.sin(3 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * torch.randn(N, generator=gen, dtype=F64)
    return x, y


@pytest.fixture(autouse=True)
def float64_priors():
    """GPyTorch makes a prior's arguments in the default dtype: in float32 they would be rounded
    (loc = sqrt(2) + log(3) / 2 to 1.9635197); build BoTorch's models with float64 ones."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(before)


def single_task_gp(x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the targets are not standardized; no transform is wanted
        return SingleTaskGP(x, y.unsqueeze(-1), outcome_transform=None)


def botorch_model(x, y):
    model = single_task_gp(x, y)
    model.covar_module.lengthscale = torch.tensor([VALUES["lengthscale"]], dtype=F64)
    model.likelihood.noise = torch.tensor([VALUES["noise"]], dtype=F64)
    model.mean_module.constant = torch.tensor(VALUES["constant"], dtype=F64)
    return model


def flashgp_model(x, y):
    defaults = fg.priors.botorch_defaults(D)
    kernel = fg.kernels.RBF(ard_dims=D, lengthscale=torch.tensor(VALUES["lengthscale"], dtype=F64))
    likelihood = fg.likelihoods.Gaussian(noise=VALUES["noise"], noise_floor=defaults["noise_floor"])
    model = fg.ExactGP(x, y, kernel, likelihood=likelihood, mean=fg.means.Constant(VALUES["constant"]),
                       solver=fg.Cholesky())
    model.kernel.set_prior("lengthscale", defaults["lengthscale"])
    model.likelihood.set_prior("noise", defaults["noise"])
    return model


def test_the_defaults_are_botorchs_priors():
    x, y = data()
    reference = botorch_model(x, y)
    priors = {name: prior for name, _, prior, _, _ in reference.named_priors()}
    lengthscale = priors["covar_module.lengthscale_prior"]
    noise = priors["likelihood.noise_covar.noise_prior"]
    defaults = fg.priors.botorch_defaults(D)
    assert float(defaults["lengthscale"].loc) == pytest.approx(float(lengthscale.loc), rel=1e-15)
    assert float(defaults["lengthscale"].scale) == pytest.approx(float(lengthscale.scale), rel=1e-15)
    assert float(defaults["noise"].loc) == float(noise.loc) and float(defaults["noise"].scale) == float(noise.scale)
    constraint = reference.likelihood.noise_covar.raw_noise_constraint
    assert defaults["noise_floor"] == float(constraint.lower_bound)
    assert defaults["lengthscale_floor"] == float(reference.covar_module.raw_lengthscale_constraint.lower_bound)
    # BoTorch starts at the priors' modes
    fresh = single_task_gp(x, y)
    torch.testing.assert_close(fresh.covar_module.lengthscale.detach(),
                               defaults["lengthscale"].mode.expand(1, D), rtol=1e-12, atol=0)
    assert float(fresh.likelihood.noise.detach()) == pytest.approx(float(defaults["noise"].mode), rel=1e-12)


def test_log_prior_equals_gpytorchs_priors():
    x, y = data()
    reference = botorch_model(x, y)
    expected = sum(prior.log_prob(closure(module)).sum() for _, module, prior, closure, _ in reference.named_priors())
    model = flashgp_model(x, y)
    torch.testing.assert_close(model.kernel.lengthscale.detach(), reference.covar_module.lengthscale.detach(),
                               rtol=1e-14, atol=0)
    assert float(model.likelihood.noise.detach()) == pytest.approx(float(reference.likelihood.noise.detach()), rel=1e-14)
    assert float(fg.priors.log_prior(model).detach()) == pytest.approx(float(expected.detach()), rel=1e-10)


def test_mll_plus_log_prior_equals_botorchs_marginal_log_likelihood():
    x, y = data()
    reference = botorch_model(x, y)
    reference.train()
    mll = ExactMarginalLogLikelihood(reference.likelihood, reference)
    with gpytorch.settings.max_cholesky_size(10_000):
        expected = float(mll(reference(x), reference.train_targets).detach()) * N
    model = flashgp_model(x, y)
    got = float((model.mll() * N + fg.priors.log_prior(model)).detach())
    assert got == pytest.approx(expected, rel=1e-8)
    # and fg.fit's objective is its negative per point
    loss = fg.priors.objective(model, model.loss().sum())
    assert float(loss.detach()) == pytest.approx(-expected / N, rel=1e-8)
    assert math.isfinite(got)
