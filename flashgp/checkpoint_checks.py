# Checks of a checkpoint's contents before a fit resumes from it (flashgp.checkpoint): every model
# parameter present, of its shape, dtype and finite; the optimizer state of the kind, shapes and
# values the optimizer would have written (finite Adam moments, L-BFGS directions of the flattened
# parameters); the random states present and accepted by a generator; the solver state taken by
# the model's solver. Anything else is a ModelFileError naming the file and what is wrong, raised
# before the model, the optimizer or a random state is touched.
from __future__ import annotations

import math
import numbers

import torch

from .errors import ModelFileError

ADAM_KEYS = {"step", "exp_avg", "exp_avg_sq"}
ADAM_OPTIONAL = {"max_exp_avg_sq"}
LBFGS_COUNTERS = ("func_evals", "n_iter")
LBFGS_KEYS = {"d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss"}
LBFGS_OPTIONAL = {"al"}


def _finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _scalar(value) -> float | None:
    """``value`` (a number or a one-element tensor) as a float, else None."""
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0]) if value.numel() == 1 and not value.is_complex() else None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


# ----- what read_checkpoint checks (the file alone) ---------------------------------------------

def check_file_values(path, tensors: dict, history: dict) -> None:
    """Model tensors and optimizer tensors finite, the CPU random state one a generator accepts,
    the loss history finite numbers and the step times numbers >= 0."""
    for group in ("model", "optimizer"):
        broken = [name for name, t in tensors[group].items()
                  if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if broken:
            raise ModelFileError(path, f"NaN or infinity in the {group} tensors {broken[:5]}")
    if "torch" not in tensors["rng"]:
        raise ModelFileError(path, "the CPU random state is missing")
    check_random_state(path, "torch", tensors["rng"]["torch"], torch.device("cpu"))
    for key, state in tensors["rng"].items():
        if state.dtype != torch.uint8 or state.dim() != 1:
            raise ModelFileError(path, f"the random state {key!r:.50} is not a uint8 vector")
    if not all(_finite_number(v) for v in history["loss"]):
        raise ModelFileError(path, "history: the losses must be finite numbers")
    if not all(_finite_number(v) and v >= 0 for v in history["step_seconds"]):
        raise ModelFileError(path, "history: the step times must be numbers >= 0")
    if not all(isinstance(v, dict) for v in history["diagnostics"]):
        raise ModelFileError(path, "history: the diagnostics must be dicts")


def check_random_state(path, key: str, state, device: torch.device) -> None:
    """ModelFileError unless a fresh generator on ``device`` accepts ``state``."""
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
        raise ModelFileError(path, f"the random state {key!r} is not a uint8 vector")
    try:
        torch.Generator(device=device).set_state(state.clone())
    except (RuntimeError, TypeError, ValueError) as err:
        raise ModelFileError(path, f"the random state {key!r} is not one a {device.type} generator "
                                   f"accepts ({str(err).strip()[:150]})") from None


# ----- what a resume checks (the file against the model and the optimizer) ------------------------

def check_resumable(checkpoint, snapshot, model, optimizer: str, torch_optimizer, generator,
                    names: list[str]) -> None:
    """ModelFileError naming ``checkpoint.path`` unless ``snapshot`` (read from it) can be
    restored into ``model`` and ``torch_optimizer`` (an Adam or L-BFGS, ``optimizer``, over the
    parameters ``names``) and, when the fit has one, ``generator``. Changes nothing when it
    raises (the solver state is tried on the model and put back)."""
    path = checkpoint.path
    params = dict(model.named_parameters())
    for name, p in params.items():
        stored = snapshot.parameters.get(name)
        if stored is None:
            raise ModelFileError(path, f"the parameter {name!r} is missing")
        if stored.shape != p.shape or stored.dtype != p.dtype:
            raise ModelFileError(path, f"the parameter {name!r} is {stored.dtype} of shape "
                                       f"{tuple(stored.shape)}; the model's is {p.dtype} of shape {tuple(p.shape)}")
    trained = [params[name] for name in names]
    if optimizer == "adam":  # natural-gradient groups (variational.NaturalAdam) keep no state
        plain = {id(p) for g in torch_optimizer.param_groups if not g.get("natural", False) for p in g["params"]}
        _check_adam(path, snapshot.optimizer_state,
                    {name: p for name, p in zip(names, trained) if id(p) in plain}, checkpoint.step)
    else:
        history_size = torch_optimizer.defaults["history_size"]
        _check_lbfgs(path, snapshot.optimizer_state, names, trained, history_size)
    if generator is not None:
        if "generator" not in snapshot.rng:
            raise ModelFileError(path, "the random state of the probe generator is missing (a seeded "
                                       "fit needs it to go on as the uninterrupted run would)")
        check_random_state(path, "generator", snapshot.rng["generator"], generator.device)
    _check_solver_state(path, model, snapshot.solver_state)


def _check_tensor(path, what: str, value, shape, dtype) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ModelFileError(path, f"{what}: expected a tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape) or value.dtype != dtype:
        raise ModelFileError(path, f"{what} is {value.dtype} of shape {tuple(value.shape)}; expected "
                                   f"{dtype} of shape {tuple(shape)}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ModelFileError(path, f"{what} holds NaN or infinity")
    return value


def _check_keys(path, what: str, entries, required: set, optional: set) -> None:
    if not isinstance(entries, dict):
        raise ModelFileError(path, f"{what}: expected a dict")
    missing, extra = required - set(entries), set(entries) - required - optional
    if missing or extra:
        raise ModelFileError(path, f"{what}: missing {sorted(missing)}, unexpected {sorted(extra)}")


def _check_adam(path, state: dict, params: dict, steps: int) -> None:
    """Adam: every trained parameter has moments of its shape and dtype, finite, exp_avg_sq >= 0,
    and a step count from 1 to the checkpoint's step (none at all before the first step)."""
    if steps > 0 and set(state) != set(params):
        missing = sorted(set(params) - set(state))
        raise ModelFileError(path, f"optimizer_state: no Adam state for the parameters {missing[:5]}")
    for name, entries in state.items():
        what = f"optimizer_state[{name!r}]"
        _check_keys(path, what, entries, ADAM_KEYS, ADAM_OPTIONAL)
        p = params[name]
        for key in ADAM_KEYS - {"step"} | (ADAM_OPTIONAL & set(entries)):
            _check_tensor(path, f"{what}[{key!r}]", entries[key], p.shape, p.dtype)
        if bool((entries["exp_avg_sq"] < 0).any()):
            raise ModelFileError(path, f"{what}['exp_avg_sq'] holds negative values")
        count = _scalar(entries["step"])
        if count is None or not math.isfinite(count) or count != int(count) or not 1 <= count <= steps:
            raise ModelFileError(path, f"{what}['step']: expected a whole number from 1 to {steps}, "
                                       f"got {entries['step']!r:.50}")


def _check_lbfgs(path, state: dict, names: list[str], trained: list, history_size: int) -> None:
    """L-BFGS keeps its state under the first parameter: counters, and once it has stepped the
    direction d, the previous flat gradient (N,) (N: all trained elements), the curvature pairs
    old_dirs/old_stps (lists of (N,)), ro (one scalar per pair) and H_diag, all finite."""
    if not state:
        return
    if set(state) != {names[0]}:
        raise ModelFileError(path, f"optimizer_state: L-BFGS keeps its state under {names[0]!r}, "
                                   f"found {sorted(state)[:5]}")
    entries, what = state[names[0]], f"optimizer_state[{names[0]!r}]"
    _check_keys(path, what, entries, set(LBFGS_COUNTERS), LBFGS_KEYS | LBFGS_OPTIONAL)
    for key in LBFGS_COUNTERS:
        count = _scalar(entries[key])
        if count is None or not math.isfinite(count) or count != int(count) or count < 0:
            raise ModelFileError(path, f"{what}[{key!r}]: expected a whole number >= 0")
    if int(_scalar(entries["n_iter"])) == 0 and not set(entries) & LBFGS_KEYS:
        return
    _check_keys(path, what, entries, set(LBFGS_COUNTERS) | LBFGS_KEYS, LBFGS_OPTIONAL)
    n, dtype = sum(p.numel() for p in trained), trained[0].dtype
    for key in ("d", "prev_flat_grad"):
        _check_tensor(path, f"{what}[{key!r}]", entries[key], (n,), dtype)
    pairs = entries["old_dirs"]
    for key, shape in (("old_dirs", (n,)), ("old_stps", (n,)), ("ro", ())):
        values = entries[key]
        if not isinstance(values, list) or len(values) != len(pairs) or len(values) > history_size:
            raise ModelFileError(path, f"{what}[{key!r}]: expected a list of {len(pairs) if isinstance(pairs, list) else 'at most ' + str(history_size)} tensors")
        for i, value in enumerate(values):
            _check_tensor(path, f"{what}[{key!r}][{i}]", value, shape, dtype)
    al = entries.get("al")
    if al is not None and (not isinstance(al, list) or len(al) != history_size or not all(
            v is None or (isinstance(v, torch.Tensor) and v.numel() == 1) for v in al)):
        raise ModelFileError(path, f"{what}['al']: expected a list of {history_size} scalars or None")
    for key in ("t", "H_diag"):
        value = _scalar(entries[key])
        if value is None or not math.isfinite(value):
            raise ModelFileError(path, f"{what}[{key!r}]: expected a finite number")
    if _scalar(entries["prev_loss"]) is None:
        raise ModelFileError(path, f"{what}['prev_loss']: expected a number")


def _check_solver_state(path, model, state: dict) -> None:
    """A non-empty solver state must be taken whole by the model's solver (a state of another
    kind, shape or range is otherwise dropped silently, and the resumed run would differ)."""
    if not state:
        return
    before = model.solver_state()
    try:
        model.load_solver_state({name: t.clone() for name, t in state.items()})
        taken = model.solver_state()
    finally:
        model.load_solver_state(before)
    if set(taken) != set(state) or not all(torch.equal(taken[k], state[k]) for k in state):
        raise ModelFileError(path, f"the solver state (tensors {sorted(state)[:6]}) is not one this model's "
                                   "solver can use (another preconditioner's, or of other shapes or "
                                   "ranges); the resumed run would differ from the uninterrupted one")
