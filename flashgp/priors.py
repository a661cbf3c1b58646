# Hyperparameter priors: densities over the hyperparameters of kernels, likelihoods and means, the
# log prior of a model (the term fg.fit adds for a MAP fit) and the JSON form model files keep.
"""Priors over hyperparameters and the MAP objective of ``fg.fit``.

Attach a prior to a hyperparameter of any kernel, likelihood or mean (every
``flashgp.kernels.constraints.ExactValues`` module) with ``module.set_prior(name, prior)``::

    model.kernel.base.set_prior("lengthscale", fg.priors.LogNormal(0.0, 1.0))
    model.likelihood.set_prior("noise", fg.priors.Gamma(1.1, 0.05))

``fg.fit`` then minimizes ``model.loss().sum() - log_prior(model) / n`` (``num_points``), the
negative log posterior density of the hyperparameters per data point. ``fg.save`` writes the
priors into the model file and ``fg.load`` attaches them again (``priors_config``,
``attach_config``).
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch


HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG_2_OVER_PI = math.log(2 / math.pi)


def _argument(value, prior: str, name: str, positive: bool) -> torch.Tensor:
    """A prior's argument as a float64 CPU tensor, else TypeError/ValueError naming it."""
    what = "finite numbers > 0" if positive else "finite numbers"
    if (value is None or isinstance(value, (bool, np.bool_, str, bytes))
            or (isinstance(value, torch.Tensor) and (value.is_complex() or value.dtype == torch.bool))):
        raise TypeError(f"{prior}: {name}: expected {what} (a number or a tensor), got {value!r:.80}")
    try:
        tensor = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value,
                                 dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{prior}: {name}: expected {what} (a number or a tensor), "
                        f"got {type(value).__name__}") from None
    if not bool(torch.isfinite(tensor).all()) or (positive and not bool((tensor > 0).all())):
        raise ValueError(f"{prior}: {name}: expected {what}, got {_show(tensor)}")
    return tensor.clone()


def _show(tensor: torch.Tensor):
    """A tensor argument as a number (0-d) or a (possibly nested) list, for messages and configs."""
    return tensor.item() if tensor.dim() == 0 else tensor.tolist()


def _as_value(value) -> torch.Tensor:
    """``value`` of ``log_prob``: a floating tensor as given, numbers as float64."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None or (
            isinstance(value, torch.Tensor) and (value.is_complex() or value.dtype == torch.bool)):
        raise TypeError(f"value: expected real numbers (a number or a tensor), got {value!r:.80}")
    return torch.as_tensor(value, dtype=torch.float64)


class Prior:
    """Base of the priors: a density over a hyperparameter's values, elementwise.

    A prior's arguments are numbers or tensors (kept as float64 on the CPU, cast to the value's
    dtype and device in ``log_prob``); they broadcast with each other to ``batch_shape`` and
    with the hyperparameter they are attached to, whose shape must hold ``batch_shape``
    (e.g. a ``(d,)`` ``loc`` for a ``(1, d)`` ARD lengthscale: one prior per dimension).
    """

    #: the argument names, in the constructor's order
    arguments: tuple = ()
    #: the arguments that must be > 0
    positive: tuple = ()
    #: the values with a finite log density: "real", "positive" (> 0) or "nonnegative" (>= 0)
    support: str = "real"

    def _set_arguments(self, **values) -> None:
        kind = type(self).__name__
        for name, value in values.items():
            setattr(self, name, _argument(value, kind, name, name in self.positive))
        try:
            self.batch_shape = torch.broadcast_shapes(*(getattr(self, n).shape for n in self.arguments))
        except RuntimeError:
            shapes = ", ".join(f"{n} {tuple(getattr(self, n).shape)}" for n in self.arguments)
            raise ValueError(f"{kind}: the arguments' shapes do not broadcast ({shapes})") from None

    def log_prob(self, value) -> torch.Tensor:
        """log p(value), elementwise: shape ``broadcast(value.shape, batch_shape)``, in value's
        dtype (numbers: float64), differentiable in ``value``; -inf outside the support."""
        x = _as_value(value)
        args = [getattr(self, n).to(dtype=x.dtype, device=x.device) for n in self.arguments]
        return self._log_prob(x, *args)

    def _log_prob(self, x: torch.Tensor, *args) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, shape=(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws of shape ``(*shape, *batch_shape)``, float64 on the CPU; ``generator``: a CPU
        ``torch.Generator`` (reproducible draws) or None (torch's global generator)."""
        if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
            shape = (int(shape),)
        if not isinstance(shape, (tuple, list, torch.Size)) or not all(
                isinstance(s, numbers.Integral) and not isinstance(s, (bool, np.bool_)) and s >= 0 for s in shape):
            raise ValueError(f"shape: expected an int >= 0 or a sequence of them, got {shape!r:.80}")
        if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
            raise TypeError(f"generator: expected a CPU torch.Generator or None, got {generator!r:.80}")
        return self._sample(torch.Size([*(int(s) for s in shape), *self.batch_shape]), generator)

    def _sample(self, size: torch.Size, generator) -> torch.Tensor:
        raise NotImplementedError

    @property
    def mode(self) -> torch.Tensor:
        """The value of highest density, float64, shape ``batch_shape``."""
        raise NotImplementedError

    @property
    def mean(self) -> torch.Tensor:
        """The expected value, float64, shape ``batch_shape`` (inf where it is not finite)."""
        raise NotImplementedError

    def to_config(self) -> dict:
        """A JSON-ready dict: {"type": the class name, each argument: a number or nested lists}
        (``prior_from_config`` rebuilds the prior)."""
        return {"type": type(self).__name__, **{n: _show(getattr(self, n)) for n in self.arguments}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={_show(getattr(self, n))}' for n in self.arguments)})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and all(
            torch.equal(getattr(self, n), getattr(other, n)) for n in self.arguments)

    __hash__ = None


