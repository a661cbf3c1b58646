# The priors of flashgp.priors: log densities against scipy.stats and torch.distributions, modes,
# means and draws, argument checks, configs; attaching them to modules (set_prior) and the log
# prior of a model, also inside log_space.
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import flashgp as fg
from flashgp.log_space import log_space
from flashgp.priors import Gamma, HalfCauchy, LogNormal, Normal, prior_from_config

F64 = torch.float64


def points(n=200, low=-3.0, high=6.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, generator=gen, dtype=F64)


def t(*values):
    return [torch.tensor(v, dtype=F64) for v in values]


CASES = {  # prior, the scipy distribution, the torch distribution (float64 arguments)
    "normal": (Normal(0.3, 1.7), stats.norm(0.3, 1.7), torch.distributions.Normal(*t(0.3, 1.7))),
    "lognormal": (LogNormal(-0.4, 0.8), stats.lognorm(s=0.8, scale=math.exp(-0.4)),
                  torch.distributions.LogNormal(*t(-0.4, 0.8))),
    "gamma": (Gamma(3.0, 6.0), stats.gamma(3.0, scale=1 / 6.0), torch.distributions.Gamma(*t(3.0, 6.0))),
    "gamma<1": (Gamma(0.7, 2.0), stats.gamma(0.7, scale=0.5), torch.distributions.Gamma(*t(0.7, 2.0))),
    "halfcauchy": (HalfCauchy(0.9), stats.halfcauchy(scale=0.9), torch.distributions.HalfCauchy(*t(0.9))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_log_prob_matches_scipy_and_torch(case):
    prior, reference, torch_dist = CASES[case]
    x = points()
    got = prior.log_prob(x)
    assert got.dtype == F64 and got.shape == x.shape
    expected = torch.from_numpy(reference.logpdf(x.numpy()))
    inside = torch.isfinite(expected)
    assert inside.any() and torch.equal(torch.isfinite(got), inside)
    torch.testing.assert_close(got[inside], expected[inside], rtol=1e-12, atol=1e-12)
    assert torch.all(got[~inside] == -math.inf)
    torch.testing.assert_close(got[inside], torch_dist.log_prob(x[inside]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_log_prob_is_differentiable_with_finite_gradients_everywhere(case):
    prior = CASES[case][0]
    x = points(50).requires_grad_(True)
    value = prior.log_prob(x)
    value[torch.isfinite(value)].sum().backward()
    assert torch.all(torch.isfinite(x.grad))


def test_tensor_arguments_broadcast_with_the_value():
    loc = torch.tensor([0.0, 1.0, -2.0], dtype=F64)
    prior = LogNormal(loc, 0.5)
    assert prior.batch_shape == (3,)
    x = torch.tensor([[0.5, 2.0, 0.1]], dtype=F64)
    got = prior.log_prob(x)
    assert got.shape == (1, 3)
    expected = stats.lognorm(s=0.5, scale=np.exp(loc.numpy())).logpdf(x.numpy())
    torch.testing.assert_close(got, torch.from_numpy(expected), rtol=1e-12, atol=0)
    assert prior.log_prob(1.0).dtype == F64  # numbers as float64
    assert prior.log_prob(torch.ones(3)).dtype == torch.float32  # tensors keep their dtype


@pytest.mark.parametrize("case", list(CASES))
def test_mode_and_mean(case):
    prior, reference, _ = CASES[case]
    assert float(prior.mean) == pytest.approx(reference.mean(), rel=1e-12)
    grid = np.linspace(1e-6, 5, 200001)
    if case != "gamma<1":  # its density is unbounded at its mode 0
        mode = grid[np.argmax(reference.logpdf(grid))] if prior.support != "real" else reference.mean()
        assert float(prior.mode) == pytest.approx(mode, abs=1e-4)
    else:
        assert float(prior.mode) == 0.0


def test_halfcauchy_mean_is_infinite():
    assert math.isinf(float(HalfCauchy(1.0).mean)) and float(HalfCauchy(1.0).mode) == 0.0


@pytest.mark.parametrize("case", list(CASES))
def test_samples_have_the_shape_follow_the_generator_and_the_distribution(case):
    prior, reference, _ = CASES[case]
    first = prior.sample((4000,), generator=torch.Generator().manual_seed(3))
    again = prior.sample((4000,), generator=torch.Generator().manual_seed(3))
    assert first.shape == (4000,) and first.dtype == F64 and torch.equal(first, again)
    assert not torch.equal(first, prior.sample((4000,), generator=torch.Generator().manual_seed(4)))
    assert stats.kstest(first.numpy(), reference.cdf).pvalue > 1e-3
    assert prior.sample().shape == () and prior.sample(5).shape == (5,)
    batched = type(prior)(**{k: torch.full((2, 3), float(getattr(prior, k))) for k in prior.arguments})
    assert batched.sample((7,)).shape == (7, 2, 3)


def test_draws_without_a_generator_use_the_global_one():
    for prior in (Normal(0.0, 1.0), Gamma(2.0, 1.0)):
        torch.manual_seed(5)
        a = prior.sample(3)
        b = prior.sample(3)
        torch.manual_seed(5)
        assert torch.equal(prior.sample(3), a) and not torch.equal(a, b)


@pytest.mark.parametrize("make, match", [
    (lambda: Normal(0.0, 0.0), r"Normal: scale: expected finite numbers > 0, got 0.0"),
    (lambda: Normal(math.nan, 1.0), r"Normal: loc: expected finite numbers, got nan"),
    (lambda: LogNormal(0.0, -1.0), r"LogNormal: scale: expected finite numbers > 0"),
    (lambda: Gamma(0.0, 1.0), r"Gamma: concentration: expected finite numbers > 0"),
    (lambda: Gamma(1.0, math.inf), r"Gamma: rate: expected finite numbers > 0"),
    (lambda: HalfCauchy(torch.tensor([1.0, -2.0])), r"HalfCauchy: scale: expected finite numbers > 0, got \[1.0, -2.0\]"),
    (lambda: Normal(torch.zeros(2), torch.ones(3)), r"Normal: the arguments' shapes do not broadcast \(loc \(2,\), scale \(3,\)\)"),
])
def test_bad_arguments_raise_value_errors_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, match", [
    (lambda: Normal("0", 1.0), r"Normal: loc: expected finite numbers \(a number or a tensor\)"),
    (lambda: LogNormal(0.0, True), r"LogNormal: scale: expected"),
    (lambda: Gamma(None, 1.0), r"Gamma: concentration: expected"),
    (lambda: HalfCauchy(torch.tensor([1j])), r"HalfCauchy: scale: expected"),
    (lambda: Normal(0.0, 1.0).log_prob("x"), r"value: expected real numbers"),
    (lambda: Normal(0.0, 1.0).sample(generator=3), r"generator: expected a CPU torch.Generator"),
])
def test_bad_argument_types_raise_type_errors(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_bad_sample_shapes_are_refused():
    for shape in (-1, (2, -1), "3", (1.5,), True):
        with pytest.raises(ValueError, match=r"shape: expected an int >= 0"):
            Normal(0.0, 1.0).sample(shape)


@pytest.mark.parametrize("prior", [Normal(0.5, 2.0), LogNormal(torch.tensor([0.1, 0.2]), 1.0), Gamma(3.0, 6.0),
                                   HalfCauchy(torch.tensor([[1.0], [2.5]]))])
def test_configs_are_json_and_rebuild_the_prior(prior):
    config = json.loads(json.dumps(prior.to_config(), allow_nan=False))
    rebuilt = prior_from_config(config)
    assert rebuilt == prior and type(rebuilt) is type(prior) and repr(rebuilt) == repr(prior)
    x = points(20, 0.1, 3.0).reshape(20, 1, 1)
    torch.testing.assert_close(rebuilt.log_prob(x), prior.log_prob(x), rtol=0, atol=0)


@pytest.mark.parametrize("config, match", [
    ({"type": "Beta", "a": 1.0}, r"prior: unknown type 'Beta'; expected one of \['Gamma', 'HalfCauchy', 'LogNormal', 'Normal'\]"),
    ({"type": "os.system", "loc": 0}, r"unknown type 'os.system'"),
    ({"loc": 0.0, "scale": 1.0}, r"unknown type None"),
    ({"type": "Normal", "loc": 0.0}, r"a Normal takes the keys \['loc', 'scale', 'type'\]"),
    ({"type": "Normal", "loc": 0.0, "scale": 1.0, "x": 1}, r"takes the keys"),
    ({"type": "Normal", "loc": "0", "scale": 1.0}, r"Normal loc: expected a number or nested lists"),
    ({"type": "Normal", "loc": True, "scale": 1.0}, r"Normal loc: expected a number"),
    ({"type": "Normal", "loc": [[0.0], [1.0, 2.0]], "scale": 1.0}, r"Normal: loc: expected"),
    ({"type": "Gamma", "concentration": -1, "rate": 1}, r"Gamma: concentration: expected finite numbers > 0"),
])
def test_bad_configs_are_refused(config, match):
    with pytest.raises(ValueError, match=match):
        prior_from_config(config)
    with pytest.raises(TypeError, match=r"prior: expected a dict with a 'type', got list"):
        prior_from_config([1, 2])


# ----- attaching ----------------------------------------------------------------------------------

def model(n=12, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=F64)
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n, generator=gen, dtype=F64)
    return fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF(ard_dims=d)), solver=fg.Cholesky())


