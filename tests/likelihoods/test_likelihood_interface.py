# The likelihood interface: flags, shapes and broadcasting, gradients (gradcheck in float64),
# clear errors for bad inputs, and a cross-check against GPyTorch's likelihoods.
import math

import pytest
import torch

from flashgp.likelihoods import (Bernoulli, FixedNoise, Gaussian, GaussianNoise, Likelihood, Poisson,
                                 PredictiveMoments, StudentT)

D = torch.float64
ALL = {
    "Gaussian": lambda: Gaussian(noise=0.4),
    "FixedNoise": lambda: FixedNoise(torch.linspace(0.1, 0.5, 6)),
    "Bernoulli": lambda: Bernoulli(),
    "BernoulliLogit": lambda: Bernoulli(link="logit"),
    "StudentT": lambda: StudentT(df=3.0, scale=0.6),
    "StudentTFixedDf": lambda: StudentT(df=3.0, scale=0.6, learn_df=False),
    "Poisson": lambda: Poisson(),
}


def labels_or_values(name, shape, generator=None):
    if name.startswith("Bernoulli"):
        return (torch.rand(shape, generator=generator, dtype=D) > 0.5).to(D)
    if name == "Poisson":
        return torch.poisson(torch.full(shape, 2.0, dtype=D), generator=generator)
    return torch.randn(shape, generator=generator, dtype=D)


def test_conjugate_flag_and_noise_diag():
    assert Gaussian().conjugate and FixedNoise(torch.ones(3)).conjugate
    assert not Bernoulli().conjugate and not StudentT().conjugate and not Likelihood.conjugate
    assert isinstance(Gaussian(), GaussianNoise) and not isinstance(Bernoulli(), GaussianNoise)
    assert torch.allclose(Gaussian(noise=0.2, batch_shape=(2,)).noise_diag(4), torch.full((2, 4), 0.2))
    with pytest.raises(NotImplementedError, match="not a Gaussian-noise likelihood"):
        Bernoulli().noise_diag(4)


@pytest.mark.parametrize("name", sorted(ALL))
def test_shapes_broadcast(name):
    lik = ALL[name]().double()
    y = labels_or_values(name, (6,))
    f = torch.randn(5, 3, 6, dtype=D)  # (*samples, *batch, n)
    assert lik.log_prob(y, f).shape == (5, 3, 6)
    mean, var = torch.randn(3, 6, dtype=D), torch.rand(3, 6, dtype=D) + 0.1
    for out in (lik.expected_log_prob(y, mean, var), lik.marginal_log_prob(y, mean, var)):
        assert out.shape == (3, 6) and out.dtype == D and torch.isfinite(out).all()
    pred = lik.predictive(mean, var)
    assert isinstance(pred, PredictiveMoments) and pred.mean.shape == pred.variance.shape == (3, 6)
    m, v = pred  # unpacks as a pair
    assert torch.equal(m, pred.mean) and torch.allclose(pred.stddev ** 2, v)
    # a scalar variance broadcasts; y as a Python list or an int/bool tensor is accepted
    assert lik.expected_log_prob(y.tolist(), mean, 0.3).shape == (3, 6)
    if name.startswith("Bernoulli"):
        assert torch.equal(lik.log_prob(y.bool(), f), lik.log_prob(y.long(), f))


def test_likelihood_batch_shapes_broadcast_with_the_data():
    lik = StudentT(df=5.0, scale=torch.tensor([0.5, 1.0, 2.0]), batch_shape=(3,)).double()
    y, mean, var = torch.randn(7, dtype=D), torch.randn(7, dtype=D), torch.rand(7, dtype=D)
    elp = lik.expected_log_prob(y, mean, var)
    assert elp.shape == (3, 7)
    for i, scale in enumerate((0.5, 1.0, 2.0)):
        single = StudentT(df=5.0, scale=scale).double()
        assert torch.allclose(elp[i], single.expected_log_prob(y, mean, var), atol=1e-14)
    assert lik.predictive(mean, var).mean.shape == (3, 7)
    assert lik.marginal_log_prob(y, mean, var).shape == (3, 7)
    assert lik.log_prob(y, torch.randn(4, 1, 7, dtype=D)).shape == (4, 3, 7)
    gauss = Gaussian(noise=torch.tensor([0.1, 0.2]), batch_shape=(2,)).double()
    assert gauss.expected_log_prob(y, mean, var).shape == (2, 7)
    with pytest.raises(ValueError, match=r"batch shape \(3,\)"):
        lik.expected_log_prob(torch.randn(2, 7), torch.randn(2, 7), torch.rand(2, 7))


