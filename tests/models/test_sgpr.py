# SGPR against dense float64 references (the bound, its gradients, the posterior), in row blocks
# and whole, with Gaussian and FixedNoise likelihoods, batches, fixed or learned inducing points.
import math
from copy import deepcopy

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Matern, Scale
from flashgp.testing import sgpr_loss_reference, sgpr_posterior_reference

F64 = torch.float64


def data(n=120, d=2, batch=(), seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, n, d, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[..., 0]) + 0.3 * x[..., 1] + 0.1 * torch.randn(*batch, n, generator=g, dtype=F64)
    return x.to(dtype), y.to(dtype)


def randomize(model, seed=1):
    """Move every hyperparameter (not the inducing points) off its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "inducing_points":
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64).to(p.dtype))
    return model


def relative(a, b):
    return float((a - b).abs().max().detach() / b.abs().max().detach())


CASES = {
    "whole": dict(),
    "blocks": dict(memory_budget=4 * 8 * 10 * 17),  # 17 rows per block: 8 blocks, the last partial
    "jitter": dict(jitter=1e-6),
    "rpcholesky": dict(init="rpcholesky"),
    "fixed_inducing": dict(learn_inducing=False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bound_gradients_and_posterior_match_dense_float64(case):
    x, y = data()
    model = randomize(fg.SGPR(x, y, Scale(Matern(nu=2.5, ard_dims=2)), inducing=10, **CASES[case]))
    if case == "blocks":
        assert model._rows() == 17
    loss = model.loss()
    ref = sgpr_loss_reference(model)
    assert relative(loss, ref) < 1e-10
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss.sum(), params)
    ref_grads = torch.autograd.grad(ref.sum(), params)
    for g, r in zip(grads, ref_grads):
        assert relative(g, r) < 1e-8
    if case == "blocks":
        assert model.diagnostics["blocks"] == 8
    test_x = data(15, seed=3)[0]
    post = model.posterior(test_x)
    mean, var = sgpr_posterior_reference(model, test_x)
    assert relative(post.mean, mean) < 1e-8
    assert relative(post.variance, var) < 1e-8


def test_posterior_covariance_samples_and_predict():
    x, y = data()
    model = randomize(fg.SGPR(x, y, Scale(RBF(ard_dims=2)), inducing=12))
    test_x = data(9, seed=4)[0]
    post = model.posterior(test_x)
    with torch.no_grad():
        kzz, ktz = model.kernel(model.inducing_points), model.kernel(test_x, model.inducing_points)
        kxz, noise = model.kernel(x, model.inducing_points), model.likelihood.noise_diag(x.shape[0])
        sigma = torch.linalg.inv(kzz + kxz.T @ (kxz / noise[:, None]))
        cov = model.kernel(test_x) - ktz @ torch.linalg.solve(kzz, ktz.T) + ktz @ sigma @ ktz.T
    assert relative(post.covariance.to_dense(), cov) < 1e-8
    rhs = torch.randn(9, 3, dtype=F64)
    assert relative(post.covariance.matmul(rhs), cov @ rhs) < 1e-8
    assert relative(post.covariance.rows(torch.tensor([2, 5])), cov[[2, 5]]) < 1e-8
    pred = model.predict(test_x)
    assert torch.allclose(pred.variance, post.variance + model.likelihood.noise)
    assert post.sample(4).shape == (4, 9)


def test_fixed_noise_and_batches():
    x, y = data(batch=(2,))
    noise = 0.01 + 0.05 * torch.rand(2, 120, generator=torch.Generator().manual_seed(5), dtype=F64)
    model = fg.SGPR(x, y, Scale(RBF(batch_shape=(2,))), inducing=8, likelihood=fg.likelihoods.FixedNoise(noise))
    loss = model.loss()
    assert loss.shape == (2,)
    assert relative(loss, sgpr_loss_reference(model)) < 1e-10
    test_x = data(6, seed=6, batch=(2,))[0]
    mean, var = sgpr_posterior_reference(model, test_x)
    post = model.posterior(test_x)
    assert relative(post.mean, mean) < 1e-8 and relative(post.variance, var) < 1e-8


def test_bound_below_exact_mll_and_equal_when_inducing_points_are_the_data():
    x, y = data(60)
    kernel = Scale(Matern(nu=1.5, ard_dims=2))
    sparse = fg.SGPR(x, y, kernel, inducing=8)
    exact = fg.ExactGP(x, y, kernel, likelihood=sparse.likelihood, mean=sparse.mean, solver=fg.Cholesky())
    assert float(sparse.elbo().detach()) < float(exact.mll().detach())
    full = fg.SGPR(x, y, kernel, inducing=x.clone(), likelihood=sparse.likelihood, mean=sparse.mean, jitter=None)
    assert abs(float(full.elbo().detach()) - float(exact.mll().detach())) < 1e-7
    test_x = data(5, seed=7)[0]
    assert relative(full.posterior(test_x).mean, exact.posterior(test_x).mean) < 1e-6


def test_float32_model_computes_in_float64():
    x, y = data(dtype=torch.float32)
    model = fg.SGPR(x, y, Scale(RBF(ard_dims=2)), inducing=10)
    loss = model.loss()
    assert loss.dtype == torch.float32
    copy = deepcopy(model).double()
    assert abs(float(loss) - float(sgpr_loss_reference(copy))) < 1e-6
    assert model.posterior(data(4, seed=8, dtype=torch.float32)[0]).mean.dtype == torch.float32


def test_fit_raises_the_bound_and_moves_inducing_points():
    x, y = data(200)
    model = fg.SGPR(x, y, Scale(RBF(ard_dims=2)), inducing=10)
    start = model.inducing_points.detach().clone()
    history = fg.fit(model, iters=30, lr=0.05)
    assert history.loss[-1] < history.loss[0] - 0.2
    assert not torch.equal(model.inducing_points.detach(), start)
    fixed = fg.SGPR(x, y, Scale(RBF(ard_dims=2)), inducing=10, learn_inducing=False)
    fg.fit(fixed, iters=3)
    assert "inducing_points" in dict(fixed.named_buffers())


def test_inducing_count_is_capped_at_n_and_given_points_are_copied():
    x, y = data(30)
    assert fg.SGPR(x, y, Scale(RBF()), inducing=100).num_inducing == 30
    assert fg.SGPR(x, y, Scale(RBF())).num_inducing == 30
    z = x[:5].clone()
    model = fg.SGPR(x, y, Scale(RBF()), inducing=z)
    z.add_(1.0)
    assert torch.equal(model.inducing_points.detach(), x[:5])


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(inducing=0), ValueError, "positive number of inducing"),
    (dict(inducing="ten"), TypeError, "inducing: expected"),
    (dict(inducing=torch.zeros(4, 3)), ValueError, "shape (m, 2)"),
    (dict(inducing=torch.full((4, 2), math.nan)), ValueError, "NaN"),
    (dict(init="kmeans"), ValueError, "init: expected one of"),
    (dict(jitter=-1.0), ValueError, "jitter: expected"),
    (dict(memory_budget=0), ValueError, "memory_budget"),
    (dict(learn_inducing="yes"), TypeError, "learn_inducing"),
    (dict(likelihood=fg.likelihoods.Bernoulli()), TypeError, "conjugate"),
])
def test_bad_arguments_are_named(kwargs, error, words):
    x, y = data(30)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        fg.SGPR(x, y, Scale(RBF()), **kwargs)


def test_save_load_round_trip(tmp_path):
    x, y = data()
    model = randomize(fg.SGPR(x, y, Scale(RBF(ard_dims=2)), inducing=10, jitter=1e-8))
    fg.fit(model, iters=3)
    fg.save(model, tmp_path / "m.fgp")
    back = fg.load(tmp_path / "m.fgp")
    assert type(back) is fg.SGPR and back.jitter == 1e-8
    test_x = data(5, seed=9)[0]
    assert torch.equal(back.posterior(test_x).mean, model.posterior(test_x).mean)
    assert float(back.loss()) == float(model.loss())


def test_weighted_gram_backward_matches_autograd_with_broadcast_batches():
    from flashgp.linalg.inducing import WeightedGram
    g = torch.Generator().manual_seed(3)
    cross = torch.randn(7, 4, generator=g, dtype=F64, requires_grad=True)  # broadcast over a batch of 2
    weights = torch.rand(2, 7, generator=g, dtype=F64).add(0.5).requires_grad_()
    resid = torch.randn(2, 7, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(WeightedGram.apply, (cross, weights, resid))


def test_gram_and_whitened_paths_agree_and_ill_conditioned_inducing_points_take_the_whitened_one(monkeypatch):
    from flashgp.linalg import inducing
    x, y = data()
    model = randomize(fg.SGPR(x, y, Scale(RBF(ard_dims=2)), inducing=10, memory_budget=4 * 8 * 10 * 33))
    loss = model.loss()
    assert model.diagnostics["terms"] == "gram"
    grads = torch.autograd.grad(loss, [model.inducing_points, model.kernel.raw_outputscale])
    monkeypatch.setattr(inducing, "WELL_CONDITIONED", 0.0)
    other = model.loss()
    assert model.diagnostics["terms"] == "whitened"
    assert relative(other, loss) < 1e-12
    for a, b in zip(grads, torch.autograd.grad(other, [model.inducing_points, model.kernel.raw_outputscale])):
        assert relative(a, b) < 1e-9
    monkeypatch.undo()
    z = x[:10].clone()
    z[1] = z[0] + 1e-5  # two nearly equal inducing points: K_zz nearly singular
    close = fg.SGPR(x, y, Scale(RBF(ard_dims=2)), inducing=z)
    value = close.loss()
    assert close.diagnostics["terms"] == "whitened"
    assert relative(value, sgpr_loss_reference(close)) < 1e-6