def _normal(size: torch.Size, generator) -> torch.Tensor:
    return torch.randn(size, generator=generator, dtype=torch.float64)


class Normal(Prior):
    """Normal(loc, scale): log p(x) = -((x - loc) / scale)^2 / 2 - log scale - log(2 pi) / 2,
    any real x. Mode and mean: loc."""

    arguments, positive = ("loc", "scale"), ("scale",)

    def __init__(self, loc, scale):
        self._set_arguments(loc=loc, scale=scale)

    def _log_prob(self, x, loc, scale):
        z = (x - loc) / scale
        return -0.5 * z * z - torch.log(scale) - HALF_LOG_2PI

    def _sample(self, size, generator):
        return self.loc + self.scale * _normal(size, generator)

    @property
    def mode(self):
        return self.loc.expand(self.batch_shape).clone()

    @property
    def mean(self):
        return self.loc.expand(self.batch_shape).clone()


class LogNormal(Prior):
    """LogNormal(loc, scale): log x ~ Normal(loc, scale), for x > 0:
    log p(x) = -((log x - loc) / scale)^2 / 2 - log scale - log(2 pi) / 2 - log x.
    Mode exp(loc - scale^2), mean exp(loc + scale^2 / 2)."""

    arguments, positive, support = ("loc", "scale"), ("scale",), "positive"

    def __init__(self, loc, scale):
        self._set_arguments(loc=loc, scale=scale)

    def _log_prob(self, x, loc, scale):
        inside = x > 0
        log_x = torch.log(torch.where(inside, x, torch.ones_like(x)))  # finite gradients outside
        z = (log_x - loc) / scale
        value = -0.5 * z * z - torch.log(scale) - HALF_LOG_2PI - log_x
        return torch.where(inside, value, torch.full_like(value, -math.inf))

    def _sample(self, size, generator):
        return torch.exp(self.loc + self.scale * _normal(size, generator))

    @property
    def mode(self):
        return torch.exp(self.loc - self.scale ** 2).expand(self.batch_shape).clone()

    @property
    def mean(self):
        return torch.exp(self.loc + 0.5 * self.scale ** 2).expand(self.batch_shape).clone()


class Gamma(Prior):
    """Gamma(concentration a, rate b), for x > 0:
    log p(x) = a log b - log Gamma(a) + (a - 1) log x - b x.
    Mode (a - 1) / b for a >= 1, else 0; mean a / b."""

    arguments, positive, support = ("concentration", "rate"), ("concentration", "rate"), "positive"

    def __init__(self, concentration, rate):
        self._set_arguments(concentration=concentration, rate=rate)

    def _log_prob(self, x, a, b):
        inside = x > 0
        safe = torch.where(inside, x, torch.ones_like(x))
        value = a * torch.log(b) - torch.lgamma(a) + torch.xlogy(a - 1, safe) - b * safe
        return torch.where(inside, value, torch.full_like(value, -math.inf))

    def _sample(self, size, generator):
        def draw():
            return torch.distributions.Gamma(self.concentration.expand(size), self.rate.expand(size)).sample()

        if generator is None:
            return draw()
        seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):  # the draw follows the generator, not the global state
            torch.manual_seed(seed)
            return draw()

    @property
    def mode(self):
        a, b = self.concentration, self.rate
        return (torch.clamp_min(a - 1, 0) / b).expand(self.batch_shape).clone()

    @property
    def mean(self):
        return (self.concentration / self.rate).expand(self.batch_shape).clone()


