# Training loops for GP models: Adam or L-BFGS on the negative log marginal likelihood,
# with a tqdm progress bar, callbacks and a returned history.
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .errors import NotPSDError, NumericalWarning

OPTIMIZERS = ("adam", "lbfgs")


@dataclass
class History:
    """What a fit recorded per step: loss (-mll per point), seconds, and the solver diagnostics."""

    loss: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    stopped_early: str | None = None

    def __len__(self) -> int:
        return len(self.loss)


def _check_args(model, optimizer, lr, iters):
    if not hasattr(model, "mll"):
        raise TypeError(f"model: expected a flashgp model with .mll(), got {type(model).__name__}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters: expected an int >= 0, got {iters!r}")


def _parameter_summary(model) -> str:
    parts = []
    for name, p in model.named_parameters():
        values = p.detach().flatten()[:4].tolist()
        parts.append(f"{name}={[round(v, 4) for v in values]}")
    return ", ".join(parts)


def fit(model, optimizer: str = "adam", lr: float = 0.1, iters: int = 50, progress: bool = True,
        callback=None, seed: int | None = None) -> History:
    """Maximize ``model.mll()`` over the model's parameters.

    Args:
        model: a flashgp model (e.g. ``ExactGP``); batches are trained jointly (sum of losses).
        optimizer: "adam" (``iters`` steps) or "lbfgs" (``iters`` L-BFGS steps with a strong
            Wolfe line search; the probe vectors are fixed for the run so the objective is
            deterministic).
        lr: learning rate (Adam) or initial step length (L-BFGS; 1.0 is usual).
        progress: show a tqdm bar with the loss and the time per step.
        callback: ``callback(step, loss, model)`` after every step.
        seed: seeds the probe vectors (reproducible runs).

    Returns:
        History with ``loss`` (negative mll per point), ``step_seconds`` and ``diagnostics``.
    """
    _check_args(model, optimizer, lr, iters)
    params = [p for p in model.parameters() if p.requires_grad]
    history = History()
    model.train()
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=20, line_search_fn="strong_wolfe")
        seed = 0 if seed is None else seed
    generator = None if seed is None else torch.Generator(device=model.train_x.device).manual_seed(seed)
    bar = tqdm(range(iters), disable=not progress, desc=f"fit ({optimizer})", leave=True)
    for step in bar:
        start = time.perf_counter()

        def closure():
            if optimizer == "lbfgs":  # same probes on every evaluation: a deterministic objective
                generator.manual_seed(seed)
            opt.zero_grad()
            try:
                loss = -model.mll(generator=generator).sum()
            except NotPSDError as err:  # hyperparameters where K_hat cannot be factored
                if optimizer == "adam":
                    raise
                warnings.warn(f"L-BFGS trial point rejected: {err}", NumericalWarning, stacklevel=2)
                return torch.tensor(math.inf)  # the line search backs off from it
            if torch.isfinite(loss):
                loss.backward()
            return loss

        try:
            loss = closure() if optimizer == "adam" else None
        except NotPSDError as err:
            return _stop(history, step, model, math.nan, reason=str(err))
        if loss is not None and not torch.isfinite(loss):
            return _stop(history, step, model, float(loss.detach()))
        loss = opt.step(closure) if optimizer == "lbfgs" else (opt.step(), loss)[1]
        value = float(loss.detach())
        if not math.isfinite(value):
            return _stop(history, step, model, value)
        seconds = time.perf_counter() - start
        history.loss.append(value)
        history.step_seconds.append(seconds)
        history.diagnostics.append(dict(model.diagnostics))
        bar.set_postfix(loss=f"{value:.4f}", s_per_step=f"{seconds:.3f}")
        if callback is not None:
            callback(step, value, model)
    bar.close()
    return history


def _stop(history: History, step: int, model, value: float, reason: str | None = None) -> History:
    cause = reason or f"the loss is {value} (not finite)"
    message = (f"fit stopped at step {step}: {cause}; the step was not applied. "
               f"Parameters: {_parameter_summary(model)}")
    warnings.warn(message, NumericalWarning, stacklevel=3)
    history.stopped_early = message
    return history
