# GPRegressor(method="basis" | "itergp") and GPRegressor(method="exact", batch_size=m): the models
# they build equal the ones built by hand on the same standardized data, the defaults and the
# errors of their settings, save/load, and the fits' quality.
import numpy as np
import pandas as pd
import pytest
import torch

import flashgp as fg
from flashgp import kernels as fk
from flashgp.estimator_methods import DEFAULT_BASIS
from flashgp.kernels.hilbert import MAX_BASIS
from flashgp.likelihoods import Gaussian
from flashgp.means import Constant
from flashgp.sklearn import GPRegressor


def smooth(n, d=2, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, d))
    return x, np.sin(1.5 * x[:, 0]) * np.cos(x[:, -1]) + 0.3 * x[:, -1] + noise * rng.standard_normal(n)


def standardized(est, X, y):
    x_t = torch.as_tensor((np.asarray(X, dtype=float) - est.x_mean_) / est.x_scale_)
    return x_t, torch.as_tensor((y - est.y_mean_) / est.y_scale_)


def in_data_units(est, model, X):
    with torch.no_grad():
        pred = model.predict(torch.as_tensor((np.asarray(X, dtype=float) - est.x_mean_) / est.x_scale_))
    return pred.mean.numpy() * est.y_scale_ + est.y_mean_, pred.stddev.numpy() * est.y_scale_


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


