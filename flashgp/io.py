# Saving and loading ExactGP models: one zip file with config.json (the structure, versioned)
# and tensors.pt (the state dict, read back with torch.load(weights_only=True)); no pickled code.
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import ModelFileError
from .models import ExactGP
from .models.validation import check_device
from .serialize import (ConfigError, dtype_from_name, dtype_name, kernel_from_config, kernel_to_config,
                        likelihood_from_config, likelihood_to_config, mean_from_config, mean_to_config,
                        solver_from_config, solver_to_config)

FORMAT = "flashgp.model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
TENSORS_NAME = "tensors.pt"
MAX_CONFIG_BYTES = 1 << 20
_MODEL_KEYS = {"format", "format_version", "flashgp_version", "model", "dtype", "kernel", "likelihood",
               "mean", "solver", "frozen"}


def _version() -> str:
    from . import __version__  # late: flashgp/__init__ imports this module
    return __version__


def model_config(model: ExactGP) -> dict:
    """The JSON-ready description of ``model``'s structure (everything but its tensors)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "flashgp_version": _version(),
        "model": "ExactGP",
        "dtype": dtype_name(model.train_x.dtype),
        "kernel": kernel_to_config(model.kernel),
        "likelihood": likelihood_to_config(model.likelihood),
        "mean": mean_to_config(model.mean),
        "solver": solver_to_config(model.solver),
        "frozen": sorted(name for name, p in model.named_parameters() if not p.requires_grad),
    }


def save(model: ExactGP, path) -> None:
    """Write ``model`` (structure, hyperparameters and training data) to the file ``path``.

    Args:
        model: an ``ExactGP`` built from flashgp kernels, likelihoods, means and solvers.
        path: str or ``os.PathLike``; conventionally ending in ``.fgp``.

    The file is a zip archive holding ``config.json`` and ``tensors.pt``. It is written to a
    temporary file in the same folder and moved into place, so ``path`` never holds a partial file.
    """
    if type(model) is not ExactGP:
        raise TypeError(f"model: expected a flashgp ExactGP, got {type(model).__name__}")
    path = _check_path(path)
    broken = [name for name, t in model.state_dict().items()
              if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise ValueError(f"model: NaN or infinity in {', '.join(broken[:5])}; such a model "
                         "cannot be saved (load would refuse it)")
    config = json.dumps(model_config(model), indent=1, allow_nan=False).encode()
    buffer = io.BytesIO()
    tensors = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    torch.save(tensors, buffer)
    _atomic_write(path, {CONFIG_NAME: config, TENSORS_NAME: buffer.getvalue()})



def load_plain_tensors(path, raw: bytes):
    """torch.load of an archive's tensor entry with weights_only=True (no code runs); anything
    that is not plain tensors and containers raises ModelFileError naming ``path``."""
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError) as err:
        raise ModelFileError(path, f"{TENSORS_NAME} is not a plain dict of tensors "
                                   f"(refusing pickled objects): {_first_line(err)}") from None

def load(path, device=None) -> ExactGP:
    """Read a model written by ``save``. ``device``: where its tensors go (default: CPU).

    Raises ``ModelFileError`` (a ValueError) naming the path for files that are not flashgp
    models, are damaged or truncated, come from a newer format version, or hold pickled objects
    other than tensors; ``FileNotFoundError`` when there is no such file.
    """
    path = _check_path(path)
    device = _check_device(device)
    if path.is_dir():
        raise ModelFileError(path, "a directory, not a flashgp model file")
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file: {path}")
    config_bytes, tensor_bytes = _read_archive(path)
    config = _parse_config(path, config_bytes)
    tensors = load_plain_tensors(path, tensor_bytes)
    model = _build(path, config, tensors)
    return model if device is None else model.to(device)


# ----- reading ----------------------------------------------------------------------------------

def _check_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _check_device(device) -> torch.device | None:
    return None if device is None else check_device(device, "a torch device or its name")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _read_archive(path: Path, kind: str = "flashgp model file",
                  max_config_bytes: int = MAX_CONFIG_BYTES) -> tuple[bytes, bytes]:
    """(config.json bytes, tensors.pt bytes) of the zip at ``path``; ``kind`` names it in errors."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if names != {CONFIG_NAME, TENSORS_NAME}:
                raise ModelFileError(path, f"not a {kind} (expected the entries "
                                           f"{CONFIG_NAME} and {TENSORS_NAME}, found {sorted(names)[:5]})")
            if archive.getinfo(CONFIG_NAME).file_size > max_config_bytes:
                raise ModelFileError(path, f"{CONFIG_NAME} is larger than {max_config_bytes} bytes")
            return archive.read(CONFIG_NAME), archive.read(TENSORS_NAME)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ModelFileError(path, f"not a {kind}, or a truncated or damaged one "
                                   f"({_first_line(err)})") from None


