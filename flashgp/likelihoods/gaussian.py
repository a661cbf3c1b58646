# Gaussian observation models: y = f(x) + eps, eps ~ N(0, noise) with learned or fixed noise.
# `noise_diag(n)` gives the (*batch, n) diagonal that inference adds to K; the likelihood
# interface (see base.py) has closed forms here.
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from ..kernels.constraints import Positive, PositiveProperty, register_positive, set_positive
from ..shapes import as_batch_shape
from .base import Likelihood, PredictiveMoments

LOG_2PI = math.log(2 * math.pi)


class GaussianNoise(Likelihood):
    """Base of the conjugate likelihoods y = f + eps, eps ~ N(0, s), s = ``noise_diag(n, noise)``.

    Closed forms (elementwise, shapes broadcast; s ``(*batch, n)``):

    * ``log_prob(y, f)`` = -0.5 log(2 pi s) - (y - f)^2 / (2 s)
    * ``expected_log_prob(y, mean, var)`` = -0.5 log(2 pi s) - ((y - mean)^2 + var) / (2 s)
    * ``marginal_log_prob(y, mean, var)`` = log N(y; mean, var + s)
    * ``predictive(mean, var)`` = ``PredictiveMoments(mean, var + s)``, the Gaussian of y*.

    Each also takes ``noise``: per-point variances passed on to ``noise_diag`` (``FixedNoise``
    at new points); ``points`` is accepted for the common signature and unused.
    """

    conjugate = True

    def log_prob(self, y, f, *, noise=None) -> torch.Tensor:
        y, f = self._check_log_prob(y, f)
        return _normal_log_pdf(y - f, self._noise_for(noise, y, f))

    def expected_log_prob(self, y, mean, var, *, points: int | None = None, noise=None) -> torch.Tensor:
        y, mean, var = self._check_marginals(y, mean, var)
        self._points_for(points)  # checked, unused
        return _expected_normal_log_pdf(y, mean, var, self._noise_for(noise, y, mean, var))

    def marginal_log_prob(self, y, mean, var, *, points: int | None = None, noise=None) -> torch.Tensor:
        y, mean, var = self._check_marginals(y, mean, var)
        self._points_for(points)
        return _normal_log_pdf(y - mean, var + self._noise_for(noise, y, mean, var))

    def predictive(self, mean, var, *, points: int | None = None, noise=None) -> PredictiveMoments:
        mean, var = self._check_moments(mean, var)
        self._check_shapes(mean=mean, var=var)
        self._points_for(points)
        variance = var + self._noise_for(noise, mean, var)
        return PredictiveMoments(mean.expand_as(variance), variance)

    # hooks of the quadrature defaults (``quadrature_expected_log_prob`` etc. check against these)
    def _expected_log_prob(self, y, mean, var, points):
        return _expected_normal_log_pdf(y, mean, var, self._noise_for(None, y, mean, var))

    def _log_prob(self, y, f):
        return _normal_log_pdf(y - f, self._noise_for(None, y, f))

    def _conditional_moments(self, f):
        s = self._noise_for(None, f)
        return f.expand(torch.broadcast_shapes(f.shape, s.shape)), s

    def _noise_for(self, noise, *tensors: torch.Tensor) -> torch.Tensor:
        """noise_diag(n) for the n points of ``tensors`` (their broadcast's last size), in their dtype."""
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))
        s = self.noise_diag(shape[-1] if len(shape) else 1, noise)
        return s.to(tensors[0].dtype)


def _expected_normal_log_pdf(y, mean, var, s: torch.Tensor) -> torch.Tensor:
    """E_{f ~ N(mean, var)} log N(y; f, s), elementwise."""
    return -0.5 * (LOG_2PI + s.log() + ((y - mean).square() + var) / s)


def _normal_log_pdf(diff: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + variance.log() + diff.square() / variance)


# The default noise floor, as a fraction of the prior variance, per model dtype (see
# ``default_noise_floor``); any other dtype takes float32's.
RELATIVE_FLOOR = {torch.float64: 1e-10, torch.float32: 1e-4}
PLACEHOLDER_NOISE = 0.1  # the noise of a Gaussian() used outside a model (standardized targets)


