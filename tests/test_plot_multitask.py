# Tests for flashgp.plot_multitask on the Agg backend: the task correlation heatmap (from a model, a
# kernel, a tensor or an array), each task's posterior on one input, and the argument checks.
import builtins

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flashgp as fg  # noqa: E402
from flashgp import plot_multitask as pm  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def model():
    """A MultitaskGP of 3 correlated tasks on one input (a full grid)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, generator=g, dtype=F64) * 4
    f = torch.sin(2 * x)
    y = torch.stack([f, 0.5 * f + 0.2 * torch.cos(x), -f], -1) + 0.1 * torch.randn(20, 3, generator=g, dtype=F64)
    model = fg.MultitaskGP(x.unsqueeze(-1), y, fg.kernels.Matern(nu=2.5), rank=1)
    fg.fit(model, iters=5, progress=False)
    return model


def heatmap_values(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_task_correlations_of_a_matrix():
    cov = np.array([[4.0, 1.0, -2.0], [1.0, 1.0, 0.0], [-2.0, 0.0, 9.0]])
    corr = pm.task_correlations(cov)
    expected = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    np.testing.assert_allclose(corr, expected, rtol=1e-15)
    np.testing.assert_array_equal(np.diag(corr), 1.0)
    np.testing.assert_allclose(pm.task_correlations(torch.tensor(cov, dtype=torch.float32)), expected, rtol=1e-6)


def test_task_correlations_of_a_model_and_its_kernel(model):
    b = model.task_covariance.detach().numpy()
    expected = b / np.sqrt(np.outer(np.diag(b), np.diag(b)))
    np.testing.assert_allclose(pm.task_correlations(model), expected, rtol=1e-12)
    np.testing.assert_allclose(pm.task_correlations(model.kernel), expected, rtol=1e-12)


def test_heatmap_from_a_model(model, tmp_path):
    ax = pm.plot_task_correlations(model, labels=["a", "b", "c"])
    np.testing.assert_allclose(heatmap_values(ax), pm.task_correlations(model), rtol=1e-12)
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["a", "b", "c"]
    texts = [text.get_text() for text in ax.texts]
    assert len(texts) == 9 and texts[0] == "1.00"
    assert len(ax.figure.axes) == 2  # the heatmap and its colorbar
    ax.figure.savefig(tmp_path / "corr.png")
    assert (tmp_path / "corr.png").stat().st_size > 1000


def test_heatmap_on_given_axes_from_an_lmc_kernel_without_annotations():
    kernel = fg.kernels.LMC(fg.kernels.Multitask(fg.kernels.RBF(), 4, 2),
                            fg.kernels.Multitask(fg.kernels.Matern(nu=0.5), 4, 1))
    _, ax = plt.subplots()
    out = pm.plot_task_correlations(kernel, ax=ax, annotate=False)
    assert out is ax and not ax.texts
    assert heatmap_values(ax).shape == (4, 4)
    assert [tick.get_text() for tick in ax.get_xticklabels()] == [f"task {a}" for a in range(4)]


def test_heatmap_leaves_out_numbers_for_many_tasks():
    w = torch.randn(15, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ax = pm.plot_task_correlations(w @ w.T + torch.eye(15, dtype=F64))
    assert not ax.texts and heatmap_values(ax).shape == (15, 15)


def test_plot_multitask_every_task(model, tmp_path):
    x = torch.linspace(4, 0, 60, dtype=F64)  # unsorted order is fine
    truth = torch.stack([torch.sin(2 * x)] * 3, -1)
    ax = pm.plot_multitask(model, x, y=truth)
    means = [line for line in ax.get_lines() if line.get_label().startswith("task")]
    assert [line.get_label() for line in means] == ["task 0", "task 1", "task 2"]
    assert len(ax.collections) == 3  # one band per task
    assert len(ax.get_lines()) == 9  # per task: mean, the given y, training points
    expected = model.posterior(torch.sort(x).values.unsqueeze(-1)).mean.detach().numpy()
    for a, line in enumerate(means):
        assert np.all(np.diff(line.get_xdata()) >= 0)
        np.testing.assert_allclose(line.get_ydata(), expected[:, a], rtol=1e-10, atol=1e-12)
        assert line.get_color() == f"C{a}"
    ax.figure.savefig(tmp_path / "tasks.png")
    assert (tmp_path / "tasks.png").stat().st_size > 1000


def test_plot_multitask_some_tasks_with_noise_on_given_axes(model):
    _, ax = plt.subplots()
    x = np.linspace(0, 4, 30)[:, None]  # (m, 1) numpy works too
    out = pm.plot_multitask(model, x, ax=ax, tasks=[2, 0], observation_noise=True, labels=["u", "v", "w"],
                            show_data=False)
    assert out is ax
    assert [line.get_label() for line in ax.get_lines()] == ["w", "u"]
    assert ax.get_ylabel() == "y"
    band = ax.collections[0].get_paths()[0].vertices[:, 1]  # task 2's: the first drawn
    pred = model.predict(torch.as_tensor(x))
    upper = (pred.mean[:, 2] + 1.959963984540054 * pred.stddev[:, 2]).detach().numpy()
    np.testing.assert_allclose(band.max(), upper.max(), rtol=1e-9)
    one = pm.plot_multitask(model, x, tasks=1)
    assert len(one.get_lines()) == 2 and one.get_lines()[0].get_label() == "task 1"  # mean, points


def test_plot_multitask_with_tasks_observed_apart():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(30, 1, generator=g, dtype=F64)
    tasks = torch.arange(30) % 2
    y = torch.sin(5 * x[:, 0]) * (1 - 2 * tasks) + 0.05 * torch.randn(30, generator=g, dtype=F64)
    model = fg.MultitaskGP(x, y, fg.kernels.RBF(), task_index=tasks)
    ax = pm.plot_multitask(model, torch.linspace(0, 1, 20, dtype=F64))
    points = [line for line in ax.get_lines() if line.get_linestyle() == "None"]
    assert [len(line.get_xdata()) for line in points] == [15, 15]


@pytest.mark.parametrize("call, error, match", [
    (lambda m: pm.plot_task_correlations(np.ones((2, 3))), ValueError, "model_or_covariance"),
    (lambda m: pm.plot_task_correlations(np.array([[1.0, 2.0], [0.0, 1.0]])), ValueError, "model_or_covariance"),
    (lambda m: pm.plot_task_correlations(np.array([[1.0, 0.0], [0.0, 0.0]])), ValueError, "model_or_covariance"),
    (lambda m: pm.plot_task_correlations(np.array([[1.0, np.nan], [np.nan, 1.0]])), ValueError, "model_or_covariance"),
    (lambda m: pm.plot_task_correlations(np.ones(3)), ValueError, "model_or_covariance"),
    (lambda m: pm.plot_task_correlations("abc"), TypeError, "model_or_covariance"),
    (lambda m: pm.plot_task_correlations(m.posterior(torch.zeros(2, 1, dtype=F64))), TypeError, "model_or_covariance"),
    (lambda m: pm.plot_task_correlations(m, labels=["a", "b"]), ValueError, "labels"),
    (lambda m: pm.plot_task_correlations(m, labels="abc"), TypeError, "labels"),
    (lambda m: pm.plot_task_correlations(m, annotate="yes"), TypeError, "annotate"),
    (lambda m: pm.plot_task_correlations(m, ax="left"), TypeError, "ax"),
    (lambda m: pm.plot_multitask(object(), [0.0, 1.0]), TypeError, "model"),
    (lambda m: pm.plot_multitask(m, [[0.0, 1.0]] * 3), ValueError, "x"),
    (lambda m: pm.plot_multitask(m, [0.0, 1.0], y=np.zeros((2, 2))), ValueError, "y"),
    (lambda m: pm.plot_multitask(m, [0.0, 1.0], tasks=[3]), ValueError, "tasks"),
    (lambda m: pm.plot_multitask(m, [0.0, 1.0], tasks=[]), TypeError, "tasks"),
    (lambda m: pm.plot_multitask(m, [0.0, 1.0], tasks=[0.5]), TypeError, "tasks"),
    (lambda m: pm.plot_multitask(m, [0.0, 1.0], tasks=True), TypeError, "tasks"),
    (lambda m: pm.plot_multitask(m, [0.0, 1.0], level=95), ValueError, "level"),
    (lambda m: pm.plot_multitask(m, [0.0, 1.0], labels=["a"]), ValueError, "labels"),
])
def test_bad_arguments_name_the_argument(model, call, error, match):
    with pytest.raises(error, match=rf"\b{match}\b"):
        call(model)


def test_plot_multitask_needs_one_input_column():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(10, 2, generator=g, dtype=F64)
    wide = fg.MultitaskGP(x, torch.randn(10, 2, generator=g, dtype=F64), fg.kernels.RBF(ard_dims=2))
    with pytest.raises(ValueError, match=r"\bmodel\b.*2 input columns"):
        pm.plot_multitask(wide, [0.0, 1.0])


def test_missing_matplotlib_raises_import_error_with_hint(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    np.testing.assert_allclose(pm.task_correlations(np.eye(2)), np.eye(2))  # needs no matplotlib
    with pytest.raises(ImportError, match=r"pip install 'flashgp\[plot\]'"):
        pm.plot_task_correlations(np.eye(2))