# ----- method="basis" ---------------------------------------------------------------------------
def test_basis_equals_a_basis_gp_built_by_hand():
    X, y = smooth(200)
    est = GPRegressor(method="basis", iters=0).fit(X[:150], y[:150])
    assert isinstance(est.model_, fg.BasisGP)
    kernel = est.model_.kernel
    assert isinstance(kernel, fk.Scale) and isinstance(kernel.base, fk.HilbertSpace)
    assert kernel.base.num_basis == [16, 16] and kernel.base.boundary_factor == 1.5
    assert isinstance(kernel.base.base, fk.Matern) and kernel.base.base.nu == 2.5
    x_t, y_t = standardized(est, X[:150], y[:150])
    hand = fg.BasisGP(x_t, y_t, fk.Scale(fk.HilbertSpace(fk.Matern(nu=2.5, ard_dims=2), num_basis=16,
                                                         boundary_factor=1.5)),
                      likelihood=Gaussian(), mean=Constant(0.0))
    hand.load_state_dict(est.model_.state_dict())
    assert hand.kernel.base.center == kernel.base.center and hand.kernel.base.half_width == kernel.base.half_width
    mean, std = est.predict(X[150:], return_std=True)
    hand_mean, hand_std = in_data_units(est, hand.eval(), X[150:])
    np.testing.assert_allclose(mean, hand_mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(std, hand_std, rtol=0, atol=1e-8)
    assert est.lengthscale_.shape == (2,) and np.all(est.lengthscale_ > 0)


def test_basis_with_a_categorical_column_equals_the_hand_built_product():
    rng = np.random.default_rng(1)
    n = 160
    region = rng.choice(["a", "b", "c"], n)
    x = rng.uniform(-2, 2, n)
    y = np.sin(2 * x) + pd.Series({"a": 0.0, "b": 1.0, "c": -1.0})[region].to_numpy() + 0.1 * rng.normal(size=n)
    X = pd.DataFrame({"x": x, "region": region})
    est = GPRegressor(method="basis", kernel="rbf", inducing=20, iters=0).fit(X[:120], y[:120])
    assert est.categorical_columns_ == [1]
    codes = np.column_stack([x, pd.Series({"a": 0, "b": 1, "c": 2})[region].to_numpy()])
    x_t, y_t = standardized(est, codes[:120], y[:120])
    kernel = fk.Scale(fk.HilbertSpace(fk.RBF(ard_dims=1, active_dims=[0]), num_basis=20, boundary_factor=1.5)
                      * fk.Categorical(3, kind="exchangeable", rank=1, active_dims=[1]))
    hand = fg.BasisGP(x_t, y_t, kernel, likelihood=Gaussian(), mean=Constant(0.0))
    hand.load_state_dict(est.model_.state_dict())
    mean, std = est.predict(X[120:], return_std=True)
    hand_mean, hand_std = in_data_units(est, hand.eval(), codes[120:])
    np.testing.assert_allclose(mean, hand_mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(std, hand_std, rtol=0, atol=1e-8)
    assert np.isnan(est.lengthscale_[1]) and est.lengthscale_[0] > 0


@pytest.mark.parametrize("d", [1, 2, 3])
def test_basis_default_counts_per_continuous_column(d):
    X, y = smooth(60, d)
    est = GPRegressor(method="basis", iters=0).fit(X, y)
    assert est.model_.kernel.base.num_basis == [DEFAULT_BASIS[d]] * d == [{1: 32, 2: 16, 3: 8}[d]] * d
    per_column = GPRegressor(method="basis", iters=0, inducing=[3, 4, 5][:d]).fit(X, y)
    assert per_column.model_.kernel.base.num_basis == [3, 4, 5][:d]


def test_basis_errors_name_the_argument():
    X, y = smooth(40, 4)
    with pytest.raises(ValueError, match=r"grows as m\^d; use method='exact' or 'sgpr'"):
        GPRegressor(method="basis", iters=0).fit(X, y)
    est = GPRegressor(method="basis", iters=0, inducing=4).fit(X, y)  # 4^4 = 256 <= MAX_BASIS: allowed
    assert est.model_.kernel.base.num_basis == [4] * 4
    with pytest.raises(ValueError, match=rf"inducing: .*more than fg.kernels.hilbert.MAX_BASIS \({MAX_BASIS:,}\)"):
        GPRegressor(method="basis", iters=0, inducing=20).fit(X, y)
    X2, y2 = smooth(40)
    for name in ("rq",):
        with pytest.raises(ValueError, match=r"kernel: method='basis' .*'rbf', 'matern12', 'matern32', 'matern52'; "
                                             rf"got '{name}'"):
            GPRegressor(method="basis", kernel=name, iters=0).fit(X2, y2)
    with pytest.raises(ValueError, match=r"inducing: for method='basis', expected basis functions per continuous"):
        GPRegressor(method="basis", iters=0, inducing=[4, 4, 4]).fit(X2, y2)
    with pytest.raises(ValueError, match="solver: method='basis' takes no solver"):
        GPRegressor(method="basis", solver="cholesky", iters=0).fit(X2, y2)
    with pytest.raises(TypeError, match=r"kernel: method='basis' needs a kernel with a finite feature map"):
        GPRegressor(method="basis", kernel=fk.Scale(fk.RBF(ard_dims=2)), iters=0).fit(X2, y2)
    with pytest.raises(ValueError, match="inducing: a kernel object is used as given"):
        GPRegressor(method="basis", kernel=fk.Scale(fk.HilbertSpace(fk.RBF(ard_dims=2), 8)), inducing=8,
                    iters=0).fit(X2, y2)
    with pytest.raises(ValueError, match=r"y: several outputs .*need method='exact'"):
        GPRegressor(method="basis", iters=0).fit(X2, np.column_stack([y2, y2]))


def test_basis_takes_a_kernel_object_as_given():
    X, y = smooth(80)
    kernel = fk.Scale(fk.HilbertSpace(fk.RBF(ard_dims=2), num_basis=[6, 7]))
    est = GPRegressor(method="basis", kernel=kernel, iters=0).fit(X, y)
    assert est.model_.kernel.base.num_basis == [6, 7] and est.model_.kernel is not kernel
    assert not kernel.base.has_domain  # the given object is deep-copied, not changed


def test_basis_save_load_predicts_identically(tmp_path):
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"x": rng.uniform(-2, 2, 90), "k": rng.choice(["p", "q"], 90)})
    y = np.sin(2 * X["x"].to_numpy()) + (X["k"] == "q") + 0.1 * rng.normal(size=90)
    est = GPRegressor(method="basis", inducing=12, iters=0).fit(X[:70], y[:70])
    path = est.save(tmp_path / "basis.fgp")
    back = GPRegressor.load(path)
    assert isinstance(back.model_, fg.BasisGP) and back.method == "basis" and back.inducing == 12
    mean, std = est.predict(X[70:], return_std=True)
    back_mean, back_std = back.predict(X[70:], return_std=True)
    assert np.array_equal(mean, back_mean) and np.array_equal(std, back_std)


