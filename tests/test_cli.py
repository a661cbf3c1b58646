# Tests for the command line: fit, predict, demo, info and --json through `python -m flashgp` in
# subprocesses; every error path's one-line message and exit status through main() in-process.
import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flashgp import bundle
from flashgp.cli import main
from cli_helpers import assert_one_line_error, write_csv

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """``python -m flashgp *args`` with the repository importable; text output captured."""
    return subprocess.run([sys.executable, "-m", "flashgp", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """CSV files: train/test (an id and a text column besides a, b and the target y), and bad ones."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (80, 2))
    y = 50 + 10 * (np.sin(2 * x[:, 0]) + 0.5 * x[:, 1]) + rng.normal(0, 0.5, 80)
    rows = [[f"r{i}", f"{a:.6f}", f"{b:.6f}", "cat" if i % 2 else "dog", f"{t:.6f}"]
            for i, ((a, b), t) in enumerate(zip(x, y))]
    header = ["id", "a", "b", "label", "y"]
    return {
        "dir": d,
        "train": write_csv(d / "train.csv", header, rows[:60]),
        "test": write_csv(d / "test.csv", header, rows[60:]),
        "tiny": write_csv(d / "tiny.csv", header, rows[:2]),
        "four": write_csv(d / "four.csv", header, rows[:4]),
        "no_b": write_csv(d / "no_b.csv", ["id", "a", "y"], [[r[0], r[1], r[4]] for r in rows[:5]]),
        "text_a": write_csv(d / "text_a.csv", header, [rows[0], ["r1", "oops", "0.1", "cat", "1.0"]]),
        "not_model": write_csv(d / "not_model.fgp", ["a"], [["1"]]),
    }


@pytest.fixture(scope="module")
def fitted(files):
    """One fit with a random held-out split, saved; returns (process, parsed JSON, model path)."""
    model = files["dir"] / "models" / "gp.fgp"
    proc = run_cli("fit", files["train"], "--target", "y", "--features", "a,b", "--iters", 15,
                   "--test-size", 0.25, "--seed", 1, "--kernel", "rbf", "--out", model, "--json")
    return proc, (json.loads(proc.stdout) if proc.returncode == 0 else None), model


def test_fit_json_result_and_saved_files(fitted):
    proc, result, model = fitted
    assert proc.returncode == 0, proc.stderr
    assert result["command"] == "fit" and result["n_train"] == 45 and result["iters"] == 15
    assert result["features"] == ["a", "b"] and result["kernel"] == "rbf"
    assert set(result["hyperparameters"]["lengthscale"]) == {"a", "b"}
    assert result["hyperparameters"]["noise"] > 0 and np.isfinite(result["log_marginal_likelihood"])
    test = result["test"]
    assert test["n"] == 15 and 0 <= test["coverage95"] <= 1
    assert test["rmse"] < 10  # target std is ~8 data units; a fitted GP does much better
    assert model.is_file() and not Path(f"{model}.json").exists()  # one file, no sidecar
    assert result["scaling"]["y_std"] > 1 and len(result["scaling"]["x_mean"]) == 2
    saved = bundle.load(model)
    assert saved.kind == "cli" and saved.info["features"] == ["a", "b"] and saved.info["target"] == "y"
    assert saved.scaling.y_scale == result["scaling"]["y_std"]
    assert "fit (adam)" not in proc.stderr  # --json implies no progress bar


def test_fit_text_report_with_test_file(files, capsys):
    argv = ["fit", str(files["train"]), "--target", "y", "--features", "b,a", "--iters", "5",
            "--test", str(files["test"]), "--kernel", "matern32"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "hyperparameters" in captured.out and "lengthscales: b" in captured.out
    assert "log marginal likelihood" in captured.out
    assert "held-out (20 rows" in captured.out and "95% coverage" in captured.out
    assert "fit (adam)" in captured.err  # the progress bar


def test_predict_writes_inputs_and_intervals(files, fitted):
    assert fitted[0].returncode == 0, fitted[0].stderr
    out = files["dir"] / "pred" / "p.csv"
    proc = run_cli("predict", fitted[2], files["test"], "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rows"] == 20 and result["columns"] == ["mean", "std", "lower", "upper"]
    assert result["metrics"]["n"] == 20  # the target column is present, so it is scored
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 20 and list(table[0])[:5] == ["id", "a", "b", "label", "y"]
    assert table[3]["id"] == "r63" and table[3]["label"] == "cat"
    mean, std = (np.array([float(r[k]) for r in table]) for k in ("mean", "std"))
    lower, upper = (np.array([float(r[k]) for r in table]) for k in ("lower", "upper"))
    assert np.all(std > 0) and np.allclose(upper - mean, 1.959964 * std, rtol=1e-5)
    assert np.allclose(mean - lower, upper - mean, rtol=1e-6)
    assert 30 < mean.mean() < 70  # original units (the target is centred near 50)


def test_predict_quiet_prints_nothing(files, fitted, capsys):
    out = files["dir"] / "quiet.csv"
    assert main(["predict", str(fitted[2]), str(files["test"]), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "" and out.is_file()


def test_no_subcommand_runs_the_demo_with_a_plot(tmp_path):
    proc = run_cli("--iters", 2, "--out", tmp_path / "plots", "--quiet", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["command"] == "demo" and result["n_train"] == 927 and result["rmse"] < 1
    if importlib.util.find_spec("matplotlib") is None:
        assert result["plot"] is None
    else:
        assert Path(result["plot"]).is_file() and Path(result["plot"]).stat().st_size > 10_000


def test_demo_subcommand_text_report(tmp_path, capsys):
    assert main(["demo", "--iters", "1", "--no-plot", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flashgp demo: concrete") and "test RMSE" in out and "in target units" in out
    assert not list(tmp_path.iterdir())  # --no-plot: nothing written


def test_info_json_and_text(capsys):
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["torch"] == torch.__version__ and info["backends"][:2] == ["dense", "blocked"]
    assert info["cuda_available"] == torch.cuda.is_available()
    fused = info["optional"]["triton"] is not None and info["cuda_available"]
    assert ("triton" in info["backends"]) == fused
    from flashgp.backends import cpu_fused
    assert ("cpu" in info["backends"]) == cpu_fused.available()
    from flashgp.backends.choice import default_memory_budget
    device = "cuda" if info["cuda_available"] else "cpu"
    assert info["dense_budget_gb"] == round(default_memory_budget(device) / 1e9, 1) > 0
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "backends: dense, blocked" in text and "CUDA" in text and f"torch {torch.__version__}" in text


def _error_cases(f):
    """name -> (argv, exit status, text of the one-line message)."""
    f = {k: str(v) for k, v in f.items()}
    x_csv = os.path.join(f["dir"], "x.csv")
    model = os.path.join(f["dir"], "models", "gp.fgp")
    fit = ["fit", f["train"], "--target", "y"]
    ab = ["--features", "a,b"]
    cases = {
        "missing file": (["fit", os.path.join(f["dir"], "nope.csv"), "--target", "y"], 1,
                         "DATA: no such file"),
        "missing target column": (["fit", f["train"], "--target", "zz"], 1,
                                  "--target: column(s) 'zz' not in"),
        "unknown feature column": ([*fit, "--features", "a,q"], 1, "--features: column(s) 'q' not in"),
        "non-numeric default features": (fit, 1, "non-numeric or missing values in column(s) 'id'"),
        "non-numeric chosen feature": ([*fit, "--features", "a,label"], 1, "column(s) 'label' (line 2"),
        "non-numeric target": (["fit", f["train"], "--target", "label", *ab], 1, "--target: non-numeric"),
        "too few rows": (["fit", f["tiny"], "--target", "y", *ab], 1, "at least 3"),
        "test size above 1": ([*fit, *ab, "--test-size", "1.5"], 2, "--test-size: expected a fraction"),
        "test size not a number": ([*fit, *ab, "--test-size", "half"], 2, "--test-size"),
        "test size leaves too few rows": (["fit", f["four"], "--target", "y", *ab, "--test-size", "0.5"],
                                          2, "--test-size: 0.5 of 4 rows"),
        "test and test size": ([*fit, *ab, "--test-size", "0.2", "--test", f["test"]], 2, "not allowed"),
        "missing test file": ([*fit, *ab, "--test", x_csv], 1, "--test: no such file"),
        "negative iters": ([*fit, *ab, "--iters", "-3"], 2, "--iters: expected an integer >= 0"),
        "negative seed": ([*fit, *ab, "--seed", "-1"], 2, "--seed: expected an integer >= 0"),
        "bad learning rate": ([*fit, *ab, "--lr", "0"], 2, "--lr: expected a number > 0"),
        "no target": (["fit", f["train"]], 2, "--target"),
        "unknown kernel": ([*fit, *ab, "--kernel", "cosine"], 2, "--kernel"),
        "unknown command": (["bogus"], 2, "invalid choice"),
        "predict missing model": (["predict", os.path.join(f["dir"], "none.fgp"), f["test"], "--out", x_csv],
                                  1, "MODEL: no such file"),
        "predict missing data": (["predict", model, x_csv, "--out", x_csv], 1, "DATA: no such file"),
        "predict model not a model": (["predict", f["not_model"], f["test"], "--out", x_csv],
                                      1, "not a flashgp model file"),
        "predict missing feature": (["predict", model, f["no_b"], "--out", x_csv], 1,
                                    "DATA: column(s) 'b' not in"),
        "predict non-numeric feature": (["predict", model, f["text_a"], "--out", x_csv], 1,
                                        "'a' (line 3: 'oops')"),
        "demo unknown dataset": (["demo", "--dataset", "nosuchset", "--iters", "1"], 1, "--dataset"),
        "fit out is the data": ([*fit, *ab, "--out", f["train"]], 2,
                                "--out: " + f["train"] + " is the same file as DATA"),
        "predict out is the model": (["predict", model, f["test"], "--out", model], 2,
                                     "--out: " + model + " is the same file as MODEL"),
    }
    if not torch.cuda.is_available():
        cases["cuda unavailable"] = ([*fit, *ab, "--device", "cuda"], 1, "--device: cuda requested")
    return cases


ERROR_NAMES = list(_error_cases({k: "x" for k in ("dir", "train", "test", "tiny", "four", "no_b", "text_a",
                                                   "not_model")}))


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_error_is_one_line_with_exit_status(files, fitted, capsys, name):
    """Every error path through main() (in-process: a subprocess per case costs a torch import)."""
    argv, code, text = _error_cases(files)[name]
    assert main(argv) == code
    assert_one_line_error(capsys.readouterr(), text)


@pytest.mark.parametrize("name", ["missing file", "test size above 1", "fit out is the data"])
def test_exit_status_through_python_m_flashgp(files, name):
    """The process exit status and the single stderr line, for an input error and a usage error."""
    argv, code, text = _error_cases(files)[name]
    proc = run_cli(*argv)
    assert proc.returncode == code and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and text in proc.stderr


# ----- issue 25: --noise-floor and --iters 0 -------------------------------------------------------

def test_noise_floor_option_and_iters_zero(files, capsys):
    argv = ["fit", str(files["train"]), "--target", "y", "--features", "a,b", "--device", "cpu", "--json"]
    assert main([*argv, "--iters", "0", "--noise-floor", "1e-3"]) == 0
    still = json.loads(capsys.readouterr().out)["hyperparameters"]
    # nothing optimized: the values chosen from the standardized data (variance 1, mean 0)
    assert still["noise_floor"] == 1e-3 and still["noise"] == pytest.approx(1e-3 + 0.1, rel=1e-12)
    assert still["outputscale"] == pytest.approx(1.0, rel=1e-12) and abs(still["mean"]) < 1e-12
    assert all(v == pytest.approx(0.5, rel=1e-12) for v in still["lengthscale"].values())
    assert main([*argv, "--iters", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["hyperparameters"]["noise_floor"] == pytest.approx(1e-10, rel=1e-6)
    assert main([*argv, "--noise-floor", "-1"]) == 2
    assert "--noise-floor: expected a number >= 0" in capsys.readouterr().err
