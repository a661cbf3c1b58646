# Positive hyperparameters: stored raw, mapped through softplus (plus an optional floor).
# Kernels, likelihoods and means use `PositiveParameter` to expose values in natural units.
from __future__ import annotations

import math
import numbers

import numpy as np
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


def register_positive(module: nn.Module, name: str, initial, shape, lower: float = 0.0,
                      placeholder: float | None = None):
    """Create ``raw_<name>`` on ``module`` as an nn.Parameter of ``shape`` holding ``initial``.

    ``initial=None`` (with a ``placeholder``) means "not given": the parameter holds the
    placeholder and ``name`` is listed in ``module._unset``, so ``fg.init_from_data`` may choose
    it from the training data. The parameter has the default dtype; a module derived from
    ``ExactValues`` keeps the given value at float64 precision, so that a later cast to float64
    (``ExactGP`` casts to the data's dtype) holds it exactly. Read the natural value with
    ``positive_value(module, name)``.
    """
    unset = initial is None
    if unset:
        if placeholder is None:
            raise TypeError(f"{name}: expected a positive number or a tensor of them, got None")
        initial = placeholder
    constraint = Positive(lower)
    value = _as_values(initial, name, torch.get_default_dtype())
    if not torch.all(torch.isfinite(value)) or torch.any(value <= lower):
        raise ValueError(f"{name}: expected finite values > {lower}, got {value.tolist()}")
    raw = constraint.inverse(_expand_to(value, shape, name).clone())
    module.register_parameter("raw_" + name, nn.Parameter(raw))
    module._constraints = {**getattr(module, "_constraints", {}), name: constraint}
    if unset:
        module._unset = getattr(module, "_unset", set()) | {name}
    if isinstance(module, ExactValues):
        module.remember_exact(name, _expand_to(_as_values(initial, name, torch.float64), shape, name))


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
    """Set the positive hyperparameter ``name`` (broadcast to its shape) in natural units.

    The value counts as given (``name`` leaves ``module._unset``) and, on an ``ExactValues``
    module, is kept at float64 precision for a later cast (see ``register_positive``).
    """
    raw = getattr(module, "raw_" + name)
    exact = _as_values(value, name, torch.float64)
    value = _expand_to(exact.to(raw.dtype).to(raw.device), raw.shape, name)
    if not torch.all(torch.isfinite(value)):
        raise ValueError(f"{name}: expected finite values, got {value.tolist()}")
    lower = module._constraints[name].lower
    if torch.any(value <= lower):
        raise ValueError(f"{name}: expected every entry > {lower}, got min {float(value.min()):.3g}")
    with torch.no_grad():
        raw.copy_(module._constraints[name].inverse(value))
    getattr(module, "_unset", set()).discard(name)
    if isinstance(module, ExactValues):
        module.remember_exact(name, _expand_to(exact, raw.shape, name))


