# CSV tables for the command line: reading numeric columns, standardizing them for a GP,
# predicting back in the target's units, writing predictions and scoring them.
from __future__ import annotations

import csv
import math
import os

import numpy as np
import torch

from .outputs import atomic_output

Z95 = 1.959963984540054  # half-width of the central 95% interval of a normal, in std units
PREDICT_CHUNK = 2048  # test rows predicted at a time (bounds the n x m cross-covariance)
PREDICTION_COLUMNS = ("mean", "std", "lower", "upper")


class InputError(ValueError):
    """Unusable input data or files; the message starts with the argument it came from."""


def read_table(path: str, arg: str) -> tuple[list[str], list[list[str]]]:
    """The header (k,) and data rows (n, k) of the CSV file ``path``, as strings.

    Blank lines are skipped; ``arg`` names the command-line argument in error messages.
    """
    if os.path.isdir(path):
        raise InputError(f"{arg}: {path} is a directory, expected a CSV file")
    if not os.path.isfile(path):
        raise InputError(f"{arg}: no such file: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            rows = [row for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{arg}: cannot read {path}: {err}") from None
    if not any(header):
        raise InputError(f"{arg}: {path} is empty (expected a header line with column names)")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise InputError(f"{arg}: {path} has duplicate column names: {', '.join(duplicates)}")
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InputError(f"{arg}: {path} line {line} has {len(row)} fields, the header {len(header)}")
    return header, rows


def check_columns(header: list[str], wanted: list[str], arg: str, path: str) -> None:
    """Every name in ``wanted`` must be a column of ``header``."""
    missing = [name for name in wanted if name not in header]
    if missing:
        raise InputError(f"{arg}: column(s) {', '.join(map(repr, missing))} not in {path} "
                         f"(columns: {', '.join(header)})")


def numeric_columns(header: list[str], rows: list[list[str]], names: list[str], arg: str,
                    hint: str = "") -> np.ndarray:
    """The columns ``names`` as float64 (n, len(names)); text, blanks and NaN/inf are errors."""
    out = np.empty((len(rows), len(names)))
    bad = []
    for j, name in enumerate(names):
        col = header.index(name)
        for i, row in enumerate(rows):
            try:
                out[i, j] = float(row[col])
            except ValueError:
                out[i, j] = math.nan
            if not math.isfinite(out[i, j]):
                bad.append(f"{name!r} (line {i + 2}: {row[col]!r})")
                break
    if bad:
        raise InputError(f"{arg}: non-numeric or missing values in column(s) {', '.join(bad)}{hint}")
    return out


def select_features(header: list[str], target: str, features: str | None, path: str) -> list[str]:
    """Feature names: ``features`` (comma-separated) or else every column but ``target``."""
    check_columns(header, [target], "--target", path)
    if features is None:
        chosen = [name for name in header if name != target]
        if not chosen:
            raise InputError(f"DATA: {path} has no columns besides the target {target!r}")
        return chosen
    chosen = [name.strip() for name in features.split(",") if name.strip()]
    if not chosen:
        raise InputError(f"--features: expected comma-separated column names, got {features!r}")
    check_columns(header, chosen, "--features", path)
    if target in chosen:
        raise InputError(f"--features: the target column {target!r} cannot also be a feature")
    if len(set(chosen)) != len(chosen):
        raise InputError(f"--features: a column is named twice in {features!r}")
    return chosen


def standardization(x: np.ndarray, y: np.ndarray) -> dict:
    """Means and standard deviations of x (n, d) and y (n,), JSON-able; a (numerically)
    constant column gets the spread 1 (see ``spread``).

    Returns ``{"x_mean": [d], "x_std": [d], "y_mean": float, "y_std": float}``.
    """
    return {"x_mean": x.mean(axis=0).tolist(), "x_std": spread(x).tolist(),
            "y_mean": float(y.mean()), "y_std": float(spread(y[:, None])[0])}


def spread(values: np.ndarray) -> np.ndarray:
    """Standard deviations (d,) of the columns of values (n, d), 1 where a column is constant
    up to rounding (a spread of at most 10 eps times its mean's magnitude, or 0).

    Computed on the values divided by their largest magnitude, so values near the float64 range
    do not overflow when squared; the test is relative, so a column in tiny units (1e-200) is
    scaled like any other instead of being taken for a constant.
    """
    peak = np.abs(values).max(axis=0)
    peak = np.where(peak > 0, peak, 1.0)
    std = (values / peak).std(axis=0) * peak
    tiny = 10 * np.finfo(np.float64).eps * np.abs(values.mean(axis=0))
    return np.where((std > tiny) & (std > 0), std, 1.0)


