# The scalable models through the estimator and the command line: GPRegressor(method="sgpr" |
# "ski", inducing=...) and `flashgp fit --method ... --inducing ...`, with save/load and the
# checks of the new settings.
import json

import numpy as np
import pytest

import flashgp as fg
from flashgp.cli import main
from flashgp.sklearn import GPRegressor


def data(n=400, d=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, d))
    return x, 3 + np.sin(2 * x[:, 0]) + 0.5 * x[:, -1] + 0.1 * rng.standard_normal(n)


def test_sgpr_estimator_fits_predicts_and_round_trips(tmp_path):
    x, y = data()
    est = GPRegressor(method="sgpr", inducing=30, iters=40).fit(x[:300], y[:300])
    assert isinstance(est.model_, fg.SGPR) and est.model_.num_inducing == 30
    assert est.polish_history_ is not None  # the bound is exact: polish="auto" runs L-BFGS
    exact = GPRegressor(iters=40).fit(x[:300], y[:300])
    assert est.score(x[300:], y[300:]) > exact.score(x[300:], y[300:]) - 0.02
    assert est.log_marginal_likelihood_ <= exact.log_marginal_likelihood_ + 1e-6
    mean, std = est.predict(x[300:], return_std=True)
    assert std.shape == (100,) and np.all(std > 0)
    est.save(tmp_path / "e.fgp")
    back = GPRegressor.load(tmp_path / "e.fgp")
    assert np.array_equal(back.predict(x[300:]), est.predict(x[300:]))


def test_sgpr_estimator_takes_inducing_inputs_in_data_units():
    x, y = data()
    z = x[:20] * 1.0
    est = GPRegressor(method="sgpr", inducing=z, iters=0).fit(x, y)
    back = est.model_.inducing_points.detach().numpy() * est.x_scale_ + est.x_mean_
    assert np.allclose(back, z)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(method="sparse"), ValueError, "method: expected one of"),
    (dict(method="exact", inducing=10), ValueError, "only method='sgpr'"),
    (dict(method="sgpr", inducing=0), ValueError, "count >= 1"),
    (dict(method="sgpr", inducing=np.zeros((5, 3))), ValueError, r"shape \(m, 2\)"),
    (dict(method="sgpr", solver="cg"), ValueError, "takes no solver"),
    (dict(method="ski", inducing=[10, 2.5]), ValueError, "grid size"),
])
def test_estimator_method_errors(kwargs, error, words):
    x, y = data(50)
    with pytest.raises(error, match=words):
        GPRegressor(iters=1, **kwargs).fit(x, y)


def write(path, x, y):
    lines = ["a,b,y"] + [f"{a},{b},{t}" for (a, b), t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_fit_sgpr_and_predict(tmp_path, capsys):
    x, y = data(200)
    train = write(tmp_path / "train.csv", x, y)
    code = main(["fit", str(train), "--target", "y", "--method", "sgpr", "--inducing", "25", "--iters", "20",
                 "--test-size", "0.2", "--device", "cpu", "--out", str(tmp_path / "m.fgp"), "--json", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "sgpr" and result["solver_path"] == "sgpr"
    assert result["test"]["rmse"] < 0.5
    code = main(["predict", str(tmp_path / "m.fgp"), str(train), "--out", str(tmp_path / "p.csv"), "-q",
                 "--device", "cpu"])
    assert code == 0 and (tmp_path / "p.csv").read_text().count("\n") == 201


def test_cli_method_errors(tmp_path, capsys):
    x, y = data(50)
    train = write(tmp_path / "train.csv", x, y)
    assert main(["fit", str(train), "--target", "y", "--inducing", "10", "-q"]) == 2
    assert "--inducing: only method='sgpr'" in capsys.readouterr().err
    assert main(["fit", str(train), "--target", "y", "--method", "nope", "-q"]) == 2


def test_sgpr_plots():
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import torch
    from flashgp import plot
    x = torch.linspace(-3, 3, 120, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(120, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = fg.SGPR(x, y, fg.kernels.Scale(fg.kernels.RBF()), inducing=15)
    history = fg.fit(model, iters=5, progress=False)
    assert plot.plot_posterior_1d(model, torch.linspace(-4, 4, 50), num_samples=0) is not None
    assert plot.plot_history(history) is not None


def test_ski_estimator_and_command_line(tmp_path, capsys):
    x, y = data(1500, d=1)
    est = GPRegressor(method="ski", inducing=100, iters=15).fit(x[:1200], y[:1200])
    assert type(est.model_.kernel).__name__ == "Interpolated"
    assert est.outputscale_ is not None and est.lengthscale_.shape == (1,)
    assert est.score(x[1200:], y[1200:]) > 0.9
    est.save(tmp_path / "ski.fgp")
    assert np.allclose(GPRegressor.load(tmp_path / "ski.fgp").predict(x[1200:]), est.predict(x[1200:]))
    with pytest.raises(ValueError, match="1 to 3 dimensions"):
        GPRegressor(method="ski", iters=1).fit(*data(60, d=4))
    train = tmp_path / "train.csv"
    train.write_text("a,y\n" + "\n".join(f"{a},{t}" for a, t in zip(x[:300, 0], y[:300])) + "\n")
    code = main(["fit", str(train), "--target", "y", "--method", "ski", "--inducing", "64", "--iters", "5",
                 "--device", "cpu", "--json", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "ski" and "lengthscale" in result["hyperparameters"]


def test_cli_fit_svgp_with_a_checkpoint_resume_and_predict(tmp_path, capsys):
    x, y = data(300)
    train = write(tmp_path / "train.csv", x, y)
    args = ["fit", str(train), "--target", "y", "--method", "svgp", "--inducing", "25", "--batch-size", "64",
            "--lr", "0.05", "--test-size", "0.2", "--device", "cpu", "--seed", "2", "--json", "-q",
            "--checkpoint", str(tmp_path / "c.ckpt"), "--checkpoint-every", "5"]
    assert main(args + ["--iters", "7"]) == 0  # 4 batches an epoch: stops mid-epoch
    capsys.readouterr()
    assert main(args + ["--iters", "200", "--resume", "--out", str(tmp_path / "m.fgp")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "svgp" and result["resumed_from_step"] == 7 and result["iters"] == 200
    assert result["test"]["rmse"] < 0.5
    assert main(["predict", str(tmp_path / "m.fgp"), str(train), "--out", str(tmp_path / "p.csv"), "-q",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "p.csv").read_text().count("\n") == 301
    assert main(["fit", str(train), "--target", "y", "--method", "sgpr", "--batch-size", "64", "-q"]) == 2
