# Matplotlib figures for GP results: a 1-D posterior, predicted vs observed, calibration of the
# predictive intervals, and the training curve; the classification figures (decision boundary,
# reliability diagram) live in plot_classification, the multitask ones (task correlations, posteriors
# per task) in plot_multitask; both are re-exported here.
# matplotlib is optional and imported lazily.
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

from .models import GPModel
from .plot_classification import (
    expected_calibration_error,
    plot_decision_boundary,
    plot_reliability,
)
from .plot_multitask import plot_multitask, plot_task_correlations, task_correlations

__all__ = [
    "expected_calibration_error",
    "interval_coverage",
    "plot_calibration",
    "plot_decision_boundary",
    "plot_history",
    "plot_multitask",
    "plot_posterior_1d",
    "plot_predicted_vs_observed",
    "plot_reliability",
    "plot_task_correlations",
    "task_correlations",
]

INSTALL_HINT = "flashgp.plot needs matplotlib: pip install 'flashgp[plot]' (or pip install matplotlib)"


def _pyplot():
    """matplotlib.pyplot, or ImportError with the install hint."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return plt


def _axes(ax, figsize=(6.0, 4.0)):
    """The given Axes, or a new one on a new figure."""
    if ax is not None:
        if not hasattr(ax, "plot"):
            raise TypeError(f"ax: expected a matplotlib Axes or None, got {type(ax).__name__}")
        return ax
    _, new = _pyplot().subplots(figsize=figsize)
    return new


def _vector(value, name: str) -> np.ndarray:
    """A float64 numpy vector (m,) from a tensor or array of shape (m,) or (m, 1)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected a numeric vector, got {type(value).__name__}") from err
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected shape (m,) or (m, 1) with m >= 1, got {arr.shape}")
    return arr


