# StudentT with learned degrees of freedom: the parameter, its gradient against torch's
# StudentT, training on heavy-tailed data, predictive variances with df as a tensor and the
# serialization of learned and fixed df (files written before learn_df existed included).
import json
import math

import pytest
import torch

from flashgp.likelihoods import StudentT
from flashgp.likelihoods.student_t import DF_FLOOR
from flashgp.serialize import ConfigError, likelihood_from_config, likelihood_to_config

D = torch.float64


def test_df_is_learned_by_default():
    lik = StudentT(df=5.0, scale=0.5, batch_shape=(2,)).double()
    assert lik.learn_df and "raw_df" in dict(lik.named_parameters())
    assert lik.df.shape == (2,) and lik.df.requires_grad
    assert torch.allclose(lik.df, torch.full((2,), 5.0, dtype=D), rtol=0, atol=1e-14)  # exact through .double()
    lik.df = torch.tensor([3.0, 7.0])
    assert torch.allclose(lik.df, torch.tensor([3.0, 7.0], dtype=D), atol=1e-14)
    with pytest.raises(ValueError, match="df: expected every entry > 0.01"):
        lik.df = 0.001
    fixed = StudentT(df=5.0, learn_df=False)
    assert not fixed.learn_df and fixed.df == 5.0 and isinstance(fixed.df, float)
    assert "raw_df" not in dict(fixed.named_parameters())
    fixed.df = 2.5
    assert fixed.df == 2.5
    with pytest.raises(ValueError, match="df: expected a finite number > 0"):
        fixed.df = -1.0
    assert repr(fixed) == "StudentT(df=2.5, points=20)" and repr(StudentT()) == "StudentT(df=learned, points=20)"


def test_log_prob_and_its_df_gradient_match_torch():
    df = torch.tensor([1.3, 4.0, 30.0], dtype=D)
    lik = StudentT(df=4.0, scale=torch.tensor([0.7, 1.9, 0.4]), batch_shape=(3,)).double()
    lik.df = df
    y, f = torch.randn(3, 6, dtype=D) * 3, torch.randn(5, 3, 6, dtype=D)
    got = lik.log_prob(y, f)
    ref_df = df.clone().requires_grad_()
    ref = torch.distributions.StudentT(ref_df.unsqueeze(-1), loc=f, scale=lik.scale.detach().unsqueeze(-1)).log_prob(y)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    (grad_raw,) = torch.autograd.grad(got.sum(), lik.raw_df)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_df)
    # d df / d raw_df = sigmoid(raw_df) (df = 0.01 + softplus(raw_df))
    assert torch.allclose(grad_raw, ref_grad * torch.sigmoid(lik.raw_df.detach()), rtol=1e-10)
    # and raw_df receives it through the softplus
    lik.expected_log_prob(y[0], f[0], torch.rand(3, 6, dtype=D)).sum().backward()
    assert lik.raw_df.grad is not None and torch.all(lik.raw_df.grad != 0)


def test_fixed_and_learned_df_agree():
    learned = StudentT(df=3.5, scale=0.8).double()
    fixed = StudentT(df=3.5, scale=0.8, learn_df=False).double()
    g = torch.Generator().manual_seed(0)
    y, mean, var = (torch.randn(4, 5, generator=g, dtype=D) for _ in range(3))
    var = var.abs()
    with torch.no_grad():
        for method in ("expected_log_prob", "marginal_log_prob"):
            assert torch.allclose(getattr(learned, method)(y, mean, var), getattr(fixed, method)(y, mean, var),
                                  rtol=1e-13, atol=1e-13)
        assert torch.allclose(learned.predictive(mean, var).variance, fixed.predictive(mean, var).variance,
                              rtol=1e-13)


def test_df_gradcheck():
    lik = StudentT(df=3.0, scale=0.6).double()
    y, mean, var = torch.randn(5, dtype=D), torch.randn(5, dtype=D), torch.rand(5, dtype=D) + 0.1
    saved = lik.raw_df

    def elp_of_raw(raw_df):
        lik._parameters["raw_df"] = raw_df  # the likelihood reads df = 0.01 + softplus(raw_df)
        try:
            assert torch.equal(lik.df, DF_FLOOR + torch.nn.functional.softplus(raw_df))
            return lik.expected_log_prob(y, mean, var)
        finally:
            lik._parameters["raw_df"] = saved

    assert torch.autograd.gradcheck(elp_of_raw, (saved.detach().clone().requires_grad_(),))


