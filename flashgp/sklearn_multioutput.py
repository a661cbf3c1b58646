# GPRegressor with 2-D targets (n, t): what differs from one output. One MultitaskGP on the columns,
# each standardized on its own: independent outputs sharing the kernel's hyperparameters by default
# (as scikit-learn's GaussianProcessRegressor fits 2-D y), or correlated ones (ICM, LMC).
from __future__ import annotations

import numpy as np
import torch

from .estimator_methods import build_multitask, check_multitask
from .kernels import Multitask, Stationary
from .plot_multitask import task_correlations
from .tables import spread


def is_multioutput(y) -> bool:
    """Whether targets ``y`` have several columns (n, t > 1); (n, 1) is one output, as scikit-learn reads it."""
    shape = np.asarray(y).shape  # (array-likes without array functions convert through __array__)
    return len(shape) == 2 and shape[1] > 1


def check_settings(estimator, num_outputs: int) -> tuple[str, int]:
    """(mode, task rank) of ``estimator`` for ``num_outputs`` columns; settings that one output only
    takes (a fixed noise, a noise floor, a non-Gaussian likelihood, subset training, the IterGP
    settings) are refused, naming them."""
    mode, rank = check_multitask(estimator.multitask, estimator.task_rank, estimator.method, num_outputs)
    for name, default in (("noise", None), ("noise_floor", None), ("likelihood", "gaussian"), ("batch_size", None),
                          ("itergp_policy", None), ("itergp_budget", None)):
        if getattr(estimator, name) != default:
            raise ValueError(f"{name}: several outputs (y of shape (n, {num_outputs})) take the default "
                             f"{name}={default!r} (one learned Gaussian noise per output); got {getattr(estimator, name)!r:.40}")
    return mode, rank


def target_scaling(y: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """(means (t,), scales (t,)) of the columns of y (n, t): each standardized on its own, or (0, 1)."""
    if not normalize:
        return np.zeros(y.shape[1]), np.ones(y.shape[1])
    return y.mean(axis=0), spread(y)


def fit_outputs(estimator, X: np.ndarray, y: np.ndarray, solver, device, dtype):
    """``GPRegressor.fit`` for validated X (n, d) and y (n, t): a MultitaskGP on the standardized
    columns, trained as one output's model is. Returns the estimator."""
    from .estimator_checks import check_target_scale, seed_from
    mode, rank = check_settings(estimator, y.shape[1])
    seed = seed_from(estimator.random_state, "random_state")
    x_mean, x_scale = estimator._input_scaling(X)
    y_mean, y_scale = target_scaling(y, estimator.normalize_y)
    for column, scale in enumerate(y_scale):
        check_target_scale(y[:, column], float(scale), estimator.normalize_y)
    x_t = estimator._to_tensor((X - x_mean) / x_scale, dtype, device, "X",
                               "use normalize_x=True, dtype='float64' or rescale X")
    y_t = estimator._to_tensor((y - y_mean) / y_scale, dtype, device, "y",
                               "use normalize_y=True, dtype='float64' or rescale y")
    model = build_multitask(mode, x_t, y_t, estimator._make_kernel(X.shape[1], scaled=False), solver, rank)
    return estimator._train(model, x_t, y_t, seed, (x_mean, x_scale, y_mean, y_scale), None)


def hyperparameters(estimator) -> None:
    """The fitted values in the data's units: ``lengthscale_`` (n_features,) where one base kernel
    has them, ``noise_`` (t,), ``constant_`` (t,), ``task_covariance_`` (t, t) and
    ``task_correlation_`` (t, t); ``outputscale_`` and ``noise_floor_`` None."""
    model, scale = estimator.model_, np.asarray(estimator.y_scale_)
    kernel = model.kernel
    base = kernel.base if isinstance(kernel, Multitask) else None
    estimator.lengthscale_ = None
    if isinstance(base, Stationary) and base.active_dims is None:
        ls = base.lengthscale.detach().cpu().double().numpy().reshape(-1)
        estimator.lengthscale_ = np.broadcast_to(ls, estimator.x_scale_.shape) * estimator.x_scale_
    estimator.outputscale_ = estimator.noise_floor_ = None
    noise = model.likelihood.noise.detach().cpu().double().numpy()
    estimator.noise_ = np.broadcast_to(noise, scale.shape) * scale**2
    constant = model.mean.base.constant.detach().cpu().double().numpy()
    estimator.constant_ = np.broadcast_to(constant, scale.shape) * scale + np.asarray(estimator.y_mean_)
    cov = model.task_covariance.detach().cpu().double().numpy()
    estimator.task_covariance_ = cov * np.outer(scale, scale)
    estimator.task_correlation_ = task_correlations(cov)


def joint_covariance(post, scale: np.ndarray) -> np.ndarray:
    """(m, m, t): each output's joint covariance over the test points (scikit-learn's layout for
    2-D targets), in the squared units of each output."""
    t, m = post.num_tasks, post.num_points
    flat = post.covariance.to_dense().detach().to("cpu", torch.float64).numpy()
    if post.noise is not None:
        flat = flat + np.diag(post.noise.detach().cpu().double().numpy())
    blocks = flat.reshape(t, m, t, m)[np.arange(t), :, np.arange(t), :]  # (t, m, m)
    return np.moveaxis(blocks, 0, -1) * np.asarray(scale) ** 2
