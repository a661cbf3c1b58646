# GPRegressor.save / GPRegressor.load: a fitted estimator as one flashgp.bundle file (kind
# "estimator"): the model, the input/target scaling, the constructor settings and the fitted
# attributes, as JSON and weights-only tensors. Loading runs no code (no pickle, unlike joblib).
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from . import bundle, estimator_categorical as categorical_columns, kernels as fk
from .errors import ModelFileError
from .fit import History
from .serialize import kernel_from_config, kernel_to_config, solver_from_config, solver_to_config

KIND = "estimator"
HISTORY_KEYS = ("loss", "step_seconds", "diagnostics", "stopped_early", "start_step", "warnings")
_FLOAT_TAG = "__float__"  # JSON stand-in for a non-finite float: {"__float__": "nan"}


# ----- JSON values with non-finite floats ---------------------------------------------------------

def _to_json(value):
    """``value`` (numbers, strings, None, lists, tuples, dicts) JSON-ready; non-finite floats
    tagged, numpy scalars as Python ones, anything else as its string."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else {_FLOAT_TAG: repr(value)}
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return str(value)


def _from_json(value):
    """The inverse of ``_to_json`` (tuples come back as lists)."""
    if isinstance(value, dict):
        if set(value) == {_FLOAT_TAG} and value[_FLOAT_TAG] in ("nan", "inf", "-inf"):
            return float(value[_FLOAT_TAG])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _history_to_json(history: History | None):
    if history is None:
        return None
    return _to_json({key: getattr(history, key) for key in HISTORY_KEYS})


def _history_from_json(value, where: str) -> History | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(HISTORY_KEYS):
        raise ValueError(f"{where}: expected a dict with the keys {list(HISTORY_KEYS)}")
    value = _from_json(value)
    lists = ("loss", "step_seconds", "diagnostics", "warnings")
    if not all(isinstance(value[k], list) for k in lists) or not isinstance(value["start_step"], int) \
            or not (value["stopped_early"] is None or isinstance(value["stopped_early"], str)):
        raise ValueError(f"{where}: malformed history")
    value["warnings"] = [tuple(w) if isinstance(w, list) else w for w in value["warnings"]]
    return History(**value)


# ----- the constructor's settings -----------------------------------------------------------------

# settings that may be arrays (kept as float64 tensors beside the JSON): per-point noise variances,
# inducing inputs (or a SKI grid size per feature)
ARRAY_PARAMS = ("noise", "inducing")
# settings files of earlier versions lack (defaults then)
LATER_PARAMS = ("categorical", "categorical_kind", "itergp_policy", "itergp_budget")


def _encode_params(params: dict, extra: dict) -> dict:
    """GPRegressor.get_params() as JSON (objects tagged), large or exact values into ``extra``."""
    out = {}
    for name, value in params.items():
        if name == "kernel" and isinstance(value, fk.Kernel):
            out[name] = {"kernel": kernel_to_config(value)}
            extra.update({f"param.kernel.{k}": t.detach().cpu().clone() for k, t in value.state_dict().items()})
        elif name == "solver" and not isinstance(value, str):
            out[name] = {"solver": solver_to_config(value)}
        elif name == "device" and isinstance(value, torch.device):
            out[name] = {"torch.device": str(value)}
        elif name in ARRAY_PARAMS and value is not None and np.ndim(value) > 0:
            out[name] = {"array": list(np.shape(value))}
            extra[f"param.{name}"] = torch.as_tensor(np.asarray(value, dtype=np.float64))
        elif name == "random_state" and isinstance(value, np.random.RandomState):
            kind, keys, pos, has_gauss, gauss = value.get_state(legacy=True)
            out[name] = {"RandomState": [kind, int(pos), int(has_gauss), float(gauss)]}
            extra["param.random_state"] = torch.as_tensor(keys.astype(np.int64))
        elif name == "categorical" and isinstance(value, (list, tuple, np.ndarray)):
            out[name] = {"list": _to_json(list(value))}  # column indices or names
        elif value is None or isinstance(value, (str, bool, np.bool_, numbers.Real)):
            out[name] = {"value": _to_json(value)}
        else:
            raise TypeError(f"{name}: cannot save the setting {value!r:.60} (expected a number, a string, "
                            "None, a flashgp kernel or solver, a torch.device or a numpy RandomState)")
    return out


def _decode_params(encoded, extra: dict, names: set) -> dict:
    """The inverse of ``_encode_params``; ValueError/TypeError for anything malformed."""
    if not isinstance(encoded, dict) or not set(encoded) <= names or names - set(encoded) - set(LATER_PARAMS):
        got = sorted(encoded)[:20] if isinstance(encoded, dict) else type(encoded).__name__
        raise ValueError(f"params: expected the settings {sorted(names)}, got {got}")
    params = {}
    for name, tagged in encoded.items():
        if not isinstance(tagged, dict) or len(tagged) != 1:
            raise ValueError(f"params: {name}: expected a one-key tagged dict, got {tagged!r:.60}")
        (tag, value), = tagged.items()
        if tag == "value":
            if isinstance(value, (dict, list)) and not (isinstance(value, dict) and set(value) == {_FLOAT_TAG}):
                raise ValueError(f"params: {name}: expected a number, a string or null")
            params[name] = _from_json(value)
        elif tag == "kernel" and name == "kernel":
            kernel = kernel_from_config(value, "params: kernel")
            prefix = "param.kernel."
            kernel.load_state_dict({k[len(prefix):]: t for k, t in extra.items() if k.startswith(prefix)})
            params[name] = kernel
        elif tag == "solver" and name == "solver":
            params[name] = solver_from_config(value, "params: solver")
        elif tag == "list" and name == "categorical" and isinstance(value, list) and all(
                isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
            params[name] = value
        elif tag == "torch.device" and name == "device" and isinstance(value, str):
            params[name] = torch.device(value)
        elif tag == "array" and name in ARRAY_PARAMS:
            array = extra.get(f"param.{name}")
            if array is None or list(array.shape) != value or array.dtype != torch.float64:
                raise ValueError(f"params: {name}: the array of shape {value!r:.40} is missing")
            params[name] = array.numpy().copy()
        elif tag == "RandomState" and name == "random_state" and isinstance(value, list) and len(value) == 4:
            keys = extra.get("param.random_state")
            if keys is None or keys.shape != (624,):
                raise ValueError("params: random_state: the generator state is missing")
            state = np.random.RandomState()
            state.set_state((value[0], keys.numpy().astype(np.uint32), *value[1:]))
            params[name] = state
        else:
            raise ValueError(f"params: {name}: unknown tag {tag!r:.40}")
    return params


# ----- save and load -------------------------------------------------------------------------------

def save_estimator(estimator, path, fitted: dict | None = None):
    """Write the fitted ``estimator`` (a GPRegressor, or another flashgp estimator with the same
    fitted attributes but y's scaling, e.g. GPClassifier) to ``path``; returns the file written.
    ``fitted``: the estimator's own fitted values (JSON-ready) beside the common ones, given
    back to the ``restore`` of ``load_estimator``."""
    extra = {}
    names = getattr(estimator, "feature_names_in_", None)
    info = {"estimator": type(estimator).__name__,
            "params": _encode_params(estimator.get_params(deep=False), extra),
            "fitted": {"n_features_in_": int(estimator.n_features_in_),
                       "feature_names_in_": None if names is None else [str(n) for n in names],
                       "log_marginal_likelihood_": _to_json(estimator.log_marginal_likelihood_),
                       "history_": _history_to_json(estimator.history_),
                       "polish_history_": _history_to_json(estimator.polish_history_),
                       **(fitted or {})}}
    categorical = categorical_columns.to_json(estimator)  # the levels of categorical columns, if any
    if categorical is not None:
        info["fitted"]["categorical"] = categorical
    scaling = bundle.Scaling(np.asarray(estimator.x_mean_, dtype=np.float64),
                             np.asarray(estimator.x_scale_, dtype=np.float64),
                             *(_target_value(getattr(estimator, name, default))
                               for name, default in (("y_mean_", 0.0), ("y_scale_", 1.0))))
    return bundle.save(path, estimator.model_, scaling, KIND, info, extra)


def _target_value(value):
    """y's mean or scale as the bundle keeps it: a float, or a float64 array for several outputs."""
    return np.asarray(value, dtype=np.float64) if np.ndim(value) else float(value)


def _restore_regressor(estimator, fitted: dict, model, scaling):
    """GPRegressor's part of ``load_estimator``: checks (ValueError) now, attributes in the
    returned callable (the targets' scaling and the fitted hyperparameters)."""
    fixed = estimator._fixed_noise(model.num_train)

    def finish():
        estimator.y_mean_, estimator.y_scale_ = scaling.y_mean, scaling.y_scale
        estimator._set_hyperparameters(fixed)
    return finish


def load_estimator(cls, path, device=None, restore=None):
    """A fitted ``cls`` (GPRegressor or a subclass) from a file of ``save_estimator``.

    device: where the model goes; None: the saved ``device`` setting ("auto": CUDA when present).
    restore: (estimator, info["fitted"], model, scaling) -> a callable, the estimator's own part:
    it checks its fitted values (ValueError/TypeError/KeyError become ModelFileError) and the
    callable sets its attributes once the common ones are set (default: GPRegressor's).
    Raises FileNotFoundError, or ModelFileError naming the path for a file that is not a saved
    estimator or whose settings, scaling or fitted values are invalid or do not fit its model.
    """
    from .sklearn import DTYPES  # late: flashgp.sklearn imports this module when saving
    found = bundle.load(path, device="cpu", kind=KIND)
    info, model = found.info, found.model
    try:
        if set(info) != {"estimator", "params", "fitted"} or not isinstance(info["fitted"], dict):
            raise ValueError("info: expected the keys estimator, params and fitted")
        params = _decode_params(info["params"], found.extra, set(cls().get_params(deep=False)))
        estimator = cls(**params)
        estimator._check_params()
        fitted = info["fitted"]
        d = bundle.input_columns(model)
        if fitted.get("n_features_in_") != d:
            raise ValueError(f"n_features_in_: {fitted.get('n_features_in_')!r:.20} for a model of {d} "
                             "input columns")
        if model.dtype != DTYPES[estimator.dtype]:
            raise ValueError(f"dtype: the setting {estimator.dtype!r} does not match the model's {model.dtype}")
        names = fitted.get("feature_names_in_")
        if names is not None and (not isinstance(names, list) or len(names) != d
                                  or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"feature_names_in_: expected {d} column names")
        lml = _from_json(fitted.get("log_marginal_likelihood_"))
        if isinstance(lml, bool) or not isinstance(lml, (int, float)):
            raise ValueError("log_marginal_likelihood_: expected a number")
        history = _history_from_json(fitted.get("history_"), "history_")
        polished = _history_from_json(fitted.get("polish_history_"), "polish_history_")
        if history is None:
            raise ValueError("history_: missing")
        columns = categorical_columns.from_json(fitted.get("categorical"), d)
        target = estimator._torch_device() if device is None else bundle.check_device(device)
        finish = (_restore_regressor if restore is None else restore)(estimator, fitted, model, found.scaling)
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise ModelFileError(found.path, f"not a usable saved {cls.__name__}: {err}") from None
    scaling = found.scaling
    estimator.x_mean_, estimator.x_scale_ = scaling.x_mean, scaling.x_scale
    estimator.model_ = model.to(target).eval()
    estimator.history_, estimator.n_iter_, estimator.polish_history_ = history, len(history), polished
    estimator.log_marginal_likelihood_ = float(lml)
    estimator.n_features_in_ = d
    if names is not None:
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
    if hasattr(estimator, "categorical"):  # GPRegressor (not GPClassifier)
        categorical_columns.set_fitted(estimator, columns)
    finish()
    return estimator
