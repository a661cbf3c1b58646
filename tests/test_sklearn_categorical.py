# GPRegressor with categorical input columns: detection (dtypes, names, indices), encoding by the
# levels of the fit, the kernel Scale(cont * Categorical ...) against a dense float64 reference,
# that the levels help, every error, and save/load.
import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

import flashgp as fg  # noqa: E402
from flashgp import kernels as fk  # noqa: E402
from flashgp.likelihoods import Gaussian  # noqa: E402
from flashgp.means import Constant  # noqa: E402
from flashgp.sklearn import GPRegressor  # noqa: E402

OFFSETS = {"north": 0.0, "south": 1.5, "east": -1.0, "west": 2.5}


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    region = rng.choice(sorted(OFFSETS), n)
    y = np.sin(3 * x) + np.array([OFFSETS[r] for r in region]) + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"x": x, "region": region}), y


def matern52(r):
    s = np.sqrt(5.0) * r
    return (1 + s + s**2 / 3) * np.exp(-s)


# ----- against a dense float64 reference ---------------------------------------------------------

def test_matches_dense_reference_and_hand_built_exact_gp():
    frame, y = make_data(40)
    test, _ = make_data(15, seed=1)
    est = GPRegressor(iters=0).fit(frame, y)
    kernel = est.model_.kernel
    assert isinstance(kernel, fk.Scale)
    matern, cat = kernel.base.kernels
    assert isinstance(matern, fk.Matern) and matern.active_dims.tolist() == [0]
    assert isinstance(cat, fk.Categorical) and cat.active_dims.tolist() == [1] and cat.num_levels == 4
    # the hyperparameters (as init_from_data chose them), read back as float64 numbers
    os_, ls = float(kernel.outputscale.detach()), float(matern.lengthscale.detach().reshape(-1)[0])
    corr = float(torch.exp(-cat.decay.detach()))
    noise, const = float(est.model_.likelihood.noise.detach()), float(est.model_.mean.constant.detach())
    # the scaling: x standardized, the level column left as codes, y standardized
    levels = sorted(OFFSETS)
    np.testing.assert_array_equal(est.categories_[0], levels)
    x_mean, x_std = frame["x"].mean(), frame["x"].std(ddof=0)
    np.testing.assert_allclose(est.x_mean_, [x_mean, 0.0])
    np.testing.assert_allclose(est.x_scale_, [x_std, 1.0])
    y_mean, y_std = y.mean(), y.std()

    def k(a, b):
        xa, xb = (a["x"].to_numpy() - x_mean) / x_std, (b["x"].to_numpy() - x_mean) / x_std
        ca = np.array([levels.index(v) for v in a["region"]])
        cb = np.array([levels.index(v) for v in b["region"]])
        level = np.where(ca[:, None] == cb[None, :], 1.0, corr)
        return os_ * matern52(np.abs(xa[:, None] - xb[None, :]) / ls) * level

    K = k(frame, frame) + noise * np.eye(len(y))
    Ks = k(test, frame)
    z = (y - y_mean) / y_std
    mean = const + Ks @ np.linalg.solve(K, z - const)
    cov = k(test, test) - Ks @ np.linalg.solve(K, Ks.T)
    got_mean, got_cov = est.predict(test, return_cov=True, include_noise=False)
    np.testing.assert_allclose(got_mean, mean * y_std + y_mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_cov, cov * y_std**2, rtol=1e-7, atol=1e-9)
    _, std = est.predict(test, return_std=True)
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov) + noise) * y_std, rtol=1e-7)

    # the same model built by hand with the kernel of the issue, on the same scaled data
    hand_kernel = fk.Scale(fk.Matern(nu=2.5, active_dims=[0]) * fk.Categorical(4, active_dims=[1]))
    hand_kernel.load_state_dict(kernel.state_dict())

    def encode(f):
        return torch.tensor(np.column_stack([(f["x"] - x_mean) / x_std,
                                             [levels.index(v) for v in f["region"]]]), dtype=torch.float64)

    hand = fg.ExactGP(encode(frame), torch.tensor(z), hand_kernel, likelihood=Gaussian(), mean=Constant(0.0))
    hand.likelihood.load_state_dict(est.model_.likelihood.state_dict())
    hand.mean.load_state_dict(est.model_.mean.state_dict())
    post = hand.eval().predict(encode(test))
    np.testing.assert_allclose(est.predict(test), post.mean.detach().numpy() * y_std + y_mean, rtol=1e-9)


