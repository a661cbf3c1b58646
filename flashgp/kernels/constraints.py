# Positive hyperparameters: stored raw, mapped through softplus (plus an optional floor).
# Kernels, likelihoods and means use `PositiveParameter` to expose values in natural units.
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def inverse_softplus(value: torch.Tensor) -> torch.Tensor:
    """The raw value r with softplus(r) == value (value > 0), elementwise."""
    value = torch.as_tensor(value)
    # for large values softplus(r) ~ r; log(expm1) loses precision there
    return torch.where(value > 20, value, torch.log(torch.expm1(value.clamp_min(1e-30))))


class Positive:
    """The map raw -> lower + softplus(raw); `lower` is a floor (e.g. the minimum noise)."""

    def __init__(self, lower: float = 0.0):
        if not math.isfinite(lower) or lower < 0:
            raise ValueError(f"lower: expected a finite number >= 0, got {lower}")
        self.lower = float(lower)

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        return self.lower + F.softplus(raw)

    def inverse(self, value: torch.Tensor) -> torch.Tensor:
        if torch.any(value <= self.lower):
            raise ValueError(
                f"value: expected every entry > {self.lower}, got min {float(value.min()):.3g}"
            )
        return inverse_softplus(value - self.lower)


def register_positive(module: nn.Module, name: str, initial, shape, lower: float = 0.0):
    """Create ``raw_<name>`` on ``module`` as an nn.Parameter of ``shape`` holding ``initial``.

    Read the natural value with ``positive_value(module, name)``.
    """
    constraint = Positive(lower)
    value = torch.as_tensor(initial, dtype=torch.get_default_dtype())
    if not torch.all(torch.isfinite(value)) or torch.any(value <= lower):
        raise ValueError(f"{name}: expected finite values > {lower}, got {value.tolist()}")
    raw = constraint.inverse(value.expand(shape).clone())
    module.register_parameter("raw_" + name, nn.Parameter(raw))
    module._constraints = {**getattr(module, "_constraints", {}), name: constraint}


def positive_value(module: nn.Module, name: str) -> torch.Tensor:
    """The natural (constrained) value of the positive hyperparameter ``name``."""
    return module._constraints[name].transform(getattr(module, "raw_" + name))


def set_positive(module: nn.Module, name: str, value) -> None:
    """Set the positive hyperparameter ``name`` (broadcast to its shape) in natural units."""
    raw = getattr(module, "raw_" + name)
    value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)
    try:
        value = value.expand(raw.shape)
    except RuntimeError:
        raise ValueError(
            f"{name}: expected a value broadcastable to shape {tuple(raw.shape)}, got {tuple(value.shape)}"
        ) from None
    if not torch.all(torch.isfinite(value)):
        raise ValueError(f"{name}: expected finite values, got {value.tolist()}")
    lower = module._constraints[name].lower
    if torch.any(value <= lower):
        raise ValueError(f"{name}: expected every entry > {lower}, got min {float(value.min()):.3g}")
    with torch.no_grad():
        raw.copy_(module._constraints[name].inverse(value))


class PositiveProperty:
    """Class attribute exposing the positive hyperparameter ``raw_<name>`` in natural units.

    ``lengthscale = PositiveProperty("Lengthscales, shape (*batch, 1, ard)")`` on a module
    gives ``module.lengthscale`` (read) and ``module.lengthscale = value`` (set, validated).
    """

    def __init__(self, doc: str = ""):
        self.__doc__ = doc

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, objtype=None):
        return self if obj is None else positive_value(obj, self.name)

    def __set__(self, obj, value) -> None:
        set_positive(obj, self.name, value)


def check_ard_dims(ard_dims) -> None:
    """ard_dims must be None or a positive int."""
    if ard_dims is not None and (isinstance(ard_dims, bool) or not isinstance(ard_dims, int) or ard_dims < 1):
        raise ValueError(f"ard_dims: expected a positive int or None, got {ard_dims!r}")