class HalfCauchy(Prior):
    """HalfCauchy(scale s), for x >= 0: log p(x) = log(2 / pi) - log s - log(1 + (x / s)^2).
    Mode 0; the mean is infinite (``mean`` gives inf)."""

    arguments, positive, support = ("scale",), ("scale",), "nonnegative"

    def __init__(self, scale):
        self._set_arguments(scale=scale)

    def _log_prob(self, x, scale):
        inside = x >= 0
        z = torch.where(inside, x, torch.zeros_like(x)) / scale
        value = LOG_2_OVER_PI - torch.log(scale) - torch.log1p(z * z)
        return torch.where(inside, value, torch.full_like(value, -math.inf))

    def _sample(self, size, generator):
        u = torch.rand(size, generator=generator, dtype=torch.float64)
        return self.scale * torch.tan(0.5 * math.pi * u)

    @property
    def mode(self):
        return torch.zeros(self.batch_shape, dtype=torch.float64)

    @property
    def mean(self):
        return torch.full(self.batch_shape, math.inf, dtype=torch.float64)


#: the prior classes files may name ("type" of a ``to_config`` dict)
PRIORS = {cls.__name__: cls for cls in (Normal, LogNormal, Gamma, HalfCauchy)}


def prior_from_config(config) -> Prior:
    """The prior a ``Prior.to_config()`` dict describes. Only the classes of ``PRIORS`` are built
    (nothing is imported or run); ValueError for an unknown type, missing or extra keys, or
    arguments that are not finite numbers (or nested lists of them) in range; TypeError for a
    config that is not a dict."""
    if not isinstance(config, dict):
        raise TypeError(f"prior: expected a dict with a 'type', got {type(config).__name__}")
    kind = config.get("type")
    if not isinstance(kind, str) or kind not in PRIORS:
        raise ValueError(f"prior: unknown type {kind!r:.80}; expected one of {sorted(PRIORS)}")
    cls = PRIORS[kind]
    expected = {"type", *cls.arguments}
    if set(config) != expected:
        raise ValueError(f"prior: a {kind} takes the keys {sorted(expected)}, got {sorted(map(str, config))[:10]}")
    for name in cls.arguments:
        if not _json_numbers(config[name]):
            raise ValueError(f"prior: {kind} {name}: expected a number or nested lists of numbers, "
                             f"got {config[name]!r:.80}")
    try:
        return cls(**{name: config[name] for name in cls.arguments})
    except TypeError as err:
        raise ValueError(str(err)) from None


def _json_numbers(value, depth: int = 0) -> bool:
    if isinstance(value, list):
        return depth < 32 and all(_json_numbers(v, depth + 1) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----- BoTorch's defaults -----------------------------------------------------------------------

BOTORCH_NOISE_FLOOR = 1e-4
BOTORCH_LENGTHSCALE_FLOOR = 2.5e-2


def botorch_defaults(d: int) -> dict:
    """The priors of BoTorch's ``SingleTaskGP`` (since BoTorch 0.12; an RBF kernel with one
    lengthscale per input dimension and no output scale) for ``d`` input dimensions:

    - "lengthscale": ``LogNormal(sqrt(2) + log(d) / 2, sqrt(3))``,
    - "noise": ``LogNormal(-4, 1)`` (the Gaussian noise variance),
    - "noise_floor": 1e-4, BoTorch's lower bound of the noise variance,
    - "lengthscale_floor": 0.025, its lower bound of the lengthscales (flashgp kernels have no
      such bound; the prior keeps lengthscales far above it).

    BoTorch starts both hyperparameters at their prior's mode (``prior.mode``).
    """
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral) or d < 1:
        raise ValueError(f"d: expected a positive int (the input dimensions), got {d!r}")
    return {"lengthscale": LogNormal(math.sqrt(2) + 0.5 * math.log(int(d)), math.sqrt(3)),
            "noise": LogNormal(-4.0, 1.0), "noise_floor": BOTORCH_NOISE_FLOOR,
            "lengthscale_floor": BOTORCH_LENGTHSCALE_FLOOR}


# the model-level terms (log prior, MAP objective, file entries), part of this namespace
from .prior_terms import (attach_config, attached, check_finite, has_priors, log_prior, num_points,  # noqa: E402,F401
                          objective, priors_config, read_config)
