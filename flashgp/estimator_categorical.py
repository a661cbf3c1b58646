# Categorical input columns of GPRegressor: which columns hold levels (named, indexed or detected
# from a DataFrame's dtypes), the levels seen at fit, their codes 0..L-1 for the model, and the
# kernel: the continuous kernel times one flashgp.kernels.Categorical per such column.
"""Categorical columns for ``flashgp.sklearn.GPRegressor`` (its ``categorical`` and
``categorical_kind`` settings).

At fit each categorical column's levels are sorted (``categories_``) and the column is replaced
by its level codes 0..L-1 (as floats), which the model's ``Categorical`` kernels read; these
columns are never standardized. Predictions encode with the levels of the fit and refuse a
level they have not seen.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from . import kernels as fk
from .estimator_checks import check_numeric_columns

KINDS = ("exchangeable", "lowrank")
METHODS = ("exact", "basis", "itergp")  # the methods that take categorical columns
AUTO_KINDS = "ObUS"  # numpy dtype kinds of columns auto-detected as categorical (object, string, category, bool)
HINT = "; or name them in categorical= to treat them as levels"


@dataclass
class Columns:
    """The categorical columns of a fit: their indices (ascending) and the sorted levels of each."""
    indices: list = field(default_factory=list)
    levels: list = field(default_factory=list)


def _is_frame(X) -> bool:
    return hasattr(X, "columns") and hasattr(X, "dtypes") and hasattr(X, "iloc")


def _is_sparse(X) -> bool:
    return hasattr(X, "tocsr") or hasattr(X, "tocoo")


def _label(X, j: int) -> str:
    """How errors name column ``j`` of X: its DataFrame name, or its index."""
    return repr(X.columns[j]) if _is_frame(X) else str(j)


def _missing(value) -> bool:
    """None, NaN, pandas' NA or NaT."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def _show(value) -> str:
    """A level as errors show it: numpy scalars as the Python values they hold."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _column(X, j: int) -> np.ndarray:
    """Column ``j`` of X as an object array of Python/numpy scalars."""
    values = X.iloc[:, j] if _is_frame(X) else np.asarray(X, dtype=object)[:, j]
    return np.asarray(list(values), dtype=object)


def _sorted_levels(values) -> np.ndarray:
    """The distinct values, sorted (by type name first when the types do not compare)."""
    distinct = list({v: None for v in values})
    try:
        distinct.sort()
    except TypeError:
        distinct.sort(key=lambda v: (type(v).__name__, repr(v)))
    if all(isinstance(v, (str, np.str_)) for v in distinct) or not all(
            isinstance(v, (numbers.Number, np.bool_)) for v in distinct):
        return np.array(distinct, dtype=object)
    return np.asarray(distinct)


def _indices(spec, X, n_columns: int) -> list[int]:
    """The column indices named by ``categorical`` (None: the DataFrame's non-numeric columns)."""
    if spec is None:
        if not _is_frame(X):
            return []
        return [j for j, dtype in enumerate(X.dtypes) if getattr(dtype, "kind", "O") in AUTO_KINDS]
    if isinstance(spec, (str, bytes)) or not hasattr(spec, "__iter__"):
        raise TypeError(f"categorical: expected None or a list of column indices or names, got {spec!r:.60}")
    spec = list(spec)
    out = []
    for item in spec:
        if isinstance(item, (numbers.Integral, np.integer)) and not isinstance(item, (bool, np.bool_)):
            if not 0 <= item < n_columns:
                raise ValueError(f"categorical: column index {int(item)} is out of range for X with "
                                 f"{n_columns} columns")
            out.append(int(item))
        elif isinstance(item, str):
            if not _is_frame(X):
                raise ValueError(f"categorical: column names ({item!r}) need a pandas DataFrame X; "
                                 "with an array give column indices")
            names = list(X.columns)
            if item not in names:
                raise ValueError(f"categorical: {item!r} is not a column of X (columns: "
                                 f"{', '.join(map(repr, names[:10]))})")
            out.append(names.index(item))
        else:
            raise TypeError(f"categorical: expected column indices or names, got {item!r:.40}")
    if len(set(out)) != len(out):
        raise ValueError(f"categorical: a column is given twice: {spec!r:.80}")
    return sorted(out)


def _check_settings(estimator, outputs: bool) -> None:
    if estimator.method not in METHODS:
        raise ValueError(f"categorical: method={estimator.method!r} moves or interpolates inducing inputs "
                         "continuously, which level codes do not allow; use method='exact', 'basis' or "
                         "'itergp' with categorical columns")
    if outputs:
        raise ValueError("categorical: categorical columns are not supported with several outputs "
                         "(2-D y, a multitask model); fit one GPRegressor per target column, or encode "
                         "the levels as numbers and pass categorical=[]")


def _encode(X, indices: list[int], levels: list):
    """X with its categorical columns replaced by level codes (float64): a DataFrame stays one
    (names kept for scikit-learn's checks), anything else becomes a float64 array; a level not
    in ``levels`` (at predict) or a missing value is refused, naming the column."""
    codes = {}
    for j, known in zip(indices, levels):
        values = _column(X, j)
        where = f"column {_label(X, j)}"
        lookup = {v: code for code, v in enumerate(known)}
        out = np.empty(len(values))
        for i, v in enumerate(values):
            if _missing(v):
                raise ValueError(f"X: {where} holds a missing value (NaN/None) in row {i}; categorical "
                                 "columns need a level in every row")
            try:
                out[i] = lookup[v]
            except (KeyError, TypeError):
                shown = ", ".join(map(_show, list(known)[:20])) + (", ..." if len(known) > 20 else "")
                raise ValueError(f"X: {where} holds level {_show(v)}, not seen at fit; known levels: "
                                 f"{shown}") from None
        codes[j] = out
    if _is_frame(X):
        frame = X.copy()
        for j, values in codes.items():
            frame.isetitem(j, values)
        check_numeric_columns(frame, HINT)
        return frame
    array = np.asarray(X, dtype=object) if not isinstance(X, np.ndarray) else X
    if array.ndim != 2:
        raise ValueError(f"X: expected a 2-D array (n_samples, n_features), got shape {array.shape}")
    result = np.empty(array.shape, dtype=np.float64)
    for j in range(array.shape[1]):
        if j in codes:
            result[:, j] = codes[j]
            continue
        try:
            result[:, j] = np.asarray(array[:, j], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"X: column {j} holds non-numeric values; encode them as numbers first{HINT}") from None
    return result


def fit_columns(estimator, X, outputs: bool):
    """(X encoded, Columns) for ``GPRegressor.fit``: ValueError naming the argument for a bad
    ``categorical``, a column with one level or a missing value, a method not in METHODS,
    or 2-D targets. Without categorical columns X comes back as given (numbers checked)."""
    kind = estimator.categorical_kind
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"categorical_kind: expected one of {KINDS}, got {kind!r:.40}")
    if estimator.categorical is None and not _is_frame(X):
        return X, Columns()  # an array: no categorical columns unless named (X as scikit-learn checks it)
    given = X
    if not _is_frame(X):
        if _is_sparse(X):
            if _indices(estimator.categorical, X, X.shape[1]):
                raise ValueError("X: categorical columns need a dense X (an array or a DataFrame), got a sparse matrix")
            return X, Columns()
        X = np.asarray(X, dtype=object)
        if X.ndim != 2:
            raise ValueError(f"X: categorical columns need a 2-D X (n_samples, n_features), got shape {X.shape}")
    indices = _indices(estimator.categorical, X, X.shape[1])
    if not indices:
        check_numeric_columns(given, HINT)
        return given, Columns()
    _check_settings(estimator, outputs)
    levels = []
    for j in indices:
        values = _column(X, j)
        bad = [i for i, v in enumerate(values) if _missing(v)]
        if bad:
            raise ValueError(f"X: categorical column {_label(X, j)} holds a missing value (NaN/None) in row "
                             f"{bad[0]}; categorical columns need a level in every row")
        found = _sorted_levels(values)
        if len(found) < 2:
            raise ValueError(f"categorical: column {_label(X, j)} holds only one level ({_show(found[0])}) at fit; "
                             "a categorical column needs at least 2 (drop the column)")
        levels.append(found)
    return _encode(X, indices, levels), Columns(indices, levels)


