# Model bundles: one file that holds a model together with the scaling that maps data units to
# the model's units, and the settings of what wrote it (the command line or GPRegressor).
# The file is a flashgp.io archive (config.json + weights-only tensors.pt, no pickled code,
# written atomically in one write) whose config.json has the format name "flashgp.bundle";
# fg.load refuses it (it is not a bare model), flashgp.bundle.load reads both kinds.
from __future__ import annotations

import io as _io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ModelFileError
from .io import (BUNDLE_FORMAT, CONFIG_NAME, FORMAT as MODEL_FORMAT, TENSORS_NAME, build_model, check_device,
                 existing_file,
                 check_model_config, check_path, first_line, flashgp_version, load_plain_tensors,
                 model_config, parse_json, read_archive, registered_name, write_archive)
from .models import GPModel
from .outputs import output_target, renamed_error

FORMAT = BUNDLE_FORMAT
FORMAT_VERSION = 1
KIND = "flashgp model bundle"
MAX_CONFIG_BYTES = 1 << 24  # the scaling and settings grow with the features (16 MB: 100,000s)
KINDS = ("cli", "estimator")  # what wrote the bundle: `flashgp fit --out`, GPRegressor.save
_KEYS = {"format", "format_version", "flashgp_version", "kind", "model", "scaling", "info"}
_TENSOR_GROUPS = {"model", "solver_state", "extra"}
SCALING_KEYS = ("x_mean", "x_scale", "y_mean", "y_scale")


