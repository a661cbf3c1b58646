# Softmax (multiclass): the shape convention (*batch, C, n), Monte Carlo with fixed draws against
# brute-force references, the two-class reduction to the logit Bernoulli, determinism,
# gradients, bad labels and shapes, and serialization.
import json
import math

import pytest
import torch

from flashgp.likelihoods import (Bernoulli, Gaussian, Poisson, Softmax, StudentT,
                                 quadrature_expected_log_prob, quadrature_predictive)
from flashgp.serialize import likelihood_from_config, likelihood_to_config

D = torch.float64
C = 3


def latents(batch=(), n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = 1.5 * torch.randn(*batch, C, n, generator=g, dtype=D)
    var = 0.1 + 1.5 * torch.rand(*batch, C, n, generator=g, dtype=D)
    y = torch.randint(0, C, (*batch, n), generator=g).to(D)
    return y, mean, var


def brute_force(y, mean, var, draws=400_000, seed=1):
    """E log softmax(f)_y, E softmax(f)_y and E softmax(f) from ``draws`` independent draws per point,
    with the standard errors of the first two: each ``(n,)`` (and ``(C, n)``)."""
    g = torch.Generator().manual_seed(seed)
    f = mean + var.sqrt() * torch.randn(draws, *mean.shape, generator=g, dtype=D)
    log_p = torch.log_softmax(f, dim=-2)
    picked = log_p.gather(-2, y.long().expand(draws, -1).unsqueeze(-2)).squeeze(-2)
    return (picked.mean(0), picked.std(0) / math.sqrt(draws), picked.exp().mean(0),
            picked.exp().std(0) / math.sqrt(draws), log_p.exp().mean(0))


def test_num_latents():
    assert Softmax(4).num_latents == 4 and Softmax(4).num_classes == 4
    for lik in (Gaussian(), Bernoulli(), StudentT(), Poisson()):
        assert lik.num_latents == 1


def test_shapes_and_batches():
    lik = Softmax(C)
    y, mean, var = latents(batch=(2,), n=6)
    for out in (lik.expected_log_prob(y, mean, var), lik.marginal_log_prob(y, mean, var)):
        assert out.shape == (2, 6) and out.dtype == D and torch.isfinite(out).all()
    p = lik.probabilities(mean, var)
    assert p.shape == (2, C, 6) and torch.allclose(p.sum(-2), torch.ones(2, 6, dtype=D), atol=1e-14)
    pred = lik.predictive(mean, var)
    assert torch.equal(pred.mean, p) and torch.allclose(pred.variance, p * (1 - p))
    # labels (n,) broadcast over the batch; var (*batch, 1, n) or a scalar over the classes
    assert torch.equal(lik.expected_log_prob(y[0], mean, var)[0], lik.expected_log_prob(y[0], mean[0], var[0]))
    shared = lik.expected_log_prob(y, mean, var[:, :1])
    assert torch.equal(shared, lik.expected_log_prob(y, mean, var[:, :1].expand(2, C, 6)))
    assert lik.expected_log_prob(y, mean, 0.5).shape == (2, 6)
    # log_prob: f (*samples, *batch, C, n) -> (*samples, *batch, n), against Categorical
    f = torch.randn(4, 2, C, 6, dtype=D)
    got = lik.log_prob(y, f)
    ref = torch.distributions.Categorical(logits=f.transpose(-1, -2)).log_prob(y.long())
    assert got.shape == (4, 2, 6) and torch.allclose(got, ref, rtol=1e-13, atol=1e-13)
    # labels as ints, floats or a list
    assert torch.equal(lik.log_prob(y.long(), f), got) and torch.equal(lik.log_prob(y.tolist(), f), got)


def test_estimates_are_the_formula_on_the_base_draws():
    lik = Softmax(C, samples=16, seed=7)
    y, mean, var = latents()
    eps = lik.base_draws(D)
    assert eps.shape == (16, C, 1) and torch.equal(eps[:8], -eps[8:])  # antithetic pairs
    assert lik.base_draws(D) is eps  # cached
    f = mean + var.sqrt() * eps  # (16, C, n)
    log_p = torch.log_softmax(f, dim=-2)
    picked = log_p[:, y.long(), torch.arange(5)]
    assert torch.allclose(lik.expected_log_prob(y, mean, var), picked.mean(0), rtol=0, atol=1e-14)
    assert torch.allclose(lik.marginal_log_prob(y, mean, var), picked.exp().mean(0).log(), rtol=0, atol=1e-14)
    assert torch.allclose(lik.probabilities(mean, var), log_p.exp().mean(0), rtol=0, atol=1e-14)


def test_monte_carlo_against_a_brute_force_reference():
    y, mean, var = latents(n=8)
    var = 2 * var  # 0.2 to 3.2
    elp_ref, elp_se, prob_ref, prob_se, probs_ref = brute_force(y, mean, var)
    # many fixed draws: within the combined Monte Carlo error (5 standard errors of each)
    many = Softmax(C, samples=20_000, seed=3)
    draws_se = elp_se * math.sqrt(400_000 / 20_000)
    assert torch.all((many.expected_log_prob(y, mean, var) - elp_ref).abs() < 5 * (elp_se + draws_se))
    marginal = many.marginal_log_prob(y, mean, var)
    assert torch.all((marginal.exp() - prob_ref).abs() < 5 * prob_se * (1 + math.sqrt(20)))
    assert torch.allclose(many.probabilities(mean, var), probs_ref, atol=0.005)
    # the default 64 draws: within 5 of their own standard errors
    default = Softmax(C)
    err = (default.expected_log_prob(y, mean, var) - elp_ref).abs()
    assert torch.all(err < 5 * elp_se * math.sqrt(400_000 / 64)), err
    # the bugs the tolerance catches: the variance taken as the std, or no noise at all
    wrong = torch.log_softmax(mean + var * many.base_draws(D), dim=-2)[:, y.long(), torch.arange(8)].mean(0)
    plug_in = torch.log_softmax(mean, dim=-2)[y.long(), torch.arange(8)]
    for bad in (wrong, plug_in):
        assert torch.any((bad - elp_ref).abs() > 10 * (elp_se + draws_se))


def test_two_classes_reduce_to_the_logit_bernoulli():
    # softmax(f)_1 = sigmoid(f_1 - f_0), f_1 - f_0 ~ N(m_1 - m_0, v_0 + v_1)
    g = torch.Generator().manual_seed(2)
    mean, var = torch.randn(2, 6, generator=g, dtype=D), 0.1 + torch.rand(2, 6, generator=g, dtype=D)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=D)
    softmax, logit = Softmax(2, samples=40_000), Bernoulli(link="logit", points=100)
    diff_mean, diff_var = mean[1] - mean[0], var[0] + var[1]
    elp = logit.expected_log_prob(y, diff_mean, diff_var)
    assert torch.allclose(softmax.expected_log_prob(y, mean, var), elp, atol=0.01)
    p1 = logit.probability(diff_mean, diff_var)
    assert torch.allclose(softmax.probabilities(mean, var)[1], p1, atol=0.005)
    # with var = 0 there is no Monte Carlo: exactly the logit likelihood
    zero = torch.zeros(2, 6, dtype=D)
    assert torch.allclose(softmax.expected_log_prob(y, mean, zero), logit.log_prob(y, diff_mean), atol=1e-14)