def predict_columns(estimator, X):
    """X for predict/sample_y with the categorical columns encoded by the levels of the fit."""
    indices = list(getattr(estimator, "categorical_columns_", []))
    if not indices:
        return X
    expected = getattr(estimator, "feature_names_in_", None)
    if _is_frame(X) and expected is not None and [str(c) for c in X.columns] != [str(c) for c in expected]:
        raise ValueError(f"X: the feature names should match those that were passed during fit, in the same "
                         f"order: expected {list(expected)!r:.200}, got {list(X.columns)!r:.200}")
    n_columns = X.shape[1] if _is_frame(X) else np.shape(X)[1] if np.ndim(X) == 2 else -1
    if n_columns != estimator.n_features_in_:
        raise ValueError(f"X has {n_columns} features, but {type(estimator).__name__} is expecting "
                         f"{estimator.n_features_in_} features as input.")
    return _encode(X, indices, estimator.categories_)


def unscaled(x_mean: np.ndarray, x_scale: np.ndarray, columns: Columns):
    """The input scaling with the categorical columns left as they are (mean 0, scale 1)."""
    x_mean, x_scale = np.array(x_mean, dtype=np.float64), np.array(x_scale, dtype=np.float64)
    x_mean[columns.indices], x_scale[columns.indices] = 0.0, 1.0
    return x_mean, x_scale


