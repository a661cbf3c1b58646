# Checkpoints of a running fit: model, optimizer state, step, loss history, random states and the
# model's solver state in the zip format of flashgp.io (JSON + weights-only tensors, no pickled
# objects), written atomically. Any registered model (flashgp.serialize.register_model).
from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ModelFileError
from .io import (CONFIG_NAME, TENSORS_NAME, build_model, check_device, check_model_config, check_path,
                 file_model_of, first_line, flashgp_version, load_plain_tensors, model_config, parse_json, read_archive,
                 write_archive)
from .checkpoint_checks import check_file_values, check_resumable
from .models import GPModel
from .serialize import ConfigError, solver_from_config, solver_to_config

FORMAT = "flashgp.checkpoint"
FORMAT_VERSION = 2  # 2: the model's solver state ("precond" tensors); 1 lacks them
KIND = "flashgp checkpoint file"
MAX_CONFIG_BYTES = 1 << 28  # the loss history and diagnostics grow with the steps
SETTINGS = ("optimizer", "lr", "seed")  # fit arguments a resumed run must repeat
# ... and those of minibatch and natural-gradient fits (None where they do not apply; files
# written before them lack them)
OPTIONAL_SETTINGS = ("natural_lr", "batch_size", "num_data")
HISTORY_FIELDS = ("loss", "step_seconds", "diagnostics")
_KEYS = {"format", "format_version", "flashgp_version", "model", "fit", "step", "optimizer_state",
         "history"}
# "precond": the model's solver_state() (an ExactGP's preconditioner pivots), since format version 2
_TENSOR_GROUPS = {"model", "optimizer", "rng", "precond"}
_FLOAT_TAG = "__float__"  # JSON stand-in for a non-finite float: {"__float__": "inf"}


@dataclass
class Snapshot:
    """A fit after ``step`` completed steps, as CPU copies that later steps leave alone.

    parameters: model parameter name -> tensor of the parameter's shape (a checkpoint read back
        holds the buffers too; only parameters are restored).
    optimizer_state: trainable parameter name -> that parameter's torch.optim state
        ({key: tensor, list of tensors or None, number, bool or None}).
    rng: "torch" (CPU RNG), "generator" (the probe generator of fit) and "cuda.<i>" -> uint8 states.
    solver_state: the model's ``solver_state()`` (name -> CPU tensor; empty when none; an
        ExactGP's preconditioner pivots), so that a resumed run solves as an uninterrupted one does.
    """

    step: int
    parameters: dict
    optimizer_state: dict
    rng: dict
    solver_state: dict = field(default_factory=dict)

    @property
    def pivots(self) -> dict:
        """``solver_state`` by its earlier name (an ExactGP's solver state is its pivots)."""
        return self.solver_state


def _copy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value  # numbers, bools and None are immutable