def default_noise_floor(prior_variance: float, dtype: torch.dtype) -> float:
    """The noise floor ``Gaussian()`` gets when no ``noise_floor`` is given:
    ``RELATIVE_FLOOR[dtype] * prior_variance``: 1e-10 of it in float64 (about 4.5e5 eps), 1e-4 in
    float32 (about 840 eps).

    ``prior_variance``: the scale of K's diagonal, max(mean of k(x_i, x_i), var(y)), as
    ``fg.init_from_data`` measures it (1 for standardized targets); a value that is not finite
    and positive counts as 1. Chosen on noise-free sine data (``python benchmarks/noise_floor.py``,
    its ``--cholesky`` and ``--cases 1x1000,1x2000,3x2000 --seeds 0 --dtypes float64``; x uniform
    on [0, 1]^d, d = 1 and 3, 50-2,000 points, RBF):

    * float64: a jitter-free Cholesky of K + floor I needed at most 3e-13 of K's diagonal (at
      2,000 points), and fits at a floor of 1e-10 var(y) needed no jitter up to 2,000 points
      (learned output scales up to 110 var(y)). Where the stds are set by the data rather than
      the nugget (3-D, 50 points) they were within 1.1% of scikit-learn's exact GP (alpha
      1e-10), against up to 2.7 times wider with the former floor 1e-4; where the data are
      dense the floor 1e-4 gave 1,220-1,710 times the test RMSE of 1e-10 (1-D, 50-200 points)
      and 8.5-15 times (3-D, 200 points).
    * float32: float32 predictions cannot resolve latent variances much below eps32 times the
      prior variance: floors of 1e-6 and below gave stds of exactly 0 at 9-73% of the test
      points where the data are dense (none in 3-D with 50 points), 1e-4 at none (the former
      default, kept).
    """
    if not math.isfinite(prior_variance) or prior_variance <= 0:
        prior_variance = 1.0
    return RELATIVE_FLOOR.get(dtype, RELATIVE_FLOOR[torch.float32]) * float(prior_variance)