def to_model_dtype(values: np.ndarray, dtype: torch.dtype, arg: str, device=None,
                   fix: str = "rescale the column", error: type = InputError) -> torch.Tensor:
    """``values`` (float64, finite) as a tensor of ``dtype`` on ``device``; ``error`` (a
    ValueError class) naming ``arg`` when values overflow that dtype (1e39 in float32) instead of
    turning into inf (and being reported as "not finite" later)."""
    limit = torch.finfo(dtype).max
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak > limit:
        raise error(f"{arg}: values up to {peak:.3g} (in the model's units) overflow "
                    f"{str(dtype).replace('torch.', '')}, the model's dtype (largest {limit:.3g}); {fix}")
    return torch.as_tensor(values, dtype=dtype, device=device)


def scaled_inputs(x: np.ndarray, stats: dict, dtype: torch.dtype, device=None, arg: str = "DATA") -> torch.Tensor:
    """Raw inputs (m, d) standardized with ``stats`` as a tensor (m, d) of ``dtype``; InputError
    naming ``arg`` when a standardized value overflows ``dtype`` (far outside the training range)."""
    z = (x - np.asarray(stats["x_mean"])) / np.asarray(stats["x_std"])
    return to_model_dtype(z, dtype, arg, device, "these rows lie far outside the training inputs' range")


def predict_original_units(model, x: np.ndarray, stats: dict, arg: str = "DATA") -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and std (m,) of ``model`` (a GPModel) at raw inputs x (m, d), noise
    included, in target units; ``arg`` names x's source in errors."""
    means, stds = [], []
    for start in range(0, x.shape[0], PREDICT_CHUNK):
        pred = model.predict(scaled_inputs(x[start:start + PREDICT_CHUNK], stats, model.dtype, model.device, arg))
        means.append(pred.mean.detach().double().cpu().numpy())
        stds.append(pred.stddev.detach().double().cpu().numpy())
    mean, std = np.concatenate(means), np.concatenate(stds)
    return mean * stats["y_std"] + stats["y_mean"], std * stats["y_std"]


def heldout_metrics(mean: np.ndarray, std: np.ndarray, y: np.ndarray) -> dict:
    """RMSE, mean negative log predictive density and 95% interval coverage of (m,) predictions.

    Computed without squaring data-unit values, so targets near the float64 range (1e160) or
    tiny ones (1e-160) give finite metrics.
    """
    std = np.maximum(std, np.finfo(np.float64).tiny)
    resid = y - mean
    peak = float(np.abs(resid).max()) if resid.size else 0.0
    rmse = peak * float(np.sqrt(np.mean((resid / peak) ** 2))) if peak > 0 else 0.0
    nll = 0.5 * math.log(2 * math.pi) + np.log(std) + 0.5 * (resid / std) ** 2
    return {"n": int(y.size), "rmse": rmse, "nll": float(np.mean(nll)),
            "coverage95": float(np.mean(np.abs(resid) <= Z95 * std))}


def write_predictions(path: str, header: list[str], rows: list[list[str]], mean: np.ndarray,
                      std: np.ndarray, targets: list[str] | None = None) -> list[str]:
    """Write the input rows plus mean, std, lower, upper (95%) to ``path`` atomically (a
    temporary file in the same folder, fsync, rename); returns the new names.

    Several targets (``targets``, mean and std (m, t)): those four columns per target A, named
    mean_A, std_A, lower_A, upper_A. A new column whose name is already an input column gets
    the prefix ``predicted_``.
    """
    new = list(PREDICTION_COLUMNS) if targets is None else [f"{c}_{a}" for a in targets for c in PREDICTION_COLUMNS]
    names = [c if c not in header else f"predicted_{c}" for c in new]
    mean, std = np.asarray(mean).reshape(len(rows), -1), np.asarray(std).reshape(len(rows), -1)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # a temporary file renamed over ``path``: a full disk leaves the previous file whole
        with atomic_output(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header + names)
            for row, ms, ss in zip(rows, mean, std):
                writer.writerow(row + [f"{v:.10g}" for m, s in zip(ms, ss) for v in (m, s, m - Z95 * s, m + Z95 * s)])
    except OSError as err:
        raise InputError(f"--out: cannot write {path}: {err.strerror or err}") from None
    return names