def lp(module) -> float:
    return float(fg.priors.log_prior(module).detach())


def test_set_prior_attaches_replaces_and_removes():
    m = model()
    base = m.kernel.base
    assert base.priors == {} and fg.priors.attached(m) == [] and not fg.priors.has_priors(m)
    prior = LogNormal(0.0, 1.0)
    base.set_prior("lengthscale", prior)
    assert base.priors == {"lengthscale": (prior, False)}
    base.set_prior("lengthscale", Gamma(2.0, 1.0), raw=True)
    assert base.priors == {"lengthscale": (Gamma(2.0, 1.0), True)}
    m.likelihood.set_prior("noise", HalfCauchy(0.1))
    m.mean.set_prior("constant", Normal(0.0, 2.0))
    assert [(path, name, raw) for path, name, _, raw in fg.priors.attached(m)] == [
        ("kernel.base", "lengthscale", True), ("likelihood", "noise", False), ("mean", "constant", False)]
    base.set_prior("lengthscale", None)
    base.set_prior("lengthscale", None)  # removing what is not there: nothing happens
    assert base.priors == {} and len(fg.priors.attached(m)) == 2
    base.priors["x"] = 1  # a copy
    assert base.priors == {}


def test_log_prior_sums_every_element_at_the_current_values():
    m = model(d=3)
    base, likelihood = m.kernel.base, m.likelihood
    base.lengthscale = torch.tensor([0.3, 1.2, 2.0], dtype=F64)
    likelihood.noise = 0.05
    m.mean.constant = 0.7
    locs = torch.tensor([0.0, 0.5, -0.5], dtype=F64)
    base.set_prior("lengthscale", LogNormal(locs, 0.8))
    likelihood.set_prior("noise", Gamma(1.1, 0.05))
    m.kernel.set_prior("outputscale", Normal(1.0, 0.5), raw=True)
    m.mean.set_prior("constant", Normal(0.0, 2.0))
    expected = (stats.lognorm(s=0.8, scale=np.exp(locs.numpy())).logpdf([0.3, 1.2, 2.0]).sum()
                + stats.gamma(1.1, scale=20).logpdf(0.05) + stats.norm(0, 2).logpdf(0.7)
                + stats.norm(1.0, 0.5).logpdf(float(m.kernel.raw_outputscale.detach())))
    value = fg.priors.log_prior(m)
    assert value.shape == () and float(value.detach()) == pytest.approx(expected, rel=1e-12)
    value.backward()
    assert base.raw_lengthscale.grad is not None and torch.all(base.raw_lengthscale.grad != 0)
    assert m.mean.raw_constant.grad is not None
    empty = model()
    assert lp(empty) == 0.0 and fg.priors.log_prior(empty).dtype == F64


