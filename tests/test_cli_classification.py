# Tests for classification on the command line: `flashgp fit --task classification` with
# --method dirichlet (default) and svgp, held-out accuracy / log loss / ECE, --out then
# `flashgp predict` (the predicted label and one probability column per class), mid-run resume,
# the options refused with it, and the model files (classes in the bundle; regression bundles
# of earlier versions still read).
import csv
import json

import numpy as np
import pytest

from flashgp import bundle
from flashgp.cli import main
from flashgp.cli_files import load_cli_model, save_cli_model
from cli_helpers import assert_one_line_error

pytest.importorskip("sklearn")  # the classifiers are built by GPClassifier's builders


def write_csv(path, x, labels, header=("a", "b", "label")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for (a, b), label in zip(x, labels):
            writer.writerow([f"{a:.6f}", f"{b:.6f}", label])
    return path


def easy_set(n, classes, seed):
    """Inputs (n, 2) on [-2, 2]^2 and labels from ``classes``: two half-planes, or angular sectors."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 2))
    if len(classes) == 2:
        k = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    else:
        k = ((np.arctan2(x[:, 1], x[:, 0]) + np.pi) / (2 * np.pi) * len(classes)).astype(int) % len(classes)
    return x, [classes[i] for i in k]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_cls")
    x2, y2 = easy_set(120, ["no", "yes"], 0)
    x3, y3 = easy_set(200, ["cat", "dog", "emu"], 1)
    xn, yn = easy_set(60, [3, 1, 2], 2)
    return {"dir": d, "binary": write_csv(d / "binary.csv", x2, y2),
            "three": write_csv(d / "three.csv", x3[:150], y3[:150]),
            "three_test": write_csv(d / "three_test.csv", x3[150:], y3[150:]),
            "numeric": write_csv(d / "numeric.csv", xn, yn),
            "one_class": write_csv(d / "one.csv", x2[:10], ["no"] * 10),
            "unseen": write_csv(d / "unseen.csv", x3[:5], ["cat", "dog", "gnu", "cat", "dog"]),
            "blank": write_csv(d / "blank.csv", x2[:6], ["no", "yes", "", "no", "yes", "no"])}


def run_json(argv, capsys) -> dict:
    assert main([*argv, "--json", "--device", "cpu"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def read_predictions(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def check_predictions(table, classes, names):
    """Every row: the input columns, a label among ``classes``, probabilities summing to 1 whose
    largest is the predicted label's."""
    assert list(table[0])[:3] == ["a", "b", "label"] and list(table[0])[3:] == names
    proba = np.array([[float(r[f"p_{c}"]) for c in classes] for r in table])
    assert np.all(proba >= 0) and np.allclose(proba.sum(axis=1), 1, atol=1e-8)
    predicted = [r["predicted"] for r in table]
    assert set(predicted) <= {str(c) for c in classes}
    assert predicted == [str(classes[i]) for i in proba.argmax(axis=1)]
    return proba, predicted


def test_dirichlet_binary_fit_metrics_save_and_predict(files, capsys):
    model, out = files["dir"] / "bin.fgp", files["dir"] / "pred" / "bin.csv"
    r = run_json(["fit", str(files["binary"]), "--target", "label", "--task", "classification", "--iters", "20",
                  "--test-size", "0.25", "--out", str(model), "-q"], capsys)
    assert r["task"] == "classification" and r["method"] == "dirichlet" and r["classes"] == ["no", "yes"]
    assert r["n_train"] == 90 and r["iters"] == 20 and r["train_seconds"] > 0
    assert sum(r["train_class_counts"]) == 90 and np.isfinite(r["log_marginal_likelihood"])
    t = r["test"]
    assert t["n"] == 30 and t["accuracy"] > 0.8 and 0 < t["log_loss"] < 0.5 and 0 <= t["ece"] < 0.3
    saved = bundle.load(model)
    assert saved.kind == "cli" and saved.info["classes"] == ["no", "yes"]
    assert saved.info["task"] == "classification" and type(saved.model).__name__ == "DirichletGP"
    p = run_json(["predict", str(model), str(files["binary"]), "--out", str(out)], capsys)
    assert p["columns"] == ["predicted", "p_no", "p_yes"] and p["rows"] == 120
    assert p["metrics"]["accuracy"] > 0.8  # the label column is present: scored
    table = read_predictions(out)
    _, predicted = check_predictions(table, ["no", "yes"], p["columns"])
    assert np.mean([a == b["label"] for a, b in zip(predicted, table)]) > 0.8


def test_svgp_three_classes_with_a_test_file(files, capsys):
    model, out = files["dir"] / "three.fgp", files["dir"] / "three_pred.csv"
    r = run_json(["fit", str(files["three"]), "--target", "label", "--task", "classification", "--method", "svgp",
                  "--inducing", "20", "--batch-size", "64", "--iters", "80", "--test", str(files["three_test"]),
                  "--out", str(model), "-q"], capsys)
    assert r["method"] == "svgp" and r["likelihood"] == "Softmax" and r["inducing"] == 20
    assert r["classes"] == ["cat", "dog", "emu"] and r["n_train"] == 150
    assert r["test"]["n"] == 50 and r["test"]["accuracy"] > 0.8 and np.isfinite(r["test"]["log_loss"])
    p = run_json(["predict", str(model), str(files["three_test"]), "--out", str(out)], capsys)
    assert p["columns"] == ["predicted", "p_cat", "p_dog", "p_emu"]
    assert p["metrics"]["accuracy"] == pytest.approx(r["test"]["accuracy"])  # the same rows, the same model
    check_predictions(read_predictions(out), ["cat", "dog", "emu"], p["columns"])


def test_svgp_binary_resumes_mid_run(files, capsys):
    ckpt = files["dir"] / "c.ckpt"
    args = ["fit", str(files["binary"]), "--target", "label", "--task", "classification", "--method", "svgp",
            "--inducing", "16", "--batch-size", "32", "--test-size", "0.25", "--seed", "3", "-q",
            "--checkpoint", str(ckpt), "--checkpoint-every", "5"]
    first = run_json([*args, "--iters", "7"], capsys)  # 3 batches an epoch: stops mid-epoch
    assert first["iters"] == 7 and ckpt.is_file()
    r = run_json([*args, "--iters", "60", "--resume"], capsys)
    assert r["resumed_from_step"] == 7 and r["iters"] == 60 and r["likelihood"] == "Bernoulli"
    assert r["test"]["accuracy"] > 0.8


def test_text_report_and_numeric_labels(files, capsys, tmp_path):
    argv = ["fit", str(files["numeric"]), "--target", "label", "--task", "classification", "--iters", "5",
            "--test-size", "0.2", "--alpha-epsilon", "0.05", "--device", "cpu", "--out", str(tmp_path / "n.fgp")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "3 classes: 1 (" in text and "DirichletGP (alpha_epsilon 0.05)" in text
    assert "held-out (12 rows): accuracy" in text and "ECE" in text
    assert bundle.load(tmp_path / "n.fgp").info["classes"] == [1, 2, 3]  # numbers stay numbers
    p = run_json(["predict", str(tmp_path / "n.fgp"), str(files["numeric"]), "--out", str(tmp_path / "p.csv")],
                 capsys)
    assert p["columns"] == ["predicted", "p_1", "p_2", "p_3"] and p["metrics"]["n"] == 60
    check_predictions(read_predictions(tmp_path / "p.csv"), [1, 2, 3], p["columns"])


def _error_cases(f):
    """name -> (argv, exit status, text of the one-line message)."""
    f = {k: str(v) for k, v in f.items()}
    cls = ["fit", f["three"], "--target", "label", "--task", "classification", "--iters", "1"]
    reg = ["fit", f["three"], "--target", "a", "--features", "b", "--iters", "1"]
    return {
        "one class": (["fit", f["one_class"], "--target", "label", "--task", "classification"], 1,
                      "--target: column 'label' of"),
        "sgpr": ([*cls, "--method", "sgpr"], 2, "--method: sgpr is a regression method"),
        "exact": ([*cls, "--method", "exact"], 2, "--method: exact is a regression method"),
        "ski": ([*cls, "--method", "ski"], 2, "--method: ski is a regression method"),
        "noise floor": ([*cls, "--noise-floor", "1e-3"], 2, "--noise-floor: a classifier has no Gaussian"),
        "batch size with dirichlet": ([*cls, "--batch-size", "32"], 2, "--batch-size: only --method svgp"),
        "inducing with dirichlet": ([*cls, "--inducing", "10"], 2, "--inducing: only --method svgp"),
        "alpha epsilon with svgp": ([*cls, "--method", "svgp", "--alpha-epsilon", "0.1"], 2,
                                    "--alpha-epsilon: only --method dirichlet"),
        "too few inducing points": ([*cls, "--method", "svgp", "--inducing", "2"], 2,
                                    "--inducing: expected a count >= 4"),
        "dirichlet for regression": ([*reg, "--method", "dirichlet"], 2,
                                     "--method: dirichlet is a classification method"),
        "alpha epsilon for regression": ([*reg, "--alpha-epsilon", "0.1"], 2,
                                         "--alpha-epsilon: only --task classification"),
        "unknown task": ([*reg, "--task", "ranking"], 2, "--task"),
        "test label not a class": ([*cls, "--test", f["unseen"]], 1, "--test: label 'gnu' (line 4)"),
        "blank label": (["fit", f["blank"], "--target", "label", "--task", "classification"], 1,
                        "--target: missing class label in column 'label' (line 4)"),
    }


@pytest.mark.parametrize("name", list(_error_cases({k: "x" for k in (
    "dir", "binary", "three", "three_test", "numeric", "one_class", "unseen", "blank")})))
def test_error_is_one_line_with_exit_status(files, capsys, name):
    argv, code, text = _error_cases(files)[name]
    assert main([*argv, "--device", "cpu"]) == code
    assert_one_line_error(capsys.readouterr(), text)


def test_model_files_regression_bundles_still_read_and_bad_classes_refused(files, capsys, tmp_path):
    import torch

    import flashgp as fg
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)[:, None]
    gp = fg.ExactGP(x, torch.sin(3 * x[:, 0]), fg.kernels.Scale(fg.kernels.RBF()))
    stats = {"x_mean": [0.0], "x_std": [1.0], "y_mean": 2.0, "y_std": 3.0}
    # a regression bundle as earlier versions wrote it: no "task", no "classes" in its info
    old = bundle.save(tmp_path / "old.fgp", gp, bundle.Scaling(np.zeros(1), np.ones(1), 2.0, 3.0), "cli",
                      {"target": "y", "features": ["a"], "kernel": "rbf"})
    _, meta = load_cli_model(old, "cpu", print)
    assert meta["task"] == "regression" and meta["classes"] is None and meta["y_std"] == 3.0
    save_cli_model(tmp_path / "new.fgp", gp, stats, "y", ["a"], "rbf")  # regression: still no task key
    assert set(bundle.load(tmp_path / "new.fgp").info) == {"target", "features", "kernel"}
    # a classifier's bundle whose classes do not fit the model is refused by predict (exit 1)
    data = tmp_path / "d.csv"
    data.write_text("a,y\n0.1,1\n0.2,0\n0.3,1\n")
    labels = torch.tensor([0, 1] * 10)
    dgp = fg.DirichletGP(x, labels, fg.kernels.Scale(fg.kernels.RBF()))
    for name, classes in (("three", ["a", "b", "c"]), ("mixed", ["a", 1]), ("unsorted", ["b", "a"])):
        path = bundle.save(tmp_path / f"{name}.fgp", dgp, bundle.Scaling(np.zeros(1), np.ones(1), 0.0, 1.0), "cli",
                           {"target": "y", "features": ["a"], "kernel": "rbf", "task": "classification",
                            "classes": classes})
        assert main(["predict", str(path), str(data), "--out", str(tmp_path / "p.csv")]) == 1
        err = capsys.readouterr().err
        assert "MODEL:" in err and "classes" in err, err
    no_classes = bundle.save(tmp_path / "bare.fgp", dgp, bundle.Scaling(np.zeros(1), np.ones(1), 0.0, 1.0), "cli",
                             {"target": "y", "features": ["a"], "kernel": "rbf"})
    assert main(["predict", str(no_classes), str(data), "--out", str(tmp_path / "p.csv")]) == 1
    assert "without its class labels" in capsys.readouterr().err
