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


def save_cli_model(path, model, stats: dict, target: str, features: list[str], kernel: str) -> Path:
    """Write ``model`` and its standardization in one atomic write; returns the file written.

    stats: {"x_mean": (d,), "x_std": (d,), "y_mean": float, "y_std": float} (data units, as
    ``flashgp.tables.standardization`` gives). OSError / ValueError when it cannot be written.
    """
    scaling = bundle.Scaling(np.asarray(stats["x_mean"], dtype=np.float64),
                             np.asarray(stats["x_std"], dtype=np.float64),
                             float(stats["y_mean"]), float(stats["y_std"]))
    info = {"target": target, "features": list(features), "kernel": kernel}
    return bundle.save(path, model, scaling, "cli", info)


def _meta(scaling: bundle.Scaling, target: str, features: list, kernel) -> dict:
    """The dict predict works with (the sidecar's keys)."""
    return {"target": target, "features": list(features), "kernel": kernel,
            "x_mean": scaling.x_mean.tolist(), "x_std": scaling.x_scale.tolist(),
            "y_mean": scaling.y_mean, "y_std": scaling.y_scale}


def _check_names(info: dict, d: int, where: str) -> tuple[str, list[str]]:
    """(target, features) of ``info``: a string and ``d`` distinct strings other than it."""
    target, features = info.get("target"), info.get("features")
    if not isinstance(target, str) or not target:
        raise CLIFileError(f"{where}: target: expected a column name, got {target!r:.60}")
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise CLIFileError(f"{where}: features: expected a list of column names, got {features!r:.80}")
    if len(features) != d:
        raise CLIFileError(f"{where}: features: {len(features)} column names for a model of {d} "
                           f"input columns (the scaling and the model do not belong together)")
    if len(set(features)) != d or target in features:
        raise CLIFileError(f"{where}: features: expected distinct names other than the target, "
                           f"got {features!r:.80}")
    return target, features


def load_cli_model(path, device, warn) -> tuple[object, dict]:
    """(model on ``device``, meta) of a file written by ``flashgp fit --out``.

    meta: {"target", "features", "kernel", "x_mean", "x_std", "y_mean", "y_std"} (data units).
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
        target, features = _check_names(found.info, bundle.input_columns(found.model), where)
        if os.path.isfile(sidecar):
            warn(f"flashgp predict: note: ignoring {sidecar} (an earlier version's sidecar): "
                 f"{path} holds its own scaling")
        return found.model, _meta(found.scaling, target, features, found.info.get("kernel"))
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

