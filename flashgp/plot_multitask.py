# Matplotlib figures for multi-output GPs (fg.MultitaskGP): a heatmap of the task correlations and
# each task's posterior on one input. matplotlib is optional and imported lazily (flashgp.plot's helpers).
"""Figures for ``fg.MultitaskGP``: ``plot_task_correlations`` (the correlation matrix
D^-1/2 B D^-1/2 of the learned task covariance B) and ``plot_multitask`` (every task's posterior
mean and band on a 1-D input, with its training points)."""
from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = ["plot_multitask", "plot_task_correlations", "task_correlations"]

ANNOTATE_MAX = 12  # tasks up to which the heatmap writes each correlation in its cell
SYMMETRY_TOL = 1e-8  # relative asymmetry a task covariance may have (round-off)


def _helpers():
    # Imported here, not at the top: flashgp.plot may re-export this module.
    from . import plot
    return plot


def _covariance(value) -> np.ndarray:
    """A task covariance ``(t, t)`` as float64 numpy: from a model or kernel with ``task_covariance``
    (``MultitaskGP``, ``kernels.Multitask``, ``kernels.LMC``), or a tensor or array."""
    source = getattr(value, "task_covariance", value)
    if callable(source) and not isinstance(source, torch.Tensor):
        raise TypeError("model_or_covariance: a MultitaskPosterior's task_covariance() is (m, t, t); pass "
                        "one test point's matrix, posterior.task_covariance()[i]")
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().double().numpy()
    try:
        cov = np.asarray(source, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"model_or_covariance: expected a MultitaskGP, a multitask kernel or a (t, t) matrix, "
                        f"got {type(value).__name__}") from err
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ValueError(f"model_or_covariance: expected a square task covariance (t, t), got shape {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise ValueError("model_or_covariance: expected finite values, found NaN or infinity")
    diag = np.diag(cov)
    if np.any(diag <= 0):
        raise ValueError(f"model_or_covariance: expected positive variances on the diagonal, got "
                         f"{diag.min():.6g} at task {int(diag.argmin())}")
    scale = float(np.abs(cov).max())
    if float(np.abs(cov - cov.T).max()) > SYMMETRY_TOL * scale:
        raise ValueError("model_or_covariance: expected a symmetric matrix (a covariance)")
    return 0.5 * (cov + cov.T)


def task_correlations(model_or_covariance) -> np.ndarray:
    """The task correlation matrix D^-1/2 B D^-1/2 ``(t, t)`` (D = diag(B)), float64 numpy.

    Args:
        model_or_covariance: a ``MultitaskGP`` (its ``task_covariance``), a ``kernels.Multitask`` or
            ``kernels.LMC``, or a task covariance B ``(t, t)`` (tensor or array; symmetric, positive
            diagonal).

    Needs no matplotlib. For an LMC, B is the sum of its terms' matrices: the correlation between
    tasks at one input when every base kernel is 1 there (stationary kernels without a scale).
    """
    cov = _covariance(model_or_covariance)
    root = 1.0 / np.sqrt(np.diag(cov))
    corr = root[:, None] * cov * root[None, :]
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def _labels(labels, t: int, name: str = "labels") -> list[str]:
    if labels is None:
        return [f"task {a}" for a in range(t)]
    if isinstance(labels, str):
        raise TypeError(f"{name}: expected a sequence of {t} names, got a string")
    try:
        out = [str(v) for v in labels]
    except TypeError as err:
        raise TypeError(f"{name}: expected a sequence of {t} names, got {type(labels).__name__}") from err
    if len(out) != t:
        raise ValueError(f"{name}: expected {t} names (one per task), got {len(out)}")
    return out


def plot_task_correlations(model_or_covariance, ax=None, labels=None, *, annotate: bool | None = None,
                           cmap: str = "RdBu_r"):
    """A heatmap of the task correlations D^-1/2 B D^-1/2 (``task_correlations``), on a color scale
    from -1 to 1, with a colorbar.

    Args:
        model_or_covariance: a ``MultitaskGP``, a ``kernels.Multitask`` / ``kernels.LMC``, or a task
            covariance B ``(t, t)``.
        ax: Axes to draw on (default: a new figure).
        labels: t names for the tasks (default "task 0", "task 1", ...).
        annotate: write each correlation in its cell (default: when t <= 12).
        cmap: a diverging matplotlib colormap.

    Returns:
        The matplotlib Axes.
    """
    corr = task_correlations(model_or_covariance)
    t = corr.shape[0]
    names = _labels(labels, t)
    if annotate is not None and not isinstance(annotate, bool):
        raise TypeError(f"annotate: expected True, False or None, got {annotate!r}")
    annotate = t <= ANNOTATE_MAX if annotate is None else annotate
    size = min(3.0 + 0.45 * t, 10.0)
    ax = _helpers()._axes(ax, figsize=(size + 1.0, size))
    image = ax.imshow(corr, cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="correlation", fraction=0.046, pad=0.04)
    ax.set_xticks(range(t))
    ax.set_yticks(range(t))
    turned = t > 4 or max(map(len, names)) > 8
    ax.set_xticklabels(names, rotation=45 if turned else 0, ha="right" if turned else "center")
    ax.set_yticklabels(names)
    if annotate:
        for a in range(t):
            for b in range(t):
                ax.text(b, a, f"{corr[a, b]:.2f}", ha="center", va="center", fontsize="small",
                        color="white" if abs(corr[a, b]) > 0.6 else "black")
    ax.set_title("task correlations", fontsize="medium")
    return ax


def _tasks(tasks, t: int) -> list[int]:
    """The task indices to draw, in the order given, each once."""
    if tasks is None:
        return list(range(t))
    if isinstance(tasks, (torch.Tensor, np.ndarray)):
        tasks = tasks.tolist()
    if isinstance(tasks, numbers.Integral) and not isinstance(tasks, bool):
        tasks = [tasks]
    try:
        chosen = list(tasks)
    except TypeError:
        chosen = None
    if not chosen or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in chosen):
        raise TypeError(f"tasks: expected one or more task indices (ints), got {tasks!r:.100}")
    bad = [int(a) for a in chosen if not 0 <= a < t]
    if bad:
        raise ValueError(f"tasks: expected indices in [0, {t}), got {bad[0]}")
    return list(dict.fromkeys(int(a) for a in chosen))


