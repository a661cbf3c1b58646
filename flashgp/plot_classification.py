# Matplotlib figures for classifiers: the decision boundary of a 2-D problem and a reliability
# diagram, with the expected calibration error behind it. Re-exported by flashgp.plot;
# matplotlib is optional and imported lazily (through flashgp.plot's helpers).
from __future__ import annotations

import numpy as np
import torch

__all__ = ["expected_calibration_error", "plot_decision_boundary", "plot_reliability"]

SUM_TOL = 1e-6  # how far a row of probabilities may sum from 1


def _axes(ax, figsize):
    # Imported here, not at the top: flashgp.plot imports this module.
    from .plot import _axes as axes
    return axes(ax, figsize)


def _array(value, name: str) -> np.ndarray:
    """A float64 numpy array from a tensor or array-like."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected numeric values, got {type(value).__name__}") from err


def _probabilities(value, name: str, rows: int | None = None) -> np.ndarray:
    """(n, C) class probabilities, C >= 2, from (n, C) or (n,) = P(class 1) of a binary problem.

    Values must lie in [0, 1] and each row sum to 1 within ``SUM_TOL``.
    """
    p = _array(value, name)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2 or (rows is not None and p.shape[0] != rows):
        n = "n" if rows is None else rows
        raise ValueError(f"{name}: expected probabilities of shape ({n}, C) with C >= 2, or ({n},) "
                         f"for P(class 1) of a binary problem, got {np.shape(value)}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError(f"{name}: expected probabilities in [0, 1], got values in "
                         f"[{np.nanmin(p):.6g}, {np.nanmax(p):.6g}]")
    worst = float(np.abs(p.sum(axis=1) - 1).max())
    if worst > SUM_TOL:
        raise ValueError(f"{name}: expected each row to sum to 1 (within {SUM_TOL:g}); "
                         f"the worst row is off by {worst:.3g}")
    return p


def _labels(y, name: str) -> np.ndarray:
    """Any labels as a 1-D numpy array."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a vector of labels (n,), got shape {arr.shape}")
    return arr


def _class_indices(y, num_classes: int, n: int, classes) -> np.ndarray:
    """y as int class indices 0..num_classes-1: directly, or by position in ``classes``."""
    arr = _labels(y, "y")
    if arr.shape[0] != n:
        raise ValueError(f"y: expected {n} labels like the rows of probabilities, got {arr.shape[0]}")
    if classes is not None:
        cls = list(_labels(classes, "classes"))
        if len(cls) != num_classes or len(set(cls)) != len(cls):
            raise ValueError(f"classes: expected {num_classes} distinct labels (one per column of "
                             f"probabilities), got {len(cls)} ({len(set(cls))} distinct)")
        lookup = {c: i for i, c in enumerate(cls)}
        unknown = [v for v in arr.tolist() if v not in lookup]
        if unknown:
            raise ValueError(f"y: label {unknown[0]!r} is not in classes {cls!r}")
        return np.array([lookup[v] for v in arr.tolist()], dtype=np.int64)
    try:
        idx = arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError("y: expected integer class indices 0..C-1 (pass classes= to map other "
                        "labels)") from err
    if np.any(idx != np.round(idx)) or idx.min() < 0 or idx.max() >= num_classes:
        raise ValueError(f"y: expected integer class indices in 0..{num_classes - 1} (pass classes= "
                         f"to map other labels), got values in [{idx.min():g}, {idx.max():g}]")
    return idx.astype(np.int64)


def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins: expected an int >= 1, got {bins!r}")
    return int(bins)


def _reliability(probabilities, y, bins, classes):
    """Per equal-width confidence bin: point counts, accuracy and mean confidence (nan if empty).

    Bin b is (edges[b], edges[b + 1]], the first also holding confidence 0.
    """
    bins = _check_bins(bins)
    p = _probabilities(probabilities, "probabilities")
    target = _class_indices(y, p.shape[1], p.shape[0], classes)
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == target).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / counts
    return edges, counts, accuracy, mean_conf


