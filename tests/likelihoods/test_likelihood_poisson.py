# Poisson (log link): closed forms against quadrature and torch/scipy, predictive moments
# against Monte Carlo, gradients, bad counts and serialization.
import json
import math

import pytest
import torch
from scipy import integrate, stats

from flashgp.likelihoods import Poisson, quadrature_expected_log_prob, quadrature_predictive
from flashgp.serialize import likelihood_from_config, likelihood_to_config

D = torch.float64


def data(shape=(3, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=g, dtype=D)
    var = 0.05 + 2 * torch.rand(shape, generator=g, dtype=D)
    y = torch.poisson(torch.exp(mean + var.sqrt() * torch.randn(shape, generator=g, dtype=D)), generator=g)
    return y, mean, var


def test_log_prob_against_torch():
    y, _, _ = data()
    f = torch.randn(5, 3, 7, dtype=D)
    got = Poisson().log_prob(y, f)
    assert got.shape == (5, 3, 7)
    assert torch.allclose(got, torch.distributions.Poisson(f.exp()).log_prob(y), rtol=1e-13, atol=1e-13)


def test_expected_log_prob_closed_form_against_quadrature():
    lik = Poisson()
    y, mean, var = data()
    closed = lik.expected_log_prob(y, mean, var)
    formula = y * mean - torch.exp(mean + var / 2) - torch.lgamma(y + 1)
    assert torch.allclose(closed, formula, rtol=0, atol=1e-14)
    assert closed.shape == (3, 7) and closed.dtype == D
    assert torch.allclose(quadrature_expected_log_prob(lik, y, mean, var), closed, rtol=0, atol=1e-8)
    assert torch.allclose(quadrature_expected_log_prob(lik, y, mean, var, points=60), closed, rtol=0, atol=1e-10)


def test_predictive_closed_form_against_quadrature_and_monte_carlo():
    lik = Poisson()
    _, mean, var = data()
    pred = lik.predictive(mean, var)
    rate = torch.exp(mean + var / 2)
    assert torch.allclose(pred.mean, rate, rtol=1e-14)
    assert torch.allclose(pred.variance, rate + (var.exp() - 1) * torch.exp(2 * mean + var), rtol=1e-13)
    qpred = quadrature_predictive(lik, mean, var, points=60)
    assert torch.allclose(qpred.mean, pred.mean, rtol=1e-12) and torch.allclose(qpred.variance, pred.variance,
                                                                                rtol=1e-10)
    # Monte Carlo of y* = Poisson(exp(f*)), f* ~ N(m, v): catches a variance without the rate term
    m, v = torch.tensor([0.5, -1.0, 1.2], dtype=D), torch.tensor([0.2, 1.0, 0.05], dtype=D)
    g = torch.Generator().manual_seed(1)
    draws = 400_000
    counts = torch.poisson(torch.exp(m + v.sqrt() * torch.randn(draws, 3, generator=g, dtype=D)), generator=g)
    pred = lik.predictive(m, v)
    assert torch.allclose(counts.mean(0), pred.mean, rtol=0.01)
    assert torch.allclose(counts.var(0), pred.variance, rtol=0.03)
    assert torch.all((pred.variance - pred.mean) > 0)  # overdispersed relative to Poisson(mean)


def test_marginal_log_prob_against_scipy():
    lik = Poisson()
    t = lambda x: torch.tensor(x, dtype=D)  # noqa: E731
    for y, m, v in [(0.0, 0.0, 1.0), (3.0, 1.0, 0.3), (1.0, -0.5, 0.05), (7.0, 2.0, 0.2)]:
        density = lambda f: stats.poisson.pmf(y, math.exp(f)) * stats.norm.pdf(f, m, math.sqrt(v))  # noqa: E731
        sd = math.sqrt(v)
        ref = math.log(integrate.quad(density, m - 30 * sd, m + 30 * sd, epsabs=1e-15, epsrel=1e-13, limit=200)[0])
        got = float(lik.marginal_log_prob(t(y), t(m), t(v)))
        assert got == pytest.approx(ref, abs=2e-6), (y, m, v)  # 20 nodes: measured up to 7e-7
        assert float(lik.marginal_log_prob(t(y), t(m), t(v), points=80)) == pytest.approx(ref, abs=1e-12)
    # the marginal is a probability over the counts: it sums to 1
    counts = torch.arange(0, 200, dtype=D)
    total = lik.marginal_log_prob(counts, t(1.0), t(0.3)).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-10)


def test_zero_variance_is_the_log_prob():
    lik = Poisson()
    y, mean, _ = data()
    zero = torch.zeros_like(mean)
    lp = lik.log_prob(y, mean)
    assert torch.allclose(lik.expected_log_prob(y, mean, zero), lp, atol=1e-13)
    assert torch.allclose(lik.marginal_log_prob(y, mean, zero), lp, atol=1e-12)


def test_gradients():
    lik = Poisson()
    y, mean, var = data((2, 5), seed=3)
    mean, var = mean.requires_grad_(), var.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, v: lik.expected_log_prob(y, m, v), (mean, var))
    assert torch.autograd.gradcheck(lambda m, v: lik.marginal_log_prob(y, m, v), (mean, var))
    assert torch.autograd.gradcheck(lambda m, v: lik.predictive(m, v).variance, (mean, var))


def test_counts_must_be_non_negative_integers():
    lik = Poisson()
    mean, var = torch.zeros(4, dtype=D), torch.ones(4, dtype=D)
    with pytest.raises(ValueError, match=r"y: Poisson counts must be non-negative integers, got -1, 0.5 "
                                         r"\(2 of 4 entries\)"):
        lik.expected_log_prob(torch.tensor([0.0, -1.0, 0.5, 3.0]), mean, var)
    for bad in (math.nan, math.inf, -2.0, 1.25):
        with pytest.raises(ValueError, match="y: Poisson counts"):
            lik.marginal_log_prob(torch.tensor([bad, 1.0, 1.0, 1.0]), mean, var)
        with pytest.raises(ValueError, match="y: Poisson counts"):
            lik.log_prob(torch.tensor([bad]), torch.zeros(1))
    # ints and floats equal to ints are counts
    assert torch.equal(lik.expected_log_prob(torch.tensor([0, 1, 2, 30]), mean, var),
                       lik.expected_log_prob(torch.tensor([0.0, 1.0, 2.0, 30.0]), mean, var))
    with pytest.raises(ValueError, match="points"):
        Poisson(points=0)


def test_serialization_round_trip():
    lik = Poisson(points=31)
    config = json.loads(json.dumps(likelihood_to_config(lik)))
    assert config == {"type": "Poisson", "args": {"points": 31}}
    rebuilt = likelihood_from_config(config)
    rebuilt.load_state_dict(lik.state_dict(), strict=True)
    assert type(rebuilt) is Poisson and rebuilt.points == 31 and rebuilt.num_latents == 1
