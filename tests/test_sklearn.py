# The scikit-learn estimator GPRegressor: sklearn's estimator checks, meta-estimators, pandas,
# agreement with sklearn's GaussianProcessRegressor, predictive shapes, and argument errors.
import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import flashgp as fg  # noqa: E402
from flashgp.sklearn import GPRegressor  # noqa: E402


def data(n=60, d=3, seed=0, noise=0.1):
    rng = np.random.RandomState(seed)
    x = rng.uniform(-2, 2, (n, d)) * np.arange(1, d + 1)
    y = np.sin(x[:, 0]) + 0.5 * np.cos(x[:, 1 % d]) + 3 + noise * rng.randn(n)
    return x, y


X, Y = data()
XT, YT = data(n=25, seed=1)


@pytest.fixture(scope="module")
def fitted():
    return GPRegressor(iters=30).fit(X, Y)


# ----- scikit-learn's own checks ----------------------------------------------------------------

# All checks pass as they are (no expected failures); iters is small to keep them fast.
@parametrize_with_checks([GPRegressor(iters=10)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ----- meta-estimators ------------------------------------------------------------------------

def test_clone_keeps_params_and_copies_kernel_objects():
    kernel = fg.kernels.Scale(fg.kernels.RBF(ard_dims=3))
    est = GPRegressor(kernel=kernel, iters=7, lr=0.05, solver=fg.Cholesky(), noise=0.01)
    copy = clone(est)
    assert copy.get_params()["iters"] == 7 and copy.noise == 0.01
    assert copy.kernel is not kernel and isinstance(copy.kernel, fg.kernels.Scale)
    before = kernel.base.lengthscale.detach().clone()
    est.fit(X, Y)
    assert est.kernel is kernel and torch.equal(kernel.base.lengthscale.detach(), before)  # untouched
    assert est.model_.kernel is not kernel


def test_pipeline():
    pipe = make_pipeline(StandardScaler(), GPRegressor(iters=30)).fit(X, Y)
    assert pipe.predict(XT).shape == (25,)
    assert pipe.score(XT, YT) > 0.8


def test_grid_search():
    search = GridSearchCV(GPRegressor(iters=10), {"kernel": ["rbf", "matern32"], "lr": [0.05, 0.1]}, cv=3)
    search.fit(X, Y)
    assert search.best_params_["kernel"] in ("rbf", "matern32")
    assert search.best_estimator_.predict(XT).shape == (25,)
    assert np.isfinite(search.best_score_)


def test_pandas_input():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    est = GPRegressor(iters=10).fit(frame, pd.Series(Y))
    assert list(est.feature_names_in_) == ["a", "b", "c"] and est.n_features_in_ == 3
    with pytest.warns(UserWarning, match="feature names"):
        plain = est.predict(XT)
    np.testing.assert_allclose(est.predict(pd.DataFrame(XT, columns=["a", "b", "c"])), plain)
    with pytest.raises(ValueError, match="feature names"):
        est.predict(pd.DataFrame(XT, columns=["c", "b", "a"]))


# ----- agreement with sklearn's GaussianProcessRegressor -------------------------------------------

def test_matches_sklearn_gaussian_process():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    rng = np.random.RandomState(0)
    x = rng.uniform(0, 1, (450, 3)) * [4.0, 10.0, 1.0]
    y = 5 + 3 * np.sin(3 * x[:, 0]) + 9 * np.cos(0.5 * x[:, 1]) * x[:, 2] + 0.3 * rng.randn(450)
    x, xt, y, yt = x[:150], x[150:], y[:150], y[150:]
    kernel = ConstantKernel() * Matern(length_scale=np.ones(3), nu=2.5) + WhiteKernel()
    ref = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(x, y)
    ours = GPRegressor(kernel="matern52", optimizer="lbfgs", lr=1.0, iters=5).fit(x, y)

    def rmse(model):
        return np.sqrt(np.mean((model.predict(xt) - yt) ** 2))

    assert rmse(ours) <= 1.02 * rmse(ref)
    assert ours.log_marginal_likelihood_ >= ref.log_marginal_likelihood_value_ - 0.5
    np.testing.assert_allclose(ours.lengthscale_, ref.kernel_.k1.k2.length_scale, rtol=0.1)
    noise = ref.kernel_.k2.noise_level * ref._y_train_std**2  # sklearn's noise is in normalized units
    np.testing.assert_allclose(ours.noise_, noise, rtol=0.1)
    _, std = ours.predict(xt, return_std=True)
    _, std_ref = ref.predict(xt, return_std=True)
    np.testing.assert_allclose(std, std_ref, rtol=0.15)
    assert GPRegressor().fit(x, y).score(xt, yt) > 0.95  # the default Adam fit is close too


def test_defaults_match_sklearn_rmse_within_2_percent():
    """The issue's target: sklearn code switched to GPRegressor() keeps its RMSE (within 2%).

    Friedman #1 needs lengthscales of 10-300 (standardized units) and an output scale near 10^3
    at the optimum: out of reach of 100 Adam steps on the softplus scale (ratio ~1.13 there).
    """
    from sklearn.datasets import make_friedman1
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    x, y = make_friedman1(n_samples=800, n_features=5, noise=1.0, random_state=0)
    x, xt, y, yt = x[:300], x[300:], y[:300], y[300:]
    kernel = ConstantKernel() * Matern(length_scale=np.ones(5), nu=2.5) + WhiteKernel()
    ref = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(x, y)
    ours = GPRegressor().fit(x, y)

    def rmse(model):
        return np.sqrt(np.mean((model.predict(xt) - yt) ** 2))

    assert ours.polish_history_ is not None and ours.n_iter_ == 100
    assert rmse(ours) <= 1.02 * rmse(ref)
    assert ours.log_marginal_likelihood_ >= ref.log_marginal_likelihood_value_ - 0.5


def test_polish_choices():
    assert GPRegressor(iters=5, polish=None).fit(X, Y).polish_history_ is None
    assert GPRegressor(iters=5, solver="cg").fit(X, Y).polish_history_ is None  # "auto": exact only
    est = GPRegressor(iters=5, solver="cg", polish="lbfgs").fit(X, Y)
    assert 1 <= len(est.polish_history_) <= 5 and est.model_.diagnostics["path"] == "cg"
    unpolished = GPRegressor(iters=5, polish=None).fit(X, Y)
    assert GPRegressor(iters=5).fit(X, Y).log_marginal_likelihood_ > unpolished.log_marginal_likelihood_


# ----- predictions ---------------------------------------------------------------------------------

def test_predict_shapes_and_std_matches_cov(fitted):
    mean = fitted.predict(XT)
    mean_s, std = fitted.predict(XT, return_std=True)
    mean_c, cov = fitted.predict(XT, return_cov=True)
    assert mean.shape == std.shape == (25,) and cov.shape == (25, 25)
    np.testing.assert_allclose(mean_s, mean)
    np.testing.assert_allclose(mean_c, mean)
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov)), rtol=1e-8)
    _, latent = fitted.predict(XT, return_std=True, include_noise=False)
    np.testing.assert_allclose(latent**2 + fitted.noise_, std**2, rtol=1e-8)
    with pytest.raises(ValueError, match="return_std"):
        fitted.predict(XT, return_std=True, return_cov=True)