def test_marginals_are_a_distribution_over_the_labels():
    lik = Softmax(C)
    _, mean, var = latents(n=6)
    marginals = torch.stack([lik.marginal_log_prob(torch.full((6,), c), mean, var) for c in range(C)])
    assert torch.allclose(marginals.exp().sum(0), torch.ones(6, dtype=D), atol=1e-13)
    assert torch.allclose(marginals.exp(), lik.probabilities(mean, var), atol=1e-13)
    for c in range(C):  # Jensen: log E p >= E log p
        y = torch.full((6,), c)
        assert torch.all(lik.marginal_log_prob(y, mean, var) >= lik.expected_log_prob(y, mean, var) - 1e-14)


def test_deterministic_and_independent_of_the_other_points():
    y, mean, var = latents(n=10)
    a, b = Softmax(C), Softmax(C)
    assert torch.equal(a.expected_log_prob(y, mean, var), b.expected_log_prob(y, mean, var))
    assert torch.equal(a.expected_log_prob(y, mean, var), a.expected_log_prob(y, mean, var))
    assert not torch.equal(Softmax(C, seed=1).expected_log_prob(y, mean, var), a.expected_log_prob(y, mean, var))
    subset = a.expected_log_prob(y[3:7], mean[:, 3:7], var[:, 3:7])  # a minibatch
    assert torch.allclose(subset, a.expected_log_prob(y, mean, var)[3:7], rtol=0, atol=1e-15)
    single = a.expected_log_prob(y.float(), mean.float(), var.float())
    assert single.dtype == torch.float32 and torch.allclose(single.double(), a.expected_log_prob(y, mean, var),
                                                            atol=1e-5)


