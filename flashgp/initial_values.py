# Initial hyperparameter values from the training data: lengthscales from the inputs' spread,
# output scale and noise from var(y), the constant mean from mean(y), the noise floor from the dtype.
from __future__ import annotations

import torch

from .kernels import Scale, Stationary
from .likelihoods import Gaussian
from .likelihoods.gaussian import default_noise_floor
from .means import Constant

NOISE_FRACTION = 0.1  # the initial noise variance as a fraction of var(y)
LENGTHSCALE_FRACTION = 0.5  # the initial lengthscale as a fraction of the inputs' standard deviation


def init_from_data(model, overwrite: bool = False, data=None) -> dict:
    """Set the hyperparameters of ``model`` (an ``ExactGP``) that were not given, from its data.

    ``ExactGP`` calls this when it is built, so a value passed to a constructor (or set through
    its property) is kept, and one left at ``None`` (the default of ``Stationary(lengthscale)``,
    ``Scale(outputscale)``, ``Gaussian(noise, noise_floor)`` and ``Constant(constant)``) is
    chosen here. With ``overwrite=True`` every value below is chosen again (but the noise floor,
    which is only ever chosen once). The rule, with x ``(*b, n, d)`` and y ``(*b, n)`` the training
    data, statistics over the n points (population variances), batches averaged where a
    parameter has fewer batch dimensions than the data:

    * lengthscales of stationary kernels (RBF, Matern, RQ): half the standard deviation of each
      input column the kernel sees (with ARD), or half the root mean square of those standard
      deviations (one shared lengthscale); a column without spread gets 1. A start shorter
      than the data's structure is left quickly, a longer one can end at the all-noise optimum:
      on sine data with 0.5-4 periods in 1-D and 3-D (20 and 100 points), the mll after 50 Adam
      steps was 0.45 per point below the best of 400 steps in total over 16 sets, at most 0.19,
      against 1.29 and 0.69 from the full standard deviation
      (``python benchmarks/initial_lengthscale.py``);
    * the output scale of every ``Scale`` kernel: var(y);
    * the noise floor of a ``Gaussian`` likelihood: ``default_noise_floor(prior, dtype)`` with
      prior = max(mean of k(x_i, x_i) at the values above, var(y)): 1e-10 of it in float64,
      1e-4 in float32;
    * the noise of a ``Gaussian`` likelihood: floor + 0.1 max(var(y), floor) (the max keeps it
      above the floor where a kernel's prior variance dwarfs var(y): Polynomial(power=5) on
      inputs up to 1e4 has k(x, x) ~ 1e40, a floor of 1e30, and floor + 0.1 var(y) == floor);
    * a ``Constant`` mean: mean(y).

    var(y) = 0 (constant targets, one point) counts as 1. ``data``: (x, y) to use instead of the
    model's training data (a model that keeps none, ``SVGP``); y None: only the lengthscales. Periodic lengthscales and periods,
    RQ's alpha, Linear and Polynomial kernels and Linear means keep their constructor values.

    Returns:
        dict: the qualified name of every value set (e.g. "kernel.base.lengthscale") -> its
        tensor, and "likelihood.noise_floor" -> the floor when it was chosen.
    """
    x, y = (model.train_x, model.train_y) if data is None else data
    x = x.detach()
    if y is None:  # inputs only: the lengthscales
        return _init_lengthscales(model, x, overwrite)
    y = y.detach()
    y_var = y.var(-1, unbiased=False) if y.shape[-1] > 1 else torch.zeros(y.shape[:-1], dtype=y.dtype,
                                                                          device=y.device)
    y_var = torch.where(torch.isfinite(y_var) & (y_var > 0), y_var, torch.ones_like(y_var))
    done: dict = {}
    with torch.no_grad():
        for name, module, inputs in _modules_and_inputs(model.kernel, x):
            if isinstance(module, Stationary) and _chosen(module, "lengthscale", overwrite):
                _set(module, "lengthscale", _lengthscale(module, inputs), done, name)
            if isinstance(module, Scale) and _chosen(module, "outputscale", overwrite):
                _set(module, "outputscale", y_var, done, name)
        likelihood = model.likelihood
        if isinstance(likelihood, Gaussian):
            floor, choose_floor = likelihood.noise_floor, "noise_floor" in likelihood._unset
            if choose_floor:
                prior = max(float(y_var.max()), float(model.kernel.diag(x).mean(-1).max()))
                floor = default_noise_floor(prior, x.dtype)
            if _chosen(likelihood, "noise", overwrite):  # above the floor even where var(y) << floor
                _set(likelihood, "noise", floor + NOISE_FRACTION * y_var.clamp_min(floor), done, "likelihood")
            elif choose_floor and bool(torch.any(likelihood.noise <= floor)):
                raise ValueError(f"noise: the given noise ({float(likelihood.noise.min()):.3g}) is not "
                                 f"above the default noise floor {floor:.3g}; pass "
                                 "Gaussian(noise_floor=...) below it (0 for none)")
            if choose_floor:
                likelihood.noise_floor = floor
                done["likelihood.noise_floor"] = floor
        if isinstance(model.mean, Constant) and _chosen(model.mean, "constant", overwrite):
            _set(model.mean, "constant", y.mean(-1), done, "mean")
    return done