def test_predict_in_chunks_matches(fitted, monkeypatch):
    import flashgp.sklearn as module
    full = fitted.predict(XT, return_std=True)
    monkeypatch.setattr(module, "PREDICT_CHUNK", 7)
    for a, b in zip(full, fitted.predict(XT, return_std=True)):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_sample_y(fitted):
    assert fitted.sample_y(XT).shape == (25, 1)
    draws = fitted.sample_y(XT, n_samples=4, random_state=3)
    assert draws.shape == (25, 4)
    np.testing.assert_array_equal(draws, fitted.sample_y(XT, n_samples=4, random_state=3))
    many = fitted.sample_y(XT[:3], n_samples=4000, random_state=0)
    mean, std = fitted.predict(XT[:3], return_std=True)
    np.testing.assert_allclose(many.mean(1), mean, atol=4 * std.max() / np.sqrt(4000) * 1.5)
    np.testing.assert_allclose(many.std(1), std, rtol=0.1)
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample_y(XT, n_samples=0)


def test_fitted_attributes_in_data_units():
    base = GPRegressor(iters=20).fit(X, Y)
    scaled = GPRegressor(iters=20).fit(10 * X, 100 * Y + 7)
    np.testing.assert_allclose(scaled.lengthscale_, 10 * base.lengthscale_, rtol=1e-6)
    np.testing.assert_allclose(scaled.outputscale_, 1e4 * base.outputscale_, rtol=1e-6)
    np.testing.assert_allclose(scaled.noise_, 1e4 * base.noise_, rtol=1e-6)
    np.testing.assert_allclose(scaled.constant_, 100 * base.constant_ + 7, rtol=1e-6)
    np.testing.assert_allclose(scaled.predict(10 * XT), 100 * base.predict(XT) + 7, rtol=1e-6)
    assert base.lengthscale_.shape == (3,) and base.n_iter_ == 20
    # the total log marginal likelihood of the standardized targets
    n = X.shape[0]
    lml = float(base.model_.mll().detach()) * n
    np.testing.assert_allclose(base.log_marginal_likelihood_, lml, rtol=1e-10)


