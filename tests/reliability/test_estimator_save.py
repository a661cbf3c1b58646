# GPRegressor.save / GPRegressor.load: one file, no pickle (loading runs no code), the scaling
# and the settings kept, predictions after load equal to those before to the bit; damaged or
# edited files refused with ModelFileError naming the path.
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from bad_input_helpers import Case, Raises, run_main
from cli_estimator_helpers import (edit_bundle, failing_fsync, fit_model, fitted_regressor, folder_listing, regressor,
                                   run_case, sk_data)

import flashgp as fg
from flashgp import bundle

pytest.importorskip("sklearn")
from flashgp.sklearn import GPRegressor  # noqa: E402


def assert_same_predictions(a, b, X):
    for got, want in zip(b.predict(X, return_std=True), a.predict(X, return_std=True)):
        np.testing.assert_array_equal(got, want)  # to the bit
    np.testing.assert_array_equal(b.predict(X, return_cov=True, include_noise=False)[1],
                                  a.predict(X, return_cov=True, include_noise=False)[1])
    np.testing.assert_array_equal(b.sample_y(X[:5], 3, random_state=1), a.sample_y(X[:5], 3, random_state=1))


def round_trip(tmp_path, est):
    path = est.save(tmp_path / "gp.fgp")
    return GPRegressor.load(path, device="cpu")


