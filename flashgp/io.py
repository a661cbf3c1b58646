# Saving and loading flashgp models: one zip file with config.json (the structure, versioned)
# and tensors.pt (the state dict, read back with torch.load(weights_only=True)); no pickled code.
# Any model class registered with flashgp.serialize.register_model can be saved and loaded; the
# archive helpers here are also those of fit checkpoints (flashgp.checkpoint).
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
from .file_limits import (check_entries, check_json_cost, check_loaded_tensors, check_torch_archive,
                          largest_numel, memory_budget, read_entry)
from .models import GPModel
from .models.validation import check_device as _check_torch_device
from .priors import attach_config, priors_config, read_config
from .serialize import (MODELS, ConfigError, declared_size_limit, dtype_from_name, dtype_name, model_class,
                        model_name)

FORMAT = "flashgp.model"
FORMAT_VERSION = 1
BUNDLE_FORMAT = "flashgp.bundle"  # flashgp.bundle's files: a model with its data scaling
CONFIG_NAME = "config.json"
TENSORS_NAME = "tensors.pt"
MAX_CONFIG_BYTES = 1 << 20
#: the keys of every model file's config beside the model's own (``config_keys``)
ENVELOPE_KEYS = frozenset({"format", "format_version", "flashgp_version", "model", "dtype", "frozen"})
#: envelope keys a config holds only when they apply: "priors" (``flashgp.priors``; files of
#: models without priors, and those written before priors existed, lack it)
OPTIONAL_ENVELOPE_KEYS = frozenset({"priors"})


def flashgp_version() -> str:
    """The version of flashgp that writes files (``flashgp.__version__``)."""
    from . import __version__  # late: flashgp/__init__ imports this module
    return __version__


# ----- the model's description ------------------------------------------------------------------

def registered_name(model) -> str:
    """The registry name of ``model`` (a registered GPModel), else TypeError naming the
    registered models and how to register one (or the class's own ``not_savable`` reason)."""
    reason = getattr(type(model), "not_savable", None)
    if reason:
        raise TypeError(f"model: {type(model).__name__} cannot be saved: {reason}")
    try:
        name = model_name(model)
    except TypeError:
        name = None
    if name is None or not isinstance(model, GPModel):
        kind = type(model)
        raise TypeError(f"model: expected a registered flashgp model ({', '.join(sorted(MODELS))}), got "
                        f"{kind.__module__}.{kind.__qualname__}; files and checkpoints hold only "
                        "registered classes (a subclass is not its parent): register a GPModel class "
                        "with @flashgp.serialize.register_model(name)")
    return name


def file_model_of(model):
    """What files of ``model`` hold: ``model.file_model()`` for a GPModel (itself, or for a model
    spread over processes a registered one holding all its rows), else ``model`` unchanged."""
    return model.file_model() if isinstance(model, GPModel) else model


def model_config(model: GPModel) -> dict:
    """The JSON-ready description of ``model``'s structure (everything but its tensors): the
    envelope (format, format_version, flashgp_version, model: the registry name, dtype) and
    ``model.config()``, then ``frozen`` (the names of the parameters that do not train) and,
    when any are attached, ``priors`` (``flashgp.priors.priors_config``: module path, name, raw
    and the prior's config of each)."""
    name = registered_name(model)
    own = model.config()
    keys = type(model).config_keys
    reserved = ENVELOPE_KEYS | OPTIONAL_ENVELOPE_KEYS
    if not isinstance(own, dict) or set(own) != set(keys) or set(own) & reserved:
        got = sorted(own) if isinstance(own, dict) else type(own).__name__
        raise TypeError(f"model: {name}.config() gave {got}; expected a dict with the keys "
                        f"config_keys {sorted(keys)}, none of them {sorted(reserved)}")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "flashgp_version": flashgp_version(),
              "model": name, "dtype": dtype_name(model.dtype), **own,
              "frozen": sorted(key for key, p in model.named_parameters() if not p.requires_grad)}
    priors = priors_config(model)
    if priors:
        config["priors"] = priors
    return config


# ----- save and load ----------------------------------------------------------------------------