def test_without_normalization():
    est = GPRegressor(iters=10, normalize_x=False, normalize_y=False).fit(X, Y)
    assert np.all(est.x_scale_ == 1) and est.y_mean_ == 0.0
    torch.testing.assert_close(est.model_.train_x, torch.as_tensor(X))


def test_kernel_objects_solvers_noise_and_dtype():
    k = fg.kernels.Scale(fg.kernels.RBF(ard_dims=3)) + fg.kernels.Linear()
    est = GPRegressor(kernel=k, iters=5).fit(X, Y)
    assert est.lengthscale_ is None and est.outputscale_ is None
    est = GPRegressor(kernel=fg.kernels.Matern(nu=1.5), iters=5, solver="cg", noise=0.01).fit(X, Y)
    assert est.model_.diagnostics["path"] == "cg" and est.outputscale_ is None
    assert est.lengthscale_.shape == (3,) and est.noise_ == 0.01
    assert isinstance(est.model_.likelihood, fg.likelihoods.FixedNoise)
    est = GPRegressor(iters=5, solver=fg.Cholesky(), noise=np.full(60, 0.02), dtype="float32").fit(X, Y)
    assert est.model_.train_x.dtype == torch.float32 and est.noise_.shape == (60,)
    assert est.predict(XT).dtype == np.float64
    for name in ("rbf", "matern12", "matern32", "rq"):
        assert GPRegressor(kernel=name, iters=3).fit(X, Y).predict(XT).shape == (25,)


# ----- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("params,exc,match", [
    ({"kernel": "foo"}, ValueError, "kernel"),
    ({"kernel": 3}, TypeError, "kernel"),
    ({"kernel": fg.kernels.RBF(batch_shape=(2,))}, ValueError, "kernel"),
    ({"solver": "x"}, ValueError, "solver"),
    ({"solver": fg.PivotedCholesky(3)}, TypeError, "solver"),
    ({"device": "tpu"}, ValueError, "device"),
    ({"device": 3}, TypeError, "device"),
    ({"dtype": "float16"}, ValueError, "dtype"),
    ({"optimizer": "sgd"}, ValueError, "optimizer"),
    ({"polish": "bfgs"}, ValueError, "polish"),
    ({"polish": False}, ValueError, "polish"),
    ({"iters": -1}, ValueError, "iters"),
    ({"lr": 0.0}, ValueError, "lr"),
    ({"noise": -1.0}, ValueError, "noise"),
    ({"noise": np.ones(3)}, ValueError, "noise"),
    ({"noise": "big"}, TypeError, "noise"),
    ({"normalize_y": "yes"}, TypeError, "normalize_y"),
    ({"random_state": "seed"}, ValueError, "random_state"),
])
def test_bad_params_raise_at_fit(params, exc, match):
    est = GPRegressor(**params)  # no validation here, as scikit-learn asks
    with pytest.raises(exc, match=rf"\b{match}\b"):
        est.fit(X, Y)


def test_bad_data_and_unfitted():
    x = X.copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GPRegressor(iters=1).fit(x, Y)
    with pytest.raises(NotFittedError):
        GPRegressor().predict(XT)
    with pytest.raises(NotFittedError):
        GPRegressor().sample_y(XT)
    est = GPRegressor(iters=1).fit(X, Y)
    with pytest.raises(ValueError, match="features"):
        est.predict(XT[:, :2])