def random_states(generator: torch.Generator | None) -> dict:
    """The CPU RNG, ``generator`` (when given) and, when CUDA is in use, every CUDA RNG state."""
    states = {"torch": torch.get_rng_state()}
    if generator is not None:
        states["generator"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda.{i}"] = state
    return states


def take_snapshot(step: int, model, optimizer, generator, names: list[str]) -> Snapshot:
    """Copy the state of a fit; ``names``: the trainable parameters in the optimizer's order."""
    params = {name: _copy(p) for name, p in model.named_parameters()}
    state = {names[i]: {key: _copy(v) for key, v in entries.items()}
             for i, entries in optimizer.state_dict()["state"].items()}
    solver = {name: _copy(t) for name, t in model.solver_state().items()}
    return Snapshot(step, params, state, random_states(generator), solver)


def restore_parameters(model, snapshot: Snapshot) -> None:
    """Set ``model``'s parameters (in place, on their device) to the snapshot's values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            value = snapshot.parameters[name]
            if value.shape != p.shape:
                raise ValueError(f"model: parameter {name} has shape {tuple(value.shape)} in the "
                                 f"checkpoint but {tuple(p.shape)} in the model")
            p.copy_(value)


def restore_solver_state(model: GPModel, snapshot: Snapshot) -> None:
    """Give ``model`` the snapshot's solver state (``load_solver_state``; an empty one clears it)."""
    model.load_solver_state({name: t.clone() for name, t in snapshot.solver_state.items()})


def restore_training(snapshot: Snapshot, model, optimizer, generator, names: list[str]) -> None:
    """Restore parameters, solver state, optimizer state and random states from ``snapshot``."""
    restore_parameters(model, snapshot)
    restore_solver_state(model, snapshot)
    index = {name: i for i, name in enumerate(names)}
    state = {index[name]: {key: _copy(v) for key, v in entries.items()}
             for name, entries in snapshot.optimizer_state.items()}
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    torch.set_rng_state(snapshot.rng["torch"])
    if generator is not None:
        generator.set_state(snapshot.rng["generator"])
    cuda = sorted(k for k in snapshot.rng if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        for key in cuda[:torch.cuda.device_count()]:
            torch.cuda.set_rng_state(snapshot.rng[key], int(key.split(".")[1]))


# ----- JSON values -------------------------------------------------------------------------------

def _to_json(value):
    """``value`` (dicts, lists, numbers, strings) as strict JSON; non-finite floats tagged."""
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _to_json(value.item())
    return str(value)


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {_FLOAT_TAG}:
            return float(value[_FLOAT_TAG])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _describe_optimizer_state(state: dict, tensors: dict) -> dict:
    """JSON descriptions of the per-parameter optimizer state; its tensors go into ``tensors``."""
    described = {}
    for name, entries in state.items():
        described[name] = {}
        for key, value in entries.items():
            ref = f"{name}/{key}"
            if isinstance(value, torch.Tensor):
                tensors[ref] = value
                described[name][key] = {"tensor": ref}
            elif isinstance(value, list) and all(v is None or isinstance(v, torch.Tensor) for v in value):
                refs = [None if v is None else f"{ref}/{i}" for i, v in enumerate(value)]
                tensors.update((r, v) for r, v in zip(refs, value) if r is not None)
                described[name][key] = {"tensors": refs}
            elif value is None or isinstance(value, (bool, int, float)):
                described[name][key] = {"value": _to_json(value)}
            else:
                raise TypeError(f"optimizer: cannot checkpoint the state entry {key!r} "
                                f"({type(value).__name__})")
    return described


def _rebuild_optimizer_state(path: Path, described: dict, tensors: dict) -> dict:
    def tensor(ref):
        if not isinstance(ref, str) or ref not in tensors:
            raise ModelFileError(path, f"optimizer_state refers to a missing tensor {ref!r:.100}")
        return tensors[ref]

    state = {}
    for name, entries in described.items():
        if not isinstance(entries, dict):
            raise ModelFileError(path, f"optimizer_state[{name!r:.100}] is not a dict")
        state[name] = {}
        for key, entry in entries.items():
            if not isinstance(entry, dict) or len(entry) != 1:
                raise ModelFileError(path, f"optimizer_state[{name!r:.100}][{key!r:.50}] is malformed")
            (kind, value), = entry.items()
            if kind == "tensor":
                state[name][key] = tensor(value)
            elif kind == "tensors" and isinstance(value, list):
                state[name][key] = [None if r is None else tensor(r) for r in value]
            elif kind == "value":
                state[name][key] = _from_json(value)
            else:
                raise ModelFileError(path, f"optimizer_state[{name!r:.100}][{key!r:.50}] is malformed")
    return state


# ----- writing -----------------------------------------------------------------------------------

def write_checkpoint(path, model: GPModel, snapshot: Snapshot, settings: dict, history) -> None:
    """Write ``snapshot`` of a fit of ``model`` to ``path`` (atomically: temp file + rename).
    The model part is ``model.file_model()``'s (for a model spread over processes, a registered
    one holding all its rows).

    settings: {"optimizer", "lr", "seed"} of the fit. history: an object with the lists
    ``loss``, ``step_seconds`` and ``diagnostics``; their first ``snapshot.step`` entries are kept.
    """
    path = check_path(path)
    model = file_model_of(model)
    model_tensors = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    model_tensors.update(snapshot.parameters)
    tensors = {"model": model_tensors, "optimizer": {}, "rng": dict(snapshot.rng),
               "precond": dict(snapshot.solver_state)}
    optimizer_state = _describe_optimizer_state(snapshot.optimizer_state, tensors["optimizer"])
    # readers refuse expanded (zero-stride) tensors: write every tensor dense
    tensors = {group: {name: t.contiguous() for name, t in values.items()} for group, values in tensors.items()}
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "flashgp_version": flashgp_version(),
              "model": model_config(model), "fit": {key: settings[key] for key in SETTINGS + OPTIONAL_SETTINGS
                                                    if key in SETTINGS or settings.get(key) is not None},
              "step": snapshot.step,
              "optimizer_state": optimizer_state,
              "history": {f: _to_json(getattr(history, f)[:snapshot.step]) for f in HISTORY_FIELDS}}
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    raw = json.dumps(config, separators=(",", ":"), allow_nan=False).encode()
    write_archive(path, {CONFIG_NAME: raw, TENSORS_NAME: buffer.getvalue()})


# ----- reading -----------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """A checkpoint file as read by ``read_checkpoint``.

    path: the file. config: its JSON part (format, model, fit settings, step, optimizer state
    layout, history). tensors: {"model", "optimizer", "rng", "precond"} -> {name: tensor}
    ("precond": the model's solver state; empty for format version 1 files, which lack it).
    """

    path: Path
    config: dict
    tensors: dict

    @property
    def step(self) -> int:
        """The number of completed steps the checkpoint holds."""
        return self.config["step"]

    @property
    def settings(self) -> dict:
        """The fit arguments it was written with: {"optimizer", "lr", "seed"}."""
        return dict(self.config["fit"])

    def history(self) -> dict:
        """{"loss", "step_seconds", "diagnostics"} -> lists of ``step`` entries each."""
        return {f: _from_json(self.config["history"][f]) for f in HISTORY_FIELDS}

    def snapshot(self) -> Snapshot:
        state = _rebuild_optimizer_state(self.path, self.config["optimizer_state"], self.tensors["optimizer"])
        return Snapshot(self.step, dict(self.tensors["model"]), state, dict(self.tensors["rng"]),
                        dict(self.tensors["precond"]))

    def model(self, device=None) -> GPModel:
        """A new model of the registered class the checkpoint holds, with its parameters and
        training data (like ``fg.load``); its solver state is the snapshot's, not loaded here."""
        device = check_device(device)
        model = build_model(self.path, self.config["model"], dict(self.tensors["model"]))
        return model if device is None else model.to(device)


def read_checkpoint(path) -> Checkpoint:
    """Read and check a file written by ``write_checkpoint`` (tensors with weights_only=True).

    Raises FileNotFoundError when there is no such file and ModelFileError (a ValueError) naming
    the path for a file that is not a flashgp checkpoint, is damaged, or is from a newer format;
    for one that would take more memory than its size warrants (``flashgp.file_limits``, as
    ``fg.load``); and for NaN or infinite model or optimizer tensors, a missing or invalid CPU
    random state, or a history of non-finite losses (``checkpoint_checks.check_file_values``).
    """
    path = check_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {path}")
    try:
        return _read_checkpoint(path)
    except MemoryError:
        raise ModelFileError(path, "out of memory while reading it") from None


def _read_checkpoint(path: Path) -> Checkpoint:
    raw_config, raw_tensors = read_archive(path, KIND, MAX_CONFIG_BYTES)
    config = _check_config(path, parse_json(path, raw_config))
    del raw_config
    tensors = load_plain_tensors(path, raw_tensors)
    del raw_tensors
    groups = _TENSOR_GROUPS if config["format_version"] >= 2 else _TENSOR_GROUPS - {"precond"}
    if not isinstance(tensors, dict) or set(tensors) != groups or not all(
            isinstance(group, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in group.items()) for group in tensors.values()):
        raise ModelFileError(path, f"{TENSORS_NAME} is not {sorted(groups)} -> dicts of named tensors")
    tensors.setdefault("precond", {})
    checkpoint = Checkpoint(path, config, tensors)
    check_file_values(path, tensors, checkpoint.history())
    checkpoint.snapshot()  # every optimizer tensor it refers to is present
    return checkpoint


def _check_config(path: Path, config) -> dict:
    """``config`` if it is a checkpoint's JSON part this flashgp reads, else ModelFileError."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(path, f"not a {KIND} ({CONFIG_NAME} lacks format '{FORMAT}')")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(path, f"checkpoint format version {version!r:.50} is not one this flashgp "
                                   f"({flashgp_version()}) reads (1 to {FORMAT_VERSION})")
    if set(config) != _KEYS:
        raise ModelFileError(path, f"{CONFIG_NAME}: expected the keys {sorted(_KEYS)}, got {sorted(config)[:20]}")
    check_model_config(path, config["model"])
    step = config["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ModelFileError(path, f"step: expected an int >= 0, got {step!r:.50}")
    if (not isinstance(config["fit"], dict) or not set(SETTINGS) <= set(config["fit"])
            or not set(config["fit"]) <= set(SETTINGS + OPTIONAL_SETTINGS)):
        raise ModelFileError(path, f"fit: expected the keys {list(SETTINGS)} (and optionally "
                                   f"{list(OPTIONAL_SETTINGS)})")
    history = config["history"]
    if not isinstance(history, dict) or set(history) != set(HISTORY_FIELDS) or any(
            not isinstance(history[f], list) or len(history[f]) != step for f in HISTORY_FIELDS):
        raise ModelFileError(path, f"history: expected the lists {list(HISTORY_FIELDS)} of {step} entries")
    if not isinstance(config["optimizer_state"], dict):
        raise ModelFileError(path, "optimizer_state: expected a dict")
    return config


def load_checkpoint_model(path, device=None) -> GPModel:
    """The model stored in the checkpoint ``path``, as ``fg.load`` would give it from a model file."""
    return read_checkpoint(path).model(device)


# ----- resuming ----------------------------------------------------------------------------------

def check_matches(checkpoint: Checkpoint, model: GPModel, settings: dict, names: list[str]) -> None:
    """ValueError naming the argument when ``checkpoint`` was not written by this fit of ``model``
    (its configuration, priors included, training data, fit settings or trained parameters).
    ``model.file_model()`` is compared (a model spread over processes: all its rows, so a
    checkpoint resumes on another number of processes)."""
    where = f"the checkpoint {checkpoint.path}"
    model = file_model_of(model)
    saved = {k: v for k, v in checkpoint.config["model"].items() if k != "flashgp_version"}
    if "solver" in saved:
        try:  # with the defaults of solver fields that older files lack
            saved["solver"] = solver_to_config(solver_from_config(saved["solver"]))
        except (ConfigError, TypeError):
            pass  # compared as written, and found to differ
    given = {k: v for k, v in model_config(model).items() if k != "flashgp_version"}
    # the training data first: a default noise floor follows the data, so other data would
    # otherwise be reported as a different likelihood
    params = {name for name, _ in model.named_parameters()}
    stored = checkpoint.tensors["model"]
    for name, tensor in model.state_dict().items():
        if name in params:
            continue
        if name not in stored or not torch.equal(stored[name], tensor.detach().cpu()):
            raise ValueError(f"model: {where} was written for different training data "
                             f"({name} differs); pass the same data, or start afresh with resume=False")
    # over the keys of both: "priors" is written only when a model has priors
    differ = sorted(k for k in set(given) | set(saved) if saved.get(k) != given.get(k))
    if differ:
        raise ValueError(f"model: {where} was written for a different model ({', '.join(differ)} "
                         f"differ); pass that model, or start afresh with resume=False")
    for key in SETTINGS + OPTIONAL_SETTINGS:
        if checkpoint.settings.get(key) != settings.get(key):
            raise ValueError(f"{key}: {where} was written by a fit with {key}={checkpoint.settings.get(key)!r}, "
                             f"not {settings.get(key)!r}; resume with the same {key}, or start afresh "
                             f"with resume=False")
    unknown = set(checkpoint.config["optimizer_state"]) - set(names)
    if unknown:
        raise ValueError(f"model: {where} holds optimizer state for parameters the model does not "
                         f"train: {sorted(unknown)[:5]}")


class Checkpointer:
    """What fit does for checkpoints: resume, a snapshot per step, periodic and final writes
    (the writes only where ``model.writes_checkpoints``: one process of a model spread over
    several; every process reads the file to resume).

    path: the checkpoint file. every: write after every ``every`` completed steps. names: the
    trainable parameter names in the optimizer's order. settings: {"optimizer", "lr", "seed"}.
    """

    def __init__(self, path: Path, every: int, model, optimizer, generator, names: list[str],
                 settings: dict):
        self.path, self.every, self.names, self.settings = path, every, names, settings
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.latest = take_snapshot(0, model, optimizer, generator, names)
        self.written: int | None = None  # the step the file on disk holds (None: not this run's)

    def resume(self, history, iters: int) -> int:
        """Load ``path`` into the model, optimizer, RNGs and ``history``; the step to go on from."""
        checkpoint = read_checkpoint(self.path)
        check_matches(checkpoint, self.model, self.settings, self.names)
        if checkpoint.step > iters:
            raise ValueError(f"iters: {self.path} is at step {checkpoint.step}, past iters={iters} "
                             f"(iters counts every step of the run, the resumed ones included)")
        snapshot = checkpoint.snapshot()
        check_resumable(checkpoint, snapshot, self.model, self.settings["optimizer"], self.optimizer,
                        self.generator, self.names)
        self.latest = snapshot
        restore_training(self.latest, self.model, self.optimizer, self.generator, self.names)
        for name, values in checkpoint.history().items():
            getattr(history, name)[:] = values
        self.written = checkpoint.step
        return checkpoint.step

    def completed(self, step: int, history, iters: int) -> None:
        """Record that ``step`` steps are done; write every ``every`` steps and at ``iters``."""
        self.latest = take_snapshot(step, self.model, self.optimizer, self.generator, self.names)
        if step % self.every == 0 or step == iters:
            self.save(history)

    def save(self, history) -> None:
        """Write the latest snapshot unless the file already holds it (or another process writes it)."""
        if self.written != self.latest.step:
            if self.model.writes_checkpoints:
                write_checkpoint(self.path, self.model, self.latest, self.settings, history)
            self.written = self.latest.step

    def rescue(self, history) -> bool:
        """After an exception: back to the last completed step (model and history) and save it.

        Returns whether the file now holds that step; a failed write warns instead of raising.
        """
        restore_parameters(self.model, self.latest)
        restore_solver_state(self.model, self.latest)
        for name in HISTORY_FIELDS:
            del getattr(history, name)[self.latest.step:]
        try:
            self.save(history)
        except Exception as err:  # keep the exception that stopped the fit
            warnings.warn(f"checkpoint: could not write {self.path} ({first_line(err)}); it holds step "
                          f"{self.written} or an earlier run", RuntimeWarning, stacklevel=3)
            return False
        return True