# ----- the scaling ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scaling:
    """The affine maps between data units and a model's units.

    Model inputs are ``(x - x_mean) / x_scale`` and data-unit targets ``y_model * y_scale + y_mean``
    (standard deviations scale by ``y_scale``, variances by ``y_scale**2``).

    Attributes:
        x_mean: (d,) float64 array. x_scale: (d,) float64 array, every entry finite and > 0.
        y_mean: float, or a (t,) float64 array for t outputs (a multitask model, each column
            standardized on its own). y_scale: likewise, finite and > 0.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float | np.ndarray
    y_scale: float | np.ndarray

    def to_config(self) -> dict:
        """JSON-ready lists and floats (Python's float repr round-trips every float64 exactly)."""
        def target(value):
            return [float(v) for v in value] if np.ndim(value) else float(value)
        return {"x_mean": [float(v) for v in self.x_mean], "x_scale": [float(v) for v in self.x_scale],
                "y_mean": target(self.y_mean), "y_scale": target(self.y_scale)}

    @classmethod
    def from_config(cls, config, d: int, where: str) -> Scaling:
        """The scaling in ``config`` (``to_config`` output) for a model of ``d`` input columns.

        ValueError naming ``where`` and the entry unless every value is a finite number, the
        scales are > 0 and the arrays have ``d`` entries.
        """
        if not isinstance(config, dict) or set(config) != set(SCALING_KEYS):
            got = sorted(config)[:10] if isinstance(config, dict) else type(config).__name__
            raise ValueError(f"{where}: expected the keys {list(SCALING_KEYS)}, got {got}")
        x_mean = check_numbers(config["x_mean"], d, f"{where}: x_mean")
        x_scale = check_numbers(config["x_scale"], d, f"{where}: x_scale", positive=True)
        outputs = len(config["y_mean"]) if isinstance(config["y_mean"], list) and config["y_mean"] else None
        y_mean = check_numbers(config["y_mean"], outputs, f"{where}: y_mean")
        y_scale = check_numbers(config["y_scale"], outputs, f"{where}: y_scale", positive=True)
        return cls(x_mean, x_scale, *((float(y_mean), float(y_scale)) if outputs is None else (y_mean, y_scale)))


def check_numbers(value, length: int | None, where: str, positive: bool = False):
    """A JSON value read from a file as a float64 array of ``length`` entries (None: one
    number), checked to be finite (and > 0 if ``positive``); ValueError naming ``where`` else."""
    scalar = length is None
    items = [value] if scalar else value
    if not isinstance(items, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        expected = "a number" if scalar else f"a list of {length} numbers"
        raise ValueError(f"{where}: expected {expected}, got {value!r:.80}")
    if not scalar and len(items) != length:
        raise ValueError(f"{where}: expected {length} entries (one per input column of the model), "
                         f"got {len(items)}")
    try:
        array = np.array(items, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        array = np.array([math.inf])
    bad = ~np.isfinite(array) | ((array <= 0) if positive else False)
    if bad.any():
        i = int(np.argmax(bad))
        expected = "a finite number" + (" > 0" if positive else "")
        at = "" if scalar else f" at entry {i}"
        raise ValueError(f"{where}: expected {expected}{at}, got {items[i]!r:.40}")
    return array[0] if scalar else array


def input_columns(model: GPModel) -> int:
    """The number of input columns d of ``model``'s training inputs (n, d)."""
    return int(model.input_dims)


# ----- a bundle ---------------------------------------------------------------------------------

@dataclass
class Bundle:
    """A model file as read by ``load``.

    model: the GPModel (in its own units). scaling: the ``Scaling`` to data units, or None for a
    bare model file (``fg.save``). kind: "cli", "estimator" or None (a bare model file).
    info: JSON settings of the writer ({} for a bare model). extra: name -> CPU tensor, the
    writer's tensors beside the model ({} for a bare model). path: the file.
    """

    model: GPModel
    scaling: Scaling | None
    kind: str | None
    info: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    path: Path | None = None


def save(path, model: GPModel, scaling: Scaling, kind: str, info: dict, extra: dict | None = None) -> Path:
    """Write ``model``, its ``scaling``, the writer's ``info`` (JSON-ready) and ``extra`` tensors
    (name -> tensor) to ``path`` in one atomic write; returns the file written (``path`` with
    symbolic links resolved: the link's target is replaced, the link stays).

    ``kind``: one of KINDS. The model's solver state (e.g. preconditioner pivots) travels with
    it, so predictions after ``load`` equal those before, to the bit, on the same device.
    ValueError when the model has NaN or infinite tensors or the scaling is invalid.
    """
    registered_name(model)
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    target = output_target(check_path(path))
    Scaling.from_config(scaling.to_config(), input_columns(model), "scaling")
    state = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    broken = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise ValueError(f"model: NaN or infinity in {', '.join(broken[:5])}; such a model "
                         "cannot be saved (load would refuse it)")
    solver_state = {k: v.detach().cpu().clone() for k, v in model.solver_state().items()}
    tensors = {"model": state, "solver_state": solver_state,
               "extra": {k: torch.as_tensor(v).detach().cpu().clone() for k, v in (extra or {}).items()}}
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "flashgp_version": flashgp_version(),
              "kind": kind, "model": model_config(model), "scaling": scaling.to_config(), "info": info}
    raw = json.dumps(config, indent=1, allow_nan=False).encode()
    buffer = _io.BytesIO()
    torch.save(tensors, buffer)
    try:
        write_archive(target, {CONFIG_NAME: raw, TENSORS_NAME: buffer.getvalue()})
    except OSError as err:  # name the file, not write_archive's hidden temporary one
        raise renamed_error(err, path) from None
    return target


def load(path, device=None, kind: str | None = None) -> Bundle:
    """Read a bundle written by ``save``, or a bare model file written by ``fg.save``.

    Args:
        path: str or os.PathLike.
        device: where the model goes (default: the CPU).
        kind: None (any), or the kind of bundle required ("cli" or "estimator"); a bare model
            file is then refused too.

    Raises FileNotFoundError when there is no file, and ModelFileError (a ValueError) naming the
    path for anything else that is not such a file: damaged, too new, of another kind, with
    an invalid scaling (non-finite, a scale <= 0, lengths other than the model's columns).
    """
    path = check_path(path)
    device = check_device(device)
    existing_file(path)
    raw_config, raw_tensors = read_archive(path, "flashgp model file", MAX_CONFIG_BYTES)
    config = parse_json(path, raw_config)
    if isinstance(config, dict) and config.get("format") == MODEL_FORMAT:
        if kind is not None:
            raise ModelFileError(path, f"a bare model file (fg.save) without the data scaling; "
                                       f"expected a {KIND} of kind {kind!r}")
        config = check_model_config(path, config)
        model = build_model(path, config, load_plain_tensors(path, raw_tensors))
        return Bundle(model if device is None else model.to(device), None, None, path=path)
    config = _check_config(path, config, kind)
    tensors = load_plain_tensors(path, raw_tensors)
    if not isinstance(tensors, dict) or set(tensors) != _TENSOR_GROUPS or not all(
            isinstance(group, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in group.items()) for group in tensors.values()):
        raise ModelFileError(path, f"{TENSORS_NAME} is not {sorted(_TENSOR_GROUPS)} -> dicts of named tensors")
    model = build_model(path, config["model"], tensors["model"])
    try:
        model.load_solver_state(tensors["solver_state"])
        scaling = Scaling.from_config(config["scaling"], input_columns(model), "scaling")
    except (ValueError, TypeError, KeyError, RuntimeError, IndexError) as err:
        raise ModelFileError(path, first_line(err)) from None
    model = model.eval() if device is None else model.to(device).eval()
    return Bundle(model, scaling, config["kind"], config["info"], dict(tensors["extra"]), path)


def _check_config(path: Path, config, kind: str | None) -> dict:
    """``config`` if it is a bundle's JSON part this flashgp reads (of ``kind``), else ModelFileError."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(path, f"not a flashgp model file ({CONFIG_NAME} lacks format "
                                   f"'{MODEL_FORMAT}' or '{FORMAT}')")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(path, f"bundle format version {version!r:.50} is not one this flashgp "
                                   f"({flashgp_version()}) reads (1 to {FORMAT_VERSION}; written by "
                                   f"flashgp {config.get('flashgp_version')!r:.50})")
    if set(config) != _KEYS:
        raise ModelFileError(path, f"{CONFIG_NAME}: expected the keys {sorted(_KEYS)}, got {sorted(config)[:20]}")
    if config["kind"] not in KINDS or (kind is not None and config["kind"] != kind):
        want = repr(kind) if kind is not None else f"one of {KINDS}"
        raise ModelFileError(path, f"a bundle of kind {config['kind']!r:.40}, expected {want}")
    if not isinstance(config["info"], dict):
        raise ModelFileError(path, f"info: expected a dict, got {type(config['info']).__name__}")
    check_model_config(path, config["model"])
    return config