def test_batch_elements_each_count():
    likelihood = fg.likelihoods.Gaussian(noise=torch.tensor([0.1, 0.2, 0.4]), batch_shape=(3,))
    likelihood.set_prior("noise", LogNormal(-1.0, 1.0))
    expected = stats.lognorm(s=1.0, scale=math.exp(-1.0)).logpdf([0.1, 0.2, 0.4]).sum()
    assert lp(likelihood) == pytest.approx(expected, rel=1e-6)


def test_plain_parameters_of_multitask_kernels_take_priors():
    kernel = fg.kernels.Multitask(fg.kernels.RBF(), num_tasks=3, rank=1)
    kernel.set_prior("task_factor", Normal(0.0, 1.0))
    kernel.set_prior("task_variance", Gamma(2.0, 2.0))
    w, v = kernel.task_factor.detach().double(), kernel.task_variance.detach().double()
    expected = stats.norm(0, 1).logpdf(w.numpy()).sum() + stats.gamma(2.0, scale=0.5).logpdf(v.numpy()).sum()
    assert lp(kernel) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.kernel.set_prior("lengthscale", Normal(0, 1)), ValueError,
     r"name: Scale has no hyperparameter 'lengthscale'; its hyperparameters: outputscale .*model.kernel.base"),
    (lambda m: m.kernel.base.set_prior("lenghtscale", None), ValueError, r"RBF has no hyperparameter 'lenghtscale'"),
    (lambda m: m.kernel.base.set_prior("raw_lengthscale", Normal(0, 1)), ValueError,
     r"'raw_lengthscale' is the raw tensor .* use set_prior\('lengthscale', prior, raw=True\)"),
    (lambda m: m.mean.set_prior("constant", Normal(0, 1), raw=True), ValueError,
     r"raw: Constant.constant is a plain parameter .* pass raw=False"),
    (lambda m: m.kernel.base.set_prior("training", Normal(0, 1)), ValueError, r"no hyperparameter 'training'"),
    (lambda m: m.kernel.base.set_prior("lengthscale", Normal(torch.zeros(3), 1.0)), ValueError,
     r"batch shape \(3,\), which does not broadcast into the shape \(1, 2\) of RBF.lengthscale"),
    (lambda m: m.likelihood.set_prior("noise", Normal(torch.zeros(2), 1.0)), ValueError, r"shape \(\) of Gaussian.noise"),
    (lambda m: m.kernel.base.set_prior("lengthscale", torch.distributions.Normal(0, 1)), TypeError,
     r"prior: expected a flashgp.priors prior"),
    (lambda m: m.kernel.base.set_prior(3, None), TypeError, r"name: expected a hyperparameter name"),
    (lambda m: m.kernel.base.set_prior("lengthscale", None, raw="yes"), TypeError, r"raw: expected True or False"),
])
def test_set_prior_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(model())


