# `flashgp fit --categorical` and `flashgp predict` with columns of levels: the model file keeps the
# levels, predict encodes them as the fit did and refuses unknown ones; every error path's message.
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flashgp import bundle, kernels
from flashgp.cli import main
from cli_helpers import assert_one_line_error, write_csv

REPO = Path(__file__).resolve().parents[1]
OFFSETS = {"red": 0.0, "green": 2.0, "blue": -1.5}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """train.csv (x, colour, size, y), test.csv, and CSV files with an unknown level, a blank cell."""
    d = tmp_path_factory.mktemp("cli_categorical")
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, 60)
    colour = rng.choice(sorted(OFFSETS), 60)
    size = np.where(np.arange(60) % 2, "S", "L")
    y = np.sin(2 * x) + np.array([OFFSETS[c] for c in colour]) + rng.normal(0, 0.05, 60)
    rows = [[f"{a:.6f}", c, s, f"{t:.6f}"] for a, c, s, t in zip(x, colour, size, y)]
    header = ["x", "colour", "size", "y"]
    return {
        "dir": d,
        "train": write_csv(d / "train.csv", header, rows[:45]),
        "test": write_csv(d / "test.csv", header, rows[45:]),
        "purple": write_csv(d / "purple.csv", header, [rows[0], ["0.5", "purple", "S", "1.0"]]),
        "blank": write_csv(d / "blank.csv", header, [*rows[:5], ["0.5", " ", "S", "1.0"]]),
        "one_level": write_csv(d / "one.csv", header, [[r[0], "red", r[2], r[3]] for r in rows[:10]]),
    }