def _init_lengthscales(model, x: torch.Tensor, overwrite: bool) -> dict:
    done: dict = {}
    with torch.no_grad():
        for name, module, inputs in _modules_and_inputs(model.kernel, x):
            if isinstance(module, Stationary) and _chosen(module, "lengthscale", overwrite):
                _set(module, "lengthscale", _lengthscale(module, inputs), done, name)
    return done


def _modules_and_inputs(kernel, x: torch.Tensor, prefix: str = "kernel"):
    """(name, module, the inputs it sees) for ``kernel`` and every module in it: x, but below a
    kernel with ``feature_inputs`` (``kernels.Warped``) the features it gives its base kernel."""
    yield prefix, kernel, x
    warp = getattr(kernel, "feature_inputs", None)
    inner = warp(x) if callable(warp) else x
    for name, child in kernel.named_children():
        yield from _modules_and_inputs(child, inner, f"{prefix}.{name}")


def _chosen(module, name: str, overwrite: bool) -> bool:
    return overwrite or name in getattr(module, "_unset", ())


def _set(module, name: str, value: torch.Tensor, done: dict, prefix: str) -> None:
    """module.<name> = value, reduced (averaged) and broadcast to the parameter's shape."""
    shape = getattr(module, name).shape
    setattr(module, name, _fit_shape(value, shape))
    done[f"{prefix}.{name}"] = getattr(module, name).detach()


def _lengthscale(kernel: Stationary, x: torch.Tensor) -> torch.Tensor:
    """``(*b, 1, ard_dims or 1)``: LENGTHSCALE_FRACTION of the standard deviations of the columns
    ``kernel`` sees (of their root mean square without ARD); 1 for a column without spread."""
    cols = kernel.select_dims(x)
    var = cols.var(-2, unbiased=False) if cols.shape[-2] > 1 else torch.zeros_like(cols[..., 0, :])
    if kernel.ard_dims is None:
        var = var.mean(-1, keepdim=True)
    std = var.sqrt()
    ls = torch.where(torch.isfinite(std) & (std > 0), LENGTHSCALE_FRACTION * std, torch.ones_like(std))
    return ls.unsqueeze(-2)


def _fit_shape(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``value`` averaged over the dimensions ``shape`` lacks or has as 1, then expanded to it."""
    while value.dim() > len(shape):
        value = value.mean(0)
    value = value.reshape((1,) * (len(shape) - value.dim()) + tuple(value.shape))
    for dim, size in enumerate(shape):
        if size == 1 and value.shape[dim] != 1:
            value = value.mean(dim, keepdim=True)
    return value.expand(shape)