def equal_params(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        elif isinstance(x, np.random.RandomState):
            assert x.randint(10**9) == y.randint(10**9)
        elif isinstance(x, torch.nn.Module):
            assert type(x) is type(y) and all(torch.equal(p, q) for p, q in zip(x.state_dict().values(),
                                                                              y.state_dict().values()))
        elif hasattr(x, "__dataclass_fields__"):
            assert x == y
        else:
            assert x == y and type(x) is type(y), (key, x, y)


SETTINGS = {
    "default": {},
    "float32": {"dtype": "float32"},
    "fixed-noise-array": {"noise": np.linspace(0.01, 0.05, 30)},
    "kernel-object-and-solver-object": {"kernel": fg.kernels.Scale(fg.kernels.RQ(ard_dims=2)), "solver": fg.CG()},
    "cg-lbfgs-random-state": {"solver": "cg", "optimizer": "lbfgs", "lr": 1.0,
                              "random_state": np.random.RandomState(3)},
    "unnormalized-noise-floor": {"normalize_x": False, "normalize_y": False, "noise_floor": 1e-4,
                                 "kernel": "rbf", "polish": None},
}


@pytest.mark.parametrize("name", SETTINGS)
def test_save_load_keeps_predictions_to_the_bit_and_the_settings(tmp_path, name):
    X, y = sk_data()
    est = regressor(**SETTINGS[name]).fit(X, y * 50 + 1000)  # scaling matters
    loaded = round_trip(tmp_path, est)
    equal_params(est.get_params(deep=False), loaded.get_params(deep=False))
    assert_same_predictions(est, loaded, np.r_[X, X[:7] + 0.3])
    for attr in ("x_mean_", "x_scale_", "lengthscale_", "noise_"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(est, attr))
    for attr in ("y_mean_", "y_scale_", "outputscale_", "constant_", "noise_floor_", "log_marginal_likelihood_",
                 "n_iter_", "n_features_in_"):
        assert getattr(loaded, attr) == getattr(est, attr), attr
    assert loaded.history_.loss == est.history_.loss
    assert loaded.model_.dtype == est.model_.dtype


def test_pandas_feature_names_survive(tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = sk_data()
    frame = pd.DataFrame(X, columns=["alpha", "beta"])
    loaded = round_trip(tmp_path, regressor().fit(frame, y))
    assert list(loaded.feature_names_in_) == ["alpha", "beta"]
    with pytest.raises(ValueError, match="feature names"):
        loaded.predict(pd.DataFrame(X, columns=["beta", "alpha"]))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loading_runs_no_code(tmp_path):
    """A tensors.pt that is a pickle with a payload is refused, and the payload never runs."""
    path = fitted_regressor().save(tmp_path / "gp.fgp")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", config)
        archive.writestr("tensors.pt", pickle.dumps({"model": Payload()}))
    with pytest.raises(fg.ModelFileError, match="refusing pickled objects"):
        GPRegressor.load(path)
    assert not marker.exists()


def test_save_before_fit_and_save_on_a_full_disk(tmp_path, monkeypatch):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        regressor().save(tmp_path / "gp.fgp")
    path = fitted_regressor().save(tmp_path / "gp.fgp")
    previous, before = path.read_bytes(), folder_listing(tmp_path)
    failing_fsync(monkeypatch)
    with pytest.raises(OSError, match="No space left") as info:
        fitted_regressor().save(path)
    assert info.value.filename == str(path)  # the file, not a hidden temporary one
    assert path.read_bytes() == previous and folder_listing(tmp_path) == before


def test_the_file_is_a_bundle_of_kind_estimator(tmp_path):
    path = fitted_regressor().save(tmp_path / "gp.fgp")
    found = bundle.load(path)
    assert found.kind == "estimator" and found.scaling.y_scale == fitted_regressor().y_scale_
    with pytest.raises(fg.ModelFileError, match=r"bundled with its data scaling.*GPRegressor.load"):
        fg.load(path)  # not a bare model: its scaling would be lost; the message says how to read it


# ----- bad files: ModelFileError naming the path ---------------------------------------------------

def edited(change):
    def trigger(tmp):
        path = edit_bundle(fitted_regressor().save(tmp / "gp.fgp"), change)
        return GPRegressor.load(path)
    return trigger


def set_param(name, value):
    return lambda c: c["info"]["params"].__setitem__(name, value)


M = fg.ModelFileError
CASES = [
    Case("estimator-file/negative-y-scale", edited(lambda c: c["scaling"].update(y_scale=-3.0)),
         Raises(M, r"gp.fgp: scaling: y_scale: expected a finite number > 0, got -3.0")),
    Case("estimator-file/zero-x-scale", edited(lambda c: c["scaling"]["x_scale"].__setitem__(0, 0.0)),
         Raises(M, r"x_scale: expected a finite number > 0 at entry 0")),
    Case("estimator-file/x-mean-wrong-length", edited(lambda c: c["scaling"].update(x_mean=[0.0])),
         Raises(M, r"x_mean: expected 2 entries")),
    Case("estimator-file/lr-negative", edited(set_param("lr", {"value": -1})), Raises(M, r"lr: expected a finite")),
    Case("estimator-file/unknown-setting", edited(set_param("evil", {"value": 1})),
         Raises(M, r"params: expected the settings")),
    Case("estimator-file/unknown-tag", edited(set_param("kernel", {"import": "os"})), Raises(M, r"unknown tag")),
    Case("estimator-file/dtype-mismatch", edited(set_param("dtype", {"value": "float32"})),
         Raises(M, r"dtype: the setting 'float32' does not match the model's torch.float64")),
    Case("estimator-file/features-mismatch", edited(lambda c: c["info"]["fitted"].update(n_features_in_=3)),
         Raises(M, r"n_features_in_: 3 for a model of 2 input columns")),
    Case("estimator-file/history-malformed", edited(lambda c: c["info"]["fitted"].update(history_=[1])),
         Raises(M, r"history_: expected a dict")),
    Case("estimator-file/cli-model", lambda t: GPRegressor.load(fit_model(t)),
         Raises(M, r"a bundle of kind 'cli', expected 'estimator'")),
    Case("estimator-file/bare-model", lambda t: (fg.save(fitted_regressor().model_, t / "m.fgp"),
                                                 GPRegressor.load(t / "m.fgp"))[-1],
         Raises(M, r"a bare model file \(fg.save\) without the data scaling")),
    Case("estimator-file/not-a-zip", lambda t: ((t / "x.fgp").write_bytes(b"junk"), GPRegressor.load(t / "x.fgp"))[-1],
         Raises(M, r"not a flashgp model file")),
    Case("estimator-file/missing", lambda t: GPRegressor.load(t / "none.fgp"),
         Raises(FileNotFoundError, r"no such file")),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_estimator_file(case, tmp_path):
    run_case(case, tmp_path)


def test_the_command_line_refuses_an_estimator_file(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    path = fitted_regressor().save(tmp_path / "gp.fgp")
    code, _, err = run_main(["predict", path, tmp_path / "d.csv", "--out", tmp_path / "p.csv"])
    assert code == 1 and "written by GPRegressor.save" in err and "GPRegressor.load" in err


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_bundles_get_the_model_files_limits(tmp_path):
    """Bundles are read by flashgp.io's archive reader: a second config.json is refused, as in
    model files (the resource limits of flashgp.io apply to estimator and CLI files alike)."""
    path = fitted_regressor().save(tmp_path / "gp.fgp")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(fg.ModelFileError):
        GPRegressor.load(path)


def test_tensors_are_plain(tmp_path):
    path = fitted_regressor().save(tmp_path / "gp.fgp")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["config.json", "tensors.pt"]
        tensors = torch.load(io.BytesIO(archive.read("tensors.pt")), weights_only=True)
    assert set(tensors) == {"model", "solver_state", "extra"}
