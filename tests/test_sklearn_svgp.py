# GPRegressor(method="svgp"): Gaussian, Student-t and Poisson likelihoods through the estimator,
# its files, and the errors of settings that do not apply.
import numpy as np
import pytest

from flashgp.sklearn import GPRegressor


def data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 2))
    f = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1]
    return X, f, rng


def test_svgp_regression_is_close_to_the_exact_gp():
    X, f, rng = data()
    y = f + 0.1 * rng.standard_normal(len(f))
    svgp = GPRegressor(method="svgp", inducing=40, batch_size=128, iters=400, lr=0.05, random_state=0).fit(X[:400], y[:400])
    exact = GPRegressor(iters=50).fit(X[:400], y[:400])
    mean, std = svgp.predict(X[400:], return_std=True)
    rmse = np.sqrt(np.mean((mean - y[400:]) ** 2))
    exact_rmse = np.sqrt(np.mean((exact.predict(X[400:]) - y[400:]) ** 2))
    assert rmse < 1.2 * exact_rmse, (rmse, exact_rmse)
    assert 0.9 < np.mean(np.abs(mean - y[400:]) < 1.96 * std) <= 1.0
    assert svgp.noise_ == pytest.approx(0.01, rel=0.6)
    assert svgp.log_marginal_likelihood_ <= exact.log_marginal_likelihood_ + 1.0  # a lower bound


def test_student_t_is_robust_to_outliers():
    X, f, rng = data()
    y = f + 0.1 * rng.standard_normal(len(f))
    y[:400:10] += rng.choice([-8.0, 8.0], 40)  # 10% gross outliers in the training part
    kwargs = dict(method="svgp", inducing=40, batch_size=128, iters=400, lr=0.05, random_state=0)
    robust = GPRegressor(likelihood="student_t", **kwargs).fit(X[:400], y[:400])
    gaussian = GPRegressor(**kwargs).fit(X[:400], y[:400])
    err = {name: np.sqrt(np.mean((est.predict(X[400:]) - f[400:]) ** 2)) for name, est in
           (("robust", robust), ("gaussian", gaussian))}
    assert err["robust"] < 0.7 * err["gaussian"], err
    assert robust.noise_ is None


def test_poisson_counts_predict_expected_counts_and_survive_a_file(tmp_path):
    X, f, rng = data()
    y = rng.poisson(np.exp(f))
    est = GPRegressor(method="svgp", likelihood="poisson", inducing=40, batch_size=128, iters=400, lr=0.05,
                      random_state=0).fit(X[:400], y[:400])
    assert est.y_mean_ == 0.0 and est.y_scale_ == 1.0  # counts are not standardized
    rate = est.predict(X[400:])
    assert np.sqrt(np.mean((rate - np.exp(f[400:])) ** 2)) < 0.35 * np.std(np.exp(f[400:]))
    est.save(tmp_path / "p.fgp")
    np.testing.assert_array_equal(GPRegressor.load(tmp_path / "p.fgp").predict(X[400:]), rate)
    with pytest.raises(ValueError, match="include_noise"):
        est.predict(X[:3], return_cov=True)
    with pytest.raises(ValueError, match="y: Poisson counts"):
        GPRegressor(method="svgp", likelihood="poisson", iters=1).fit(X[:50], y[:50] + 0.5)


@pytest.mark.parametrize("params,match", [
    (dict(likelihood="poisson"), "likelihood: 'poisson' is not Gaussian; it needs method='svgp'"),
    (dict(likelihood="laplace", method="svgp"), "likelihood: expected one of"),
    (dict(method="sgpr", batch_size=64), "batch_size: only method='svgp'"),  # exact: subset training
    (dict(method="svgp", solver="cg"), "solver: method='svgp' takes no solver"),
    (dict(method="svgp", likelihood="student_t", noise=0.1), "noise: likelihood='student_t'"),
])
def test_settings_that_do_not_apply_are_refused(params, match):
    X, f, _ = data(n=40)
    with pytest.raises(ValueError, match=match):
        GPRegressor(iters=1, **params).fit(X, f)
