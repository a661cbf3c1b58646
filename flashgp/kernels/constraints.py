# Positive hyperparameters: stored raw, mapped through softplus (plus an optional floor).
# Kernels, likelihoods and means use `PositiveParameter` to expose values in natural units.
from __future__ import annotations

import math
import numbers

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
    value = _as_values(initial, name, torch.get_default_dtype())
    if not torch.all(torch.isfinite(value)) or torch.any(value <= lower):
        raise ValueError(f"{name}: expected finite values > {lower}, got {value.tolist()}")
    raw = constraint.inverse(_expand_to(value, shape, name).clone())
    module.register_parameter("raw_" + name, nn.Parameter(raw))
    module._constraints = {**getattr(module, "_constraints", {}), name: constraint}


def _as_values(value, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A number, sequence or tensor of hyperparameter values as a real tensor of ``dtype``."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(f"{name}: expected a positive number or a tensor of them, got {value!r:.80}")
    if isinstance(value, torch.Tensor) and (value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name}: expected real positive values, got {value.dtype}")
    try:  # straight to ``dtype``: Python floats keep their float64 precision
        return torch.as_tensor(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name}: expected a positive number or a tensor of them, "
                        f"got {type(value).__name__}") from None


def _expand_to(value: torch.Tensor, shape, name: str) -> torch.Tensor:
    try:
        return value.expand(shape)
    except RuntimeError:
        raise ValueError(f"{name}: expected a number or values broadcastable to shape {tuple(shape)}, "
                         f"got shape {tuple(value.shape)}") from None


def positive_value(module: nn.Module, name: str) -> torch.Tensor:
    """The natural (constrained) value of the positive hyperparameter ``name``."""
    return module._constraints[name].transform(getattr(module, "raw_" + name))


def set_positive(module: nn.Module, name: str, value) -> None:
    """Set the positive hyperparameter ``name`` (broadcast to its shape) in natural units."""
    raw = getattr(module, "raw_" + name)
    value = _expand_to(_as_values(value, name, raw.dtype).to(raw.device), raw.shape, name)
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


def check_ard_dims(ard_dims) -> int | None:
    """ard_dims must be None or a positive int (numpy ints accepted); returns it as an int or None."""
    if ard_dims is None:
        return None
    if isinstance(ard_dims, bool) or not isinstance(ard_dims, numbers.Integral) or ard_dims < 1:
        raise ValueError(f"ard_dims: expected a positive int or None, got {ard_dims!r}")
    return int(ard_dims)