def test_learned_df_trains_toward_the_truth():
    # y ~ scale * t_3 about f = 0; fit df and scale by maximizing E log p(y | f) at var = 0
    g = torch.Generator().manual_seed(5)
    n, true_df, true_scale = 4000, 3.0, 0.5
    chi2 = 2 * torch._standard_gamma(torch.full((n,), true_df / 2, dtype=D), generator=g)
    y = true_scale * torch.randn(n, generator=g, dtype=D) / (chi2 / true_df).sqrt()
    lik = StudentT(df=20.0, scale=1.0).double()
    zeros = torch.zeros(n, dtype=D)
    optimizer = torch.optim.Adam(lik.parameters(), lr=0.05)
    start = -lik.expected_log_prob(y, zeros, zeros).mean().item()
    for _ in range(400):
        optimizer.zero_grad()
        loss = -lik.expected_log_prob(y, zeros, zeros).mean()
        loss.backward()
        optimizer.step()
    df, scale = float(lik.df.detach()), float(lik.scale.detach())
    assert loss.item() < start - 0.05
    assert 2.4 < df < 3.8, df  # from 20; the MLE of 4,000 draws lies within about 0.3 of 3
    assert 0.45 < scale < 0.56, scale
    # a fixed df stays where it is
    fixed = StudentT(df=20.0, scale=1.0, learn_df=False).double()
    assert [name for name, _ in fixed.named_parameters()] == ["raw_scale"]


def test_predictive_variance_with_df_as_a_tensor():
    lik = StudentT(df=4.0, scale=torch.tensor([0.5, 0.5, 0.5]), batch_shape=(3,)).double()
    lik.df = torch.tensor([1.5, 2.0, 5.0])
    mean = torch.randn(3, 4, dtype=D).requires_grad_()
    var = torch.rand(3, 4, dtype=D).requires_grad_()
    pred = lik.predictive(mean, var)
    assert torch.isinf(pred.variance[:2]).all()
    assert torch.allclose(pred.variance[2], var[2] + 0.25 * 5 / 3, rtol=1e-12)
    assert torch.equal(pred.mean, mean.expand(3, 4))
    pred.variance[2].sum().backward()  # finite gradients, none lost to inf * 0 in the heavy branch
    assert torch.isfinite(lik.raw_df.grad).all() and torch.isfinite(lik.raw_scale.grad).all()
    assert lik.raw_df.grad[2] != 0 and torch.all(lik.raw_df.grad[:2] == 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="df: expected a number > 0.01"):
        StudentT(df=0.005)
    assert StudentT(df=0.005, learn_df=False).df == 0.005
    for df in (0, -1.0, math.inf, "4", True):
        with pytest.raises(ValueError, match="df: expected a finite number > 0"):
            StudentT(df=df, learn_df=False)
    with pytest.raises(TypeError, match="learn_df"):
        StudentT(learn_df="yes")


def round_trip(likelihood):
    config = json.loads(json.dumps(likelihood_to_config(likelihood), allow_nan=False))
    rebuilt = likelihood_from_config(config).to(D)
    rebuilt.load_state_dict(likelihood.state_dict(), strict=True)
    return config, rebuilt


def test_learned_df_round_trip():
    lik = StudentT(df=6.0, scale=torch.tensor([0.3, 1.7]), batch_shape=(2,), points=25).double()
    lik.df = torch.tensor([2.7, 9.1])  # e.g. after training
    config, rebuilt = round_trip(lik)
    assert config == {"type": "StudentT", "args": {"df": None, "learn_df": True, "batch_shape": [2], "points": 25}}
    assert rebuilt.learn_df and torch.equal(rebuilt.df, lik.df) and torch.equal(rebuilt.scale, lik.scale)
    y, mean, var = torch.randn(5, dtype=D), torch.randn(5, dtype=D), torch.rand(5, dtype=D)
    assert torch.equal(rebuilt.marginal_log_prob(y, mean, var), lik.marginal_log_prob(y, mean, var))


def test_files_written_before_learn_df_still_load():
    # the config a StudentT(df=2.5, batch_shape=(2,), points=40) wrote before learn_df existed,
    # and its state dict (raw_scale only)
    old = {"type": "StudentT", "args": {"df": 2.5, "batch_shape": [2], "points": 40}}
    lik = likelihood_from_config(old)
    assert type(lik) is StudentT and not lik.learn_df and lik.df == 2.5 and lik.points == 40
    lik.load_state_dict({"raw_scale": torch.tensor([0.1, 0.2])}, strict=True)
    assert likelihood_to_config(lik) == {"type": "StudentT", "args": {"df": 2.5, "learn_df": False,
                                                                      "batch_shape": [2], "points": 40}}
    with pytest.raises(ConfigError, match="null"):
        likelihood_from_config({"type": "StudentT", "args": {**old["args"], "learn_df": True}})
