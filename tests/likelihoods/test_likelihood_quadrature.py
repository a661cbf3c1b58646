# Gauss-Hermite quadrature of the likelihood interface against closed forms, scipy's adaptive
# quadrature and Monte Carlo: Gaussian, Bernoulli (probit) and StudentT.
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from flashgp.likelihoods import (QUADRATURE_POINTS, Bernoulli, FixedNoise, Gaussian, Likelihood, StudentT,
                                 quadrature_expected_log_prob, quadrature_marginal_log_prob,
                                 quadrature_predictive)
from flashgp.likelihoods.quadrature import standard_normal_rule

D = torch.float64


def moments(shape=(3, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=g, dtype=D)
    var = 0.05 + torch.rand(shape, generator=g, dtype=D) * 2
    y = torch.randn(shape, generator=g, dtype=D)
    return y, mean, var


def scipy_expectation(func, m, v):
    """E_{f ~ N(m, v)} func(f) by scipy's adaptive quadrature (float64 reference)."""
    value, _ = integrate.quad(lambda f: func(f) * stats.norm.pdf(f, m, math.sqrt(v)), -np.inf, np.inf,
                              epsabs=1e-14, epsrel=1e-13, limit=200)
    return value


def test_rule_is_cached_normalized_and_exact_for_low_moments():
    z, p, log_p = standard_normal_rule(QUADRATURE_POINTS, D, torch.device("cpu"))
    assert standard_normal_rule(QUADRATURE_POINTS, D, torch.device("cpu"))[0] is z  # computed once
    assert z.shape == p.shape == (QUADRATURE_POINTS,)
    assert torch.allclose(log_p.exp(), p, rtol=1e-14)
    # E Z^k of a standard normal: 1, 0, 1, 0, 3, 0, 15 ... exact up to degree 2 * points - 1
    cases = [(0, 1.0), (1, 0.0), (2, 1.0), (4, 3.0), (6, 15.0), (8, 105.0), (38, special.factorial2(37))]
    for k, expected in cases:
        assert float((p * z**k).sum()) == pytest.approx(expected, rel=1e-12, abs=1e-13)
    z32 = standard_normal_rule(QUADRATURE_POINTS, torch.float32, torch.device("cpu"))[0]
    assert z32.dtype == torch.float32 and torch.allclose(z32.double(), z, rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: Gaussian(noise=0.3), lambda: FixedNoise(torch.rand(3, 7) + 0.1)])
def test_gaussian_closed_forms_match_quadrature(make):
    lik = make().double()
    y, mean, var = moments()
    closed = lik.expected_log_prob(y, mean, var)
    quad = quadrature_expected_log_prob(lik, y, mean, var)
    assert closed.shape == (3, 7)
    assert torch.allclose(closed, quad, rtol=0, atol=1e-10)  # log p is quadratic in f: GH is exact
    assert (closed - quad).abs().max() < 1e-12
    # the explicit formula of the issue
    s = lik.noise_diag(7)
    formula = -0.5 * torch.log(2 * math.pi * s) - ((y - mean) ** 2 + var) / (2 * s)
    assert torch.allclose(closed, formula, rtol=0, atol=1e-13)
    # predictive moments: E[y] = mean and Var y = var + s, exactly by quadrature too
    pred, qpred = lik.predictive(mean, var), quadrature_predictive(lik, mean, var)
    assert torch.allclose(pred.variance, var + s) and torch.equal(pred.mean, mean)
    assert torch.allclose(qpred.mean, pred.mean, atol=1e-12) and torch.allclose(qpred.variance, pred.variance)
    # marginal: log N(y; mean, var + s); quadrature of a Gaussian bump converges with the nodes
    marginal = lik.marginal_log_prob(y, mean, var)
    ref = torch.distributions.Normal(mean, (var + s).sqrt()).log_prob(y)
    assert torch.allclose(marginal, ref, atol=1e-13)
    assert torch.allclose(quadrature_marginal_log_prob(lik, y, mean, var, points=150), ref, atol=1e-8)