def test_gradients():
    lik = Softmax(C, samples=8)
    y, mean, var = latents(batch=(2,), n=3, seed=4)
    mean, var = mean.requires_grad_(), var.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, v: lik.expected_log_prob(y, m, v), (mean, var))
    assert torch.autograd.gradcheck(lambda m, v: lik.marginal_log_prob(y, m, v), (mean, var))
    assert torch.autograd.gradcheck(lambda m, v: lik.probabilities(m, v), (mean, var))


def test_bad_labels_and_shapes():
    lik = Softmax(C)
    _, mean, var = latents(n=4)
    with pytest.raises(ValueError, match=r"y: Softmax labels must be integers from 0 to 2 \(num_classes = 3\), "
                                         r"got -1, 3 \(2 of 4 entries\)"):
        lik.expected_log_prob(torch.tensor([0, 3, -1, 2]), mean, var)
    for bad in (0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="y: Softmax labels"):
            lik.marginal_log_prob(torch.tensor([0.0, bad, 1.0, 2.0]), mean, var)
    with pytest.raises(TypeError, match="y: Softmax labels must be class indices"):
        lik.expected_log_prob(torch.tensor([True, False, True, True]), mean, var)
    with pytest.raises(TypeError, match="y: expected a real tensor"):
        lik.log_prob("labels", torch.zeros(C, 4))
    with pytest.raises(ValueError, match=r"C = num_classes = 3 at dimension -2, got mean \(4,\), var \(4,\)"):
        lik.expected_log_prob(torch.zeros(4), torch.zeros(4), torch.ones(4))
    with pytest.raises(ValueError, match=r"C = num_classes = 3 .*got mean \(2, 4\)"):
        lik.probabilities(torch.zeros(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"labels y \(5,\) do not broadcast with the points of mean \(3, 4\)"):
        lik.expected_log_prob(torch.zeros(5), mean, var)
    with pytest.raises(ValueError, match=r"C = num_classes = 3 .*got f \(2, 4\)"):
        lik.log_prob(torch.zeros(4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="var: expected latent variances >= 0"):
        lik.expected_log_prob(torch.zeros(4), mean, -var)
    for args, match in [((1,), "num_classes"), ((2.0,), "num_classes"), ((3, 0), "samples"),
                        ((3, 64, -1), "seed"), ((True,), "num_classes")]:
        with pytest.raises(ValueError, match=match):
            Softmax(*args)
    # the Gauss-Hermite helpers are for one latent function per point
    with pytest.raises(TypeError, match="Softmax has 3 latent functions"):
        quadrature_expected_log_prob(lik, torch.zeros(4), mean, var)
    with pytest.raises(TypeError, match="num_latents = 1"):
        quadrature_predictive(lik, mean, var)


def test_serialization_round_trip():
    lik = Softmax(5, samples=32, seed=11)
    config = json.loads(json.dumps(likelihood_to_config(lik)))
    assert config == {"type": "Softmax", "args": {"num_classes": 5, "samples": 32, "seed": 11}}
    rebuilt = likelihood_from_config(config)
    rebuilt.load_state_dict(lik.state_dict(), strict=True)
    assert type(rebuilt) is Softmax and (rebuilt.num_classes, rebuilt.samples, rebuilt.seed) == (5, 32, 11)
    g = torch.Generator().manual_seed(0)
    mean, var = torch.randn(5, 4, generator=g, dtype=D), torch.rand(5, 4, generator=g, dtype=D)
    y = torch.tensor([0, 4, 2, 1])
    assert torch.equal(rebuilt.expected_log_prob(y, mean, var), lik.expected_log_prob(y, mean, var))