class Gaussian(GaussianNoise):
    """Homoscedastic Gaussian noise, learned, kept above a floor.

    Args:
        noise: initial noise variance. None (default): not given; ``ExactGP`` then starts it at
            ``noise_floor + 0.1 var(y)`` (``fg.init_from_data``); it is 0.1 where the likelihood
            is used without a model.
        noise_floor: lower bound of the noise variance (0: none). None (default): chosen when the
            first ``ExactGP`` is built with this likelihood, from that model's dtype and prior
            variance: ``default_noise_floor(max(mean k(x_i, x_i), var(y)), dtype)``, i.e.
            1e-10 of the prior variance in float64 and 1e-4 in float32.
            Until then it is 0. A number sets the floor as given. A learned noise that ends on
            its floor is reported by ``fg.fit`` (a NumericalWarning): the data may then be nearly
            noise-free and a lower floor may fit them better.
        batch_shape: leading shape for batches of independent GPs.

    ``noise_floor`` is also a property: setting it keeps the current noise, which must lie above it.
    """

    def __init__(self, noise: float | None = None, noise_floor: float | None = None,
                 batch_shape: Sequence[int] = ()):
        super().__init__()
        if noise_floor is not None:
            _check_floor(noise_floor)
        self.batch_shape = as_batch_shape(batch_shape)
        register_positive(self, "noise", noise, self.batch_shape, placeholder=PLACEHOLDER_NOISE,
                          lower=0.0 if noise_floor is None else float(noise_floor))
        if noise_floor is None:
            self._unset.add("noise_floor")

    noise = PositiveProperty("Noise variance, shape (*batch,).")

    @property
    def noise_floor(self) -> float:
        """The lower bound of the noise variance (a float)."""
        return self._constraints["noise"].lower

    @noise_floor.setter
    def noise_floor(self, floor: float) -> None:
        _check_floor(floor)
        exact = self.exact_value("noise")  # the given noise at float64 precision, if kept
        noise = self.noise.detach() if exact is None else exact
        if torch.any(noise <= floor):
            raise ValueError(f"noise_floor: expected a value below the noise ({float(noise.min()):.3g}), "
                             f"got {floor!r}; set a lower noise first")
        unset = "noise" in self._unset
        self._constraints = {**self._constraints, "noise": Positive(float(floor))}
        set_positive(self, "noise", noise)  # the same noise above the new floor
        if unset:
            self._unset.add("noise")
        self._unset.discard("noise_floor")

    def noise_diag(self, n: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is not None:
            raise ValueError("noise: per-point test noise variances need a FixedNoise likelihood; "
                             "the Gaussian likelihood predicts with its learned noise")
        return self.noise.unsqueeze(-1).expand(*self.batch_shape, n)


def _check_floor(floor) -> None:
    if isinstance(floor, bool) or not isinstance(floor, numbers.Real) or not 0 <= floor < math.inf:
        raise ValueError(f"noise_floor: expected a finite number >= 0 or None, got {floor!r}")


class FixedNoise(GaussianNoise):
    """Known per-point noise variances ``noise`` of shape ``(*batch, n)`` for the training points.

    At prediction time pass the test points' variances to ``model.predict(x, noise=...)``;
    without them the mean training noise is used.

    The variances must be finite and positive wherever they enter: the constructor, assignment
    (``likelihood.noise = values``: cast to the likelihood's dtype and device) and
    ``load_state_dict`` (a model file; the bad tensor is then not loaded and torch's RuntimeError
    names it). Edits in place are checked when the variances are next used (``noise_diag``,
    at each change of the tensor's version counter; edits through ``.data`` by the model's
    prediction cache, which checks the values it is built from).
    """

    def __init__(self, noise: torch.Tensor):
        super().__init__()
        noise, exact = _noise_values(noise, "noise")
        self.register_buffer("noise", noise)
        if exact is not None:
            self.remember_exact("noise", exact, "plain")

    def __setattr__(self, name, value):
        buffers = self.__dict__.get("_buffers")
        if name == "noise" and buffers is not None and "noise" in buffers:
            current = buffers["noise"]
            value, exact = _noise_values(value, "noise", like=current)
            super().__setattr__(name, value)
            self._checked = None
            if exact is not None:
                self.remember_exact("noise", exact, "plain")
            return
        super().__setattr__(name, value)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "noise"
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            problem = _noise_problem(value)
            if problem is not None:
                error_msgs.append(f"{key}: expected finite positive noise variances, got {problem}")
                state_dict = {**state_dict, key: self.noise}  # keep the current variances
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._checked = None

    def _checked_noise(self) -> torch.Tensor:
        """The training variances, checked (finite, > 0) once per version of the tensor."""
        noise = self.noise
        key = (noise._version, noise.untyped_storage().data_ptr())
        if self.__dict__.get("_checked") != key:
            problem = _noise_problem(noise)
            if problem is not None:
                raise ValueError(f"noise: expected finite positive noise variances in the FixedNoise "
                                 f"likelihood, got {problem} (changed in place after it was set); assign "
                                 "valid ones (likelihood.noise = values)")
            self._checked = key
        return noise

    @property
    def batch_shape(self) -> torch.Size:
        return self.noise.shape[:-1]

    def noise_diag(self, n: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            train = self._checked_noise()
            if train.shape[-1] == n:
                return train
            return train.mean(-1, keepdim=True).expand(*train.shape[:-1], n)
        try:
            noise = torch.as_tensor(noise, device=self.noise.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"noise: expected a tensor of {n} variances, got {type(noise).__name__}") from None
        if noise.is_complex() or noise.dtype == torch.bool:
            raise TypeError(f"noise: expected real variances, got {noise.dtype}")
        noise = noise.to(self.noise.dtype)
        if noise.shape[-1:] != (n,) or not torch.all(torch.isfinite(noise)) or torch.any(noise < 0):
            raise ValueError(f"noise: expected {n} finite non-negative variances, got shape "
                             f"{tuple(noise.shape)} (min {float(noise.min()) if noise.numel() else 'n/a'})")
        return noise


def _noise_problem(noise: torch.Tensor) -> str | None:
    """What is wrong with variances ``noise`` (non-finite or <= 0 entries), or None."""
    bad = ~torch.isfinite(noise) | (noise <= 0)
    if noise.dim() < 1:
        return f"a scalar of shape {tuple(noise.shape)}; expected shape (*batch, n)"
    if not bool(bad.any()):
        return None
    finite = noise[torch.isfinite(noise)]
    low = f"min {float(finite.min()):.3g}" if finite.numel() else "none finite"
    return f"{int(bad.sum())} of {noise.numel()} not finite and positive ({low})"


def _noise_values(noise, name: str, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(variances as a real tensor, their float64 values when given as Python numbers, else None);
    ValueError/TypeError naming ``name`` for anything but a ``(*batch, n)`` tensor of finite positive
    variances. ``like``: the current variances, whose dtype and device the result takes."""
    exact, given = None, noise
    if noise is None or isinstance(noise, (str, bytes, bool)):
        raise TypeError(f"{name}: expected a tensor of variances, got {type(noise).__name__}")
    try:
        noise = torch.as_tensor(noise)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name}: expected a tensor of variances, got {type(noise).__name__}") from err
    if noise.is_complex() or noise.dtype == torch.bool:
        raise TypeError(f"{name}: expected real variances, got {noise.dtype}")
    if not isinstance(given, torch.Tensor) and not hasattr(given, "dtype"):
        # Python numbers: kept at float64 precision for a float64 model (see ExactValues)
        exact = torch.as_tensor(given, dtype=torch.float64)
        noise = exact.to(torch.get_default_dtype())
    if not noise.is_floating_point():
        noise = noise.to(torch.get_default_dtype())
    if like is not None:
        noise = noise.to(dtype=like.dtype, device=like.device)
    noise = noise.clone()  # the likelihood's own: later edits of the caller's array do not reach it
    if noise.dim() < 1 or _noise_problem(noise) is not None:
        problem = _noise_problem(noise) or f"shape {tuple(noise.shape)}"
        raise ValueError(f"{name}: expected a (*batch, n) tensor of finite positive variances, got {problem}")
    return noise, exact