def test_fixed_noise_takes_per_point_noise():
    lik = FixedNoise(torch.tensor([0.1, 0.2, 0.3], dtype=D))
    y, mean, var = torch.zeros(3, dtype=D), torch.zeros(3, dtype=D), torch.zeros(3, dtype=D)
    assert torch.allclose(lik.predictive(mean, var).variance, lik.noise)
    assert torch.allclose(lik.predictive(mean[:2], var[:2]).variance, torch.full((2,), 0.2, dtype=D))
    test_noise = torch.tensor([1.0, 2.0], dtype=D)
    assert torch.allclose(lik.predictive(mean[:2], var[:2], noise=test_noise).variance, test_noise)
    expected = -0.5 * torch.log(2 * math.pi * test_noise)
    assert torch.allclose(lik.marginal_log_prob(y[:2], mean[:2], var[:2], noise=test_noise), expected)
    with pytest.raises(ValueError, match="FixedNoise"):
        Gaussian().predictive(mean, var, noise=test_noise)


@pytest.mark.parametrize("name", sorted(ALL))
def test_gradients_through_mean_and_var(name):
    lik = ALL[name]().double()
    g = torch.Generator().manual_seed(3)
    y = labels_or_values(name, (2, 6), g)
    mean = torch.randn(2, 6, generator=g, dtype=D).requires_grad_()
    var = (0.2 + torch.rand(2, 6, generator=g, dtype=D)).requires_grad_()
    assert torch.autograd.gradcheck(lambda m, v: lik.expected_log_prob(y, m, v), (mean, var))
    assert torch.autograd.gradcheck(lambda m, v: lik.marginal_log_prob(y, m, v), (mean, var))
    assert torch.autograd.gradcheck(lambda m, v: lik.predictive(m, v).variance, (mean, var))
    # and the likelihood's own parameters get gradients
    params = [p for p in lik.parameters() if p.requires_grad]
    lik.expected_log_prob(y, mean, var).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_expected_log_prob_gradient_matches_its_analytic_form():
    # d/dmean E log p = E[d/df log p], d/dvar E log p = 0.5 E[d2/df2 log p]; Gaussian: -(mean-y)/s, -1/(2s)
    lik = Bernoulli()
    y, mean, var = torch.tensor([1.0], dtype=D), torch.tensor([0.3], dtype=D, requires_grad=True), \
        torch.tensor([0.5], dtype=D, requires_grad=True)
    gm, gv = torch.autograd.grad(lik.expected_log_prob(y, mean, var).sum(), (mean, var))
    f = torch.linspace(-12, 12, 200_001, dtype=D)
    density = torch.exp(-0.5 * (f - 0.3) ** 2 / 0.5) / math.sqrt(2 * math.pi * 0.5)
    ratio = torch.exp(torch.distributions.Normal(0.0, 1.0).log_prob(f) - torch.special.log_ndtr(f))
    step = float(f[1] - f[0])
    assert float(gm) == pytest.approx(float((density * ratio).sum() * step), rel=1e-8)
    second = -ratio * (f + ratio)
    assert float(gv) == pytest.approx(float(0.5 * (density * second).sum() * step), rel=1e-8)


def test_bad_inputs_give_clear_errors():
    mean, var = torch.zeros(4, dtype=D), torch.ones(4, dtype=D)
    with pytest.raises(ValueError, match=r"labels must be 0 or 1, got -1, 2 .*map labels -1/\+1"):
        Bernoulli().expected_log_prob(torch.tensor([0.0, -1.0, 2.0, 1.0]), mean, var)
    with pytest.raises(ValueError, match="0 or 1, got 0.5"):
        Bernoulli().log_prob(torch.tensor([0.5]), torch.zeros(1))
    with pytest.raises(ValueError, match="0 or 1, got nan"):
        Bernoulli().marginal_log_prob(torch.tensor([math.nan, 0, 1, 1]), mean, var)
    for lik in (Gaussian(), Bernoulli(), Bernoulli(link="logit"), StudentT(), Poisson()):
        with pytest.raises(ValueError, match=r"var: expected latent variances >= 0, got min -0\.1"):
            lik.expected_log_prob(torch.zeros(4), mean, torch.tensor([1.0, -0.1, 0.0, 1.0]))
        with pytest.raises(ValueError, match="var: expected"):
            lik.predictive(mean, -var)
        with pytest.raises(ValueError, match=r"shapes y \(5,\), mean \(4,\), var \(4,\) do not broadcast"):
            lik.expected_log_prob(torch.zeros(5), mean, var)
        with pytest.raises(TypeError, match="mean: expected real values"):
            lik.predictive(torch.zeros(4, dtype=torch.complex64), var)
        with pytest.raises(TypeError, match="y: expected a real tensor"):
            lik.log_prob("labels", mean)
        with pytest.raises(ValueError, match="points: expected an int from 1 to 256"):
            lik.expected_log_prob(torch.zeros(4), mean, var, points=0)
    with pytest.raises(ValueError, match="points"):
        Bernoulli(points=2.5)
    lik = Bernoulli()
    with pytest.raises(ValueError, match="points"):
        lik.points = 1000
    for df in (0, -1.0, math.inf, "4", True):
        with pytest.raises(ValueError, match="df: expected a finite number > 0"):
            StudentT(df=df)
    with pytest.raises(ValueError, match="scale"):
        StudentT(scale=-1.0)


