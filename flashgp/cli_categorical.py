# `flashgp fit --categorical A,B`: CSV columns of levels (text) for a regression fit. Each is read
# as strings, its sorted levels kept in the model file, and encoded as codes 0..L-1 that one
# flashgp.kernels.Categorical kernel reads; the kernel is Scale(cont * Categorical * ...).
from __future__ import annotations

import numpy as np

from . import kernels
from .cli_parser import EXIT_USAGE, CLIError
from .estimator_methods import fitted_kernel
from .tables import InputError, numeric_columns

KINDS = ("exchangeable", "lowrank")
HINT = "; name columns of levels (text) with --categorical"
_NUS = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}


def check_options(args, targets: list[str]) -> None:
    """--categorical / --categorical-kind go with a regression fit of one target by method exact, basis or itergp."""
    if args.categorical is None:
        if args.categorical_kind is not None:
            raise CLIError("--categorical-kind: needs --categorical A,B (the columns of levels)", EXIT_USAGE)
        return
    if len(targets) > 1 or args.task != "regression":
        what = "several targets" if len(targets) > 1 else "--task classification"
        raise CLIError(f"--categorical: supported for regression of one target, not with {what}", EXIT_USAGE)
    if args.method not in (None, "exact", "basis", "itergp"):
        raise CLIError(f"--categorical: --method {args.method} moves or interpolates inducing inputs "
                       "continuously, which level codes do not allow; use --method exact, basis or itergp", EXIT_USAGE)


def chosen(args, features: list[str]) -> dict | None:
    """{"columns": names, "kind": kind} of --categorical (None without it); every name a feature."""
    if args.categorical is None:
        return None
    names = [name.strip() for name in args.categorical.split(",") if name.strip()]
    if not names:
        raise CLIError(f"--categorical: expected comma-separated column names, got {args.categorical!r}", EXIT_USAGE)
    for name in names:
        if name == args.target:
            raise CLIError(f"--categorical: {name!r} is the target; name input columns", EXIT_USAGE)
        if name not in features:
            raise CLIError(f"--categorical: {name!r} is not a feature column (features: "
                           f"{', '.join(map(repr, features[:10]))})", EXIT_USAGE)
    if len(set(names)) != len(names):
        raise CLIError(f"--categorical: a column is named twice in {args.categorical!r}", EXIT_USAGE)
    return {"columns": [f for f in features if f in names], "kind": args.categorical_kind or "exchangeable"}


def _cells(header, rows, name: str, arg: str) -> list[str]:
    """The stripped cells of column ``name``; a blank one is an InputError naming the line."""
    col = header.index(name)
    cells = [row[col].strip() if col < len(row) else "" for row in rows]
    for i, cell in enumerate(cells):
        if not cell:
            raise InputError(f"{arg}: categorical column {name!r} has an empty cell (line {i + 2}); "
                             "categorical columns need a level in every row")
    return cells


def add_levels(categorical: dict, header, rows, arg: str = "DATA") -> dict:
    """``categorical`` with "levels": the sorted distinct strings of each column (at least 2)."""
    levels = []
    for name in categorical["columns"]:
        found = sorted(set(_cells(header, rows, name, arg)))
        if len(found) < 2:
            shown = f" ({found[0]!r})" if found else ""
            raise InputError(f"--categorical: column {name!r} holds only one level{shown}; a categorical "
                             "column needs at least 2 (leave it out with --features)")
        levels.append(found)
    return {**categorical, "levels": levels}


def read_inputs(header, rows, features: list[str], categorical: dict | None, arg: str, hint: str = ""):
    """The inputs (n, d): numbers for the continuous features, level codes for the categorical
    ones; a level not in ``categorical["levels"]`` is an InputError naming ``arg``, column and level."""
    if categorical is None:
        return numeric_columns(header, rows, features, arg, hint)
    x = np.empty((len(rows), len(features)))
    continuous = [f for f in features if f not in categorical["columns"]]
    if continuous:
        x[:, [features.index(f) for f in continuous]] = numeric_columns(header, rows, continuous, arg, hint)
    for name, levels in zip(categorical["columns"], categorical["levels"]):
        codes = {level: code for code, level in enumerate(levels)}
        column = x[:, features.index(name)]
        for i, cell in enumerate(_cells(header, rows, name, arg)):
            if cell not in codes:
                shown = ", ".join(map(repr, levels[:20])) + (", ..." if len(levels) > 20 else "")
                raise InputError(f"{arg}: column {name!r} holds level {cell!r} (line {i + 2}), not seen at fit; "
                                 f"known levels: {shown}")
            column[i] = codes[cell]
    return x


