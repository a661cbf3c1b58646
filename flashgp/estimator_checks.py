# Checks the scikit-learn estimators (GPRegressor, GPClassifier) share: numeric pandas columns,
# the seed drawn from a random_state, targets whose scale float64 variances can hold, and the
# regressor's noise settings.
from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.utils import check_random_state

Y_SCALE_RANGE = (1e-150, 1e150)  # y's scale: its square (variances in y's units) must be a normal float64


def check_numeric_columns(X, hint: str = "") -> None:
    """A pandas DataFrame X must hold numbers only: name the columns that do not convert
    (``hint`` ends the message, e.g. how to use them otherwise)."""
    if not (hasattr(X, "columns") and hasattr(X, "dtypes")):
        return
    bad = []
    for column, dtype in X.dtypes.items():
        if getattr(dtype, "kind", "O") in "biuf":
            continue
        try:
            np.asarray(X[column], dtype=np.float64)
        except (TypeError, ValueError):
            bad.append(str(column))
    if bad:
        raise ValueError(f"X: expected numeric columns, got non-numeric column(s) "
                         f"{', '.join(map(repr, bad[:5]))}; encode them as numbers first{hint}")


def seed_from(random_state, name: str) -> int:
    """An int seed drawn from ``random_state`` (None, int or numpy RandomState)."""
    try:
        state = check_random_state(random_state)
    except ValueError:
        raise ValueError(f"{name}: expected None, an int or a numpy RandomState, "
                         f"got {random_state!r}") from None
    return int(state.randint(np.iinfo(np.int32).max))


def check_target_scale(y: np.ndarray, y_scale: float, normalize_y: bool) -> None:
    """Refuse, before any fitting, targets whose variances cannot be represented in float64:
    variances in squared units of y (noise_, outputscale_, predictive variances, return_cov)
    are the model's times ``y_scale**2``, which must stay within Y_SCALE_RANGE squared."""
    low, high = Y_SCALE_RANGE
    if low <= y_scale <= high:
        return
    peak = float(np.abs(y).max())
    way = "overflow" if y_scale > high else "underflow to 0 or lose their precision"
    what = "y's standard deviation" if normalize_y else "y's magnitude (normalize_y=False)"
    rescale = f"divide y by {y_scale:.0e}" if normalize_y else "use normalize_y=True"
    raise ValueError(f"y: {what} is {y_scale:.3g} (values up to {peak:.3g}): its square, the unit of "
                     f"the variances in y's units (noise_, outputscale_, predictive variances), "
                     f"would {way} in float64 (expected a scale within {low:g} and {high:g}); "
                     f"{rescale} and scale the results back")


def noise_floor_value(floor, noise, y_scale: float):
    """The estimator's ``noise_floor`` in the model's standardized units (divided by y_scale^2), or
    None; ValueError unless it is None or a finite number >= 0, and with a fixed ``noise``."""
    if floor is None:
        return None
    if isinstance(floor, (bool, np.bool_)) or not isinstance(floor, numbers.Real) or not 0 <= floor < math.inf:
        raise ValueError(f"noise_floor: expected None or a finite number >= 0, got {floor!r}")
    if noise is not None:
        raise ValueError("noise_floor: applies to a learned noise; with a fixed noise "
                         f"(noise={noise!r:.40}) leave noise_floor=None")
    return float(floor) / y_scale**2


def fixed_noise_values(noise, n: int):
    """The estimator's fixed ``noise`` as variances (n,) in data units, or None to learn the noise;
    TypeError/ValueError naming ``noise`` for anything but a positive number or n of them."""
    if noise is None:
        return None
    if isinstance(noise, (str, bytes, bool)):
        raise TypeError(f"noise: expected None, a number or an array of variances, got {noise!r}")
    values = np.asarray(noise, dtype=np.float64)
    if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != n):
        raise ValueError(f"noise: expected a number or an array of shape ({n},), got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("noise: expected finite variances > 0")
    return np.broadcast_to(values, (n,))