# ----- detection and encoding --------------------------------------------------------------------

def test_dataframe_category_string_and_bool_columns_are_detected():
    frame, y = make_data(30)
    frame["shape"] = pd.Categorical(np.where(frame["x"] > 0, "round", "square"))
    frame["flag"] = frame["x"] < 0.5
    frame["w"] = np.linspace(0, 1, 30)
    est = GPRegressor(iters=2).fit(frame, y)
    assert est.categorical_columns_ == [1, 2, 3]
    assert list(est.categories_[1]) == ["round", "square"] and list(est.categories_[2]) == [False, True]
    assert list(est.feature_names_in_) == ["x", "region", "shape", "flag", "w"] and est.n_features_in_ == 5
    np.testing.assert_array_equal(est.x_scale_[[1, 2, 3]], 1.0)
    np.testing.assert_array_equal(est.x_mean_[[1, 2, 3]], 0.0)
    base = est.model_.kernel.base
    cont = base.kernels[0]
    assert cont.active_dims.tolist() == [0, 4] and cont.lengthscale.numel() == 2  # ARD on x and w
    assert [c.active_dims.tolist() for c in base.kernels[1:]] == [[1], [2], [3]]
    assert np.isnan(est.lengthscale_[[1, 2, 3]]).all() and np.isfinite(est.lengthscale_[[0, 4]]).all()
    assert est.predict(frame.iloc[:5]).shape == (5,)
    assert est.sample_y(frame.iloc[:4], n_samples=3, random_state=0).shape == (4, 3)


def test_explicit_indices_on_numpy_input():
    frame, y = make_data(30)
    codes = np.array([sorted(OFFSETS).index(r) for r in frame["region"]], dtype=float) * 10  # 0, 10, 20, 30
    X = np.column_stack([frame["x"], codes])
    assert GPRegressor(iters=1).fit(X, y).categorical_columns_ == []  # arrays: none unless named
    est = GPRegressor(iters=1, categorical=[1]).fit(X, y)
    assert est.categorical_columns_ == [1]
    np.testing.assert_array_equal(est.categories_[0], [0.0, 10.0, 20.0, 30.0])
    assert est.model_.train_x[:, 1].unique().tolist() == [0.0, 1.0, 2.0, 3.0]
    text = np.column_stack([frame["x"], frame["region"]]).astype(object)  # strings in an object array
    est2 = GPRegressor(iters=1, categorical=[1]).fit(text, y)
    np.testing.assert_allclose(est2.predict(text[:6]), est.predict(X[:6]))
    with pytest.warns(UserWarning, match="feature names"):  # a DataFrame fit, predicted from an array
        np.testing.assert_allclose(GPRegressor(iters=1).fit(frame, y).predict(text[:6]), est2.predict(text[:6]))