def make_kernel(estimator, n_features: int, columns: Columns, wrap=None) -> fk.Kernel:
    """The model's kernel: ``estimator._make_kernel`` without categorical columns; else
    Scale(cont * Categorical(L_1) * ...), cont the named kernel on the continuous columns (none
    when every column is categorical). A kernel object is used as given times the Categorical
    kernels (no output scale added), or alone when it already holds Categorical kernels.
    ``wrap`` (method "basis"): applied to the named kernel's cont, Scale(wrap(cont) * ...)."""
    if not columns.indices:
        if wrap is None or not isinstance(estimator.kernel, str):
            return estimator._make_kernel(n_features)
        return fk.Scale(wrap(estimator._make_kernel(n_features, scaled=False)))
    kind = estimator.categorical_kind
    factors = [fk.Categorical(len(levels), kind=kind, rank=1, active_dims=[j])
               for j, levels in zip(columns.indices, columns.levels)]
    continuous = [j for j in range(n_features) if j not in columns.indices]
    if isinstance(estimator.kernel, fk.Kernel):
        given = estimator._make_kernel(n_features)
        if any(isinstance(m, fk.Categorical) for m in given.modules()):
            return given
        product = given
        for factor in factors:
            product = product * factor
        return product
    product = estimator._make_kernel(len(continuous), scaled=False, active_dims=continuous) if continuous else None
    if product is not None and wrap is not None:
        product = wrap(product)
    for factor in factors:
        product = factor if product is None else product * factor
    return fk.Scale(product)


def set_fitted(estimator, columns: Columns | None) -> None:
    """``categorical_columns_`` (indices) and ``categories_`` (sorted levels per such column)."""
    columns = columns or Columns()
    estimator.categorical_columns_ = list(columns.indices)
    estimator.categories_ = list(columns.levels)


def continuous_lengthscales(estimator) -> None:
    """``lengthscale_`` (n_features,) in data units for a kernel Scale(cont * Categorical ...) with
    a stationary cont on the continuous columns; NaN for the categorical columns."""
    kernel = estimator.model_.kernel
    if not getattr(estimator, "categorical_columns_", None) or not isinstance(kernel, fk.Scale):
        return
    cont = [m for m in kernel.base.modules() if isinstance(m, fk.Stationary) and m.active_dims is not None]
    if len(cont) != 1:
        return
    dims = cont[0].active_dims.tolist()
    out = np.full(estimator.n_features_in_, np.nan)
    ls = cont[0].lengthscale.detach().cpu().double().numpy().reshape(-1)
    out[dims] = np.broadcast_to(ls, (len(dims),)) * estimator.x_scale_[dims]
    estimator.lengthscale_ = out


# ----- files: levels as JSON ------------------------------------------------------------------
_TAGS = {"str": str, "int": int, "float": float, "bool": bool}


def _level_to_json(value, column) -> list:
    if isinstance(value, (bool, np.bool_)):
        return ["bool", bool(value)]
    if isinstance(value, (numbers.Integral, np.integer)):
        return ["int", int(value)]
    if isinstance(value, (numbers.Real, np.floating)):
        return ["float", repr(float(value))]  # repr round-trips every float64, inf included
    if isinstance(value, str):
        return ["str", str(value)]
    raise TypeError(f"categories_: cannot save the level {value!r:.40} of column {column} (type "
                    f"{type(value).__name__}); saved levels are strings, numbers or bools")


def to_json(estimator) -> dict | None:
    """The categorical part of a saved estimator (None without categorical columns)."""
    indices = list(getattr(estimator, "categorical_columns_", []))
    if not indices:
        return None
    return {"columns": indices,
            "levels": [[_level_to_json(v, j) for v in levels] for j, levels in zip(indices, estimator.categories_)]}


def from_json(value, n_features: int) -> Columns:
    """The inverse of ``to_json`` (ValueError for anything malformed)."""
    if value is None:
        return Columns()
    if not isinstance(value, dict) or set(value) != {"columns", "levels"}:
        raise ValueError("categorical: expected a dict with the keys columns and levels")
    indices, levels = value["columns"], value["levels"]
    if not isinstance(indices, list) or not isinstance(levels, list) or len(indices) != len(levels) or not all(
            isinstance(j, int) and not isinstance(j, bool) and 0 <= j < n_features for j in indices) \
            or indices != sorted(set(indices)):
        raise ValueError(f"categorical: expected distinct ascending column indices below {n_features}, "
                         "one list of levels each")
    out = []
    for j, tagged in zip(indices, levels):
        if not isinstance(tagged, list) or len(tagged) < 2:
            raise ValueError(f"categorical: column {j}: expected a list of at least 2 levels")
        values = []
        for item in tagged:
            if not (isinstance(item, list) and len(item) == 2 and item[0] in _TAGS):
                raise ValueError(f"categorical: column {j}: malformed level {item!r:.40}")
            tag, raw = item
            if tag == "float" and isinstance(raw, str):
                values.append(float(raw))
            elif tag != "float" and type(raw) is _TAGS[tag]:
                values.append(raw)
            else:
                raise ValueError(f"categorical: column {j}: malformed level {item!r:.40}")
        if len({(type(v).__name__, v) for v in values}) != len(values):
            raise ValueError(f"categorical: column {j}: repeated levels")
        out.append(_sorted_levels(values))
    return Columns(list(indices), out)
