# Tests for multi-output regression on the command line: `flashgp fit --target A,B,C` with
# --multitask independent / icm / lmc and --task-rank (a MultitaskGP; empty or NaN cells not
# observed), its report and JSON (task correlation, held-out metrics per target), --out then
# `flashgp predict` (mean_<A>, std_<A>, lower_<A>, upper_<A> per target), mid-run resume, the
# options refused, the model files, and a single --target as before.
import csv
import json

import numpy as np
import pytest

from flashgp import bundle
from flashgp.cli import main
from cli_helpers import assert_one_line_error, write_csv

TARGETS = ["A", "B", "C"]
COLUMNS = [f"{c}_{t}" for t in TARGETS for c in ("mean", "std", "lower", "upper")]



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """train (160 rows, some target cells empty or NaN, one row with none), full (no holes), test
    (40 rows), and files for the error paths; A and B rise with f, C falls with it."""
    d = tmp_path_factory.mktemp("cli_mt")
    rng = np.random.default_rng(0)
    n = 200
    x = rng.uniform(-2, 2, (n, 2))
    f = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1]
    y = np.stack([10 + 3 * f + rng.normal(0, 0.1, n), -5 + 2 * f + np.cos(x[:, 1]) + rng.normal(0, 0.1, n),
                  100 - 20 * f + rng.normal(0, 1, n)], axis=1).round(6)  # as written
    holes = y.copy()
    holes[3::7, 1] = np.nan
    holes[5::11, 2] = np.nan
    holes[17] = np.nan

    def rows(index, values, text=("", "nan")):
        return [[f"r{i}", f"{x[i, 0]:.6f}", f"{x[i, 1]:.6f}", "cat" if i % 2 else "dog"]
                + [f"{v:.6f}" if np.isfinite(v) else text[(i + j) % 2] for j, v in enumerate(values[i])]
                for i in index]

    header = ["id", "a", "b", "label", *TARGETS]
    full = rows(range(160), y)
    return {"dir": d, "y": holes[:160],
            "train": write_csv(d / "train.csv", header, rows(range(160), holes)),
            "full": write_csv(d / "full.csv", header, full),
            "test": write_csv(d / "test.csv", header, rows(range(160, 200), y)),
            "no_c": write_csv(d / "no_c.csv", header[:-1], [r[:-1] for r in full[:10]]),
            "two": write_csv(d / "two.csv", header, full[:2] + [r[:4] + ["", "", ""] for r in full[2:6]]),
            "empty_c": write_csv(d / "empty_c.csv", header, [r[:-1] + [""] for r in full[:10]])}