def fit_json(capsys, argv) -> dict:
    assert main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def test_fit_predict_round_trip(files, capsys):
    model = files["dir"] / "gp.fgp"
    result = fit_json(capsys, ["fit", files["train"], "--target", "y", "--categorical", "colour,size",
                               "--features", "x,colour,size", "--iters", "30", "--test", files["test"],
                               "--out", model])
    assert result["categorical"] == {"columns": ["colour", "size"], "levels": [["blue", "green", "red"], ["L", "S"]],
                                     "kind": "exchangeable"}
    hp = result["hyperparameters"]
    assert list(hp["lengthscale"]) == ["x"] and hp["categorical"]["colour"]["levels"] == ["blue", "green", "red"]
    assert np.asarray(hp["categorical"]["colour"]["level_covariance"]).shape == (3, 3)
    assert result["test"]["rmse"] < 0.6  # the levels shift y by up to 3.5
    assert result["scaling"]["x_mean"][1:] == [0.0, 0.0] and result["scaling"]["x_std"][1:] == [1.0, 1.0]
    found = bundle.load(model)
    assert found.info["categorical"] == result["categorical"]
    parts = found.model.kernel.base.kernels
    assert [type(k).__name__ for k in parts] == ["Matern", "Categorical", "Categorical"]
    assert [k.active_dims.tolist() for k in parts] == [[0], [1], [2]]

    out = files["dir"] / "pred.csv"
    assert main(["predict", str(model), str(files["test"]), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    header, rows = read_csv(out)
    assert header[:4] == ["x", "colour", "size", "y"] and report["rows"] == len(rows) == 15
    mean = np.array([float(r[header.index("mean")]) for r in rows])
    # the same predictions from the model file, encoding the levels by hand
    levels = result["categorical"]["levels"]
    x = np.array([[float(r[0]), levels[0].index(r[1]), levels[1].index(r[2])] for r in rows])
    z = (x - found.scaling.x_mean) / found.scaling.x_scale
    direct = found.model.predict(torch.tensor(z)).mean.detach().numpy() * found.scaling.y_scale + found.scaling.y_mean
    np.testing.assert_allclose(mean, direct, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(report["metrics"]["rmse"], result["test"]["rmse"], rtol=1e-6)


def test_lowrank_kind_and_text_report(files, capsys):
    model = files["dir"] / "lowrank.fgp"
    assert main(["fit", str(files["train"]), "--target", "y", "--categorical", "colour", "--features", "x,colour",
                 "--categorical-kind", "lowrank", "--iters", "3", "--out", str(model), "-q"]) == 0
    capsys.readouterr()
    cat = bundle.load(model).model.kernel.base.kernels[1]
    assert isinstance(cat, kernels.Categorical) and cat.kind == "lowrank" and cat.rank == 1
    assert main(["fit", str(files["train"]), "--target", "y", "--categorical", "colour", "--features",
                 "x,colour", "--iters", "2"]) == 0
    text = capsys.readouterr().out
    assert "categorical 'colour': 3 levels, exchangeable; level correlations" in text
    assert "Scale(matern52, ARD * Categorical(colour));" in text


def test_unknown_level_at_predict_exits_non_zero(files):
    model = files["dir"] / "unknown.fgp"
    assert main(["fit", str(files["train"]), "--target", "y", "--categorical", "colour", "--features", "x,colour",
                 "--iters", "2", "--out", str(model), "-q"]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "flashgp", "predict", str(model), str(files["purple"]), "--out",
                           str(files["dir"] / "p.csv")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("flashgp: error: DATA: column 'colour' holds level 'purple' (line 3), not seen at "
                                   "fit; known levels: 'blue', 'green', 'red'")
    assert not (files["dir"] / "p.csv").exists()


def _error_cases(f):
    """name -> (argv, exit status, text of the one-line message)."""
    f = {k: str(v) for k, v in f.items()}
    fit = ["fit", f["train"], "--target", "y", "--iters", "1"]
    return {
        "text column not named": ([*fit, "--features", "x,colour"], 1,
                                  "non-numeric or missing values in column(s) 'colour' (line 2: 'green'); name "
                                  "columns of levels (text) with --categorical"),
        "not a feature": ([*fit, "--features", "x,colour", "--categorical", "size"], 2,
                          "--categorical: 'size' is not a feature column"),
        "the target": ([*fit, "--categorical", "y"], 2, "--categorical: 'y' is the target"),
        "named twice": ([*fit, "--categorical", "colour,colour,size"], 2, "--categorical: a column is named twice"),
        "empty list": ([*fit, "--categorical", ","], 2, "--categorical: expected comma-separated column names"),
        "one level": (["fit", f["one_level"], "--target", "y", "--categorical", "colour,size"], 1,
                      "--categorical: column 'colour' holds only one level ('red')"),
        "blank cell": (["fit", f["blank"], "--target", "y", "--categorical", "colour,size"], 1,
                       "DATA: categorical column 'colour' has an empty cell (line 7)"),
        "inducing points": ([*fit, "--categorical", "colour,size", "--method", "sgpr"], 2,
                            "--categorical: --method sgpr moves or interpolates inducing inputs continuously"),
        "grid": ([*fit, "--categorical", "colour,size", "--method", "ski"], 2, "use --method exact"),
        "several targets": (["fit", f["train"], "--target", "y,x", "--features", "colour", "--categorical",
                             "colour"], 2, "--categorical: supported for regression of one target, not with several"),
        "classification": (["fit", f["train"], "--target", "size", "--task", "classification", "--categorical",
                            "colour"], 2, "not with --task classification"),
        "kind alone": ([*fit, "--categorical-kind", "lowrank"], 2, "--categorical-kind: needs --categorical"),
        "bad kind": ([*fit, "--categorical", "colour,size", "--categorical-kind", "onehot"], 2,
                     "--categorical-kind"),
        "unknown level in --test": ([*fit, "--categorical", "colour,size", "--test", f["purple"]], 1,
                                    "--test: column 'colour' holds level 'purple' (line 3), not seen at fit"),
    }


ERROR_NAMES = list(_error_cases({k: "x" for k in ("dir", "train", "test", "purple", "blank", "one_level")}))


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_errors(files, capsys, name):
    argv, code, text = _error_cases(files)[name]
    assert main(argv) == code
    assert_one_line_error(capsys.readouterr(), text)
