# Tests for the classification plots (flashgp.plot_classification, re-exported by flashgp.plot) on
# the Agg backend: the expected calibration error against hand-computed values and on calibrated
# synthetic data, the artists of the reliability diagram and of the decision boundary, and the
# argument checks.
import builtins
import importlib

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.collections import PathCollection
from matplotlib.contour import ContourSet

import flashgp as fg
from flashgp import plot, plot_classification

F64 = torch.float64

# Six 3-class predictions; with bins=5 (edges 0, .2, .4, .6, .8, 1) by hand:
#   bin (.2, .4]: row 4 (conf .36, right)          acc 1,  conf .36,  |gap| .64,  weight 1/6
#   bin (.4, .6]: rows 2, 3 (conf .5 right, .45 wrong) acc .5, conf .475, |gap| .025, weight 2/6
#   bin (.6, .8]: row 5 (conf .7, right)           acc 1,  conf .7,   |gap| .3,   weight 1/6
#   bin (.8, 1]:  rows 0, 1 (conf .9 right, .85 wrong) acc .5, conf .875, |gap| .375, weight 2/6
# ECE = (.64 + .05 + .3 + .75) / 6 = 0.29
HAND_P = np.array([[0.90, 0.05, 0.05], [0.10, 0.85, 0.05], [0.50, 0.30, 0.20],
                   [0.30, 0.45, 0.25], [0.34, 0.36, 0.30], [0.70, 0.20, 0.10]])
HAND_Y = np.array([0, 2, 0, 0, 1, 0])
HAND_ECE = 0.29


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def calibrated(n, seed, sharpen=1.0):
    """(n, 3) probabilities and classes drawn from them; sharpen > 1 reports overconfident ones."""
    rng = np.random.default_rng(seed)
    p = np.exp(2 * rng.normal(size=(n, 3)))
    p /= p.sum(axis=1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    shown = p ** sharpen
    return shown / shown.sum(axis=1, keepdims=True), y


def binary_proba(g):
    p1 = 1 / (1 + np.exp(-3 * (g[:, 0] - g[:, 1])))
    return np.column_stack([1 - p1, p1])


def three_class_proba(g):
    centers = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 2.0]])
    logits = -((g[:, None, :] - centers) ** 2).sum(-1)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def scatter_points(ax):
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def contours(ax):
    return [c for c in ax.collections if isinstance(c, ContourSet)]


def test_reexported_from_plot():
    for name in ("plot_decision_boundary", "plot_reliability", "expected_calibration_error"):
        assert getattr(plot, name) is getattr(plot_classification, name) and name in plot.__all__


def test_ece_hand_computed():
    assert plot.expected_calibration_error(HAND_P, HAND_Y, bins=5) == pytest.approx(HAND_ECE, abs=1e-12)
    labels = np.array(["a", "b", "c"])[HAND_Y]  # the same with labels mapped through classes=
    assert plot.expected_calibration_error(torch.as_tensor(HAND_P), list(labels), bins=5,
                                           classes=["a", "b", "c"]) == pytest.approx(HAND_ECE, abs=1e-12)
    # (n,) = P(class 1): confidences .8 (right), .7 (right), .6 (wrong), all in (.5, 1]
    assert plot.expected_calibration_error([0.8, 0.3, 0.6], [1, 0, 0], bins=2) == pytest.approx(0.7 - 2 / 3)
    one_bin = plot.expected_calibration_error(HAND_P, HAND_Y, bins=1)  # |mean acc - mean conf|
    assert one_bin == pytest.approx(abs(4 / 6 - HAND_P.max(axis=1).mean()))


def test_ece_bins_are_closed_on_the_right():
    # confidence exactly 0.6 with bins=5 belongs to (.4, .6], confidence 1 to (.8, 1]
    p = np.array([[0.6, 0.4], [1.0, 0.0]])
    ax = plot.plot_reliability(p, [1, 0], bins=5)
    np.testing.assert_allclose([b.get_x() for b in ax.patches], [0.4, 0.8])
    np.testing.assert_allclose([b.get_height() for b in ax.patches], [0.0, 1.0])


def test_ece_of_calibrated_data_is_near_zero():
    # y is drawn from the probabilities themselves, so each bin's accuracy equals its mean
    # confidence in expectation; what remains is sampling noise, E|acc - conf| ~ sqrt(.25 / n_b),
    # about 0.003 over 10 bins at n = 200k (0.0013..0.0028 over seeds 0-4): 0.01 is > 3 times that.
    p, y = calibrated(200_000, seed=0)
    assert plot.expected_calibration_error(p, y) < 0.01
    overconfident, y = calibrated(200_000, seed=1, sharpen=3.0)  # and it does see miscalibration
    assert plot.expected_calibration_error(overconfident, y) > 0.1