def test_basis_fit_is_close_to_the_exact_gp_on_a_smooth_function(tmp_path):
    X, y = smooth(400, noise=0.1)
    train, test = slice(0, 300), slice(300, 400)
    basis = GPRegressor(method="basis", iters=40, random_state=0).fit(X[train], y[train])
    exact = GPRegressor(method="exact", iters=40, random_state=0).fit(X[train], y[train])
    assert basis.polish_history_ is not None  # deterministic likelihood: polish="auto" runs L-BFGS
    constant = rmse(np.full(100, y[train].mean()), y[test])
    r_basis, r_exact = rmse(basis.predict(X[test]), y[test]), rmse(exact.predict(X[test]), y[test])
    assert r_basis < 0.5 * constant
    assert r_basis <= 1.1 * r_exact, (r_basis, r_exact)
    back = GPRegressor.load(basis.save(tmp_path / "fitted.fgp"))
    assert np.array_equal(back.predict(X[test]), basis.predict(X[test]))


# ----- method="exact" with batch_size: subset training ------------------------------------------
def test_exact_with_batch_size_trains_on_subsets_and_predicts_with_all_rows(monkeypatch):
    import flashgp.subset_training as subsets
    X, y = smooth(400, noise=0.1)
    seen = []
    original = subsets.subset_loss

    def spy(model, rows):
        seen.append(len(rows))
        return original(model, rows)
    monkeypatch.setattr(subsets, "subset_loss", spy)
    sub = GPRegressor(method="exact", batch_size=64, iters=60, random_state=0).fit(X, y)
    assert seen and max(seen) == 64 and len(seen) >= 60  # every Adam step saw one subset of 64 rows
    assert sub.polish_history_ is None  # no L-BFGS polish on all n rows after subset training
    assert isinstance(sub.model_, fg.ExactGP) and sub.model_.num_train == 400
    monkeypatch.setattr(subsets, "subset_loss", original)
    full = GPRegressor(method="exact", iters=60, polish=None, random_state=0).fit(X, y)
    np.testing.assert_allclose(sub.noise_, full.noise_, rtol=0.3)
    np.testing.assert_allclose(sub.outputscale_, full.outputscale_, rtol=0.3)
    # the posterior conditions on all 400 rows: closer to y at them than one on 64 rows
    few = GPRegressor(method="exact", iters=0).fit(X[:64], y[:64])
    few.model_.load_state_dict({k: v for k, v in sub.model_.state_dict().items() if not k.startswith("train_")},
                               strict=False)  # the same hyperparameters, 64 of the rows
    assert rmse(sub.predict(X), y) < rmse(few.predict(X), y)


def test_batch_size_refusals():
    X, y = smooth(40)
    for method in ("sgpr", "ski", "basis", "itergp"):
        with pytest.raises(ValueError, match=rf"batch_size: only method='svgp' .*'exact'.*got method='{method}'"):
            GPRegressor(method=method, batch_size=16, iters=1).fit(X, y)
    with pytest.raises(ValueError, match="polish: batch_size trains on random subsets"):
        GPRegressor(method="exact", batch_size=16, polish="lbfgs", iters=1).fit(X, y)
    with pytest.raises(ValueError, match=r"batch_size: several outputs"):
        GPRegressor(method="exact", batch_size=16, iters=1).fit(X, np.column_stack([y, y]))


# ----- method="itergp" -----------------------------------------------------------------------------
def test_itergp_with_a_full_budget_equals_the_exact_gp():
    X, y = smooth(140, noise=0.1)
    exact = GPRegressor(method="exact", iters=0).fit(X[:100], y[:100])
    full = GPRegressor(method="itergp", itergp_budget=100, iters=0).fit(X[:100], y[:100])
    assert isinstance(full.model_, fg.IterGP) and full.model_.policy == "cg" and full.model_.budget["iterations"] == 100
    for include_noise in (True, False):
        mean, std = full.predict(X[100:], return_std=True, include_noise=include_noise)
        exact_mean, exact_std = exact.predict(X[100:], return_std=True, include_noise=include_noise)
        np.testing.assert_allclose(mean, exact_mean, rtol=0, atol=1e-6)
        np.testing.assert_allclose(std, exact_std, rtol=0, atol=1e-6)
    _, cov = full.predict(X[100:110], return_cov=True)
    assert cov.shape == (10, 10)
    assert full.sample_y(X[100:110], 3, random_state=0).shape == (10, 3)