def test_names_kinds_and_kernel_objects():
    frame, y = make_data(30)
    frame["site"] = np.arange(30) % 3  # integers, categorical by name only
    est = GPRegressor(iters=1, categorical=["region", "site"], categorical_kind="lowrank").fit(frame, y)
    assert est.categorical_columns_ == [1, 2] and list(est.categories_[1]) == [0, 1, 2]
    cats = est.model_.kernel.base.kernels[1:]
    assert all(c.kind == "lowrank" and c.rank == 1 for c in cats)
    only = GPRegressor(iters=1).fit(frame[["region"]], y)  # no continuous column
    assert isinstance(only.model_.kernel, fk.Scale) and isinstance(only.model_.kernel.base, fk.Categorical)
    given = fk.Scale(fk.RBF(active_dims=[0]))  # a kernel object: used as given, times the Categoricals
    est = GPRegressor(kernel=given, iters=1).fit(frame[["x", "region"]], y)
    product = est.model_.kernel
    assert isinstance(product.kernels[0], fk.Scale) and isinstance(product.kernels[1], fk.Categorical)
    whole = fk.Scale(fk.RBF(active_dims=[0]) * fk.Categorical(4, active_dims=[1]))  # already has them
    est = GPRegressor(kernel=whole, iters=1).fit(frame[["x", "region"]], y)
    assert sum(isinstance(m, fk.Categorical) for m in est.model_.kernel.modules()) == 1


def test_the_levels_help():
    """y = sin(3x) + offset[level] + noise: a fit that sees the level beats one that drops it."""
    frame, y = make_data(300, seed=3)
    train, test = slice(0, 200), slice(200, 300)
    with_levels = GPRegressor(iters=30, random_state=0).fit(frame[train], y[train])
    without = GPRegressor(iters=30, random_state=0).fit(frame[["x"]][train], y[train])

    def rmse(pred):
        return float(np.sqrt(np.mean((pred - y[test]) ** 2)))

    good, bad = rmse(with_levels.predict(frame[test])), rmse(without.predict(frame[["x"]][test]))
    assert good < 0.5 * bad and good < 0.2, (good, bad)


# ----- errors ------------------------------------------------------------------------------------

def test_errors_at_fit():
    frame, y = make_data(20)
    one = frame.assign(region="north")
    with pytest.raises(ValueError, match=r"categorical: column 'region' holds only one level \('north'\)"):
        GPRegressor(iters=1).fit(one, y)
    missing = frame.copy()
    missing.loc[3, "region"] = None
    with pytest.raises(ValueError, match=r"X: categorical column 'region' holds a missing value .* row 3"):
        GPRegressor(iters=1).fit(missing, y)
    nan = np.column_stack([frame["x"], np.r_[np.nan, np.ones(19)]])
    with pytest.raises(ValueError, match=r"categorical column 1 holds a missing value"):
        GPRegressor(iters=1, categorical=[1]).fit(nan, y)
    for method in ("sgpr", "svgp", "ski"):
        with pytest.raises(ValueError, match=rf"categorical: method='{method}' moves or interpolates .*method='exact'"):
            GPRegressor(iters=1, method=method).fit(frame, y)
    with pytest.raises(ValueError, match=r"categorical: .*several outputs \(2-D y"):
        GPRegressor(iters=1).fit(frame, np.column_stack([y, y]))
    with pytest.raises(ValueError, match="categorical: column index 5 is out of range for X with 2 columns"):
        GPRegressor(iters=1, categorical=[5]).fit(frame, y)
    with pytest.raises(ValueError, match=r"categorical: column names \('region'\) need a pandas DataFrame"):
        GPRegressor(iters=1, categorical=["region"]).fit(frame.to_numpy(), y)
    with pytest.raises(ValueError, match="categorical: 'colour' is not a column of X"):
        GPRegressor(iters=1, categorical=["colour"]).fit(frame, y)
    with pytest.raises(ValueError, match="categorical: a column is given twice"):
        GPRegressor(iters=1, categorical=[1, "region"]).fit(frame, y)
    with pytest.raises(TypeError, match="categorical: expected None or a list"):
        GPRegressor(iters=1, categorical="region").fit(frame, y)
    with pytest.raises(ValueError, match="categorical_kind: expected one of"):
        GPRegressor(iters=1, categorical_kind="onehot?").fit(frame, y)
    with pytest.raises(ValueError, match="non-numeric column.*'region'.*categorical="):
        GPRegressor(iters=1, categorical=[]).fit(frame, y)
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) 'note'; .*categorical="):  # the others still numbers
        GPRegressor(iters=1, categorical=["region"]).fit(frame.assign(note="n/a"), y)
    with pytest.raises(ValueError, match="X: column 0 holds non-numeric values; encode them as numbers first; or "
                                         "name them in categorical="):
        GPRegressor(iters=1, categorical=[1]).fit(np.column_stack([frame["region"], frame["region"]]), y)


