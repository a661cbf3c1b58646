# `flashgp fit --method basis | itergp` and `--method exact --batch-size B`: fit, save, predict
# round trips, the models in the file, and the refusals of options that do not apply.
import csv
import json

import numpy as np
import pytest

import flashgp as fg
from flashgp import bundle
from flashgp.cli import main


def write(path, n=200, seed=0, levels=False):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-2, 2, n), rng.uniform(-2, 2, n)
    y = np.sin(1.5 * a) + 0.3 * b + 0.1 * rng.standard_normal(n)
    header = ["a", "b"] + (["c"] if levels else []) + ["y"]
    lines = [",".join(header)]
    for i in range(n):
        row = [f"{a[i]:.6f}", f"{b[i]:.6f}"] + (["red" if a[i] > 0 else "blue"] if levels else []) + [f"{y[i]:.6f}"]
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def fit_json(capsys, args):
    capsys.readouterr()
    assert main(["fit", *args, "--device", "cpu", "--json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)


def predictions(path):
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return np.array([float(r["mean"]) for r in rows]), np.array([float(r["std"]) for r in rows])


def test_basis_fit_save_predict_round_trip(tmp_path, capsys):
    data = write(tmp_path / "train.csv")
    out = tmp_path / "basis.fgp"
    result = fit_json(capsys, [str(data), "--target", "y", "--method", "basis", "--inducing", "12", "--iters", "20",
                               "--test-size", "0.25", "--out", str(out)])
    assert result["method"] == "basis" and result["solver_path"] == "basis"
    assert result["method_detail"] == "basis: 144 functions (Hilbert space)"
    assert set(result["hyperparameters"]["lengthscale"]) == {"a", "b"}
    assert result["test"]["rmse"] < 0.3
    model = bundle.load(out).model
    assert isinstance(model, fg.BasisGP) and model.kernel.base.num_basis == [12, 12]
    assert main(["predict", str(out), str(data), "--out", str(tmp_path / "p.csv"), "--device", "cpu", "-q"]) == 0
    mean, std = predictions(tmp_path / "p.csv")
    assert mean.shape == (200,) and np.all(std > 0)


def test_basis_with_a_categorical_column(tmp_path, capsys):
    data = write(tmp_path / "train.csv", levels=True)
    out = tmp_path / "m.fgp"
    result = fit_json(capsys, [str(data), "--target", "y", "--method", "basis", "--categorical", "c", "--iters", "5",
                               "--out", str(out)])
    assert list(result["hyperparameters"]["lengthscale"]) == ["a", "b"]
    assert result["hyperparameters"]["categorical"]["c"]["levels"] == ["blue", "red"]
    kernel = bundle.load(out).model.kernel
    assert isinstance(kernel.base.kernels[0], fg.kernels.HilbertSpace)
    assert kernel.base.kernels[0].num_basis == [16, 16]  # the default for 2 continuous columns
    assert main(["predict", str(out), str(data), "--out", str(tmp_path / "p.csv"), "--device", "cpu", "-q"]) == 0


def test_itergp_fit_and_predict(tmp_path, capsys):
    data = write(tmp_path / "train.csv")
    out = tmp_path / "itergp.fgp"
    result = fit_json(capsys, [str(data), "--target", "y", "--method", "itergp", "--budget", "20", "--policy",
                               "pivoted", "--iters", "10", "--out", str(out)])
    assert result["method"] == "itergp" and result["method_detail"] == "itergp: pivoted policy, 20 actions"
    model = bundle.load(out).model
    assert isinstance(model, fg.IterGP) and model.budget["iterations"] == 20 and model.policy == "pivoted"
    assert main(["predict", str(out), str(data), "--out", str(tmp_path / "p.csv"), "--device", "cpu", "-q"]) == 0
    mean, std = predictions(tmp_path / "p.csv")
    exact = tmp_path / "exact.fgp"
    fit_json(capsys, [str(data), "--target", "y", "--iters", "10", "--out", str(exact)])
    assert main(["predict", str(exact), str(data), "--out", str(tmp_path / "q.csv"), "--device", "cpu", "-q"]) == 0
    exact_mean, exact_std = predictions(tmp_path / "q.csv")
    assert np.all(std >= exact_std - 1e-6)  # 20 actions for 200 rows: computational uncertainty on top
    assert np.mean(std - exact_std) > 1e-4


def test_exact_with_batch_size_trains_on_subsets(tmp_path, capsys):
    data = write(tmp_path / "train.csv", n=300)
    out = tmp_path / "sub.fgp"
    result = fit_json(capsys, [str(data), "--target", "y", "--method", "exact", "--batch-size", "32", "--iters", "30",
                               "--test-size", "0.2", "--out", str(out)])
    assert result["iters"] == 30 and result["n_train"] == 240
    assert result["method_detail"] == "hyperparameters on subsets of 32 rows"
    capsys.readouterr()
    assert main(["fit", str(data), "--target", "y", "--batch-size", "32", "--iters", "3", "--device", "cpu"]) == 0
    assert "Scale(matern52, ARD); hyperparameters on subsets of 32 rows; Adam lr=0.1" in capsys.readouterr().out
    assert result["test"]["rmse"] < 0.4
    model = bundle.load(out).model
    assert type(model) is fg.ExactGP and model.num_train == 240  # predictions condition on every row
    assert main(["predict", str(out), str(data), "--out", str(tmp_path / "p.csv"), "--device", "cpu", "-q"]) == 0


@pytest.mark.parametrize("extra, words", [
    (["--budget", "10"], "--budget: only --method itergp takes it"),
    (["--policy", "cg"], "--policy: only --method itergp takes it"),
    (["--method", "basis", "--kernel", "rq"], "--kernel: method='basis' approximates a kernel with a spectral density"),
    (["--method", "itergp", "--inducing", "10"], "--inducing: only method='sgpr'"),
    (["--method", "sgpr", "--batch-size", "32"], "--batch-size: only --method svgp (minibatches) and exact"),
    (["--method", "itergp", "--batch-size", "32"], "--batch-size: only --method svgp"),
])
def test_options_that_do_not_apply_are_refused(tmp_path, capsys, extra, words):
    data = write(tmp_path / "train.csv", n=20)
    assert main(["fit", str(data), "--target", "y", "--iters", "1", "-q", *extra]) == 2
    assert words in capsys.readouterr().err


def test_basis_with_four_features_needs_inducing(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (30, 4))
    path = tmp_path / "four.csv"
    path.write_text("a,b,c,d,y\n" + "\n".join(",".join(f"{v:.5f}" for v in row) + f",{row.sum():.5f}" for row in x) + "\n")
    assert main(["fit", str(path), "--target", "y", "--method", "basis", "--iters", "1", "-q"]) == 2
    assert "grows as m^d" in capsys.readouterr().err
    assert main(["fit", str(path), "--target", "y", "--method", "basis", "--inducing", "3", "--iters", "1", "-q",
                 "--device", "cpu"]) == 0


def test_help_names_the_new_options(capsys):
    assert main(["fit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--budget I", "--policy {cg,cholesky,pivoted}", "basis: basis functions per continuous feature",
                  "exact: rows per random subset"):
        assert words in text