def test_chunked_prediction_uses_one_variance_method(monkeypatch):
    """A small last chunk is joined to the one before, so a large X never mixes exact CG and
    Lanczos variances (before, a remainder chunk under exact_var_max switched to exact CG solves,
    which at large n cost a solve per test point)."""
    import flashgp as fg
    import flashgp.sklearn as module
    monkeypatch.setattr(module, "PREDICT_CHUNK", 7)
    est = GPRegressor(iters=3, solver=fg.CG(exact_var_max=5, tol=0.01), random_state=0)
    est.fit(X[:60], Y[:60])
    calls = []
    original = est.model_.posterior

    def spy(x):
        post = original(x)
        calls.append((x.shape[0], post.diagnostics.get("variance_method")))
        return post

    monkeypatch.setattr(est.model_, "posterior", spy)
    est.predict(XT, return_std=True, include_noise=False)  # 25 rows: chunks of 7, 7 and 11
    assert [m for m, _ in calls] == [7, 7, 11]
    assert {method for _, method in calls} == {"lanczos+cg"}


# ----- issue 25: iters=0 and the noise floor ------------------------------------------------------

def test_iters_zero_optimizes_nothing():
    # as scikit-learn's optimizer=None: no Adam step and no L-BFGS polish (polish="auto" or "lbfgs")
    for polish in ("auto", "lbfgs"):
        kernel = fg.kernels.Scale(fg.kernels.RBF(lengthscale=[0.7, 1.6, 2.2], ard_dims=3), outputscale=1.3)
        est = GPRegressor(kernel=kernel, iters=0, polish=polish, normalize_x=False, normalize_y=False).fit(X, Y)
        assert est.n_iter_ == 0 and est.polish_history_ is None
        np.testing.assert_allclose(est.lengthscale_, [0.7, 1.6, 2.2], rtol=1e-15)
        np.testing.assert_allclose(est.outputscale_, 1.3, rtol=1e-15)
    named = GPRegressor(iters=0).fit(X, Y)  # named kernels start from the (standardized) data
    np.testing.assert_allclose(named.lengthscale_, 0.5 * named.x_scale_, rtol=1e-12)
    np.testing.assert_allclose(named.outputscale_, named.y_scale_**2, rtol=1e-12)
    np.testing.assert_allclose(named.constant_, Y.mean(), rtol=1e-12)


def test_noise_floor_in_data_units_and_its_warning():
    x = np.linspace(0, 4, 25)[:, None]
    y = 100 * np.sin(2 * x[:, 0])  # noise-free, var(y) ~ 5000
    with pytest.warns(fg.NumericalWarning, match=r"noise at its floor: .*squared units of y.*GPRegressor\(noise_floor"):
        high = GPRegressor(kernel="rbf", iters=40, noise_floor=1e-2).fit(x, y)
    assert high.noise_floor_ == pytest.approx(1e-2, rel=1e-12) and high.noise_ < 1.05e-2
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        low = GPRegressor(kernel="rbf", iters=40, noise_floor=1e-6).fit(x, y)
    on_floor = [w for w in caught if "noise at its floor" in str(w.message)]
    assert len(on_floor) <= 1  # one for the whole fit (Adam and polish), not one per run
    assert low.noise_ < high.noise_
    _, std_high = high.predict(x, return_std=True, include_noise=False)
    _, std_low = low.predict(x, return_std=True, include_noise=False)
    assert std_low.max() < std_high.max()
    default = GPRegressor(kernel="rbf", iters=5).fit(X, Y)
    assert default.noise_floor_ == pytest.approx(1e-10 * default.y_scale_**2, rel=1e-6)


@pytest.mark.parametrize("params, match", [
    ({"noise_floor": -1.0}, "noise_floor: expected None or a finite number >= 0"),
    ({"noise_floor": "low"}, "noise_floor"),
    ({"noise_floor": 1e-6, "noise": 0.01}, "noise_floor: applies to a learned noise"),
])
def test_bad_noise_floor(params, match):
    with pytest.raises(ValueError, match=match):
        GPRegressor(iters=1, **params).fit(X, Y)
