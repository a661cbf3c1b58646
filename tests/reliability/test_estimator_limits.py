# Bounded outputs and scales in GPRegressor: return_cov and sample_y check the size of what they
# would return before allocating anything (naming the size and the alternative); targets whose
# variances overflow or underflow float64 are refused before the fit; values that overflow a
# float32 model are named as such, not as "not finite". Also the command line's float32 path.
import numpy as np
import pytest
import torch
from bad_input_helpers import Case, Raises, Returns, same
from cli_estimator_helpers import fitted_regressor, regressor, run_case, sk_data

pytest.importorskip("sklearn")
import flashgp.sklearn as fsk  # noqa: E402
from flashgp.tables import InputError, scaled_inputs, spread  # noqa: E402

X, Y = sk_data()
V = ValueError


def no_work(monkeypatch, est):
    """Make any posterior computation of ``est`` fail: a refusal must come before the work."""
    def refuse(*args, **kwargs):
        raise AssertionError("the posterior was computed before the size check")
    monkeypatch.setattr(est, "_posterior", refuse)


def test_return_cov_of_30000_points_is_refused_before_any_work(monkeypatch):
    est = fitted_regressor()
    no_work(monkeypatch, est)
    with pytest.raises(ValueError, match=r"return_cov: .*30,000 x 30,000 float64 values \(7.2 GB.*"
                                         r"return_std=True for the 30,000 marginal standard deviations"):
        est.predict(np.zeros((30_000, 2)), return_cov=True)


def test_sample_y_sizes_are_checked_before_any_work(monkeypatch):
    est = fitted_regressor()
    no_work(monkeypatch, est)
    with pytest.raises(ValueError, match=r"sample_y: .*20 x 10,000,000 float64 values \(1.6 GB.*fewer samples"):
        est.sample_y(X[:20], n_samples=10**7)
    with pytest.raises(ValueError, match=r"X: joint samples at 9,000 points need a dense 9,000 x 9,000"):
        est.sample_y(np.zeros((9_000, 2)))


def test_the_limit_is_a_setting(monkeypatch):
    est = fitted_regressor()
    monkeypatch.setattr(fsk, "MAX_OUTPUT_BYTES", 8 * 99)
    with pytest.raises(ValueError, match=r"return_cov: .*10 x 10 float64 values"):
        est.predict(X[:10], return_cov=True)
    assert est.predict(X[:9], return_cov=True)[1].shape == (9, 9)
    assert est.predict(X, return_std=True)[1].shape == (30,)  # marginals are never limited


def test_return_cov_adds_the_noise_once_and_leaves_the_model_cache_alone():
    est = fitted_regressor()
    latent = est.predict(X[:6], return_cov=True, include_noise=False)[1]
    noisy = est.predict(X[:6], return_cov=True)[1]
    np.testing.assert_allclose(np.diag(noisy) - np.diag(latent), est.noise_, rtol=1e-9)
    np.testing.assert_array_equal(noisy - np.diag(np.diag(noisy)), latent - np.diag(np.diag(latent)))
    np.testing.assert_array_equal(est.predict(X[:6], return_cov=True, include_noise=False)[1], latent)
    np.testing.assert_allclose(np.sqrt(np.diag(noisy)), est.predict(X[:6], return_std=True)[1], rtol=1e-9)


def test_a_huge_target_is_refused_before_the_fit(monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("the fit ran before the scale check")
    monkeypatch.setattr(fsk, "fit_model", no_fit)
    with pytest.raises(ValueError, match=r"^y: y's standard deviation is .*e\+15\d .*would overflow in float64"):
        regressor().fit(X, Y * 1e160)
    with pytest.raises(ValueError, match=r"^y: y's standard deviation is .*e-16\d .*underflow"):
        regressor().fit(X, Y * 1e-160)
    with pytest.raises(ValueError, match=r"^y: y's magnitude \(normalize_y=False\)"):
        regressor(normalize_y=False).fit(X, Y * 1e160)


def scaled_pair(factor_x=1.0, factor_y=1.0, **params):
    """(predictions of a fit on scaled data, mapped back; the unscaled fit's predictions)."""
    est = regressor(**params).fit(X * factor_x, Y * factor_y)
    mean, std = est.predict(X[:5] * factor_x, return_std=True)
    ref = regressor(**params).fit(X, Y).predict(X[:5], return_std=True)
    return (mean / factor_y, std / factor_y), ref


def spread_of_tiny_column():
    values = np.c_[np.linspace(1, 2, 5) * 1e-200, np.full(5, 7.0), 1.0 + np.array([0, 1, 0, 1, 0]) * 2e-16]
    return spread(values), np.array([np.std(np.linspace(1, 2, 5)) * 1e-200, 1.0, 1.0])


CASES = [
    Case("estimator/return-cov-30000", lambda t: fitted_regressor().predict(np.zeros((30_000, 2)), return_cov=True),
         Raises(V, r"return_cov: the result would be 30,000 x 30,000")),
    Case("estimator/sample-y-10-million", lambda t: fitted_regressor().sample_y(X[:5], n_samples=10**8),
         Raises(V, r"sample_y: the result would be 5 x 100,000,000")),
    Case("estimator/target-1e160", lambda t: regressor().fit(X, Y * 1e160), Raises(V, r"^y: .*overflow in float64")),
    Case("estimator/target-1e-160", lambda t: regressor().fit(X, Y * 1e-160), Raises(V, r"^y: .*underflow")),
    Case("estimator/float32-target-1e39", lambda t: regressor(dtype="float32", normalize_y=False).fit(X, Y * 1e39),
         Raises(V, r"^y: values up to .*e\+39 .*overflow float32, the model's dtype")),
    Case("estimator/float32-inputs-1e39", lambda t: regressor(dtype="float32", normalize_x=False).fit(X * 1e39, Y),
         Raises(V, r"^X: values up to .*e\+39 .*overflow float32.*normalize_x=True")),
    Case("estimator/float32-predict-far-away", lambda t: regressor(dtype="float32").fit(X, Y).predict(X[:2] * 1e39),
         Raises(V, r"^X: values up to .*overflow float32.*far outside the training inputs")),
    Case("estimator/float32-fixed-noise-overflow",
         lambda t: regressor(dtype="float32", noise=1.0).fit(X, Y * 1e-20),
         Raises(V, r"^noise: values up to .*overflow float32")),
    Case("ok/estimator-tiny-input-units", lambda t: scaled_pair(factor_x=1e-200), Returns(same(1e-8))),
    Case("ok/estimator-large-target-units", lambda t: scaled_pair(factor_y=1e140), Returns(same(1e-8))),
    Case("ok/spread-tiny-column-is-not-constant", lambda t: spread_of_tiny_column(), Returns(same(1e-12))),
    Case("cli-tables/float32-far-away-rows",
         lambda t: scaled_inputs(np.array([[1e39, 0.0]]), {"x_mean": [0, 0], "x_std": [1, 1]}, torch.float32),
         Raises(InputError, r"^DATA: values up to 1e\+39 .*overflow float32.*far outside the training")),
]


def test_case_ids_are_distinct():
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_estimator_bad_input(case, tmp_path):
    run_case(case, tmp_path)