def test_bernoulli_expected_log_prob_against_scipy():
    lik = Bernoulli()
    cases = [(0.0, 1.0), (1.5, 0.3), (-0.7, 0.05), (2.5, 0.8)]
    for m, v in cases:
        for label in (0.0, 1.0):
            ref = scipy_expectation(lambda f: special.log_ndtr((2 * label - 1) * f), m, v)
            got = lik.expected_log_prob(torch.tensor(label, dtype=D), torch.tensor(m, dtype=D),
                                        torch.tensor(v, dtype=D))
            assert float(got) == pytest.approx(ref, abs=1e-9), (m, v, label)
    # wide latent marginals need more nodes: 20 give ~2e-4 at var 9, 100 nodes ~1e-9
    ref = scipy_expectation(lambda f: special.log_ndtr(-f), 3.0, 9.0)
    t = lambda x: torch.tensor(x, dtype=D)  # noqa: E731
    assert abs(float(lik.expected_log_prob(t(0.0), t(3.0), t(9.0))) - ref) > 1e-5
    assert float(lik.expected_log_prob(t(0.0), t(3.0), t(9.0), points=100)) == pytest.approx(ref, abs=1e-8)


def test_bernoulli_closed_forms_against_quadrature():
    lik = Bernoulli()
    _, mean, var = moments()
    y = (torch.rand(3, 7, dtype=D) > 0.5).to(D)
    p = torch.special.ndtr(mean / (1 + var).sqrt())
    pred = lik.predictive(mean, var)
    assert torch.allclose(pred.mean, p, rtol=0, atol=1e-15) and torch.allclose(pred.variance, p * (1 - p))
    qpred = quadrature_predictive(lik, mean, var, points=60)
    assert torch.allclose(qpred.mean, pred.mean, atol=1e-12) and torch.allclose(qpred.variance, pred.variance,
                                                                                atol=1e-12)
    closed = lik.marginal_log_prob(y, mean, var)
    assert torch.allclose(closed, torch.where(y == 1, p, 1 - p).log(), atol=1e-14)
    assert torch.allclose(quadrature_marginal_log_prob(lik, y, mean, var, points=60), closed, atol=1e-11)
    assert torch.allclose(lik.probability(mean, var), p, rtol=0, atol=0)


def test_bernoulli_predictive_against_monte_carlo():
    lik = Bernoulli()
    mean = torch.tensor([-1.2, 0.0, 0.5, 2.0], dtype=D)
    var = torch.tensor([0.3, 2.0, 1.0, 4.0], dtype=D)
    draws = 1_000_000
    g = torch.Generator().manual_seed(1)
    f = mean + var.sqrt() * torch.randn(draws, 4, generator=g, dtype=D)
    y = torch.bernoulli(torch.special.ndtr(f), generator=g)
    freq = y.mean(0)
    p = lik.predictive(mean, var).mean
    tol = 5 * (p * (1 - p) / draws).sqrt()  # five standard errors: at most 2.5e-3
    assert torch.all((freq - p).abs() < tol), (freq, p)
    # the tolerance catches the likely bugs: no "1 +" in the link, or the std for the variance
    for wrong in (torch.special.ndtr(mean / var.sqrt()), torch.special.ndtr(mean / (1 + var.sqrt()))):
        assert torch.any((freq - wrong).abs() > 10 * tol)
    assert torch.allclose(lik.predictive(mean, var).variance, y.var(0), atol=tol.max())
    # the test NLL of the labels drawn: the closed-form marginal against the same draws
    nll = -lik.marginal_log_prob(y[:1000], mean, var).mean(0)
    empirical = -torch.where(y[:1000] == 1, freq, 1 - freq).log().mean(0)
    assert torch.allclose(nll, empirical, atol=0.01)


def test_student_t_log_prob_against_torch():
    lik = StudentT(df=3.5, scale=0.7, batch_shape=(2,)).double()
    with torch.no_grad():
        lik.scale = torch.tensor([0.7, 1.9], dtype=D)
    y = torch.randn(2, 6, dtype=D) * 3
    f = torch.randn(5, 2, 6, dtype=D)
    ref = torch.distributions.StudentT(3.5, loc=f, scale=lik.scale.detach().unsqueeze(-1)).log_prob(y)
    got = lik.log_prob(y, f)
    assert got.shape == (5, 2, 6)
    assert torch.allclose(got, ref, rtol=1e-13, atol=1e-13)


