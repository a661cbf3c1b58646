# One model file holds the command line's scaling: `flashgp fit --out` writes no sidecar, the
# file's scaling is validated when read, and the model + MODEL.json pairs of earlier versions
# still work, validated and cross-checked (a digest where the sidecar has one, else a warning).
import json
import os
import time

import numpy as np
import pytest
from bad_input_helpers import Case, Exits, Raises, run_main
from cli_estimator_helpers import edit_bundle, fit_model, legacy_pair, predict, read_column, run_case

import flashgp as fg
from flashgp import bundle
from flashgp.cli_files import file_sha256


def test_fit_writes_one_file_that_predict_needs_alone(tmp_path):
    model = fit_model(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "m.fgp"]  # no sidecar
    found = bundle.load(model)
    assert found.kind == "cli" and found.info == {"target": "y", "features": ["a", "b"], "kernel": "matern52"}
    assert found.scaling.x_scale.shape == (2,) and found.scaling.y_scale > 0
    code, _, err = predict(tmp_path, model)
    assert code == 0 and err == ""
    mean, y = read_column(tmp_path / "p.csv", "mean"), read_column(tmp_path / "p.csv", "y")
    assert np.abs(mean - y).max() < 0.5 * np.abs(y).max()  # data units, not standardized ones


def test_a_stale_sidecar_beside_a_new_model_is_ignored(tmp_path):
    """The failure of earlier versions: a new model beside old scaling. The file's own wins."""
    model = fit_model(tmp_path)
    assert predict(tmp_path, model, out="ref.csv")[0] == 0
    stale = {"format": "flashgp-cli-standardization/1", "target": "y", "features": ["a", "b"],
             "x_mean": [0, 0], "x_std": [1, 1], "y_mean": 0, "y_std": 100}
    (tmp_path / "m.fgp.json").write_text(json.dumps(stale))
    code, out, err = run_main(["predict", model, tmp_path / "d.csv", "--out", tmp_path / "p.csv", "--json"])
    assert code == 0 and "ignoring" in err and "m.fgp.json" in err
    assert "ignoring" in json.loads(out)["warnings"][0]
    np.testing.assert_array_equal(read_column(tmp_path / "p.csv", "mean"), read_column(tmp_path / "ref.csv", "mean"))


def test_a_legacy_pair_predicts_as_the_bundle_with_a_warning(tmp_path):
    old = legacy_pair(tmp_path)
    assert predict(tmp_path, tmp_path / "new.fgp", out="new.csv")[0] == 0
    code, out, err = run_main(["predict", old, tmp_path / "d.csv", "--out", tmp_path / "old.csv", "--json"])
    assert code == 0 and "records no digest" in err and "OLDER" not in err
    assert len(json.loads(out)["warnings"]) == 1
    np.testing.assert_array_equal(read_column(tmp_path / "old.csv", "std"), read_column(tmp_path / "new.csv", "std"))
    code, _, err = predict(tmp_path, old)  # --quiet: no warning printed
    assert code == 0 and err == ""


def test_a_sidecar_older_than_its_model_gets_the_strong_warning(tmp_path):
    old = legacy_pair(tmp_path)
    past = time.time() - 3600
    os.utime(f"{old}.json", (past, past))
    code, _, err = run_main(["predict", old, tmp_path / "d.csv", "--out", tmp_path / "p.csv"])
    assert code == 0 and "OLDER than the model" in err


def test_a_sidecar_digest_is_checked(tmp_path):
    old = legacy_pair(tmp_path)
    meta = json.loads((tmp_path / "old.fgp.json").read_text())
    (tmp_path / "old.fgp.json").write_text(json.dumps({**meta, "model_sha256": file_sha256(old)}))
    code, _, err = run_main(["predict", old, tmp_path / "d.csv", "--out", tmp_path / "p.csv"])
    assert code == 0 and "warning" not in err
    (tmp_path / "old.fgp.json").write_text(json.dumps({**meta, "model_sha256": "0" * 64}))
    code, _, err = predict(tmp_path, old, out="q.csv")
    assert code == 1 and "belongs to another model file" in err and not (tmp_path / "q.csv").exists()


@pytest.mark.parametrize("units", [1e160, 1e-160])
def test_targets_near_the_float64_range_give_finite_metrics(tmp_path, units):
    rng = np.random.default_rng(0)
    ab = rng.uniform(-2, 2, (30, 2))
    text = "a,b,y\n" + "".join(f"{a},{b},{(np.sin(a) + b) * units}\n" for a, b in ab)
    (tmp_path / "d.csv").write_text(text)
    code, out, err = run_main(["fit", tmp_path / "d.csv", "--target", "y", "--iters", 5, "--test-size", 0.2,
                               "--out", tmp_path / "m.fgp", "--json"])
    assert code == 0, err
    test = json.loads(out)["test"]
    assert 0 < test["rmse"] < 2 * units and np.isfinite(test["nll"])
    code, out, err = run_main(["predict", tmp_path / "m.fgp", tmp_path / "d.csv", "--out", tmp_path / "p.csv",
                               "--json"])
    assert code == 0 and np.isfinite(json.loads(out)["metrics"]["nll"])
    assert 0 < read_column(tmp_path / "p.csv", "std").max() < 2 * units