def test_reliability_bars_are_the_per_bin_accuracies():
    _, ax = plt.subplots()
    assert plot.plot_reliability(HAND_P, HAND_Y, bins=5, ax=ax) is ax
    bars = ax.patches
    np.testing.assert_allclose([b.get_height() for b in bars], [1.0, 0.5, 1.0, 0.5])  # empty bin 0: none
    np.testing.assert_allclose([b.get_x() for b in bars], [0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose([b.get_width() for b in bars], 0.2)
    diagonal = [line for line in ax.get_lines() if line.get_label() == "ideal"]
    assert len(diagonal) == 1 and list(diagonal[0].get_xdata()) == [0, 1]
    (markers,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(markers.get_offsets(), [[0.36, 1.0], [0.475, 0.5], [0.7, 1.0], [0.875, 0.5]])
    sizes = markers.get_sizes()  # area proportional to the count: 1, 2, 1, 2 points
    np.testing.assert_allclose(sizes / sizes.max(), [0.5, 1.0, 0.5, 1.0])
    assert "ECE = 0.290" in ax.get_title()


def test_reliability_of_a_new_figure_with_many_points(tmp_path):
    p, y = calibrated(5000, seed=2)
    ax = plot.plot_reliability(p, y)
    assert len(ax.patches) <= 10
    heights = np.array([b.get_height() for b in ax.patches])
    centers = np.array([b.get_x() + b.get_width() / 2 for b in ax.patches])
    np.testing.assert_allclose(heights, centers, atol=0.1)  # near the diagonal
    ax.figure.savefig(tmp_path / "rel.png")
    assert (tmp_path / "rel.png").stat().st_size > 1000


def test_decision_boundary_binary():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(40, 2))
    y = np.where(X[:, 0] > X[:, 1], "pos", "neg")
    calls = []

    def proba(g):
        calls.append(g.copy())
        return binary_proba(g)

    ax = plot.plot_decision_boundary(proba, X, y, resolution=50, padding=0.1)
    assert len(calls) == 1 and calls[0].shape == (2500, 2) and calls[0].dtype == np.float64
    span = X.max(axis=0) - X.min(axis=0)
    np.testing.assert_allclose(ax.get_xlim(), [X[:, 0].min() - 0.1 * span[0], X[:, 0].max() + 0.1 * span[0]])
    np.testing.assert_allclose(ax.get_ylim(), [X[:, 1].min() - 0.1 * span[1], X[:, 1].max() + 0.1 * span[1]])
    filled, line = contours(ax)
    assert filled.filled and not line.filled and list(line.levels) == [0.5]
    assert len(ax.figure.axes) == 2  # the colorbar
    assert scatter_points(ax) == 40
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["neg", "pos"]


def test_decision_boundary_multiclass_alpha_is_the_top_probability():
    rng = np.random.default_rng(1)
    X = rng.uniform(-0.5, 2.5, size=(30, 2))
    _, ax = plt.subplots()
    out = plot.plot_decision_boundary(three_class_proba, X, three_class_proba(X).argmax(axis=1),
                                      resolution=40, ax=ax, padding=0.0)
    assert out is ax
    assert contours(ax) == [] and len(ax.figure.axes) == 1  # no 0.5 contour, no colorbar
    (image,) = ax.images
    rgba = np.asarray(image.get_array())
    gx = np.linspace(X[:, 0].min(), X[:, 0].max(), 40)
    gy = np.linspace(X[:, 1].min(), X[:, 1].max(), 40)
    xx, yy = np.meshgrid(gx, gy)
    p = three_class_proba(np.column_stack([xx.ravel(), yy.ravel()]))
    np.testing.assert_allclose(rgba[..., 3], p.max(axis=1).reshape(40, 40))
    tab10 = matplotlib.colormaps["tab10"]
    np.testing.assert_allclose(rgba[..., :3].reshape(-1, 3), tab10(p.argmax(axis=1))[:, :3])
    assert scatter_points(ax) == 30 and len(ax.get_legend().get_texts()) == 3
    # one class's probability instead: shaded with a colorbar and its 0.5 contour
    ax2 = plot.plot_decision_boundary(three_class_proba, X, resolution=40, class_index=2, cmap="viridis")
    assert len(contours(ax2)) == 2 and len(ax2.figure.axes) == 2 and scatter_points(ax2) == 30


def test_decision_boundary_from_scikit_learn_and_from_a_flashgp_model():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    clf = sklearn_linear.LogisticRegression().fit(X, y)
    ax = plot.plot_decision_boundary(clf.predict_proba, X, y, resolution=30)
    assert len(contours(ax)) == 2 and scatter_points(ax) == 60
    # a lambda around a flashgp model returning a (k,) tensor of P(class 1)
    xt = torch.as_tensor(X, dtype=F64)
    model = fg.ExactGP(xt, torch.as_tensor(2.0 * y - 1, dtype=F64), fg.kernels.RBF(), solver=fg.Cholesky())
    with torch.no_grad():
        ax = plot.plot_decision_boundary(
            lambda g: torch.sigmoid(3 * model.posterior(torch.as_tensor(g)).mean), X, y, resolution=30)
    assert len(contours(ax)) == 2 and scatter_points(ax) == 60


def test_decision_boundary_without_labels_and_with_a_constant_column():
    X = np.column_stack([np.linspace(0, 1, 5), np.zeros(5)])  # zero range on the second input
    ax = plot.plot_decision_boundary(binary_proba, X, resolution=10)
    assert scatter_points(ax) == 5 and ax.get_legend() is None
    assert ax.get_ylim()[0] < 0 < ax.get_ylim()[1]


def bad_rows(g):
    p = binary_proba(g)
    p[:, 1] += 0.1
    return p


def outside(g):
    p = binary_proba(g)
    p[0] = [1.5, -0.5]  # sums to 1 but not probabilities
    return p


X4 = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize("call,match", [
    (lambda: plot.plot_decision_boundary(binary_proba, np.zeros((4, 3))), "X"),
    (lambda: plot.plot_decision_boundary(binary_proba, np.zeros(4)), "X"),
    (lambda: plot.plot_decision_boundary(binary_proba, [[0.0, np.nan]]), "X"),
    (lambda: plot.plot_decision_boundary("model", X4), "predict_proba"),
    (lambda: plot.plot_decision_boundary(lambda g: binary_proba(g)[1:], X4), "predict_proba"),
    (lambda: plot.plot_decision_boundary(lambda g: binary_proba(g)[:, :1], X4), "predict_proba"),
    (lambda: plot.plot_decision_boundary(lambda g: binary_proba(g)[None], X4), "predict_proba"),
    (lambda: plot.plot_decision_boundary(outside, X4), "predict_proba"),
    (lambda: plot.plot_decision_boundary(bad_rows, X4), "predict_proba"),
    (lambda: plot.plot_decision_boundary(binary_proba, X4, [0, 1]), "y"),
    (lambda: plot.plot_decision_boundary(binary_proba, X4, resolution=1), "resolution"),
    (lambda: plot.plot_decision_boundary(binary_proba, X4, padding=-0.1), "padding"),
    (lambda: plot.plot_decision_boundary(binary_proba, X4, class_index=2), "class_index"),
    (lambda: plot.plot_decision_boundary(binary_proba, X4, cmap="no-such-map"), "cmap"),
    (lambda: plot.plot_decision_boundary(binary_proba, X4, ax="left"), "ax"),
    (lambda: plot.expected_calibration_error(np.zeros((2, 2, 2)), [0, 1]), "probabilities"),
    (lambda: plot.expected_calibration_error([[0.5, 0.6]], [0]), "probabilities"),
    (lambda: plot.expected_calibration_error([[1.2, -0.2]], [0]), "probabilities"),
    (lambda: plot.expected_calibration_error(HAND_P, HAND_Y[:3]), "y"),
    (lambda: plot.expected_calibration_error(HAND_P, HAND_Y + 1), "y"),
    (lambda: plot.expected_calibration_error(HAND_P, HAND_Y + 0.5), "y"),
    (lambda: plot.expected_calibration_error(HAND_P, ["a"] * 6), "y"),
    (lambda: plot.expected_calibration_error(HAND_P, ["a"] * 6, classes=["a", "b"]), "classes"),
    (lambda: plot.expected_calibration_error(HAND_P, ["z"] * 6, classes=["a", "b", "c"]), "y"),
    (lambda: plot.expected_calibration_error(HAND_P, HAND_Y, bins=0), "bins"),
    (lambda: plot.plot_reliability(HAND_P, HAND_Y, bins=True), "bins"),
    (lambda: plot.plot_reliability(HAND_P, HAND_Y, ax=3), "ax"),
])
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=rf"\b{match}\b"):
        call()


def test_missing_matplotlib_raises_import_error_with_hint(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    fresh = importlib.reload(plot)  # importing flashgp.plot needs no matplotlib
    assert fresh.expected_calibration_error(HAND_P, HAND_Y, bins=5) == pytest.approx(HAND_ECE)  # nor ECE
    with pytest.raises(ImportError, match=r"pip install 'flashgp\[plot\]'"):
        fresh.plot_reliability(HAND_P, HAND_Y)
    with pytest.raises(ImportError, match=r"pip install 'flashgp\[plot\]'"):
        fresh.plot_decision_boundary(binary_proba, X4)
