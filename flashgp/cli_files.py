# The command line's model files: `flashgp fit --out` writes one bundle (flashgp.bundle, kind
# "cli") holding the model, the column names and the standardization; `flashgp predict` reads
# it, and still reads the model + MODEL.json sidecar pairs of earlier versions, cross-checked.
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import bundle

METADATA_FORMAT = "flashgp-cli-standardization/1"  # the sidecar of earlier versions
METADATA_KEYS = ("target", "features", "x_mean", "x_std", "y_mean", "y_std")
STALE_SECONDS = 1.0  # a sidecar older than its model by more than this was not written with it


class CLIFileError(ValueError):
    """A model file (or sidecar) ``flashgp predict`` cannot use; the message starts with MODEL."""


def sidecar_of(path) -> str:
    """The sidecar path of earlier versions: MODEL + '.json'."""
    return os.fspath(path) + ".json"


def save_cli_model(path, model, stats: dict, target: str | list[str], features: list[str], kernel: str,
                   classes: list | None = None, categorical: dict | None = None) -> Path:
    """Write ``model`` and its standardization in one atomic write; returns the file written.

    stats: {"x_mean": (d,), "x_std": (d,), "y_mean": float, "y_std": float} (data units, as
    ``flashgp.tables.standardization`` gives; a classifier's y_mean 0 and y_std 1). classes: a
    classifier's labels in the order of its probability columns (strings or numbers), stored in
    the bundle's info with "task": "classification"; None for regression (the info of earlier
    versions, which has neither key). OSError / ValueError when it cannot be written.
    A multitask model's ``target`` is the list of its t target columns, its stats' y_mean and y_std
    (t,) lists (``flashgp.cli_multitask``). categorical: {"columns", "levels", "kind"} of
    ``flashgp fit --categorical`` (``flashgp.cli_categorical``), kept in the info; None without it.
    """
    scaling = bundle.Scaling(np.asarray(stats["x_mean"], dtype=np.float64), np.asarray(stats["x_std"], dtype=np.float64),
                             *(float(stats[k]) if np.ndim(stats[k]) == 0 else np.asarray(stats[k], dtype=np.float64)
                               for k in ("y_mean", "y_std")))
    info = {"target": target if isinstance(target, str) else list(target), "features": list(features),
            "kernel": kernel}
    if categorical is not None:
        info["categorical"] = categorical
    if classes is not None:
        info.update(task="classification", classes=check_classes(list(classes), model_classes(model), "classes"))
    return bundle.save(path, model, scaling, "cli", info)


def model_classes(model) -> int | None:
    """The number of classes of a classification model (DirichletGP, SVGP with a Bernoulli or
    Softmax likelihood), None for a regression model."""
    count = getattr(model, "num_classes", None)
    return None if count is None else int(count)


def check_classes(classes, count: int | None, where: str) -> list:
    """``classes`` if it is a list of ``count`` distinct class labels, all strings or all
    (finite, non-bool) numbers, sorted as ``numpy.unique`` sorts them; ValueError naming
    ``where`` otherwise (also when ``count`` is None: the model is no classifier)."""
    if count is None:
        raise ValueError(f"{where}: class labels for a model that is not a classifier")
    strings = isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    numbers = isinstance(classes, list) and all(
        isinstance(c, int) and not isinstance(c, bool) or isinstance(c, float) and np.isfinite(c) for c in classes)
    if not (strings or numbers) or not classes:
        raise ValueError(f"{where}: expected a list of strings or of finite numbers, got {classes!r:.80}")
    if len(classes) != count:
        raise ValueError(f"{where}: {len(classes)} labels for a model of {count} classes")
    if len(set(classes)) != count or list(classes) != sorted(classes):
        raise ValueError(f"{where}: expected distinct labels in sorted order, got {classes!r:.80}")
    return list(classes)


def _meta(scaling: bundle.Scaling, target: str | list, features: list, kernel, classes: list | None = None,
          categorical: dict | None = None) -> dict:
    """The dict predict works with (the sidecar's keys, the task and a classifier's classes; a
    multitask model's target the list of its columns, y_mean and y_std (t,) arrays)."""
    d = len(features)
    return {"target": target, "features": list(features), "kernel": kernel,
            "x_mean": scaling.x_mean[:d].tolist(), "x_std": scaling.x_scale[:d].tolist(),
            "y_mean": scaling.y_mean, "y_std": scaling.y_scale,
            "task": "regression" if classes is None else "classification", "classes": classes,
            "categorical": categorical}


def _task_classes(info: dict, model, where: str) -> list | None:
    """The class labels of a classifier's bundle (info "task": "classification"), None for a
    regression bundle (no "task", as those of earlier versions, or "regression")."""
    task = info.get("task", "regression")
    if task == "regression":
        if model_classes(model) is not None:
            raise CLIFileError(f"{where}: a classification model ({type(model).__name__}) without its "
                               "class labels")
        return None
    if task != "classification":
        raise CLIFileError(f"{where}: task: expected 'regression' or 'classification', got {task!r:.40}")
    try:
        return check_classes(info.get("classes"), model_classes(model), f"{where}: classes")
    except ValueError as err:
        raise CLIFileError(str(err)) from None


