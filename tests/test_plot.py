# Tests for flashgp.plot on the Agg backend: each figure draws on a given or a new Axes, the
# coverage numbers behind the calibration plot, argument checks, and the missing-matplotlib hint.
import builtins
import importlib

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flashgp as fg  # noqa: E402
from flashgp import plot  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def model_1d():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, generator=g, dtype=F64) * 6
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(30, generator=g, dtype=F64)
    model = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF()), solver=fg.Cholesky())
    fg.fit(model, iters=10, progress=False)
    return model


def predictions(m=200, seed=0):
    rng = np.random.default_rng(seed)
    mean, std = rng.normal(size=m), np.full(m, 1.0)
    return mean, std, mean + rng.normal(size=m)  # y ~ N(mean, std^2): calibrated


@pytest.mark.filterwarnings("ignore::flashgp.NumericalWarning")  # jitter for samples on a dense grid
def test_posterior_1d_from_a_model(model_1d, tmp_path):
    x = torch.linspace(6, 0, 50, dtype=F64)  # unsorted order is fine
    ax = plot.plot_posterior_1d(model_1d, x, num_samples=2, generator=torch.Generator().manual_seed(1))
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels.count("mean") == 1 and "samples" in labels and "training data" in labels
    assert len(ax.get_lines()) == 4  # 2 samples, the mean, the training points
    assert len(ax.collections) == 1  # the band
    mean_line = next(line for line in ax.get_lines() if line.get_label() == "mean")
    xs = mean_line.get_xdata()
    assert np.all(np.diff(xs) >= 0)
    expected = model_1d.posterior(torch.as_tensor(xs, dtype=F64).unsqueeze(-1)).mean.numpy()
    np.testing.assert_allclose(mean_line.get_ydata(), expected, rtol=1e-10, atol=1e-10)
    ax.figure.savefig(tmp_path / "post.png")
    assert (tmp_path / "post.png").stat().st_size > 1000


def test_posterior_1d_from_a_posterior_on_given_axes(model_1d):
    _, ax = plt.subplots()
    x = torch.linspace(0, 6, 20, dtype=F64).unsqueeze(-1)
    post = model_1d.predict(x)
    out = plot.plot_posterior_1d(post, x, num_samples=0, ax=ax, train_x=[1.0, 2.0], train_y=[0.5, 0.7])
    assert out is ax
    assert [line.get_label() for line in ax.get_lines()] == ["mean", "training data"]


def test_predicted_vs_observed_and_calibration():
    mean, std, y = predictions()
    fig, (a1, a2) = plt.subplots(1, 2)
    assert plot.plot_predicted_vs_observed(mean, std, y, ax=a1) is a1
    assert "cover" in a1.get_title()
    assert plot.plot_calibration(torch.as_tensor(mean), std, y, ax=a2) is a2
    observed = a2.get_lines()[1].get_ydata()
    assert observed.shape == (19,) and np.all(np.diff(observed) >= 0)
    np.testing.assert_allclose(observed, np.arange(1, 20) * 0.05, atol=0.1)  # calibrated data


def test_interval_coverage_values():
    mean, std, y = np.zeros(4), np.ones(4), np.array([0.5, -1.5, 2.5, -3.0])
    np.testing.assert_allclose(plot.interval_coverage(mean, std, y, [0.5, 0.95, 0.99]), [0.25, 0.5, 0.75])
    assert plot.interval_coverage(mean, std * 10, y)[0] == 1.0  # wide intervals cover everything


def test_history_from_fit_and_from_a_list(model_1d):
    history = fg.History(loss=[1.0, 0.5, 0.2], step_seconds=[0.1, 0.1, 0.1])
    ax = plot.plot_history(history)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [1.0, 0.5, 0.2])
    assert "3 steps" in ax.get_title()
    ax2 = plot.plot_history([3.0, 2.0, 2.0], log_scale=True)
    assert ax2.get_yscale() == "log" and np.all(ax2.get_lines()[0].get_ydata() > 0)


@pytest.mark.parametrize("call,match", [
    (lambda: plot.plot_predicted_vs_observed([1.0, 2.0], [1.0], [1.0, 2.0]), "std, y"),
    (lambda: plot.plot_predicted_vs_observed([1.0], [-1.0], [1.0]), "std"),
    (lambda: plot.plot_calibration([1.0], [1.0], [1.0], levels=[1.5]), "levels"),
    (lambda: plot.plot_history([]), "history"),
    (lambda: plot.plot_history(None), "history"),
    (lambda: plot.plot_predicted_vs_observed([1.0], [1.0], [1.0], ax="left"), "ax"),
    (lambda: plot.plot_predicted_vs_observed("abc", [1.0], [1.0]), "mean"),
])
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=rf"\b{match}\b"):
        call()


def test_posterior_1d_argument_checks(model_1d):
    x = torch.linspace(0, 1, 5, dtype=F64)
    with pytest.raises(ValueError, match=r"\bnum_samples\b"):
        plot.plot_posterior_1d(model_1d, x, num_samples=-1)
    with pytest.raises(ValueError, match=r"\blevel\b"):
        plot.plot_posterior_1d(model_1d, x, level=95)
    with pytest.raises(ValueError, match=r"\bx\b"):
        plot.plot_posterior_1d(model_1d.posterior(x.unsqueeze(-1)), x[:3])
    with pytest.raises(TypeError, match=r"\bmodel_or_posterior\b"):
        plot.plot_posterior_1d(object(), x)
    wide = fg.ExactGP(torch.rand(5, 2, dtype=F64), torch.rand(5, dtype=F64), fg.kernels.RBF())
    with pytest.raises(ValueError, match=r"\bmodel_or_posterior\b"):
        plot.plot_posterior_1d(wide, x)


def test_missing_matplotlib_raises_import_error_with_hint(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    fresh = importlib.reload(plot)  # importing flashgp.plot itself needs no matplotlib
    with pytest.raises(ImportError, match=r"pip install 'flashgp\[plot\]'"):
        fresh.plot_history([1.0, 0.5])
