# Bernoulli with the logit link: log sigmoid, quadrature against a dense float64 integral on a
# fine grid, the probit default unchanged, gradients and bad link names.
import math

import pytest
import torch

from flashgp.likelihoods import Bernoulli, quadrature_predictive

D = torch.float64


def grid_expectation(func, m: float, v: float, half_width: float = 14.0, size: int = 400_001) -> float:
    """E_{f ~ N(m, v)} func(f) by Simpson's rule on a dense grid over m +- half_width sd (float64)."""
    sd = math.sqrt(v)
    f = torch.linspace(m - half_width * sd, m + half_width * sd, size, dtype=D)
    weights = torch.ones(size, dtype=D)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    step = float(f[1] - f[0])
    density = torch.exp(-0.5 * (f - m) ** 2 / v) / math.sqrt(2 * math.pi * v)
    return float((weights * density * func(f)).sum() * step / 3)


CASES = [(0.0, 1.0), (1.5, 0.3), (-0.7, 0.05), (2.5, 0.8), (-1.0, 2.0)]


def t(x):
    return torch.tensor(x, dtype=D)


def test_log_prob_is_log_sigmoid():
    lik = Bernoulli(link="logit")
    f = torch.linspace(-30, 30, 61, dtype=D)
    for label in (0.0, 1.0):
        sign = 2 * label - 1
        expected = -torch.log1p(torch.exp(-sign * f))  # log sigmoid(sign f), fine in float64 here
        assert torch.allclose(lik.log_prob(torch.full_like(f, label), f), expected, rtol=1e-13, atol=1e-300)
    # accurate far in the tails, where log(sigmoid) would round to 0 or -inf
    far = lik.log_prob(t([1.0, 0.0]), t([-800.0, -800.0]))
    assert far[0] == pytest.approx(-800.0) and -1e-300 < float(far[1]) <= 0


@pytest.mark.parametrize("m,v", CASES)
def test_expected_and_marginal_log_prob_against_a_dense_integral(m, v):
    lik = Bernoulli(link="logit")
    for label in (0.0, 1.0):
        sign = 2 * label - 1
        elp = grid_expectation(lambda f: -torch.log1p(torch.exp(-sign * f)), m, v)
        marginal = math.log(grid_expectation(lambda f: torch.sigmoid(sign * f), m, v))
        # 20 nodes (measured up to 2.4e-9 / 1.5e-7 at var 2); 100 nodes to the grid's own error
        assert float(lik.expected_log_prob(t(label), t(m), t(v))) == pytest.approx(elp, abs=1e-8), (m, v)
        assert float(lik.expected_log_prob(t(label), t(m), t(v), points=100)) == pytest.approx(elp, abs=1e-10)
        assert float(lik.marginal_log_prob(t(label), t(m), t(v))) == pytest.approx(marginal, abs=5e-7)
        assert float(lik.marginal_log_prob(t(label), t(m), t(v), points=100)) == pytest.approx(marginal,
                                                                                             abs=1e-10)
    prob = grid_expectation(torch.sigmoid, m, v)
    assert float(lik.probability(t(m), t(v), points=100)) == pytest.approx(prob, abs=1e-10)
    pred = lik.predictive(t(m), t(v), points=100)
    assert float(pred.mean) == pytest.approx(prob, abs=1e-10)
    assert float(pred.variance) == pytest.approx(prob * (1 - prob), abs=1e-10)


def test_logit_predictive_and_probability_agree():
    lik = Bernoulli(link="logit")
    g = torch.Generator().manual_seed(0)
    mean, var = torch.randn(3, 7, generator=g, dtype=D), 0.05 + 2 * torch.rand(3, 7, generator=g, dtype=D)
    p = lik.probability(mean, var)
    pred = lik.predictive(mean, var)
    assert torch.equal(pred.mean, p) and torch.allclose(pred.variance, p * (1 - p), rtol=0, atol=0)
    # the law of total variance by quadrature gives the same Bernoulli variance
    qpred = quadrature_predictive(lik, mean, var)
    assert torch.allclose(qpred.variance, pred.variance, atol=1e-13)
    # the two labels' marginals are complementary probabilities
    total = lik.marginal_log_prob(torch.ones(3, 7), mean, var).exp() + \
        lik.marginal_log_prob(torch.zeros(3, 7), mean, var).exp()
    assert torch.allclose(total, torch.ones_like(total), atol=1e-13)
    assert torch.allclose(lik.marginal_log_prob(torch.ones(3, 7), mean, var), p.log(), atol=1e-13)
    # the logistic is flatter than the probit: at the same latent, P is closer to 1/2
    probit = Bernoulli().probability(mean, var)
    assert torch.all((p - 0.5).abs() < (probit - 0.5).abs() + 1e-15)


def test_probit_stays_the_default():
    assert Bernoulli().link == "probit" and Bernoulli(points=7).points == 7
    y, mean, var = t([0.0, 1.0, 1.0]), t([0.3, -1.2, 2.0]), t([0.5, 1.0, 0.1])
    default, probit, logit = Bernoulli(), Bernoulli(link="probit"), Bernoulli(link="logit")
    for method in ("expected_log_prob", "marginal_log_prob"):
        assert torch.equal(getattr(default, method)(y, mean, var), getattr(probit, method)(y, mean, var))
        assert not torch.allclose(getattr(logit, method)(y, mean, var), getattr(probit, method)(y, mean, var))
    assert torch.equal(default.probability(mean, var), torch.special.ndtr(mean / (1 + var).sqrt()))
    assert repr(logit) == "Bernoulli(link='logit', points=20)"


def test_logit_gradients():
    lik = Bernoulli(link="logit")
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(2, 5, generator=g) > 0.5).to(D)
    mean = torch.randn(2, 5, generator=g, dtype=D).requires_grad_()
    var = (0.2 + torch.rand(2, 5, generator=g, dtype=D)).requires_grad_()
    assert torch.autograd.gradcheck(lambda m, v: lik.expected_log_prob(y, m, v), (mean, var))
    assert torch.autograd.gradcheck(lambda m, v: lik.marginal_log_prob(y, m, v), (mean, var))
    assert torch.autograd.gradcheck(lambda m, v: lik.probability(m, v), (mean, var))


def test_bad_links_and_labels():
    for link in ("logistic", "Probit", None, 3):
        with pytest.raises(ValueError, match="link: expected 'probit' or 'logit'"):
            Bernoulli(link=link)
    with pytest.raises(ValueError, match=r"by name, Bernoulli\(points=...\)"):
        Bernoulli(37)
    with pytest.raises(ValueError, match="y: Bernoulli labels must be 0 or 1, got -1"):
        Bernoulli(link="logit").expected_log_prob(t([-1.0, 1.0]), t([0.0, 0.0]), t([1.0, 1.0]))
