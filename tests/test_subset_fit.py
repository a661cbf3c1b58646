# Tests for minibatch (subset) SGD of an ExactGP's hyperparameters: fg.fit(model, batch_size=m)
# (flashgp.subset_training): the subset loss by hand, equality with a full-batch fit at m >= n,
# reproducibility, checkpoint + resume, recovery of known hyperparameters, MAP and argument errors.
import math

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Scale
from flashgp.subset_training import SubsetBatches, subset_loss

F64 = torch.float64


def data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=F64)
    return x, y


def small_model(n=60, seed=0, likelihood=None, solver=None):
    x, y = data(n, seed)
    return fg.ExactGP(x, y, Scale(RBF(ard_dims=2)), likelihood=likelihood, solver=solver or fg.Cholesky())


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def dense_nll_per_point(model, rows):
    """-log N(y_S; m(x_S), K_SS + diag(s_S)) / m by hand, float64."""
    with torch.no_grad():
        x, y = model.train_x[rows].double(), model.train_y[rows].double()
        k = model.kernel(x).double() + torch.diag(model.train_noise()[rows].double())
        r = y - model.mean(x).double()
        m = len(rows)
        quad = r @ torch.linalg.solve(k, r)
        return float(0.5 * (quad + torch.logdet(k) + m * math.log(2 * math.pi)) / m)


@pytest.mark.parametrize("noise", ["gaussian", "fixed"])
def test_subset_loss_is_the_dense_mll_of_the_rows_per_point(noise):
    n = 50
    likelihood = fg.likelihoods.FixedNoise(torch.linspace(0.01, 0.2, n, dtype=F64)) if noise == "fixed" else None
    model = small_model(n, likelihood=likelihood, solver=fg.CG())  # the subset loss is Cholesky whatever the solver
    rows = torch.tensor([3, 17, 0, 42, 8, 31, 25, 11, 49, 5])
    value = subset_loss(model, rows)
    assert value.dtype == F64 and value.dim() == 0 and value.requires_grad
    assert float(value.detach()) == pytest.approx(dense_nll_per_point(model, rows), rel=1e-12)
    assert model.diagnostics["n"] == 10 and model.diagnostics["subset"]
    all_rows = torch.arange(n)
    with torch.no_grad():
        assert float(subset_loss(model, all_rows)) == pytest.approx(float(small_model(n, likelihood=likelihood).loss()),
                                                                    rel=1e-12)


def test_float32_model_gets_a_float64_subset_loss():
    x, y = data(40)
    model = fg.ExactGP(x.float(), y.float(), Scale(RBF()))
    value = subset_loss(model, torch.arange(10))
    assert value.dtype == F64
    assert float(value.detach()) == pytest.approx(dense_nll_per_point(model, torch.arange(10)), rel=1e-5)


def test_batch_size_at_least_n_equals_a_full_batch_fit():
    full, sub = small_model(), small_model()
    h_full = fg.fit(full, lr=0.1, iters=15, progress=False)
    h_sub = fg.fit(sub, lr=0.1, iters=15, progress=False, batch_size=1000, seed=3)
    assert h_sub.loss == pytest.approx(h_full.loss, rel=0, abs=1e-10)
    for name, value in params_of(full).items():
        torch.testing.assert_close(params_of(sub)[name], value, rtol=1e-9, atol=1e-10)


def test_map_with_priors_uses_the_same_per_point_prior_term():
    def with_prior():
        model = small_model()
        model.kernel.base.set_prior("lengthscale", fg.priors.LogNormal(0.0, 0.5))
        return model
    full, sub = with_prior(), with_prior()
    h_full = fg.fit(full, lr=0.1, iters=8, progress=False)
    h_sub = fg.fit(sub, lr=0.1, iters=8, progress=False, batch_size=60)
    assert h_sub.loss == pytest.approx(h_full.loss, rel=0, abs=1e-10)
    model = with_prior()
    rows = SubsetBatches(model, 20, seed=0).batch(0)
    history = fg.fit(model, lr=0.1, iters=1, progress=False, batch_size=20, seed=0)
    expected = dense_nll_per_point(with_prior(), rows) - float(fg.priors.log_prior(with_prior()).detach()) / 60
    assert history.loss[0] == pytest.approx(expected, rel=1e-12)


def test_history_records_the_subset_losses_and_seeds_reproduce():
    model = small_model()
    seen = []
    batches = SubsetBatches(small_model(), 16, seed=5)
    assert batches.batches_per_epoch == 4  # ceil(60 / 16)
    first = small_model()
    history = fg.fit(model, lr=0.05, iters=6, progress=False, batch_size=16, seed=5,
                     callback=lambda step, loss, m: seen.append(m.diagnostics["n"]))
    assert seen == [16, 16, 16, 12, 16, 16]  # the last batch of an epoch holds the rest
    assert history.loss[0] == pytest.approx(dense_nll_per_point(first, batches.batch(0)), rel=1e-12)
    again = small_model()
    assert fg.fit(again, lr=0.05, iters=6, progress=False, batch_size=16, seed=5).loss == history.loss
    for name, value in params_of(model).items():
        assert torch.equal(params_of(again)[name], value)
    other = fg.fit(small_model(), lr=0.05, iters=6, progress=False, batch_size=16, seed=6)
    assert other.loss != history.loss


