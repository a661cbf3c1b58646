# Likelihood configurations (flashgp.serialize): round trips through JSON and the state dict
# for the new likelihoods; the Gaussian and FixedNoise formats unchanged; bad configs refused.
import json

import pytest
import torch

from flashgp.likelihoods import Bernoulli, FixedNoise, Gaussian, StudentT
from flashgp.serialize import ConfigError, likelihood_from_config, likelihood_to_config

D = torch.float64


def round_trip(likelihood):
    """What fg.save/fg.load do for a likelihood: config through JSON, tensors through the state dict."""
    text = json.dumps(likelihood_to_config(likelihood), allow_nan=False)
    rebuilt = likelihood_from_config(json.loads(text)).to(D)
    rebuilt.load_state_dict(likelihood.state_dict(), strict=True)
    return text, rebuilt


def test_bernoulli_round_trip():
    text, rebuilt = round_trip(Bernoulli(points=37))
    assert json.loads(text) == {"type": "Bernoulli", "args": {"link": "probit", "points": 37}}
    assert type(rebuilt) is Bernoulli and rebuilt.points == 37 and rebuilt.link == "probit"
    # files written before the logit link existed hold {"points"} only: probit
    old = likelihood_from_config({"type": "Bernoulli", "args": {"points": 37}})
    assert type(old) is Bernoulli and old.link == "probit" and old.points == 37
    y, mean, var = (torch.tensor(v, dtype=D) for v in ([0.0, 1.0], [0.3, -1.0], [2.0, 0.5]))
    expected = Bernoulli(points=37).expected_log_prob(y, mean, var)
    assert torch.equal(rebuilt.expected_log_prob(y, mean, var), expected)


def test_student_t_round_trip():
    lik = StudentT(df=2.5, scale=torch.tensor([0.3, 1.7]), batch_shape=(2,), points=40, learn_df=False).double()
    lik.raw_scale.requires_grad_(False)  # (freezing travels in the model file, not here)
    text, rebuilt = round_trip(lik)
    assert json.loads(text) == {"type": "StudentT", "args": {"df": 2.5, "learn_df": False, "batch_shape": [2],
                                                             "points": 40}}
    assert type(rebuilt) is StudentT and rebuilt.df == 2.5 and rebuilt.points == 40 and not rebuilt.learn_df
    assert rebuilt.batch_shape == (2,) and torch.equal(rebuilt.scale, lik.scale)
    y, mean, var = torch.randn(5, dtype=D), torch.randn(5, dtype=D), torch.rand(5, dtype=D)
    assert torch.equal(rebuilt.marginal_log_prob(y, mean, var), lik.marginal_log_prob(y, mean, var))
    assert "scale" not in rebuilt._unset  # a loaded value counts as given


def test_gaussian_and_fixed_noise_formats_unchanged():
    # the exact text older model files hold, which must keep loading
    gauss = Gaussian(noise=0.5, noise_floor=1e-6, batch_shape=(3,))
    assert json.dumps(likelihood_to_config(gauss)) == \
        '{"type": "Gaussian", "args": {"noise_floor": 1e-06, "batch_shape": [3]}}'
    fixed = FixedNoise(torch.full((2, 4), 0.1))
    assert json.dumps(likelihood_to_config(fixed)) == '{"type": "FixedNoise", "args": {"shape": [2, 4]}}'
    for lik in (gauss, fixed):
        _, rebuilt = round_trip(lik.double())
        assert type(rebuilt) is type(lik) and torch.equal(rebuilt.noise_diag(4), lik.noise_diag(4))


@pytest.mark.parametrize("config,match", [
    ({"type": "Bernoulli", "args": {}}, "expected arguments"),
    ({"type": "Bernoulli", "args": {"points": 20, "link": "logit", "extra": 1}}, "expected arguments"),
    ({"type": "Bernoulli", "args": {"points": 20, "link": "cauchit"}}, "link"),
    ({"type": "Bernoulli", "args": {"points": 20, "link": 1}}, "link"),
    ({"type": "Bernoulli", "args": {"points": 2.0}}, "points"),
    ({"type": "Bernoulli", "args": {"points": 0}}, "points"),
    ({"type": "StudentT", "args": {"df": "4", "batch_shape": [], "points": 20}}, "df"),
    ({"type": "StudentT", "args": {"df": -1.0, "batch_shape": [], "points": 20}}, "df"),
    ({"type": "StudentT", "args": {"df": 4.0, "batch_shape": [-1], "points": 20}}, "batch_shape"),
    ({"type": "StudentT", "args": {"df": 4.0, "batch_shape": []}}, "expected arguments"),
    ({"type": "StudentT", "args": {"df": 4.0, "learn_df": True, "batch_shape": [], "points": 20}}, "null"),
    ({"type": "StudentT", "args": {"df": None, "learn_df": False, "batch_shape": [], "points": 20}}, "df"),
    ({"type": "StudentT", "args": {"df": None, "learn_df": 1, "batch_shape": [], "points": 20}}, "learn_df"),
    ({"type": "Poisson", "args": {}}, "expected arguments"),
    ({"type": "Poisson", "args": {"points": -3}}, "points"),
    ({"type": "Softmax", "args": {"num_classes": 3, "samples": 64}}, "expected arguments"),
    ({"type": "Softmax", "args": {"num_classes": 1, "samples": 64, "seed": 0}}, "num_classes"),
    ({"type": "Softmax", "args": {"num_classes": 3.0, "samples": 64, "seed": 0}}, "num_classes"),
    ({"type": "Softmax", "args": {"num_classes": 3, "samples": 0, "seed": 0}}, "samples"),
    ({"type": "Dirichlet", "args": {}}, "not one of"),
])
def test_bad_configs_are_refused(config, match):
    with pytest.raises(ConfigError, match=match):
        likelihood_from_config(config)


def test_unknown_likelihood_cannot_be_written():
    class MyBernoulli(Bernoulli):
        pass

    with pytest.raises(TypeError, match="cannot serialize MyBernoulli; supported: Gaussian, FixedNoise, "
                                        "Bernoulli, StudentT, Poisson, Softmax"):
        likelihood_to_config(MyBernoulli())