def _check_names(info: dict, d: int, where: str, tasks: int | None = None) -> tuple[str | list[str], list[str]]:
    """(target, features) of ``info``: a string (a list of ``tasks`` distinct strings for a multitask
    model) and ``d`` distinct strings other than it."""
    target, features = info.get("target"), info.get("features")
    names = target if tasks is not None and isinstance(target, list) else [target]
    if not all(isinstance(name, str) and name for name in names) or tasks is not None and (
            len(names) != tasks or len(set(names)) != tasks):
        expected = "a column name" if tasks is None else f"{tasks} distinct column names (one per model output)"
        raise CLIFileError(f"{where}: target: expected {expected}, got {target!r:.80}")
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise CLIFileError(f"{where}: features: expected a list of column names, got {features!r:.80}")
    if len(features) != d:
        raise CLIFileError(f"{where}: features: {len(features)} column names for a model of {d} "
                           f"input columns (the scaling and the model do not belong together)")
    if len(set(features)) != d or set(names) & set(features):
        raise CLIFileError(f"{where}: features: expected distinct names other than the target, "
                           f"got {features!r:.80}")
    return target, features


def load_cli_model(path, device, warn) -> tuple[object, dict]:
    """(model on ``device``, meta) of a file written by ``flashgp fit --out``.

    meta: {"target", "features", "kernel", "x_mean", "x_std", "y_mean", "y_std"} (data units),
    "task" ("regression" or "classification"), "classes" (a classifier's labels, else None) and
    "categorical" (the columns, sorted levels and kind of ``fit --categorical``, else None);
    a MultitaskGP's "target" is the list of its t columns, "y_mean" / "y_std" (t,) arrays.
    A bundle carries it inside; a bare model file (earlier versions) needs its sidecar
    MODEL.json, which is validated (finite values, positive scales, one per model column)
    and cross-checked: a "model_sha256" in it must match the model file; without one,
    ``warn(text)`` is called, with a stronger text when the sidecar is older than the model.
    Raises CLIFileError (message starting with "MODEL:") for anything unusable.
    """
    if not os.path.isfile(path):
        raise CLIFileError(f"MODEL: no such file: {path}")
    try:
        found = bundle.load(path, device=device)
    except (OSError, ValueError) as err:  # ModelFileError is a ValueError
        raise CLIFileError(f"MODEL: cannot load {path}: {err}") from None
    sidecar = sidecar_of(path)
    if found.kind == "cli":
        where = f"MODEL: {path}"
        tasks = getattr(found.model, "num_tasks", None)  # a MultitaskGP: a target per task
        target, features = _check_names(found.info, bundle.input_columns(found.model), where, tasks)
        if np.shape(found.scaling.y_mean) != (() if tasks is None else (tasks,)):
            raise CLIFileError(f"{where}: scaling: y_mean has shape {np.shape(found.scaling.y_mean)} for a "
                               f"model of {tasks or 1} output(s)")
        classes = _task_classes(found.info, found.model, where)
        from .cli_categorical import check_saved  # it imports the command line's parser
        try:
            categorical = check_saved(found.info.get("categorical"), features, where)
        except ValueError as err:
            raise CLIFileError(str(err)) from None
        if os.path.isfile(sidecar):
            warn(f"flashgp predict: note: ignoring {sidecar} (an earlier version's sidecar): "
                 f"{path} holds its own scaling")
        return found.model, _meta(found.scaling, target, features, found.info.get("kernel"), classes, categorical)
    if found.kind is not None:
        raise CLIFileError(f"MODEL: {path} was written by GPRegressor.save (kind {found.kind!r}); "
                           "load it with flashgp.sklearn.GPRegressor.load")
    return found.model, _legacy_meta(path, sidecar, found.model, warn)


def _legacy_meta(path, sidecar: str, model, warn) -> dict:
    """The validated, cross-checked sidecar of a bare model file (see ``load_cli_model``)."""
    if not os.path.isfile(sidecar):
        raise CLIFileError(f"MODEL: {path} is a bare model without the data scaling, and its sidecar "
                           f"{sidecar} is missing (files of 'flashgp fit --out' hold the scaling)")
    try:
        with open(sidecar, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError, RecursionError) as err:
        raise CLIFileError(f"MODEL: cannot read {sidecar}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT or any(
            key not in meta for key in METADATA_KEYS):
        raise CLIFileError(f"MODEL: {sidecar} is not flashgp fit metadata ({METADATA_FORMAT} with "
                           f"{', '.join(METADATA_KEYS)})")
    where = f"MODEL: {sidecar}"
    d = bundle.input_columns(model)
    target, features = _check_names(meta, d, where)
    try:
        scaling = bundle.Scaling(bundle.check_numbers(meta["x_mean"], d, f"{where}: x_mean"),
                                 bundle.check_numbers(meta["x_std"], d, f"{where}: x_std", positive=True),
                                 float(bundle.check_numbers(meta["y_mean"], None, f"{where}: y_mean")),
                                 float(bundle.check_numbers(meta["y_std"], None, f"{where}: y_std",
                                                            positive=True)))
    except ValueError as err:
        raise CLIFileError(str(err)) from None
    digest = meta.get("model_sha256")
    if digest is not None:
        if digest != file_sha256(path):
            raise CLIFileError(f"MODEL: {sidecar} belongs to another model file: its model_sha256 "
                               f"does not match {path}")
    else:
        older = os.path.getmtime(path) - os.path.getmtime(sidecar) > STALE_SECONDS
        warn(f"flashgp predict: warning: {sidecar} (an earlier version's sidecar) records no digest "
             f"of {path}, so flashgp cannot check that the two belong together"
             + ("; the sidecar is OLDER than the model, as when saving a new model failed to update "
                "it: predictions may be off by the old scaling" if older else "")
             + "; refit with 'flashgp fit --out' to get one file that holds both")
    return _meta(scaling, target, features, meta.get("kernel"))


def file_sha256(path) -> str:
    """The SHA-256 hex digest of the file at ``path`` (read in 1 MB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