def test_checkpoint_and_resume_equal_an_uninterrupted_run(tmp_path):
    kwargs = dict(lr=0.05, progress=False, batch_size=16, seed=2)
    reference = small_model()
    h_ref = fg.fit(reference, iters=11, **kwargs)
    path = tmp_path / "subset.ckpt"
    fg.fit(small_model(), iters=6, checkpoint=path, checkpoint_every=2, **kwargs)  # stops mid-epoch 2
    resumed = small_model()
    history = fg.fit(resumed, iters=11, checkpoint=path, resume=True, **kwargs)
    assert history.start_step == 6 and len(history) == 11
    assert history.loss == pytest.approx(h_ref.loss, rel=0, abs=1e-12)
    for name, value in params_of(reference).items():
        torch.testing.assert_close(params_of(resumed)[name], value, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="batch_size"):  # another subset size: not this run
        fg.fit(small_model(), iters=11, checkpoint=path, resume=True, **{**kwargs, "batch_size": 20})


def synthetic(n=4000, seed=0):
    """y = f(x) + noise with f ~ GP(0, 1.0 * RBF(lengthscale 0.6)) on [0, 5]^2 and noise variance 0.09."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=F64) * 5
    truth = Scale(RBF(lengthscale=0.6), outputscale=1.0).double()
    with torch.no_grad():
        k = truth(x) + 1e-8 * torch.eye(n, dtype=F64)
        f = torch.linalg.cholesky(k) @ torch.randn(n, generator=g, dtype=F64)
    return x, f + 0.3 * torch.randn(n, generator=g, dtype=F64)


def hyperparameters(model):
    with torch.no_grad():
        return (float(model.kernel.base.lengthscale), float(model.kernel.outputscale), float(model.likelihood.noise))


def test_minibatch_sgd_recovers_known_hyperparameters():
    """n = 4,000, d = 2, m = 256: within 15% of the generating values (a full-batch L-BFGS fit of
    this data gave lengthscale 0.619, outputscale 0.993, noise 0.0924; see the slow test)."""
    x, y = synthetic()
    model = fg.ExactGP(x, y, Scale(RBF()), solver=fg.Cholesky())
    fg.fit(model, batch_size=256, lr=0.1, iters=150, seed=0, progress=False)
    for value, true in zip(hyperparameters(model), (0.6, 1.0, 0.09)):
        assert value == pytest.approx(true, rel=0.15)


@pytest.mark.slow
def test_minibatch_sgd_is_near_the_full_batch_optimum():
    x, y = synthetic()
    full = fg.ExactGP(x, y, Scale(RBF()), solver=fg.Cholesky())
    fg.fit(full, optimizer="lbfgs", lr=1.0, iters=3, progress=False)
    model = fg.ExactGP(x, y, Scale(RBF()), solver=fg.Cholesky())
    fg.fit(model, batch_size=256, lr=0.05, iters=400, seed=0, progress=False)
    for value, best in zip(hyperparameters(model), hyperparameters(full)):
        assert value == pytest.approx(best, rel=0.1)


@pytest.mark.parametrize("batch_size", [1, 0, -3, 2.5, True, "64"])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size: expected an int >= 2"):
        fg.fit(small_model(), batch_size=batch_size, iters=1, progress=False)


def test_lbfgs_is_refused():
    with pytest.raises(ValueError, match="optimizer: subset .*L-BFGS"):
        fg.fit(small_model(), optimizer="lbfgs", batch_size=16, iters=1, progress=False)


def test_batched_model_is_refused():
    x, y = data(30)
    model = fg.ExactGP(torch.stack([x, x + 1]), torch.stack([y, -y]), Scale(RBF(batch_shape=(2,))))
    with pytest.raises(ValueError, match="without batch dimensions"):
        fg.fit(model, batch_size=8, iters=1, progress=False)


def test_other_uses_of_batch_size_keep_their_meaning():
    with pytest.raises(ValueError, match="data: ExactGP trains on the data it holds"):
        fg.fit(small_model(), data=data(), batch_size=16, iters=1, progress=False)
    x, y = data()
    sgpr = fg.SGPR(x, y, Scale(RBF()), inducing=x[:10])
    with pytest.raises(ValueError, match="batch_size: SGPR trains on the data it holds"):
        fg.fit(sgpr, batch_size=16, iters=1, progress=False)
    svgp = fg.SVGP(Scale(RBF()), inducing=x[:10])
    with pytest.raises(ValueError, match="data: SVGP keeps no training data"):
        fg.fit(svgp, batch_size=16, iters=1, progress=False)


def test_exact_gp_subclasses_train_on_subsets():
    """MultitaskGP (rows are (point, task) entries, each with its task's noise) and IterGP."""
    x = torch.rand(30, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = torch.stack([torch.sin(6 * x[:, 0]), torch.cos(6 * x[:, 0])], -1)
    model = fg.MultitaskGP(x, y, RBF())
    with torch.no_grad():
        assert float(subset_loss(model, torch.randperm(60))) == pytest.approx(float(model.loss()), rel=1e-10)
    history = fg.fit(model, batch_size=16, iters=3, progress=False)
    assert len(history) == 3 and all(math.isfinite(v) for v in history.loss)
    history = fg.fit(fg.IterGP(x, y[:, 0], RBF()), batch_size=16, iters=3, progress=False)
    assert len(history) == 3 and all(math.isfinite(v) for v in history.loss)