def test_predict_reads_a_bundle_written_before_as_fg_load_reads_models(tmp_path):
    """The bundle's model is the one fit trained (same tensors as the bare model of a pair)."""
    old = legacy_pair(tmp_path)
    a, b = fg.load(old), bundle.load(tmp_path / "new.fgp").model
    assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ----- bad sidecars and bundles: each a one-line error, exit 1, no traceback, no output -----------------

def sidecar_case(change):
    def trigger(tmp):
        old = legacy_pair(tmp, change)
        return predict(tmp, old)
    return trigger


def bundle_case(change):
    def trigger(tmp):
        model = fit_model(tmp)
        edit_bundle(model, change)
        return predict(tmp, model)
    return trigger


def bad_number(value):
    return lambda meta: meta.update(y_std=value)


CASES = [
    Case("sidecar/negative-y-std", sidecar_case(bad_number(-2.0)),
         Exits(1, r"y_std: expected a finite number > 0, got -2.0")),
    Case("sidecar/zero-x-std", sidecar_case(lambda m: m["x_std"].__setitem__(1, 0)),
         Exits(1, r"x_std: expected a finite number > 0 at entry 1, got 0")),
    Case("sidecar/nan-x-mean", sidecar_case(lambda m: m["x_mean"].__setitem__(0, float("nan"))),
         Exits(1, r"x_mean: expected a finite number at entry 0, got nan")),
    Case("sidecar/huge-int-y-mean", sidecar_case(lambda m: m.update(y_mean=10**400)),
         Exits(1, r"y_mean: expected a finite number")),
    Case("sidecar/string-y-std", sidecar_case(bad_number("1.0")), Exits(1, r"y_std: expected a number, got '1.0'")),
    Case("sidecar/bool-y-std", sidecar_case(bad_number(True)), Exits(1, r"y_std: expected a number")),
    Case("sidecar/x-std-too-short", sidecar_case(lambda m: m.update(x_std=[1.0])),
         Exits(1, r"x_std: expected 2 entries \(one per input column of the model\), got 1")),
    Case("sidecar/x-mean-not-a-list", sidecar_case(lambda m: m.update(x_mean={"a": 1})),
         Exits(1, r"x_mean: expected a list of 2 numbers")),
    Case("sidecar/three-features-for-two-columns", sidecar_case(lambda m: m.update(features=["a", "b", "y"])),
         Exits(1, r"features: 3 column names for a model of 2 input columns")),
    Case("sidecar/features-not-names", sidecar_case(lambda m: m.update(features=[1, 2])),
         Exits(1, r"features: expected a list of column names")),
    Case("sidecar/target-among-features", sidecar_case(lambda m: m.update(features=["a", "y"])),
         Exits(1, r"features: expected distinct names other than the target")),
    Case("sidecar/target-not-a-string", sidecar_case(lambda m: m.update(target=None)),
         Exits(1, r"target: expected a column name")),
    Case("sidecar/a-list", lambda t: (legacy_pair(t), (t / "old.fgp.json").write_text("[1, 2]"),
                                      predict(t, t / "old.fgp"))[-1],
         Exits(1, r"is not flashgp fit metadata")),
    Case("sidecar/missing", lambda t: (legacy_pair(t), os.unlink(t / "old.fgp.json"), predict(t, t / "old.fgp"))[-1],
         Exits(1, r"a bare model without the data scaling, and its sidecar .*old.fgp.json is missing")),
    Case("bundle/negative-y-scale", bundle_case(lambda c: c["scaling"].update(y_scale=-1.0)),
         Exits(1, r"MODEL: cannot load .*scaling: y_scale: expected a finite number > 0, got -1.0")),
    Case("bundle/x-scale-wrong-length", bundle_case(lambda c: c["scaling"].update(x_scale=[1.0, 1.0, 1.0])),
         Exits(1, r"scaling: x_scale: expected 2 entries")),
    Case("bundle/scaling-key-missing", bundle_case(lambda c: c["scaling"].pop("y_mean")),
         Exits(1, r"scaling: expected the keys \['x_mean', 'x_scale', 'y_mean', 'y_scale'\]")),
    Case("bundle/features-wrong-count", bundle_case(lambda c: c["info"].update(features=["a"])),
         Exits(1, r"features: 1 column names for a model of 2 input columns")),
    Case("bundle/unknown-kind", bundle_case(lambda c: c.update(kind="other")),
         Exits(1, r"a bundle of kind 'other'")),
    Case("bundle/newer-version", bundle_case(lambda c: c.update(format_version=99)),
         Exits(1, r"bundle format version 99 is not one this flashgp .* reads")),
    Case("bundle/extra-key", bundle_case(lambda c: c.update(note="x")), Exits(1, r"expected the keys")),
    Case("bundle/estimator-kind-to-predict", lambda t: predict(t, estimator_file(t)),
         Exits(1, r"written by GPRegressor.save .*GPRegressor.load")),
    Case("bundle/load-kind-mismatch", lambda t: bundle.load(fit_model(t), kind="estimator"),
         Raises(fg.ModelFileError, r"a bundle of kind 'cli', expected 'estimator'")),
    Case("bundle/bare-model-where-a-bundle-is-required",
         lambda t: bundle.load(legacy_pair(t), kind="cli"), Raises(fg.ModelFileError, r"a bare model file")),
]


def estimator_file(tmp):
    from cli_estimator_helpers import fitted_regressor
    return fitted_regressor().save(tmp / "est.fgp")


def test_case_ids_are_distinct():
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_model_file(case, tmp_path):
    run_case(case, tmp_path)
    assert not (tmp_path / "p.csv").exists()  # nothing written