def test_errors_at_predict():
    frame, y = make_data(20)
    est = GPRegressor(iters=1).fit(frame, y)
    unseen = frame.iloc[:3].copy()
    unseen.loc[unseen.index[1], "region"] = "up"
    message = r"X: column 'region' holds level 'up', not seen at fit; known levels: 'east', 'north', 'south', 'west'"
    for call in (lambda: est.predict(unseen), lambda: est.predict(unseen, return_std=True),
                 lambda: est.predict(unseen, return_cov=True), lambda: est.sample_y(unseen)):
        with pytest.raises(ValueError, match=message):
            call()
    missing = frame.iloc[:3].copy()
    missing.loc[missing.index[0], "region"] = np.nan
    with pytest.raises(ValueError, match="X: column 'region' holds a missing value"):
        est.predict(missing)
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(frame[["region", "x"]])
    with pytest.raises(ValueError, match="X has 1 features, but GPRegressor is expecting 2"):
        est.predict(frame[["x"]].to_numpy())


# ----- files -------------------------------------------------------------------------------------

def test_save_load_keeps_levels_of_every_type(tmp_path):
    frame, y = make_data(40)
    frame["count"] = np.arange(40) % 3 + 7                # int levels 7, 8, 9
    frame["dose"] = np.where(np.arange(40) % 2, 0.5, 2.25)  # float levels
    frame["flag"] = np.arange(40) % 4 == 0                # bool levels
    est = GPRegressor(iters=3, categorical=["region", "count", "dose", "flag"], random_state=0).fit(frame, y)
    path = est.save(tmp_path / "gp.fgp")
    back = GPRegressor.load(path)
    assert back.categorical == ["region", "count", "dose", "flag"] and back.categorical_kind == "exchangeable"
    assert back.categorical_columns_ == est.categorical_columns_ == [1, 2, 3, 4]
    for got, want in zip(back.categories_, est.categories_):
        np.testing.assert_array_equal(got, want)
        assert got.dtype.kind == want.dtype.kind
    assert [type(v) for v in back.categories_[0]] == [str] * 4
    np.testing.assert_array_equal(back.predict(frame), est.predict(frame))
    _, std = back.predict(frame, return_std=True)
    np.testing.assert_array_equal(std, est.predict(frame, return_std=True)[1])
    with pytest.raises(ValueError, match="holds level 'up'"):
        back.predict(frame.assign(region="up"))
    plain = GPRegressor(iters=1).fit(frame[["x"]], y)  # no categorical columns: as before
    again = GPRegressor.load(plain.save(tmp_path / "plain.fgp"))
    assert again.categorical_columns_ == [] and again.categories_ == []


def test_files_of_earlier_versions_load(tmp_path):
    """A file saved before the categorical settings existed (no such params) loads with the defaults."""
    import json
    import zipfile
    frame, y = make_data(20)
    est = GPRegressor(iters=0).fit(frame[["x"]], y)
    path = est.save(tmp_path / "new.fgp")
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    for name in ("categorical", "categorical_kind"):
        del config["info"]["params"][name]
    entries["config.json"] = json.dumps(config).encode()
    old = tmp_path / "old.fgp"
    with zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    back = GPRegressor.load(old)
    assert back.categorical is None and back.categorical_kind == "exchangeable" and back.categorical_columns_ == []
    np.testing.assert_array_equal(back.predict(frame[["x"]]), est.predict(frame[["x"]]))