def run_json(argv, capsys) -> dict:
    assert main([*map(str, argv), "--json", "--device", "cpu"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def read_table(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def fit_args(data, *more):
    return ["fit", data, "--target", "A,B,C", "--features", "a,b", "-q", *more]


def test_icm_round_trip_with_unobserved_cells(files, capsys):
    model, out = files["dir"] / "icm.fgp", files["dir"] / "pred" / "icm.csv"
    r = run_json(fit_args(files["train"], "--multitask", "icm", "--task-rank", "2", "--iters", "25",
                          "--test", files["test"], "--out", model), capsys)
    y = files["y"][~np.isnan(files["y"]).all(axis=1)]
    assert r["target"] == TARGETS and r["multitask"] == "icm" and r["task_rank"] == 2 and r["method"] == "exact"
    assert r["n_train"] == 159 and r["dropped_rows"] == 1
    assert r["n_observed"] == dict(zip(TARGETS, (~np.isnan(y)).sum(axis=0).tolist()))
    assert r["scaling"]["y_mean"] == pytest.approx(np.nanmean(y, axis=0).tolist(), rel=1e-12)
    assert r["scaling"]["y_std"] == pytest.approx(np.nanstd(y, axis=0).tolist(), rel=1e-12)
    corr = np.array(r["task_correlation"])
    assert np.allclose(np.diag(corr), 1) and np.allclose(corr, corr.T)
    assert corr[0, 1] > 0.5 and corr[0, 2] < -0.5  # A and B rise together, C falls
    hp = r["hyperparameters"]
    assert len(hp["terms"]) == 1 and set(hp["terms"][0]["lengthscale"]) == {"a", "b"}
    assert set(hp["noise"]) == set(hp["mean"]) == set(TARGETS) and np.isfinite(r["log_marginal_likelihood"])
    test = r["test"]
    for name, spread in zip(TARGETS, np.nanstd(y, axis=0)):
        t = test["per_target"][name]
        assert t["n"] == 40 and t["rmse"] < 0.2 * spread and 0.8 <= t["coverage95"] <= 1
    assert test["mean"]["n"] == 120
    assert test["mean"]["rmse"] == pytest.approx(np.mean([t["rmse"] for t in test["per_target"].values()]))
    saved = bundle.load(model)
    assert type(saved.model).__name__ == "MultitaskGP" and saved.info["target"] == TARGETS
    assert saved.scaling.y_mean.shape == (3,) and saved.info["features"] == ["a", "b"]
    p = run_json(["predict", model, files["test"], "--out", out], capsys)
    assert p["columns"] == COLUMNS and p["rows"] == 40 and p["target"] == TARGETS
    assert p["metrics"] == r["test"]  # the reloaded model predicts what the fitted one did, to the bit
    table = read_table(out)
    assert list(table[0])[:7] == ["id", "a", "b", "label", *TARGETS] and table[2]["id"] == "r162"
    for name in TARGETS:
        mean, std, lower, upper = (np.array([float(row[f"{c}_{name}"]) for row in table])
                                   for c in ("mean", "std", "lower", "upper"))
        truth = np.array([float(row[name]) for row in table])
        assert np.all(std > 0) and np.allclose(upper - mean, 1.959964 * std, rtol=1e-5)
        assert np.allclose(mean - lower, upper - mean, rtol=1e-6)
        assert np.sqrt(np.mean((mean - truth) ** 2)) == pytest.approx(test["per_target"][name]["rmse"], rel=1e-6)
    # scored on the observed cells only, where DATA leaves some empty
    p = run_json(["predict", model, files["train"], "--out", out], capsys)
    assert {k: m["n"] for k, m in p["metrics"]["per_target"].items()} == r["n_observed"]


@pytest.mark.parametrize("mode", ["independent", "icm", "lmc"])
def test_modes(files, capsys, mode, tmp_path):
    r = run_json(fit_args(files["full"], "--multitask", mode, "--iters", "8", "--test-size", "0.25",
                          "--out", tmp_path / "m.fgp"), capsys)
    assert r["multitask"] == mode and r["n_train"] == 120 and r["dropped_rows"] == 0
    assert r["task_rank"] == (None if mode == "independent" else 1)
    terms = r["hyperparameters"]["terms"]
    assert len(terms) == (2 if mode == "lmc" else 1)
    corr = np.array(r["task_correlation"])
    assert corr.shape == (3, 3) and np.allclose(np.diag(corr), 1)
    if mode == "independent":
        assert np.all(corr[~np.eye(3, dtype=bool)] == 0)  # B diagonal: no correlation learned
    else:
        assert corr[0, 2] < -0.5
    if mode == "lmc":
        assert terms[0]["lengthscale"] != terms[1]["lengthscale"]
    assert r["test"]["mean"]["n"] == 120 and all(t["n"] == 40 for t in r["test"]["per_target"].values())
    p = run_json(["predict", tmp_path / "m.fgp", files["test"], "--out", tmp_path / "p.csv"], capsys)
    assert p["columns"] == COLUMNS and p["metrics"]["mean"]["coverage95"] > 0.5


def test_resume_mid_run_matches_an_uninterrupted_fit(files, capsys, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    args = fit_args(files["train"], "--multitask", "icm", "--test-size", "0.2", "--seed", "2")
    first = run_json([*args, "--iters", "4", "--checkpoint", ckpt, "--checkpoint-every", "2"], capsys)
    assert first["iters"] == 4 and ckpt.is_file() and first["checkpoint"] == str(ckpt)
    resumed = run_json([*args, "--iters", "8", "--checkpoint", ckpt, "--resume"], capsys)
    assert resumed["resumed_from_step"] == 4 and resumed["iters"] == 8
    whole = run_json([*args, "--iters", "8"], capsys)
    assert whole["resumed_from_step"] is None
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-9)
    assert np.allclose(resumed["task_correlation"], whole["task_correlation"], rtol=1e-8)
    assert resumed["test"]["mean"]["rmse"] == pytest.approx(whole["test"]["mean"]["rmse"], rel=1e-8)


def test_text_reports_and_noise_floor(files, capsys, tmp_path):
    model = tmp_path / "lmc.fgp"
    argv = ["fit", str(files["train"]), "--target", "A, B,C", "--features", "a,b", "--multitask", "lmc",
            "--task-rank", "2", "--iters", "3", "--test-size", "0.2", "--out", str(model), "--device", "cpu"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "-> 3 targets 'A', 'B', 'C'" in text and "LMC of 2 terms, task rank 2" in text
    assert "(1 row without any target left out)" in text and "lengthscales (term 2): a" in text
    assert "task correlation:" in text and "held-out 'C' (target units): RMSE" in text
    assert "held-out, mean over the targets" in text and f"saved {model}" in text
    assert main(["predict", str(model), str(files["test"]), "--out", str(tmp_path / "p.csv")]) == 0
    text = capsys.readouterr().out
    assert "of 'A', 'B', 'C'; 95% predictive" in text and "against column 'B': RMSE" in text
    r = run_json(fit_args(files["full"], "--iters", "0", "--noise-floor", "1e-3"), capsys)
    hp = r["hyperparameters"]  # nothing fitted: each noise starts 0.1 var above the floor, as for one target
    assert hp["noise_floor"] == 1e-3 and all(v == pytest.approx(0.101, rel=1e-9) for v in hp["noise"].values())


def test_single_target_unchanged(files, capsys, tmp_path):
    model = tmp_path / "one.fgp"
    r = run_json(["fit", files["full"], "--target", "A", "--features", "a,b", "--iters", "3", "--test-size", "0.25",
                  "--out", model, "-q"], capsys)
    assert r["target"] == "A" and "multitask" not in r and "task_correlation" not in r
    assert set(r["hyperparameters"]) >= {"outputscale", "lengthscale", "noise", "mean"}
    assert isinstance(r["scaling"]["y_mean"], float) and set(r["test"]) == {"n", "rmse", "nll", "coverage95"}
    saved = bundle.load(model)
    assert set(saved.info) == {"target", "features", "kernel"} and saved.info["target"] == "A"
    assert type(saved.model).__name__ == "ExactGP" and isinstance(saved.scaling.y_mean, float)
    p = run_json(["predict", model, files["test"], "--out", tmp_path / "p.csv"], capsys)
    assert p["columns"] == ["mean", "std", "lower", "upper"] and p["metrics"]["n"] == 40


def _error_cases(f):
    """name -> (argv, exit status, text of the one-line message)."""
    f = {k: str(v) for k, v in f.items()}
    fit = ["fit", f["full"], "--features", "a,b", "--iters", "1"]
    return {
        "unknown target": ([*fit, "--target", "A,B,Z"], 1, "--target: column(s) 'Z' not in"),
        "duplicate target": ([*fit, "--target", "A,B,A"], 2, "--target: column(s) 'A' named twice in 'A,B,A'"),
        "empty target name": ([*fit, "--target", "A,,B"], 2, "--target: expected comma-separated column names"),
        "second target a feature": (["fit", f["full"], "--target", "A,B", "--features", "a,B"], 1,
                                    "--features: the target column 'B' cannot also be a feature"),
        "first target a feature": (["fit", f["full"], "--target", "A,B", "--features", "A,a"], 1,
                                   "--features: the target column 'A' cannot also be a feature"),
        "non-numeric target": ([*fit, "--target", "A,label"], 1,
                               "--target: non-numeric value in target column 'label' (line 2: 'dog')"),
        "target never observed": (["fit", f["empty_c"], "--features", "a,b", "--target", "A,C"], 1,
                                  "target column(s) 'C' have no observed value"),
        "too few rows": (["fit", f["two"], "--features", "a,b", "--target", "A,B"], 1, "a fit needs at least 3"),
        "default features not numeric": (["fit", f["full"], "--target", "A,B,C"], 1,
                                         "non-numeric or missing values in column(s) 'id'"),
        "test file lacks a target": ([*fit, "--target", "A,B,C", "--test", f["no_c"]], 1,
                                     "--test: column(s) 'C' not in"),
        "sgpr": ([*fit, "--target", "A,B", "--method", "sgpr"], 2,
                 "--method: several targets (2 columns) need --method exact"),
        "classification": ([*fit, "--target", "A,B", "--task", "classification"], 2,
                           "--task: several targets (--target A,B,...) are fit by regression only"),
        "inducing": ([*fit, "--target", "A,B", "--inducing", "10"], 2, "--inducing: several targets fit an exact"),
        "batch size": ([*fit, "--target", "A,B", "--batch-size", "10"], 2, "--batch-size: several targets"),
        "rank above the targets": ([*fit, "--target", "A,B", "--multitask", "icm", "--task-rank", "3"], 2,
                                   "--task-rank: expected an int from 1 to the number of outputs (2), got 3"),
        "rank with independent": ([*fit, "--target", "A,B", "--task-rank", "2"], 2,
                                  "--task-rank: --multitask independent learns no task covariance"),
        "rank zero": ([*fit, "--target", "A,B", "--task-rank", "0"], 2, "--task-rank: expected an integer >= 1"),
        "unknown mode": ([*fit, "--target", "A,B", "--multitask", "joint"], 2, "--multitask"),
        "multitask with one target": ([*fit, "--target", "A", "--multitask", "icm"], 2,
                                      "--multitask: only several targets take it (--target A,B,...); got the one "
                                      "target 'A'"),
        "task rank with one target": ([*fit, "--target", "A", "--task-rank", "1"], 2,
                                      "--task-rank: only several targets take it"),
    }


@pytest.mark.parametrize("name", list(_error_cases({k: "x" for k in ("full", "empty_c", "two", "no_c")})))
def test_error_is_one_line_with_exit_status(files, capsys, name):
    argv, code, text = _error_cases(files)[name]
    assert main([*argv, "--device", "cpu"]) == code
    assert_one_line_error(capsys.readouterr(), text)


def test_model_files_with_targets_that_do_not_fit_are_refused(files, capsys, tmp_path):
    model = tmp_path / "m.fgp"
    run_json(fit_args(files["full"], "--multitask", "icm", "--iters", "1", "--out", model), capsys)
    saved = bundle.load(model)
    info = dict(saved.info)
    scalar = bundle.Scaling(saved.scaling.x_mean, saved.scaling.x_scale, 1.0, 2.0)
    for name, changes, scaling, text in (
            ("two", {"target": ["A", "B"]}, saved.scaling, "target: expected 3 distinct column names"),
            ("same", {"target": ["A", "A", "B"]}, saved.scaling, "target: expected 3 distinct column names"),
            ("text", {"target": "A"}, saved.scaling, "target: expected 3 distinct column names"),
            ("feature", {"target": ["A", "B", "a"]}, saved.scaling, "expected distinct names other than the target"),
            ("scalar y", {}, scalar, "scaling: y_mean has shape () for a model of 3 output(s)")):
        path = bundle.save(tmp_path / f"{name}.fgp", saved.model, scaling, "cli", {**info, **changes})
        assert main(["predict", str(path), str(files["test"]), "--out", str(tmp_path / "p.csv")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"flashgp: error: MODEL: {path}") and text in err, err