def _triple(mean, std, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean, std, y as vectors of one length, std >= 0."""
    mean, std, y = _vector(mean, "mean"), _vector(std, "std"), _vector(y, "y")
    if not mean.shape == std.shape == y.shape:
        raise ValueError(f"std, y: expected the shape of mean {mean.shape}, got {std.shape} and {y.shape}")
    if np.any(std < 0) or not np.all(np.isfinite(std)):
        raise ValueError("std: expected finite standard deviations >= 0")
    return mean, std, y


def _z(level: float, name: str = "level") -> float:
    """Half-width in standard deviations of the central ``level`` interval of a normal."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"{name}: expected a number in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def interval_coverage(mean, std, y, levels=(0.95,)) -> np.ndarray:
    """Fraction of observations inside the central predictive intervals.

    Args:
        mean, std, y: (m,) predictive means, predictive standard deviations, observations.
        levels: nominal levels in (0, 1), shape (k,).

    Returns:
        (k,) the fraction of the m points with |y - mean| <= z(level) * std, per level.
    """
    mean, std, y = _triple(mean, std, y)
    err = np.abs(y - mean)
    return np.array([float(np.mean(err <= _z(lv, "levels") * std)) for lv in levels])


def plot_posterior_1d(model_or_posterior, x, *, train_x=None, train_y=None, num_samples: int = 3,
                      level: float = 0.95, observation_noise: bool = False, ax=None,
                      color: str = "C0", generator: torch.Generator | None = None):
    """Mean, central ``level`` band, joint samples and training points of a GP on one input.

    Args:
        model_or_posterior: a flashgp model (a ``flashgp.models.GPModel``, e.g. ``ExactGP``)
            with one input column and no batch dimensions (evaluated at ``x``), or a
            ``Posterior`` already computed at ``x``.
        x: (m,) or (m, 1) test inputs (need not be sorted).
        train_x, train_y: (n,) training points to draw; default: the model's own.
        num_samples: joint posterior samples to draw (0 for none).
        level: the band's nominal coverage.
        observation_noise: with a model, plot y* (``model.predict``) rather than latent f.
        ax: Axes to draw on (default: a new figure).
        generator: seeds the samples.

    Returns:
        The matplotlib Axes.
    """
    z = _z(level)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples: expected an int >= 0, got {num_samples!r}")
    xs = _vector(x, "x")
    post = model_or_posterior
    if isinstance(post, GPModel):
        model = post
        if model.train_x.dim() != 2 or model.train_x.shape[-1] != 1:
            raise ValueError(f"model_or_posterior: expected a model with inputs of shape (n, 1), "
                             f"got {tuple(model.train_x.shape)}")
        xt = torch.as_tensor(xs, dtype=model.dtype, device=model.device).unsqueeze(-1)
        post = model.predict(xt) if observation_noise else model.posterior(xt)
        train_x = model.train_x[:, 0] if train_x is None else train_x
        train_y = model.train_y if train_y is None else train_y
    elif not (hasattr(post, "mean") and hasattr(post, "stddev")):
        raise TypeError(f"model_or_posterior: expected a flashgp model (GPModel) or a Posterior, "
                        f"got {type(post).__name__}")
    mean, std = _vector(post.mean, "posterior mean"), _vector(post.stddev, "posterior stddev")
    if mean.shape != xs.shape:
        raise ValueError(f"x: expected {mean.shape[0]} points like the posterior, got {xs.shape[0]}")
    order = np.argsort(xs)
    xs, mean, std = xs[order], mean[order], std[order]
    ax = _axes(ax)
    ax.fill_between(xs, mean - z * std, mean + z * std, color=color, alpha=0.25,
                    label=f"{round(level * 100)}% interval")
    if num_samples:
        draws = post.sample(num_samples, generator=generator).detach().cpu().double().numpy()
        draws = draws.reshape(num_samples, -1)[:, order]
        for i, draw in enumerate(draws):
            ax.plot(xs, draw, color=color, lw=0.8, alpha=0.6, label="samples" if i == 0 else None)
    ax.plot(xs, mean, color=color, lw=2, label="mean")
    if train_x is not None and train_y is not None:
        tx, ty = _vector(train_x, "train_x"), _vector(train_y, "train_y")
        if tx.shape != ty.shape:
            raise ValueError(f"train_y: expected shape {tx.shape} like train_x, got {ty.shape}")
        ax.plot(tx, ty, "k.", ms=4, label="training data")
    ax.set_xlabel("x")
    ax.set_ylabel("y" if observation_noise else "f(x)")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_predicted_vs_observed(mean, std, y, *, level: float = 0.95, ax=None, color: str = "C0",
                               max_points: int = 2000):
    """Predicted means with central ``level`` error bars against the observed values.

    Args:
        mean, std, y: (m,) predictive means, predictive standard deviations, observations.
        level: nominal coverage of the error bars (their coverage is printed in the title).
        ax: Axes to draw on (default: a new figure).
        max_points: draw at most this many points (an evenly spaced subset); the coverage
            in the title uses all of them.

    Returns:
        The matplotlib Axes.
    """
    mean, std, y = _triple(mean, std, y)
    z = _z(level)
    coverage = float(interval_coverage(mean, std, y, (level,))[0])
    keep = np.linspace(0, y.size - 1, min(y.size, max_points)).round().astype(int)
    ax = _axes(ax, figsize=(5.0, 5.0))
    ax.errorbar(y[keep], mean[keep], yerr=z * std[keep], fmt="o", ms=3, color=color,
                ecolor=color, elinewidth=0.8, alpha=0.6)
    lo, hi = float(min(y.min(), mean.min())), float(max(y.max(), mean.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("observed")
    ax.set_ylabel("predicted")
    ax.set_title(f"{round(level * 100)}% intervals cover {coverage:.1%}", fontsize="medium")
    return ax


def plot_calibration(mean, std, y, *, levels=None, ax=None, color: str = "C0"):
    """Observed coverage of central predictive intervals against their nominal level.

    Args:
        mean, std, y: (m,) predictive means, predictive standard deviations, observations.
        levels: nominal levels in (0, 1) (default 0.05, 0.10, ..., 0.95).
        ax: Axes to draw on (default: a new figure).

    A calibrated model follows the diagonal; below it the intervals are too narrow.

    Returns:
        The matplotlib Axes.
    """
    levels = np.round(np.arange(1, 20) * 0.05, 2) if levels is None else np.asarray(levels, float)
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError(f"levels: expected a non-empty 1-D sequence, got shape {levels.shape}")
    observed = interval_coverage(mean, std, y, [float(v) for v in levels])
    ax = _axes(ax, figsize=(5.0, 5.0))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    ax.plot(levels, observed, "o-", color=color, label="observed")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_history(history, *, ax=None, color: str = "C0", log_scale: bool = False):
    """The training curve: loss (negative log marginal likelihood per point) by step.

    Args:
        history: a ``flashgp.History`` (from ``fg.fit``) or a sequence of losses (steps,).
        ax: Axes to draw on (default: a new figure).
        log_scale: plot the loss minus its minimum on a log axis (shows slow convergence).

    Returns:
        The matplotlib Axes.
    """
    loss = getattr(history, "loss", history)
    try:
        loss = np.asarray(list(loss), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"history: expected a History or a sequence of losses, "
                        f"got {type(history).__name__}") from err
    if loss.ndim != 1 or loss.size == 0:
        raise ValueError("history: expected at least one recorded loss")
    ax = _axes(ax)
    steps = np.arange(1, loss.size + 1)
    if log_scale:
        gap = loss - loss.min()
        floor = max(float(np.abs(loss).max()) * 1e-12, math.ulp(1.0))
        ax.semilogy(steps, np.maximum(gap, floor), color=color)
        ax.set_ylabel("loss - min(loss)")
    else:
        ax.plot(steps, loss, color=color)
        ax.set_ylabel("-mll / n")
    ax.set_xlabel("step")
    seconds = getattr(history, "step_seconds", None)
    if seconds:
        ax.set_title(f"{len(seconds)} steps, {sum(seconds):.2f} s", fontsize="medium")
    return ax
