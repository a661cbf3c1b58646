# Helpers of the command-line and estimator reliability tests: running a bad-input Case (as
# test_bad_inputs.py does), small CSV files, a fitted CLI model, a full disk, a fitted GPRegressor.
from __future__ import annotations

import errno
import json
import os
import zipfile
from functools import lru_cache

import numpy as np
import pytest
from bad_input_helpers import Exits, Raises, csv_rows, run_case, run_main, write  # noqa: F401 (run_case: re-exported)

CSV = csv_rows(20)


def data_csv(tmp, name="d.csv", text=CSV):
    """A CSV file with columns a, b and the target y (20 rows) in ``tmp``."""
    return write(tmp / name, text)


def fit_model(tmp, name="m.fgp", *args):
    """Run ``flashgp fit`` (2 steps, quiet) on d.csv with --out tmp/name; returns the model path."""
    code, _, err = run_main(["fit", data_csv(tmp), "--target", "y", "--iters", 2, "-q", "--out",
                             tmp / name, *args])
    assert code == 0, err
    return tmp / name


def predict(tmp, model, *args, out="p.csv"):
    """``flashgp predict MODEL d.csv --out tmp/out -q`` -> (exit status, stdout, stderr)."""
    return run_main(["predict", model, data_csv(tmp), "--out", tmp / out, "-q", *args])


def read_column(path, name: str) -> np.ndarray:
    """One column of a predictions CSV as floats."""
    import csv
    with open(path, newline="") as handle:
        return np.array([float(row[name]) for row in csv.DictReader(handle)])


def folder_listing(tmp) -> list[str]:
    """The names in ``tmp`` (hidden temporary files included)."""
    return sorted(os.listdir(tmp))


def failing_fsync(monkeypatch) -> None:
    """Make every fsync fail as on a full disk (ENOSPC), for the rest of the test."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", fsync)


def legacy_pair(tmp, meta_change=None, name="old.fgp"):
    """An earlier version's pair: a bare model (fg.save of the model inside a CLI bundle) and
    its sidecar MODEL.json with the bundle's scaling; ``meta_change(meta)`` edits the sidecar."""
    import flashgp as fg
    from flashgp import bundle
    found = bundle.load(fit_model(tmp, "new.fgp"))
    fg.save(found.model, tmp / name)
    s = found.scaling
    meta = {"format": "flashgp-cli-standardization/1", "flashgp_version": "0.x", "target": "y",
            "features": ["a", "b"], "kernel": "matern52", "x_mean": s.x_mean.tolist(),
            "x_std": s.x_scale.tolist(), "y_mean": s.y_mean, "y_std": s.y_scale}
    if meta_change is not None:
        meta_change(meta)
    (tmp / f"{name}.json").write_text(json.dumps(meta))
    return tmp / name


def edit_bundle(path, change, out=None):
    """Rewrite the bundle at ``path`` (to ``out``) after ``change(config)`` edited its config.json."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        tensors = archive.read("tensors.pt")
    change(config)
    out = out or path
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("tensors.pt", tensors)
    return out


@lru_cache(maxsize=None)
def sk_data(n: int = 30, seed: int = 0):
    """(X (n, 2), y (n,)) for the estimator tests."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 2))
    return x, np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.05 * rng.normal(size=n)


def regressor(**params):
    """A GPRegressor (3 Adam steps unless given), or a skip when scikit-learn is missing."""
    pytest.importorskip("sklearn")
    from flashgp.sklearn import GPRegressor
    return GPRegressor(**{"iters": 3, **params})


@lru_cache(maxsize=None)
def fitted_regressor():
    """One shared GPRegressor fitted on ``sk_data()``: cases only query it."""
    return regressor().fit(*sk_data())