def expected_calibration_error(probabilities, y, bins: int = 10, *, classes=None) -> float:
    """The expected calibration error (ECE) of the predicted class's confidence.

    Points are grouped by their confidence (the largest probability) into ``bins`` equal-width
    bins ((0, 1/bins], ..., ((bins-1)/bins, 1]); the ECE is the sum over bins of
    |accuracy - mean confidence| weighted by the fraction of points in the bin. 0 is perfect.

    Args:
        probabilities: (n, C) class probabilities (rows summing to 1), or (n,) P(class 1) of a
            binary problem.
        y: (n,) true classes as integer indices 0..C-1, or labels listed in ``classes``.
        bins: the number of confidence bins.
        classes: optional (C,) labels of the columns of ``probabilities`` (e.g. a scikit-learn
            classifier's ``classes_``), to map ``y``.

    Returns:
        The ECE, in [0, 1].
    """
    _, counts, accuracy, confidence = _reliability(probabilities, y, bins, classes)
    full = counts > 0
    return float(np.sum(counts[full] / counts.sum() * np.abs(accuracy[full] - confidence[full])))


def plot_reliability(probabilities, y, *, bins: int = 10, ax=None, classes=None, color: str = "C0"):
    """A reliability diagram: per confidence bin, the accuracy of the predicted class.

    Bars give each non-empty bin's accuracy; a marker at the bin's mean confidence (its area
    proportional to the bin's number of points) shows the gap to the diagonal, which a
    calibrated classifier follows. The title gives the expected calibration error.

    Args:
        probabilities: (n, C) class probabilities, or (n,) P(class 1) of a binary problem.
        y: (n,) true classes as integer indices 0..C-1, or labels listed in ``classes``.
        bins: the number of equal-width confidence bins.
        ax: Axes to draw on (default: a new figure).
        classes: optional (C,) labels of the columns of ``probabilities``, to map ``y``.

    Returns:
        The matplotlib Axes.
    """
    edges, counts, accuracy, confidence = _reliability(probabilities, y, bins, classes)
    full = counts > 0
    ece = float(np.sum(counts[full] / counts.sum() * np.abs(accuracy[full] - confidence[full])))
    ax = _axes(ax, (5.0, 5.0))
    width = edges[1] - edges[0]
    ax.bar(edges[:-1][full], accuracy[full], width=width, align="edge", color=color, alpha=0.35,
           edgecolor=color, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    sizes = 300.0 * counts[full] / counts.max()
    ax.scatter(confidence[full], accuracy[full], s=sizes, color=color, edgecolors="k", zorder=3,
               label="mean confidence (area: count)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE = {ece:.3f} (n = {int(counts.sum())}, {len(edges) - 1} bins)",
                 fontsize="medium")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def _colormap(cmap, default: str):
    import matplotlib

    if cmap is None:
        cmap = default
    if isinstance(cmap, str):
        try:
            return matplotlib.colormaps[cmap]
        except KeyError as err:
            raise ValueError(f"cmap: unknown colormap name {cmap!r}") from err
    if not callable(cmap) or not hasattr(cmap, "N"):
        raise TypeError(f"cmap: expected a colormap name or a matplotlib Colormap, got "
                        f"{type(cmap).__name__}")
    return cmap


def _class_colors(cmap, count: int) -> np.ndarray:
    """(count, 4) RGBA: the first colors of a listed colormap, else evenly spaced along it."""
    if hasattr(cmap, "colors") and cmap.N >= count:
        return cmap(np.arange(count))
    return cmap(np.linspace(0.0, 1.0, max(count, 2)))[:count]


def plot_decision_boundary(predict_proba, X, y=None, *, resolution: int = 200, ax=None,
                           class_index: int | None = None, padding: float = 0.1, cmap=None):
    """Class probabilities of a classifier on two inputs, over a grid covering ``X``.

    ``predict_proba`` is evaluated once on a ``resolution`` x ``resolution`` grid spanning the
    range of ``X`` widened by ``padding`` times that range on every side. With two classes (or a
    given ``class_index``) the grid is shaded by P(class) with a colorbar and the 0.5 contour;
    with more, by the most probable class, its opacity equal to that class's probability.

    Args:
        predict_proba: a callable taking a (k, 2) float64 numpy array and returning (k, C)
            class probabilities (rows summing to 1), or (k,) P(class 1) of a binary problem:
            e.g. a fitted scikit-learn classifier's ``predict_proba``, or a lambda wrapping a
            flashgp model.
        X: (n, 2) inputs; they set the grid's range and are drawn as points.
        y: optional (n,) labels of ``X``, of any type, to color the points. The sorted distinct
            labels are taken to match the columns of ``predict_proba`` in order (as scikit-learn's
            ``classes_`` do): the i-th is drawn in class i's color, or, when one class's
            probability is shaded, at the colormap's top for that class and its bottom otherwise
            (with a marker per label).
        resolution: grid points per axis.
        ax: Axes to draw on (default: a new figure).
        class_index: the column whose probability is shaded (default: 1 with two classes, the
            most probable class with more).
        padding: the margin around ``X``'s range, as a fraction of the range.
        cmap: a colormap or its name (default ``"RdBu_r"`` for a probability, ``"tab10"`` for
            the most probable class).

    Returns:
        The matplotlib Axes.
    """
    if not callable(predict_proba):
        raise TypeError(f"predict_proba: expected a callable, got {type(predict_proba).__name__}")
    x = _array(X, "X")
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise ValueError(f"X: expected inputs of shape (n, 2) with n >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("X: expected finite values")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution: expected an int >= 2, got {resolution!r}")
    if isinstance(padding, bool) or not isinstance(padding, (int, float)) or not padding >= 0:
        raise ValueError(f"padding: expected a number >= 0, got {padding!r}")
    labels = None if y is None else _labels(y, "y")
    if labels is not None and labels.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected {x.shape[0]} labels like the rows of X, got {labels.shape[0]}")
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - padding * span, hi + padding * span
    gx, gy = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    xx, yy = np.meshgrid(gx, gy)
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    p = _probabilities(predict_proba(grid), "predict_proba", rows=grid.shape[0])
    num_classes = p.shape[1]
    if class_index is None and num_classes == 2:
        class_index = 1
    if class_index is not None and (isinstance(class_index, bool)
                                    or not isinstance(class_index, (int, np.integer))
                                    or not 0 <= class_index < num_classes):
        raise ValueError(f"class_index: expected an int in 0..{num_classes - 1}, got {class_index!r}")
    ax = _axes(ax, (6.0, 5.0))
    if class_index is not None:
        colormap = _colormap(cmap, "RdBu_r")
        prob = p[:, class_index].reshape(xx.shape)
        filled = ax.contourf(xx, yy, prob, levels=np.linspace(0.0, 1.0, 21), cmap=colormap, alpha=0.8)
        ax.figure.colorbar(filled, ax=ax, label=f"P(class {class_index})")
        if prob.min() < 0.5 < prob.max():
            ax.contour(xx, yy, prob, levels=[0.5], colors="k", linewidths=1.5)
    else:
        colormap = _colormap(cmap, "tab10")
        rgba = _class_colors(colormap, num_classes)[p.argmax(axis=1)]
        rgba[:, 3] = p.max(axis=1)
        ax.imshow(rgba.reshape(resolution, resolution, 4), origin="lower", aspect="auto",
                  extent=(lo[0], hi[0], lo[1], hi[1]), interpolation="nearest")
    if labels is None:
        ax.scatter(x[:, 0], x[:, 1], s=12, c="k")
    else:
        distinct = np.unique(labels)
        if class_index is None:
            colors, markers = _class_colors(colormap, len(distinct)), "o"
        else:  # the shaded class at the colormap's top, the others at its bottom
            colors = colormap(np.where(np.arange(len(distinct)) == class_index, 1.0, 0.0))
            markers = "osD^vPX"
        for i, label in enumerate(distinct):
            mine = labels == label
            ax.scatter(x[mine, 0], x[mine, 1], s=16, color=colors[i], marker=markers[i % len(markers)],
                       edgecolors="k", linewidths=0.6, label=str(label))
        ax.legend(loc="best", fontsize="small", title="y")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("x[:, 0]")
    ax.set_ylabel("x[:, 1]")
    return ax
