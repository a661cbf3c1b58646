# Issue 25 ("Predictions you can trust"), API part: the noise floor (its default rule, the
# warning when a learned noise ends on it, saved files), constructor values kept at float64
# precision, training inputs of shape (n,), batched test inputs for a model without batches, and
# initial values chosen from the data.
import copy
import math
import warnings

import pytest
import torch

import flashgp as fg
from flashgp import kernels as K
from flashgp.errors import NumericalWarning
from flashgp.fit_warnings import NOISE_FLOOR_KIND, warning_kind
from flashgp.likelihoods import FixedNoise, Gaussian
from flashgp.likelihoods.gaussian import default_noise_floor
from flashgp.means import Constant

F64 = torch.float64


def sine(n=40, d=1, noise=0.0, seed=0, dtype=F64, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=F64)
    y = torch.sin(6 * x).sum(-1) + noise * torch.randn(n, generator=g, dtype=F64)
    return x.to(dtype), (scale * y + shift).to(dtype)


def val(tensor) -> float:
    return float(tensor.detach())


def floor_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, NumericalWarning)
            and warning_kind(str(w.message)) == NOISE_FLOOR_KIND]


# ----- the noise floor ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_default_floor_follows_the_dtype_and_the_prior_variance(dtype):
    x, y = sine(dtype=dtype, scale=30.0)
    model = fg.ExactGP(x, y, K.Scale(K.RBF()))
    prior = max(float(y.var(unbiased=False)), float(model.kernel.diag(x).detach().mean()))
    assert model.likelihood.noise_floor == pytest.approx(default_noise_floor(prior, dtype), rel=1e-12)
    expected = {torch.float64: 1e-10, torch.float32: 1e-4}[dtype]  # relative to var(y)
    assert default_noise_floor(1.0, dtype) == pytest.approx(expected, rel=0.5)
    assert model.likelihood.noise.min() > model.likelihood.noise_floor


def test_explicit_floor_is_kept_and_the_setter_keeps_the_noise():
    x, y = sine()
    model = fg.ExactGP(x, y, K.Scale(K.RBF()), likelihood=Gaussian(noise=0.02, noise_floor=1e-3))
    assert model.likelihood.noise_floor == 1e-3 and float(model.likelihood.noise.detach()) == pytest.approx(0.02, rel=1e-14)
    model.likelihood.noise_floor = 1e-12
    assert model.likelihood.noise_floor == 1e-12
    assert float(model.likelihood.noise.detach()) == pytest.approx(0.02, rel=1e-14)
    with pytest.raises(ValueError, match="noise_floor"):
        model.likelihood.noise_floor = 0.5  # above the noise
    with pytest.raises(ValueError, match="noise_floor"):
        Gaussian(noise_floor=-1.0)
    with pytest.raises(ValueError, match="noise: the given noise"):  # below the default floor
        fg.ExactGP(x, 1e6 * y, K.Scale(K.RBF()), likelihood=Gaussian(noise=1e-9))


def test_fit_warns_once_when_the_learned_noise_ends_on_its_floor():
    x, y = sine(n=30)  # noise-free: the learned noise goes down to any floor
    model = fg.ExactGP(x, y, K.Scale(K.RBF()), likelihood=Gaussian(noise=2e-3, noise_floor=1e-3),
                       solver=fg.Cholesky())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fg.fit(model, iters=60, lr=0.1, progress=False)
    assert float(model.likelihood.noise.detach()) < 1.05e-3
    shown = floor_warnings(caught)
    assert len(shown) == 1
    assert "1e-03" in shown[0] or "0.001" in shown[0]
    assert "noise_floor" in shown[0] and "--noise-floor" in shown[0]
    assert [m for _, m in history.warnings if m == shown[0]]  # kept in the history too