def test_a_per_dimension_prior_fits_an_ard_lengthscale():
    m = model(d=2)
    m.kernel.base.set_prior("lengthscale", LogNormal(torch.tensor([0.0, 1.0]), 1.0))
    assert fg.priors.log_prior(m).shape == ()


def test_priors_read_the_right_values_inside_log_space():
    m = model(d=2)
    m.kernel.base.set_prior("lengthscale", LogNormal(0.0, 1.0))
    m.kernel.set_prior("outputscale", Normal(0.5, 1.0), raw=True)
    m.likelihood.set_prior("noise", Gamma(1.1, 0.05))
    outside = lp(m)
    with log_space(m):
        inside = fg.priors.log_prior(m)
        assert float(inside.detach()) == pytest.approx(outside, rel=1e-12)
        inside.backward()  # reaches the log-space parameters
        assert all(p.grad is not None for p in m.parameters() if p is not m.mean.raw_constant)
    assert lp(m) == pytest.approx(outside, rel=1e-12)


def test_botorch_defaults():
    defaults = fg.priors.botorch_defaults(3)
    assert defaults["lengthscale"] == LogNormal(math.sqrt(2) + 0.5 * math.log(3), math.sqrt(3))
    assert defaults["noise"] == LogNormal(-4.0, 1.0)
    assert defaults["noise_floor"] == 1e-4 and defaults["lengthscale_floor"] == 0.025
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match=r"d: expected a positive int"):
            fg.priors.botorch_defaults(bad)