class PositiveProperty:
    """Class attribute exposing the positive hyperparameter ``raw_<name>`` in natural units.

    ``lengthscale = PositiveProperty("Lengthscales, shape ``(*batch, 1, ard)``")`` on a module
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


class ExactValues(nn.Module):
    """Base of modules with hyperparameters (kernels, likelihoods, means) that keeps values given
    as Python numbers or float64 tensors exact through dtype casts.

    A module's tensors start in the default dtype (float32), so a value such as 0.05 is rounded
    to 0.049999998 before ``ExactGP`` casts the model to float64. ``remember_exact`` keeps the
    given value in float64 beside the stored tensor; when the module is cast (``.to``,
    ``.double()``, ...) while that tensor still holds what was stored, it is recomputed from
    the exact value in the new dtype. Once the tensor changed (a training step, a loaded state
    dict), the record is dropped. ``_unset``: names of hyperparameters whose value was not given
    (``None`` in the constructor), which ``fg.init_from_data`` may choose from the data.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._exact_values: dict = {}
        self._unset: set = set()

    def set_prior(self, name: str, prior, raw: bool = False) -> None:
        """Attach ``prior`` (a ``flashgp.priors`` prior) to the hyperparameter ``name``, replacing
        any earlier one; ``prior=None`` removes it.

        ``name``: a positive hyperparameter ("lengthscale", "outputscale", "noise", ...): the prior
        is on its natural value, or with ``raw=True`` on the unconstrained tensor ``raw_<name>``;
        or a plain parameter or tensor attribute of this module (a ``Constant`` mean's
        "constant", a ``Multitask`` kernel's "task_factor"): the prior is on its value, and
        ``raw`` must be False (such a parameter has no raw form). The prior's ``batch_shape``
        must broadcast into the hyperparameter's shape; its log density is summed over every
        element. ValueError for a name this module does not hold (a Scale kernel holds the
        output scale; its ``base`` kernel the lengthscale).
        """
        from ..priors import Prior  # late: flashgp.priors imports this module
        owner = type(self).__name__
        if not isinstance(name, str):
            raise TypeError(f"name: expected a hyperparameter name (a str), got {type(name).__name__}")
        if not isinstance(raw, (bool, np.bool_)):
            raise TypeError(f"raw: expected True or False, got {raw!r:.50}")
        positive = getattr(self, "_constraints", {})
        if name.startswith("raw_") and name[4:] in positive:
            raise ValueError(f"name: {name!r} is the raw tensor of the positive hyperparameter {name[4:]!r}; "
                             f"use set_prior({name[4:]!r}, prior, raw=True)")
        if name not in positive:
            if _plain_value(self, name) is None:
                known = [*positive, *(p for p, v in self._parameters.items() if v is not None and p[4:] not in positive)]
                raise ValueError(f"name: {owner} has no hyperparameter {name!r}; its hyperparameters: "
                                 f"{', '.join(known) or 'none'} (a prior goes on the module that holds the "
                                 "hyperparameter, e.g. model.kernel.base for the lengthscale of a Scale kernel)")
            if raw:
                raise ValueError(f"raw: {owner}.{name} is a plain parameter (no constraint, no raw form); "
                                 "its prior is on its value: pass raw=False")
        priors = dict(attached_priors(self))
        if prior is None:
            priors.pop(name, None)
        else:
            if not isinstance(prior, Prior):
                raise TypeError(f"prior: expected a flashgp.priors prior (Normal, LogNormal, Gamma, HalfCauchy) "
                                f"or None, got {type(prior).__name__}")
            check_prior_shape(prior, prior_value(self, name, raw), f"{owner}.{'raw_' if raw else ''}{name}")
            priors[name] = (prior, bool(raw))
        self.__dict__["_priors"] = priors

    @property
    def priors(self) -> dict:
        """The priors attached to this module: name -> (prior, raw), a copy."""
        return dict(attached_priors(self))

    def remember_exact(self, name: str, exact: torch.Tensor, kind: str = "positive") -> None:
        """Keep ``exact`` (float64, the stored tensor's shape) as the value of ``name``: a positive
        hyperparameter (stored as ``raw_<name>``, kind "positive") or a tensor stored as the
        attribute ``name`` itself (kind "plain"). Nothing is kept for a float64 tensor, which
        holds the value as given."""
        stored = self._exact_target(name, kind)
        records = self.__dict__.setdefault("_exact_values", {})
        records.pop(name, None)
        if stored is None or not stored.is_floating_point() or stored.dtype == torch.float64:
            return
        exact = exact.detach().to(device=stored.device, dtype=torch.float64)
        records[name] = (kind, exact, stored.detach().clone())

    def exact_value(self, name: str) -> torch.Tensor | None:
        """The float64 value kept for ``name`` while its stored tensor still holds it, else None."""
        record = (self.__dict__.get("_exact_values") or {}).get(name)
        if record is None:
            return None
        kind, exact, snapshot = record
        stored = self._exact_target(name, kind)
        if (stored is None or stored.dtype != snapshot.dtype or stored.device != snapshot.device
                or stored.shape != snapshot.shape or not torch.equal(stored.detach(), snapshot)):
            return None
        return exact

    def _exact_target(self, name: str, kind: str):
        attr = "raw_" + name if kind == "positive" else name
        return self._parameters.get(attr, self._buffers.get(attr))

    def _from_exact(self, name: str, kind: str, exact: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        value = exact.to(dtype)
        return self._constraints[name].inverse(value) if kind == "positive" else value

    def _apply(self, fn, recurse=True):
        records = self.__dict__.get("_exact_values") or {}
        holding = {name: (record[0], self.exact_value(name)) for name, record in records.items()}
        out = super()._apply(fn, recurse)
        self._exact_values = {}
        for name, (kind, exact) in holding.items():
            stored = self._exact_target(name, kind)
            if exact is None or stored is None or not stored.is_floating_point():
                continue
            exact = exact.to(stored.device)
            with torch.no_grad():
                stored.copy_(self._from_exact(name, kind, exact, stored.dtype))
            self.remember_exact(name, exact, kind)
        return out


# ----- priors attached to a module (ExactValues.set_prior; flashgp.priors) -----------------------

def attached_priors(module: nn.Module) -> dict:
    """name -> (prior, raw) of the priors ``set_prior`` attached to ``module`` (not a copy)."""
    return module.__dict__.get("_priors") or {}


def _plain_value(module: nn.Module, name: str):
    """The floating tensor attribute ``name`` of ``module`` (a parameter, a buffer or a property
    giving a tensor), else None."""
    held = name in module._parameters or name in module._buffers
    if not held and not isinstance(getattr(type(module), name, None), property):
        return None
    value = getattr(module, name)
    return value if isinstance(value, torch.Tensor) and value.is_floating_point() else None


def prior_value(module: nn.Module, name: str, raw: bool) -> torch.Tensor:
    """The tensor a prior attached to ``name`` reads: a positive hyperparameter's natural value
    (``raw=False``) or its unconstrained ``raw_<name>`` (``raw=True``); else the attribute."""
    if name in getattr(module, "_constraints", {}):
        return getattr(module, "raw_" + name) if raw else positive_value(module, name)
    return getattr(module, name)


def check_prior_shape(prior, value: torch.Tensor, where: str) -> None:
    """ValueError unless ``prior.batch_shape`` broadcasts into ``value``'s shape (``where``: the
    hyperparameter, for the message)."""
    try:
        shape = torch.broadcast_shapes(prior.batch_shape, value.shape)
    except RuntimeError:
        shape = None
    if shape != value.shape:
        raise ValueError(f"prior: {prior!r:.120} has batch shape {tuple(prior.batch_shape)}, which does not "
                         f"broadcast into the shape {tuple(value.shape)} of {where}")


def check_ard_dims(ard_dims) -> int | None:
    """ard_dims must be None or a positive int (numpy ints accepted); returns it as an int or None."""
    if ard_dims is None:
        return None
    if isinstance(ard_dims, bool) or not isinstance(ard_dims, numbers.Integral) or ard_dims < 1:
        raise ValueError(f"ard_dims: expected a positive int or None, got {ard_dims!r}")
    return int(ard_dims)