def test_fit_does_not_warn_off_the_floor_or_without_steps():
    x, y = sine(n=30, noise=0.3)
    noisy = fg.ExactGP(x, y, K.Scale(K.RBF()), likelihood=Gaussian(noise_floor=1e-3))
    x, y = sine(n=30)
    still = fg.ExactGP(x, y, K.Scale(K.RBF()), likelihood=Gaussian(noise=1.001e-3, noise_floor=1e-3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fg.fit(noisy, iters=30, progress=False)
        fg.fit(still, iters=0, progress=False)  # on the floor, but nothing was learned
    assert floor_warnings(caught) == []


def test_saved_floors_load_unchanged(tmp_path):
    x, y = sine()
    old = fg.ExactGP(x, y, K.Scale(K.RBF(lengthscale=0.3), outputscale=1.5),
                     likelihood=Gaussian(noise=0.01, noise_floor=1e-4), mean=Constant(0.0))
    new = fg.ExactGP(x, y, K.Scale(K.RBF()))
    for model, name in ((old, "old.fgp"), (new, "new.fgp")):
        fg.save(model, tmp_path / name)
        loaded = fg.load(tmp_path / name)
        assert loaded.likelihood.noise_floor == model.likelihood.noise_floor
        for a, b in zip(model.parameters(), loaded.parameters()):
            assert torch.equal(a.detach(), b.detach())
        torch.testing.assert_close(loaded.posterior(x[:5]).mean, model.posterior(x[:5]).mean, rtol=0, atol=0)
    assert fg.load(tmp_path / "old.fgp").likelihood.noise_floor == 1e-4


# ----- constructor values at float64 precision ----------------------------------------------------

def built_and_set():
    """(constructor-built, property-set) pairs of modules holding the same values."""
    pairs = [
        (K.RBF(lengthscale=0.3), lambda m: setattr(m, "lengthscale", 0.3)),
        (K.Matern(nu=1.5, lengthscale=[0.7, 1.3], ard_dims=2), lambda m: setattr(m, "lengthscale", [0.7, 1.3])),
        (K.RQ(alpha=0.7, lengthscale=0.11), lambda m: (setattr(m, "alpha", 0.7), setattr(m, "lengthscale", 0.11))),
        (K.Periodic(lengthscale=0.9, period=1.3), lambda m: (setattr(m, "lengthscale", 0.9), setattr(m, "period", 1.3))),
        (K.Linear(variance=0.6), lambda m: setattr(m, "variance", 0.6)),
        (K.Polynomial(offset=0.45), lambda m: setattr(m, "offset", 0.45)),
        (K.Scale(K.RBF(lengthscale=0.3), outputscale=2.1),
         lambda m: (setattr(m, "outputscale", 2.1), setattr(m.base, "lengthscale", 0.3))),
        (Gaussian(noise=0.05, noise_floor=1e-4), lambda m: setattr(m, "noise", 0.05)),
        (Constant(0.1), lambda m: setattr(m, "constant", 0.1)),
    ]
    return pairs


@pytest.mark.parametrize("index", range(9))
def test_constructor_values_survive_the_cast_to_float64(index):
    built, setter = built_and_set()[index]
    built = built.double()
    reference = copy.deepcopy(built)  # the same module, its values set again after the cast
    setter(reference)
    for (name, a), (_, b) in zip(built.named_parameters(), reference.named_parameters()):
        assert a.dtype == F64 and torch.equal(a.detach(), b.detach()), name


def test_constructor_values_are_exact_in_a_float64_model():
    x, y = sine()
    model = fg.ExactGP(x, y, K.Scale(K.RBF(lengthscale=0.3), outputscale=2.1),
                       likelihood=Gaussian(noise=0.05, noise_floor=1e-4), mean=Constant(0.1))
    assert float(model.likelihood.noise.detach()) == pytest.approx(0.05, rel=2e-16, abs=0)
    assert val(model.kernel.base.lengthscale) == pytest.approx(0.3, rel=2e-16, abs=0)
    assert val(model.kernel.outputscale) == pytest.approx(2.1, rel=2e-16, abs=0)
    assert val(model.mean.constant) == 0.1
    fixed = fg.ExactGP(x, y, K.RBF(lengthscale=0.3), likelihood=FixedNoise([0.05] * 40))
    assert torch.equal(fixed.likelihood.noise, torch.full((40,), 0.05, dtype=F64))


def test_a_changed_value_is_not_reset_by_a_later_cast():
    kernel = K.RBF(lengthscale=0.3)
    with torch.no_grad():
        kernel.raw_lengthscale.add_(0.5)  # as an optimizer step would
    moved = val(kernel.lengthscale)
    assert val(kernel.double().lengthscale) == pytest.approx(moved, rel=1e-6)
    assert abs(val(kernel.lengthscale) - 0.3) > 0.1


# ----- training inputs of shape (n,) -----------------------------------------------------------------

def test_training_inputs_of_shape_n_are_one_column():
    x, y = sine(n=20)
    flat = fg.ExactGP(x[:, 0], y, K.Scale(K.RBF(lengthscale=0.3), outputscale=1.0))
    column = fg.ExactGP(x, y, K.Scale(K.RBF(lengthscale=0.3), outputscale=1.0))
    assert flat.train_x.shape == (20, 1)
    torch.testing.assert_close(flat.mll(), column.mll(), rtol=0, atol=0)
    x_test = torch.linspace(0, 1, 7, dtype=F64)
    torch.testing.assert_close(flat.posterior(x_test).mean, column.posterior(x_test[:, None]).mean, rtol=0, atol=0)
    flat.set_train_data(x[:10, 0], y[:10])
    assert flat.train_x.shape == (10, 1)
    two = fg.ExactGP(torch.rand(20, 2, dtype=F64), y, K.RBF())
    with pytest.raises(ValueError, match=r"x: shape \(20,\) reads as 20 points of one input dimension"):
        two.set_train_data(x[:, 0], y)


# ----- batched test inputs for a model without batches ------------------------------------------------

@pytest.mark.parametrize("solver", [fg.Cholesky(), fg.CG(exact_var_max=100), fg.CG(exact_var_max=0, root_rank=30)],
                         ids=["cholesky", "cg", "love"])
def test_batched_test_inputs_match_separate_calls(solver):
    x, y = sine(n=60, d=2, noise=0.1)
    model = fg.ExactGP(x, y, K.Scale(K.Matern(nu=2.5, ard_dims=2)), solver=solver)
    x_test = torch.rand(2, 3, 5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    post = model.posterior(x_test)
    assert post.mean.shape == (2, 3, 5) and post.covariance.shape == (2, 3, 5, 5)
    cov = post.covariance.to_dense()
    for i in range(2):
        for j in range(3):
            one = model.posterior(x_test[i, j])
            torch.testing.assert_close(post.mean[i, j], one.mean, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(cov[i, j], one.covariance.to_dense(), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(post.variance[i, j], one.variance, rtol=1e-10, atol=1e-12)
    pred = model.predict(x_test)
    torch.testing.assert_close(pred.variance - post.variance, model.likelihood.noise.detach().expand(2, 3, 5))
    assert pred.sample(4).shape == (4, 2, 3, 5)
    rows = post.covariance.rows(torch.tensor([0, 4]))
    torch.testing.assert_close(rows, cov[..., [0, 4], :])


def test_batch_models_take_leading_test_sets_and_refuse_mismatched_batches():
    x, y = sine(n=20)
    model = fg.ExactGP(x.expand(2, 20, 1), y.expand(2, 20), K.Scale(K.RBF(batch_shape=(2,))))
    assert model.posterior(torch.rand(2, 4, 1, dtype=F64)).mean.shape == (2, 4)
    sets = torch.rand(3, 2, 4, 1, dtype=F64)  # 3 test sets for each of the 2 batch elements
    post = model.posterior(sets)
    assert post.mean.shape == (3, 2, 4) and post.covariance.to_dense().shape == (3, 2, 4, 4)
    for i in range(3):
        one = model.posterior(sets[i])
        torch.testing.assert_close(post.mean[i], one.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(post.covariance.to_dense()[i], one.covariance.to_dense(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="x: expected batch dimensions"):
        model.posterior(torch.rand(3, 4, 1, dtype=F64))


# ----- initial values from the data -----------------------------------------------------------------

def test_unset_values_come_from_the_data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 2, generator=g, dtype=F64) * torch.tensor([0.1, 30.0], dtype=F64)
    y = 200 * torch.sin(60 * x[:, 0]) + 40
    model = fg.ExactGP(x, y, K.Scale(K.RBF(ard_dims=2)))
    var = y.var(unbiased=False)
    torch.testing.assert_close(model.kernel.base.lengthscale.detach(), 0.5 * x.std(0, unbiased=False).view(1, 2))
    torch.testing.assert_close(model.kernel.outputscale.detach(), var)
    torch.testing.assert_close(model.likelihood.noise.detach(), model.likelihood.noise_floor + 0.1 * var)
    torch.testing.assert_close(model.mean.constant.detach(), y.mean())
    shared = fg.ExactGP(x, y, K.RBF())  # one lengthscale: from the root mean square of the column stds
    torch.testing.assert_close(shared.kernel.lengthscale.detach().view(()), 0.5 * x.var(0, unbiased=False).mean().sqrt())


def test_given_values_are_kept_and_overwrite_chooses_again():
    x, y = sine(scale=50.0)
    given = fg.ExactGP(x, y, K.Scale(K.RBF(lengthscale=1.0), outputscale=1.0),
                       likelihood=Gaussian(noise=0.1, noise_floor=1e-4), mean=Constant(0.0))
    assert fg.init_from_data(given) == {}
    assert (val(given.kernel.base.lengthscale), val(given.kernel.outputscale),
            val(given.likelihood.noise), val(given.mean.constant)) == (1.0, 1.0, 0.1, 0.0)
    kernel = K.Scale(K.RBF())
    kernel.base.lengthscale = 0.25  # set through the property: given too
    model = fg.ExactGP(x, y, kernel)
    assert val(model.kernel.base.lengthscale) == 0.25
    assert val(model.kernel.outputscale) == pytest.approx(float(y.var(unbiased=False)))
    done = fg.init_from_data(given, overwrite=True)
    assert set(done) == {"kernel.base.lengthscale", "kernel.outputscale", "likelihood.noise", "mean.constant"}
    assert given.likelihood.noise_floor == 1e-4  # the floor is never chosen again
    torch.testing.assert_close(given.kernel.base.lengthscale.detach().view(()), 0.5 * x.std(unbiased=False))


def test_batches_and_degenerate_data():
    x, y = sine(n=30)
    xb = torch.stack([x, 10 * x])
    yb = torch.stack([y, 5 * y])
    model = fg.ExactGP(xb, yb, K.Scale(K.RBF(batch_shape=(2,))), likelihood=Gaussian(batch_shape=(2,)),
                       mean=Constant(batch_shape=(2,)))
    torch.testing.assert_close(model.kernel.base.lengthscale.detach().view(2), 0.5 * xb.std(1, unbiased=False).view(2))
    torch.testing.assert_close(model.kernel.outputscale.detach(), yb.var(-1, unbiased=False))
    shared = fg.ExactGP(xb, yb, K.Scale(K.RBF()))  # a shared kernel: the batches' average
    torch.testing.assert_close(shared.kernel.outputscale.detach(), yb.var(-1, unbiased=False).mean())
    flat = fg.ExactGP(torch.ones(5, 1, dtype=F64), torch.full((5,), 3.0, dtype=F64), K.Scale(K.RBF()))
    assert val(flat.kernel.base.lengthscale) == 1.0 and val(flat.kernel.outputscale) == 1.0
    assert val(flat.mean.constant) == 3.0


@pytest.mark.parametrize("length, y_scale", [(0.1, 1.0), (1.0, 100.0), (100.0, 1.0)])
@pytest.mark.parametrize("noise", [0.2, 0.0])
def test_gpytorch_sine_recipe_converges_at_any_scale(length, y_scale, noise):
    # GPyTorch's example: 100 points on a grid, sin(2 pi x) (+ noise), Scale(RBF), Adam lr 0.1 for
    # 50 steps. Before the data-derived starts, [0, 0.1] and y * 100 ended at the all-noise optimum
    # (MAE 0.28-0.39 of y's scale); [0, 1] with y ~ 1 already converged.
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0, length, 100, dtype=F64)
    f = lambda t: y_scale * torch.sin(2 * math.pi * t / length)  # noqa: E731
    y = f(x) + noise * y_scale * torch.randn(100, generator=g, dtype=F64)
    model = fg.ExactGP(x, y, K.Scale(K.RBF()))
    fg.fit(model, optimizer="adam", lr=0.1, iters=50, progress=False, seed=0)
    x_test = torch.linspace(0, length, 51, dtype=F64)
    mae = float((model.predict(x_test).mean - f(x_test)).abs().mean()) / y_scale
    assert mae < 0.05


def test_gpytorch_batch_sine_recipe_fits_the_two_period_set():
    # GPyTorch's batch test: 11 points over two periods and 11 over one, noise 0.01, 50 Adam
    # steps. From lengthscale 1 and noise 0.1 the two-period set ended as all noise (MAE 0.62).
    sets = []
    for high, seed in ((2.0, 6), (1.0, 7)):
        x = torch.linspace(0, high, 11, dtype=F64)
        y = torch.sin(2 * math.pi * x) + 0.01 * torch.randn(11, generator=torch.Generator().manual_seed(seed), dtype=F64)
        grid = torch.linspace(0, high, 51, dtype=F64)
        sets.append((x[:, None], y, grid[:, None], torch.sin(2 * math.pi * grid)))
    model = fg.ExactGP(torch.stack([s[0] for s in sets]), torch.stack([s[1] for s in sets]),
                       K.Scale(K.RBF(batch_shape=(2,))), likelihood=Gaussian(batch_shape=(2,)),
                       mean=Constant(batch_shape=(2,)))
    fg.fit(model, optimizer="adam", lr=0.1, iters=50, progress=False)
    mean = model.predict(torch.stack([s[2] for s in sets])).mean
    for i in range(2):
        assert float((mean[i] - sets[i][3]).abs().mean()) < 0.05
