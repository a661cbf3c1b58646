"""GPRegressor with 2-D targets: one MultitaskGP on the standardized columns (independent outputs
with a shared kernel by default, ICM or LMC on request); predictions, samples, covariances and
fitted attributes in each target's units; files; refused settings."""
import numpy as np
import pytest
import torch

from flashgp import MultitaskGP
from flashgp.sklearn import GPRegressor

RNG = np.random.default_rng(4)
X = RNG.uniform(0, 3, (70, 2))
F = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1]
# three correlated targets on very different scales (and one shifted)
Y = np.stack([F, 300 * F + 50, -0.01 * F], 1) + 0.05 * RNG.standard_normal((70, 3)) * np.array([1, 300, 0.01])
XT = RNG.uniform(0, 3, (9, 2))


@pytest.fixture(scope="module", params=[None, "icm", "lmc"])
def fitted(request):
    return GPRegressor(multitask=request.param, iters=25).fit(X, Y)


def test_shapes_and_model(fitted):
    """Predictions are (m, t); the model is a MultitaskGP whose rank follows the mode."""
    mean, std = fitted.predict(XT, return_std=True)
    assert mean.shape == std.shape == (9, 3)
    assert np.all(std > 0)
    assert isinstance(fitted.model_, MultitaskGP)
    assert fitted.y_mean_.shape == fitted.y_scale_.shape == (3,)
    assert fitted.noise_.shape == fitted.constant_.shape == (3,)
    assert fitted.task_covariance_.shape == fitted.task_correlation_.shape == (3, 3)
    np.testing.assert_allclose(np.diag(fitted.task_correlation_), 1.0)
    if fitted.multitask is None:  # independent: B diagonal
        off = fitted.task_correlation_ - np.diag(np.diag(fitted.task_correlation_))
        assert np.abs(off).max() == 0.0
    else:  # the targets are one function up to scale and sign: strongly correlated
        assert fitted.task_correlation_[0, 1] > 0.9 and fitted.task_correlation_[0, 2] < -0.9


def test_predictions_in_each_targets_units(fitted):
    """The estimator's mean and standard deviation are the model's, mapped back per target."""
    x = torch.as_tensor((XT - fitted.x_mean_) / fitted.x_scale_)
    post = fitted.model_.predict(x)
    mean, std = fitted.predict(XT, return_std=True)
    np.testing.assert_allclose(mean, post.mean.numpy() * fitted.y_scale_ + fitted.y_mean_, rtol=1e-12)
    np.testing.assert_allclose(std, post.stddev.numpy() * fitted.y_scale_, rtol=1e-12)
    assert fitted.score(X, Y) > 0.98  # near noise level on every target (R^2 averaged)


def test_return_cov_and_samples(fitted):
    """return_cov gives one joint covariance per target (m, m, t) whose diagonals are the squared
    standard deviations; sample_y gives (m, t, s) draws whose spread matches them."""
    _, std = fitted.predict(XT, return_std=True)
    _, cov = fitted.predict(XT, return_cov=True)
    assert cov.shape == (9, 9, 3)
    np.testing.assert_allclose(np.sqrt(np.stack([np.diag(cov[:, :, a]) for a in range(3)], 1)), std, rtol=1e-8)
    np.testing.assert_allclose(cov, np.swapaxes(cov, 0, 1), rtol=1e-6, atol=1e-10 * np.abs(cov).max())
    draws = fitted.sample_y(XT, n_samples=2000, random_state=0)
    assert draws.shape == (9, 3, 2000)
    np.testing.assert_allclose(draws.std(-1), std, rtol=0.1)


def test_save_and_load(tmp_path, fitted):
    """A saved multi-output estimator predicts the same after loading, with its fitted values."""
    path = fitted.save(tmp_path / "gp.fgp")
    loaded = GPRegressor.load(path)
    np.testing.assert_array_equal(loaded.predict(XT), fitted.predict(XT))
    np.testing.assert_allclose(loaded.task_covariance_, fitted.task_covariance_)
    assert loaded.multitask == fitted.multitask


def test_one_column_stays_single_output():
    """y of shape (n,) keeps the single-output model and 1-D predictions."""
    est = GPRegressor(iters=5).fit(X, Y[:, 0])
    assert est.predict(XT).shape == (9,) and not isinstance(est.model_, MultitaskGP)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "sgpr"}, "need method='exact'"),
    ({"noise": 0.1}, "noise: several outputs"),
    ({"noise_floor": 1e-6}, "noise_floor: several outputs"),
    ({"multitask": "full"}, "multitask: expected None or one of"),
    ({"multitask": "icm", "task_rank": 4}, "task_rank: expected an int from 1"),
    ({"multitask": "icm", "task_rank": 0}, "task_rank: expected an int from 1"),
])
def test_refused_settings(kwargs, match):
    """Settings that several outputs do not take are refused at fit, naming them."""
    with pytest.raises(ValueError, match=match):
        GPRegressor(iters=2, **kwargs).fit(X, Y)


def test_nan_targets_refused():
    """Missing targets are refused by the estimator (the model itself takes NaN as unobserved)."""
    y = Y.copy()
    y[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GPRegressor(iters=2).fit(X, y)