def plot_multitask(model, x, y=None, ax=None, tasks=None, *, level: float = 0.95, labels=None,
                   observation_noise: bool = False, show_data: bool = True):
    """Each task's posterior mean and central ``level`` band on one input, one color per task
    (``C0``, ``C1``, ...), with the task's training points.

    Args:
        model: a ``MultitaskGP`` with one input column.
        x: (m,) or (m, 1) test inputs (need not be sorted).
        y: optional values at x ``(m, t)`` to draw with each task, as dotted lines (e.g. the true
            functions or held-out observations; NaN entries are left out).
        ax: Axes to draw on (default: a new figure).
        tasks: the task indices to draw (default: all).
        level: the band's nominal coverage.
        labels: t names for the tasks (default "task 0", ...).
        observation_noise: bands for new observations (``model.predict``) instead of the latent
            functions (``model.posterior``).
        show_data: draw each task's training points.

    Returns:
        The matplotlib Axes.
    """
    plot = _helpers()
    from .models import MultitaskGP

    if not isinstance(model, MultitaskGP):
        raise TypeError(f"model: expected a flashgp MultitaskGP, got {type(model).__name__}")
    if model.train_x.shape[-1] != 2:
        raise ValueError(f"model: expected a model on one input column (train_x of shape (N, 2): input, "
                         f"task), got {model.train_x.shape[-1] - 1} input columns")
    z = plot._z(level)
    t = model.num_tasks
    chosen = _tasks(tasks, t)
    names = _labels(labels, t)
    xs = plot._vector(x, "x")
    given = None
    if y is not None:
        given = y.detach().cpu().double().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, dtype=np.float64)
        if given.shape != (xs.size, t):
            raise ValueError(f"y: expected values of shape ({xs.size}, {t}) at x, got {given.shape}")
    xt = torch.as_tensor(xs, dtype=model.dtype, device=model.device).unsqueeze(-1)
    with torch.no_grad():
        post = model.predict(xt) if observation_noise else model.posterior(xt)
        mean = post.mean.detach().cpu().double().numpy()
        std = post.stddev.detach().cpu().double().numpy()
    order = np.argsort(xs)
    ax = plot._axes(ax, figsize=(7.0, 4.0))
    train_x = model.train_x[:, 0].detach().cpu().double().numpy()
    train_task = model.train_x[:, -1].detach().cpu().long().numpy()
    train_y = model.train_y.detach().cpu().double().numpy()
    for a in chosen:
        color = f"C{a % 10}"
        lo, hi = mean[order, a] - z * std[order, a], mean[order, a] + z * std[order, a]
        ax.fill_between(xs[order], lo, hi, color=color, alpha=0.2, lw=0)
        ax.plot(xs[order], mean[order, a], color=color, lw=2, label=names[a])
        if given is not None:
            ax.plot(xs[order], given[order, a], color=color, lw=1, ls=":")
        if show_data:
            own = train_task == a
            ax.plot(train_x[own], train_y[own], ".", color=color, ms=5, mec="k", mew=0.3)
    ax.set_xlabel("x")
    ax.set_ylabel("y" if observation_noise else "f(x)")
    extra = ", dotted: y" if given is not None else ""
    ax.set_title(f"posterior mean and {round(level * 100)}% band per task{extra}", fontsize="medium")
    ax.legend(loc="best", fontsize="small")
    return ax