def test_zero_variance_is_the_likelihood_itself():
    f, y = torch.tensor([-0.5, 0.2, 1.5], dtype=D), torch.tensor([1.0, 0.0, 1.0], dtype=D)
    for lik in (Bernoulli(), Bernoulli(link="logit"), StudentT(scale=0.3).double(), Gaussian(noise=0.2).double(),
                Poisson()):
        with torch.no_grad():
            lp = lik.log_prob(y, f)
            assert torch.allclose(lik.expected_log_prob(y, f, torch.zeros(3, dtype=D)), lp, atol=1e-14)
            assert torch.allclose(lik.marginal_log_prob(y, f, torch.zeros(3, dtype=D)), lp, atol=1e-14)


def test_float32_inputs_stay_float32():
    for lik in (Bernoulli(), Bernoulli(link="logit"), StudentT(), Gaussian(noise=0.1), Poisson()):
        out = lik.expected_log_prob(torch.ones(3), torch.zeros(3), torch.ones(3))
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_against_gpytorch():
    gpytorch = pytest.importorskip("gpytorch")
    g = torch.Generator().manual_seed(4)
    mean, var = torch.randn(8, generator=g, dtype=D), 0.05 + torch.rand(8, generator=g, dtype=D)
    y = torch.randn(8, generator=g, dtype=D)
    dist = gpytorch.distributions.MultivariateNormal(mean, torch.diag_embed(var))
    theirs = gpytorch.likelihoods.GaussianLikelihood().double()
    theirs.noise = 0.37  # (through float32 there: 0.37 + 5e-9)
    ours = Gaussian(noise=theirs.noise.item()).double()  # identical noise
    with torch.no_grad():
        assert torch.allclose(ours.expected_log_prob(y, mean, var), theirs.expected_log_prob(y, dist),
                              rtol=1e-12, atol=1e-12)
        assert torch.allclose(ours.marginal_log_prob(y, mean, var), theirs.log_marginal(y, dist),
                              rtol=1e-12, atol=1e-12)
        marginal = theirs.marginal(dist)
        assert torch.allclose(ours.predictive(mean, var).variance, marginal.variance, rtol=1e-12)
        # Bernoulli: the same probit marginal, and GPyTorch's 20-node Gauss-Hermite expectation
        labels = (y > 0).to(D)
        bern = gpytorch.likelihoods.BernoulliLikelihood()
        assert torch.allclose(Bernoulli().predictive(mean, var).mean, bern.marginal(dist).probs, rtol=1e-12)
        assert torch.allclose(Bernoulli().marginal_log_prob(labels, mean, var),
                              bern.log_marginal(labels, dist), rtol=1e-12)
        # GPyTorch's rule (nodes made in float32) on the exact log Phi: agrees to float32 node
        # rounding; its own expected_log_prob uses an approximate log Phi (errors up to 5e-5 at
        # -2), so only loosely. Ours agree with scipy to 1e-9 (test_likelihood_quadrature.py).
        ours_elp = Bernoulli(points=20).expected_log_prob(labels, mean, var)
        bern = bern.double()
        rule = bern.quadrature(lambda f: torch.special.log_ndtr((2 * labels - 1) * f), dist)
        assert torch.allclose(ours_elp, rule, rtol=0, atol=1e-6)
        assert torch.allclose(ours_elp, bern.expected_log_prob(labels, dist), rtol=0, atol=1e-3)