def unscaled(stats: dict, features: list[str], categorical: dict | None) -> dict:
    """The standardization with the categorical columns left as codes (mean 0, std 1)."""
    if categorical is None:
        return stats
    x_mean, x_std = list(stats["x_mean"]), list(stats["x_std"])
    for name in categorical["columns"]:
        x_mean[features.index(name)], x_std[features.index(name)] = 0.0, 1.0
    return {**stats, "x_mean": x_mean, "x_std": x_std}


def make_kernel(name: str, features: list[str], categorical: dict, wrap=None):
    """Scale(base on the continuous columns (ARD) * Categorical(L) per categorical column);
    ``wrap`` (--method basis) turns base into its Hilbert-space approximation."""
    dims = [j for j, f in enumerate(features) if f not in categorical["columns"]]
    product = None
    if dims:
        options = {"ard_dims": len(dims), "active_dims": dims}
        product = kernels.Matern(nu=_NUS[name], **options) if name in _NUS else (
            kernels.RBF(**options) if name == "rbf" else kernels.RQ(**options))
        product = product if wrap is None else wrap(product)
    for column, levels in zip(categorical["columns"], categorical["levels"]):
        factor = kernels.Categorical(len(levels), kind=categorical["kind"], rank=1,
                                     active_dims=[features.index(column)])
        product = factor if product is None else product * factor
    return kernels.Scale(product)


def hyperparameters(model, features: list[str], categorical: dict) -> dict:
    """As ``flashgp.cli.hyperparameters`` (standardized units), lengthscales of the continuous
    features only, and per categorical column its levels and level covariance."""
    kernel = fitted_kernel(model)
    parts = list(kernel.base.kernels) if isinstance(kernel.base, kernels.Product) else [kernel.base]
    levels = [k for k in parts if isinstance(k, kernels.Categorical)]
    continuous = [k.base if isinstance(k, kernels.HilbertSpace) else k for k in parts
                  if not isinstance(k, kernels.Categorical)]
    names = [f for f in features if f not in categorical["columns"]]
    out = {"outputscale": float(kernel.outputscale.detach()),
           "lengthscale": dict(zip(names, continuous[0].lengthscale.detach().flatten().tolist())) if continuous else {},
           "noise": float(model.likelihood.noise.detach()), "noise_floor": model.likelihood.noise_floor,
           "mean": float(model.mean.constant.detach())}
    if continuous and hasattr(continuous[0], "alpha"):
        out["alpha"] = float(continuous[0].alpha.detach())
    out["categorical"] = {name: {"kind": k.kind, "levels": list(found),
                                 "level_covariance": k.covariance().detach().double().cpu().tolist()}
                          for name, found, k in zip(categorical["columns"], categorical["levels"], levels)}
    return out


def kernel_text(categorical: dict | None) -> str:
    """What the fit report adds to "Scale(kernel, ARD": the Categorical factors, if any."""
    if categorical is None:
        return ""
    return "".join(f" * Categorical({name})" for name in categorical["columns"])


def report_lines(hp: dict) -> list[str]:
    """The fit report's lines on the categorical columns (none without them)."""
    lines = []
    for name, part in hp.get("categorical", {}).items():
        cov = np.asarray(part["level_covariance"])
        scale = np.sqrt(np.diag(cov))
        corr = cov / np.outer(scale, scale)
        off = corr[~np.eye(len(cov), dtype=bool)]
        lines.append(f"  categorical {name!r}: {len(part['levels'])} levels, {part['kind']}; level correlations "
                     f"{off.min():.3g} to {off.max():.3g}")
    return lines


def check_saved(value, features: list[str], where: str) -> dict | None:
    """The "categorical" entry of a model file's info, checked (ValueError naming ``where``)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"columns", "levels", "kind"}:
        raise ValueError(f"{where}: categorical: expected the keys columns, levels and kind")
    columns, levels = value["columns"], value["levels"]
    if value["kind"] not in KINDS or not isinstance(columns, list) or not isinstance(levels, list) \
            or len(columns) != len(levels) or not columns or len(set(map(str, columns))) != len(columns) \
            or not all(isinstance(c, str) and c in features for c in columns):
        raise ValueError(f"{where}: categorical: expected feature columns, a list of levels each and a kind in {KINDS}")
    for name, found in zip(columns, levels):
        if not isinstance(found, list) or len(found) < 2 or not all(isinstance(v, str) and v for v in found) \
                or found != sorted(set(found)):
            raise ValueError(f"{where}: categorical: column {name!r}: expected at least 2 distinct sorted levels")
    return {"columns": list(columns), "levels": [list(f) for f in levels], "kind": value["kind"]}