def save(model: GPModel, path) -> None:
    """Write ``model`` (structure, hyperparameters and training data) to the file ``path``.

    Args:
        model: a registered ``flashgp.models.GPModel`` (e.g. an ``ExactGP``) built from flashgp
            kernels, likelihoods, means and solvers.
        path: str or ``os.PathLike``; conventionally ending in ``.fgp``.

    The file is a zip archive holding ``config.json`` and ``tensors.pt``. It is written to a
    temporary file in the same folder and moved into place, so ``path`` never holds a partial file.
    What is written is ``model.file_model()``: the model itself, or for one spread over
    processes (``flashgp.distributed.ShardedExactGP``) an ``ExactGP`` on all its rows (written
    by whichever process calls ``save``).
    """
    model = file_model_of(model)
    registered_name(model)
    path = check_path(path)
    broken = [name for name, t in model.state_dict().items()
              if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise ValueError(f"model: NaN or infinity in {', '.join(broken[:5])}; such a model "
                         "cannot be saved (load would refuse it)")
    config = json.dumps(model_config(model), indent=1, allow_nan=False).encode()
    buffer = io.BytesIO()
    tensors = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    torch.save(tensors, buffer)
    write_archive(path, {CONFIG_NAME: config, TENSORS_NAME: buffer.getvalue()})


def load(path, device=None) -> GPModel:
    """Read a model written by ``save``. ``device``: where its tensors go (default: CPU).

    Returns a model of the registered class the file names (e.g. an ``ExactGP``).
    Raises ``ModelFileError`` (a ValueError) naming the path for files that are not flashgp
    models, are damaged or truncated, come from a newer format version, name a model class that
    is not registered, or hold pickled objects other than tensors; also, before anything large
    is allocated, for files that would need more memory than their size warrants
    (``flashgp.file_limits``: compressed entries inflating beyond 32x the file, bzip2/lzma
    entries, repeated entries, configs declaring shapes beyond the stored tensors, zero-stride
    tensors), and instead of MemoryError or an allocator error. ``FileNotFoundError`` when
    there is no such file, ``PermissionError`` when it cannot be read.
    """
    path = check_path(path)
    device = check_device(device)
    existing_file(path)
    try:
        config_bytes, tensor_bytes = read_archive(path)
        config = check_model_config(path, parse_json(path, config_bytes))
        tensors = load_plain_tensors(path, tensor_bytes)
        del config_bytes, tensor_bytes
        model = build_model(path, config, tensors)
    except MemoryError:
        raise ModelFileError(path, "out of memory while reading it") from None
    return model if device is None else to_device(path, model, device)


def to_device(path: Path, model: GPModel, device: torch.device) -> GPModel:
    """``model.to(device)``; ModelFileError naming ``path`` when it does not fit there (allocator
    errors are RuntimeErrors: torch.OutOfMemoryError among them)."""
    try:
        return model.to(device)
    except (MemoryError, RuntimeError) as err:
        raise ModelFileError(path, f"the model does not fit on {device} ({first_line(err)})") from None


# ----- arguments and errors ---------------------------------------------------------------------

def check_path(path) -> Path:
    """``path`` (str or os.PathLike) as a Path, else TypeError."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def existing_file(path: Path) -> None:
    """ModelFileError when ``path`` is a directory, FileNotFoundError when there is no such file."""
    if path.is_dir():
        raise ModelFileError(path, "a directory, not a flashgp model file")
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file: {path}")


def check_device(device) -> torch.device | None:
    """None, or ``device`` as a torch.device (ValueError/TypeError naming ``device``)."""
    return None if device is None else _check_torch_device(device, "a torch device or its name")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), or its type's name."""
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


# ----- reading ----------------------------------------------------------------------------------

def read_archive(path: Path, kind: str = "flashgp model file",
                 max_config_bytes: int = MAX_CONFIG_BYTES) -> tuple[bytes, bytes]:
    """(config.json bytes, tensors.pt bytes) of the zip at ``path``; ``kind`` names it in errors.

    ModelFileError for anything but a zip of exactly those two entries, each once, stored or
    deflated, with a config of at most ``max_config_bytes`` and entries declaring together at
    most ``file_limits.memory_budget`` of the file's size; a config that would cost more than
    that to parse; a tensors.pt that is not torch's zip format of plain tensors
    (``file_limits.check_torch_archive``). All checked before anything large is allocated.
    FileNotFoundError when there is no file; PermissionError when it cannot be read.
    """
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            infos = check_entries(path, archive, size, (CONFIG_NAME, TENSORS_NAME), kind,
                                  {CONFIG_NAME: max_config_bytes})
            config = read_entry(archive, infos[CONFIG_NAME])
            check_json_cost(path, config, memory_budget(size), kind, CONFIG_NAME)
            tensors = read_entry(archive, infos[TENSORS_NAME])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError,
            RuntimeError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise ModelFileError(path, f"not a {kind}, or a truncated or damaged one "
                                   f"({first_line(err)})") from None
    check_torch_archive(path, tensors, TENSORS_NAME)
    return config, tensors


def parse_json(path: Path, raw: bytes):
    """The JSON value in ``raw`` (an archive's config.json), else ModelFileError naming ``path``
    (also for NaN or Infinity literals, which flashgp never writes, and an object that repeats a
    key: readers would disagree on which value counts)."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys,
                          parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise ModelFileError(path, f"{CONFIG_NAME} is not valid JSON ({first_line(err)})") from None


def _unique_keys(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"the key {repeated!r:.80} appears more than once in one object")
    return result


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def load_plain_tensors(path, raw: bytes, budget: int | None = None):
    """torch.load of an archive's tensor entry with weights_only=True (no code runs); anything
    that is not plain tensors and containers raises ModelFileError naming ``path``, as do
    tensors that are not plain CPU tensors held by their storage (zero-stride expansions) or
    that together hold more than ``budget`` bytes (default: ``memory_budget(len(raw))``).
    ``raw`` must have passed ``file_limits.check_torch_archive`` (``read_archive`` does that)."""
    try:
        tensors = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError,
            MemoryError, RecursionError) as err:
        raise ModelFileError(path, f"{TENSORS_NAME} is not a plain dict of tensors "
                                   f"(refusing pickled objects): {first_line(err)}") from None
    check_loaded_tensors(path, tensors, memory_budget(len(raw)) if budget is None else budget, TENSORS_NAME)
    return tensors


def check_model_config(path: Path, config) -> dict:
    """``config`` if it is a model description ``build_model`` can read (a format version this
    flashgp reads, a registered model, the envelope keys and that model's ``config_keys``, a
    well-formed "priors" list when present: ``flashgp.priors.read_config``), else
    ModelFileError naming ``path``."""
    if isinstance(config, dict) and config.get("format") == BUNDLE_FORMAT:
        raise ModelFileError(path, "a model bundled with its data scaling (written by the command line or "
                                   "GPRegressor.save): read it with flashgp.bundle.load(path) or "
                                   "flashgp.sklearn.GPRegressor.load(path)")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(path, f"not a flashgp model file ({CONFIG_NAME} lacks format '{FORMAT}')")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(path, f"invalid format_version {version!r:.50}")
    if version > FORMAT_VERSION:
        raise ModelFileError(path, f"format version {version} was written by a newer flashgp "
                                   f"({config.get('flashgp_version')!r:.50}); this flashgp "
                                   f"({flashgp_version()}) reads versions up to {FORMAT_VERSION}")
    expected = set(ENVELOPE_KEYS)
    if "model" in config:
        try:
            expected |= model_class(config["model"]).config_keys
        except ConfigError as err:
            raise ModelFileError(path, first_line(err)) from None
    if not expected <= set(config) <= expected | OPTIONAL_ENVELOPE_KEYS:
        raise ModelFileError(path, f"{CONFIG_NAME}: expected the keys {sorted(expected)} (and optionally "
                                   f"{sorted(OPTIONAL_ENVELOPE_KEYS)}), got {sorted(config)[:20]}")
    if "priors" in config:
        try:
            read_config(config["priors"])
        except (TypeError, ValueError) as err:
            raise ModelFileError(path, f"{CONFIG_NAME}: {first_line(err)}") from None
    return config


def build_model(path: Path, config: dict, tensors) -> GPModel:
    """The model ``config`` (checked by ``check_model_config``) describes, built by its class's
    ``from_config`` on ``tensors`` (a state dict: name -> CPU tensor), which are then loaded
    strictly; the parameters named in config["frozen"] do not train, and the priors of
    config["priors"] (when present) are attached. ModelFileError naming ``path`` when the
    tensors or the configuration do not make a model."""
    if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise ModelFileError(path, f"{TENSORS_NAME} is not a dict of named tensors")
    try:
        cls = model_class(config["model"])
    except ConfigError as err:
        raise ModelFileError(path, f"the stored model cannot be rebuilt: {first_line(err)}") from None
    for name in cls.data_buffers:
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
        with declared_size_limit(largest_numel(tensors)):  # no declared shape beyond the data
            model = cls.from_config({key: config[key] for key in cls.config_keys}, tensors)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as err:  # its first line only names the model; the details follow
            details = str(err).split("\n", 1)[-1]
            raise ConfigError("tensors do not match the model: " + " ".join(details.split())[:300]) from None
        _freeze(model, config["frozen"])
        if "priors" in config:
            attach_config(model, config["priors"])
    except (ConfigError, ValueError, TypeError, KeyError, RuntimeError, RecursionError, MemoryError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(path, f"the stored model cannot be rebuilt: {first_line(err)}") from None
    return model


def _freeze(model: GPModel, names) -> None:
    params = dict(model.named_parameters())
    if not isinstance(names, list) or not all(isinstance(n, str) and n in params for n in names):
        raise ConfigError(f"frozen: expected a list of parameter names, got {names!r:.200}")
    for name in names:
        params[name].requires_grad_(False)


# ----- writing ----------------------------------------------------------------------------------

def write_archive(path: Path, entries: dict[str, bytes]) -> None:
    """Write a zip of ``entries`` (entry name -> bytes, stored uncompressed) to a temporary file
    next to ``path``, then rename it over ``path``: ``path`` never holds a partial file.

    An OSError (PermissionError when the folder is read-only, no space left, ...) names ``path``,
    not the hidden temporary file (``err.filename == str(path)``); the temporary file is removed.
    """
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"path: {path} is a directory")
    if not folder.is_dir():
        raise FileNotFoundError(f"path: the folder {folder} does not exist")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from None
    try:
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; keep the mode of an existing file
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
                for name, data in entries.items():
                    archive.writestr(name, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.errno is not None:
            raise _naming(err, path) from None
        raise


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` (same class and errno) about ``path``: "[Errno 13] Permission denied (writing
    via a temporary file in its folder): '/folder/m.fgp'"."""
    if err.errno is None:
        return err
    reason = err.strerror or os.strerror(err.errno)
    return type(err)(err.errno, f"{reason} (writing via a temporary file in its folder)", str(path))