def test_itergp_small_budget_adds_computational_uncertainty(tmp_path):
    X, y = smooth(140, noise=0.1)
    exact = GPRegressor(method="exact", iters=0).fit(X[:100], y[:100])
    small = GPRegressor(method="itergp", itergp_budget=5, itergp_policy="cholesky", iters=0).fit(X[:100], y[:100])
    assert small.model_.policy == "cholesky"
    std = small.predict(X[100:], return_std=True, include_noise=False)[1]
    exact_std = exact.predict(X[100:], return_std=True, include_noise=False)[1]
    assert np.all(std >= exact_std - 1e-10) and np.mean(std - exact_std) > 1e-3
    back = GPRegressor.load(small.save(tmp_path / "itergp.fgp"))
    assert isinstance(back.model_, fg.IterGP) and back.itergp_budget == 5
    assert np.array_equal(back.predict(X[100:], return_std=True)[1], small.predict(X[100:], return_std=True)[1])


def test_itergp_trains_as_the_exact_gp():
    X, y = smooth(120, noise=0.1)
    est = GPRegressor(method="itergp", iters=20, random_state=0).fit(X, y)
    exact = GPRegressor(method="exact", iters=20, random_state=0).fit(X, y)
    assert est.polish_history_ is not None  # the ExactGP's Cholesky path: polish="auto" runs
    np.testing.assert_allclose(est.log_marginal_likelihood_, exact.log_marginal_likelihood_, rtol=1e-8)
    assert est.get_params()["itergp_budget"] is None  # stored as given; 100 at fit


@pytest.mark.parametrize("params, match", [
    (dict(method="itergp", itergp_budget=0), r"itergp_budget: expected None or an int >= 1"),
    (dict(method="itergp", itergp_budget=2.5), r"itergp_budget: expected None or an int >= 1"),
    (dict(method="itergp", itergp_policy="lanczos"), r"itergp_policy: expected None or one of \('cg', 'cholesky', 'pivoted'\)"),
    (dict(method="exact", itergp_budget=10), r"itergp_budget: only method='itergp' takes it"),
    (dict(method="sgpr", itergp_policy="cg"), r"itergp_policy: only method='itergp' takes it"),
    (dict(method="itergp", inducing=10), r"inducing: only method='sgpr'.*got inducing=10 with method='itergp'"),
])
def test_itergp_setting_errors(params, match):
    X, y = smooth(30)
    with pytest.raises(ValueError, match=match):
        GPRegressor(iters=1, **params).fit(X, y)


def test_itergp_refuses_several_outputs():
    X, y = smooth(30)
    with pytest.raises(ValueError, match=r"y: several outputs .*need method='exact'"):
        GPRegressor(method="itergp", iters=1).fit(X, np.column_stack([y, y]))
    with pytest.raises(ValueError, match=r"itergp_budget: several outputs"):
        GPRegressor(itergp_budget=5, iters=1).fit(X, np.column_stack([y, y]))


def test_itergp_and_basis_take_categorical_columns():
    rng = np.random.default_rng(3)
    n = 120
    X = pd.DataFrame({"x": rng.uniform(-2, 2, n), "k": rng.choice(["a", "b", "c"], n)})
    y = np.sin(X["x"].to_numpy()) + (X["k"] == "a").to_numpy() + 0.1 * rng.normal(size=n)
    exact = GPRegressor(iters=0).fit(X, y)
    full = GPRegressor(method="itergp", itergp_budget=n, iters=0).fit(X, y)
    assert full.categorical_columns_ == [1]
    np.testing.assert_allclose(full.predict(X), exact.predict(X), rtol=0, atol=1e-6)
    levels_only = GPRegressor(method="basis", iters=0).fit(X[["k"]], y)  # no continuous column: no basis
    assert isinstance(levels_only.model_, fg.BasisGP)
    assert not any(isinstance(m, fk.HilbertSpace) for m in levels_only.model_.kernel.modules())
    with pytest.raises(ValueError, match="inducing: every column is categorical"):
        GPRegressor(method="basis", inducing=8, iters=0).fit(X[["k"]], y)