def _parse_config(path: Path, raw: bytes) -> dict:
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ModelFileError(path, f"{CONFIG_NAME} is not valid JSON ({_first_line(err)})") from None
    return check_model_config(path, config)


def check_model_config(path: Path, config) -> dict:
    """``config`` if it is a model description ``_build`` can read, else ModelFileError."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(path, f"not a flashgp model file ({CONFIG_NAME} lacks format '{FORMAT}')")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(path, f"invalid format_version {version!r:.50}")
    if version > FORMAT_VERSION:
        raise ModelFileError(path, f"format version {version} was written by a newer flashgp "
                                   f"({config.get('flashgp_version')!r:.50}); this flashgp "
                                   f"({_version()}) reads versions up to {FORMAT_VERSION}")
    if set(config) != _MODEL_KEYS:
        raise ModelFileError(path, f"{CONFIG_NAME}: expected the keys {sorted(_MODEL_KEYS)}, "
                                   f"got {sorted(config)[:20]}")
    if config["model"] != "ExactGP":
        raise ModelFileError(path, f"unknown model type {config['model']!r:.50}")
    return config


def _build(path: Path, config: dict, tensors) -> ExactGP:
    """Rebuild the model from its configuration, then load the tensors strictly."""
    if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise ModelFileError(path, f"{TENSORS_NAME} is not a dict of named tensors")
    for name in ("train_x", "train_y"):
        if name not in tensors:
            raise ModelFileError(path, f"{TENSORS_NAME} lacks the training data tensor {name!r}")
    try:
        dtype = dtype_from_name(config["dtype"])
        wrong = [k for k, v in tensors.items() if v.is_floating_point() and v.dtype != dtype]
        if wrong:
            raise ConfigError(f"dtype: tensors {wrong[:5]} are not {config['dtype']}")
        broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if broken:
            raise ConfigError(f"NaN or infinity in the tensors {broken[:5]}")
        kernel = kernel_from_config(config["kernel"])
        likelihood = likelihood_from_config(config["likelihood"])
        mean = mean_from_config(config["mean"])
        solver = solver_from_config(config["solver"])
        model = ExactGP(tensors["train_x"], tensors["train_y"], kernel, likelihood=likelihood, mean=mean,
                        solver=solver)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as err:  # its first line only names the model; the details follow
            details = str(err).split("\n", 1)[-1]
            raise ConfigError("tensors do not match the model: " + " ".join(details.split())[:300]) from None
        _freeze(model, config["frozen"])
    except (ConfigError, ValueError, TypeError, RuntimeError, RecursionError) as err:
        raise ModelFileError(path, f"the stored model cannot be rebuilt: {_first_line(err)}") from None
    return model


def _freeze(model: ExactGP, names) -> None:
    params = dict(model.named_parameters())
    if not isinstance(names, list) or not all(isinstance(n, str) and n in params for n in names):
        raise ConfigError(f"frozen: expected a list of parameter names, got {names!r:.200}")
    for name in names:
        params[name].requires_grad_(False)


# ----- writing ----------------------------------------------------------------------------------

def _atomic_write(path: Path, entries: dict[str, bytes]) -> None:
    """Write a zip of ``entries`` to a temporary file next to ``path``, then rename it over ``path``."""
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"path: {path} is a directory")
    if not folder.is_dir():
        raise FileNotFoundError(f"path: the folder {folder} does not exist")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; keep the mode of an existing file
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
                for name, data in entries.items():
                    archive.writestr(name, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