def test_student_t_quadrature_against_scipy():
    lik = StudentT(df=4.0, scale=1.0).double()
    t = lambda x: torch.tensor(x, dtype=D)  # noqa: E731
    for y, m, v in [(0.3, 0.0, 1.0), (-1.0, 1.5, 0.3), (4.0, 0.0, 0.5), (0.2, -0.3, 0.01)]:
        log_t = lambda f: stats.t.logpdf(y, 4.0, loc=f, scale=1.0)  # noqa: E731
        elp = scipy_expectation(log_t, m, v)
        marginal = math.log(scipy_expectation(lambda f: math.exp(log_t(f)), m, v))
        with torch.no_grad():
            got = float(lik.expected_log_prob(t(y), t(m), t(v))), float(lik.marginal_log_prob(t(y), t(m), t(v)))
        assert got == pytest.approx((elp, marginal), abs=1e-5), (y, m, v)
        assert got[0] == pytest.approx(elp, abs=1e-6), (y, m, v)
    # latent std 4 times the scale: a narrow peak of p(y | f) that 20 nodes miss (0.23 nats, as
    # StudentT's docstring says); 200 nodes resolve it
    lik.scale = 0.5
    log_t = lambda f: stats.t.logpdf(0.0, 4.0, loc=f, scale=0.5)  # noqa: E731
    marginal = math.log(scipy_expectation(lambda f: math.exp(log_t(f)), 0.0, 4.0))
    errors = [abs(float(lik.marginal_log_prob(t(0.0), t(0.0), t(4.0), points=q).detach()) - marginal)
              for q in (20, 200)]
    assert 0.1 < errors[0] < 0.5 and errors[1] < 1e-4


def test_student_t_predictive():
    lik = StudentT(df=5.0, scale=0.5).double()
    _, mean, var = moments()
    pred = lik.predictive(mean, var)
    assert torch.equal(pred.mean, mean)
    assert torch.allclose(pred.variance, var + 0.25 * 5 / 3, rtol=1e-14)
    qpred = quadrature_predictive(lik, mean, var)
    assert torch.allclose(qpred.mean, pred.mean, atol=1e-13) and torch.allclose(qpred.variance, pred.variance)
    # Monte Carlo: y = f + scale * t_5
    g = torch.Generator().manual_seed(2)
    draws = 400_000
    m, v = mean[0, :3], var[0, :3]
    f = m + v.sqrt() * torch.randn(draws, 3, generator=g, dtype=D)
    chi2 = 2 * torch._standard_gamma(torch.full((draws, 3), 2.5, dtype=D), generator=g)
    y = f + 0.5 * torch.randn(draws, 3, generator=g, dtype=D) / (chi2 / 5).sqrt()
    assert torch.allclose(y.mean(0), m, atol=0.01)
    assert torch.allclose(y.var(0), pred.variance[0, :3], rtol=0.03)
    # no variance for df <= 2, the location as the mean
    heavy = StudentT(df=1.5, scale=0.5).double().predictive(mean, var)
    assert torch.isinf(heavy.variance).all() and torch.equal(heavy.mean, mean)


def test_points_per_instance_and_per_call():
    lik = Bernoulli()
    y, mean, var = torch.tensor([1.0], dtype=D), torch.tensor([2.0], dtype=D), torch.tensor([6.0], dtype=D)
    default = lik.expected_log_prob(y, mean, var)
    assert torch.equal(lik.expected_log_prob(y, mean, var, points=QUADRATURE_POINTS), default)
    three = lik.expected_log_prob(y, mean, var, points=3)
    assert not torch.allclose(three, default)
    lik.points = 3
    assert torch.equal(lik.expected_log_prob(y, mean, var), three)
    assert Bernoulli(points=3).points == 3 and Likelihood.points.fget(Gaussian()) == QUADRATURE_POINTS
