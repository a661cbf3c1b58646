# Training loops for GP models: Adam or L-BFGS on the model's loss (an ExactGP's: -mll per point),
# with a tqdm progress bar, callbacks, a returned history and checkpoints (resume after a stop).
from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import Checkpointer
from .errors import FitInterrupted, NotPSDError, NumericalWarning
from .fit_signals import TerminationHandler
from .fit_warnings import WarningDigest, noise_floor_message
from .io import file_model_of, registered_name
from .graph_step import GraphSteps
from .minibatches import Minibatches
from .models import ExactGP, GPModel
from .priors import check_finite, has_priors, objective
from .subset_training import SubsetBatches
from .variational import NaturalAdam, NaturalVariational

OPTIMIZERS = ("adam", "lbfgs")
DEFAULT_CHECKPOINT_EVERY = 10


@dataclass
class History:
    """What a fit recorded per step: loss (the objective ``fg.fit`` minimized: ``model.loss()``
    summed over batches, for an ExactGP -mll per point; with priors attached minus
    ``log_prior / n``, ``flashgp.priors.objective``), seconds, and the solver diagnostics.

    ``start_step``: 0, or the step a resumed fit went on from (the lists hold the earlier steps too).
    ``warnings``: (step, message) of every NumericalWarning raised during this run's steps (a fit
    shows each kind once and a summary of repeats at the end; checkpoints do not keep them).
    """

    loss: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    stopped_early: str | None = None
    start_step: int = 0
    warnings: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.loss)


def _is_integer(value) -> bool:
    """An int or a numpy/other integral scalar (``numbers.Integral``), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_args(model, optimizer, lr, iters, callback=None, seed=None) -> tuple[str, float, int, int | None]:
    """(optimizer, lr, iters, seed) as plain Python values (numpy scalars accepted, as the
    estimator accepts them), else ValueError/TypeError naming the argument."""
    if not isinstance(model, GPModel):
        raise TypeError(f"model: expected a flashgp model (a flashgp.models.GPModel such as ExactGP), "
                        f"got {type(model).__name__}")
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if (isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real) or not lr > 0
            or not math.isfinite(lr)):
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    if not _is_integer(iters) or iters < 0:
        raise ValueError(f"iters: expected an int >= 0, got {iters!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a function callback(step, loss, model) or None, "
                        f"got {type(callback).__name__}")
    if seed is not None and not _is_integer(seed):
        raise TypeError(f"seed: expected an int or None, got {seed!r}")
    return str(optimizer), float(lr), int(iters), None if seed is None else int(seed)


def _parameter_summary(model) -> str:
    parts = []
    for name, p in model.named_parameters():
        values = p.detach().flatten()[:4].tolist()
        parts.append(f"{name}={[round(v, 4) for v in values]}")
    return ", ".join(parts)


def fit(model, optimizer: str = "adam", lr: float = 0.1, iters: int = 50, progress: bool = True,
        callback=None, seed: int | None = None, checkpoint=None, checkpoint_every: int | None = None,
        resume: bool = False, data=None, batch_size: int | None = None,
        natural_lr: float | None = None, cuda_graph: bool = False) -> History:
    """Minimize ``model.loss()`` (an ExactGP's: -mll per point) over the model's parameters.

    With priors attached to hyperparameters (``module.set_prior``, ``flashgp.priors``) the fit is
    a MAP fit: it minimizes ``model.loss().sum() - log_prior(model) / n``, the negative log
    posterior density of the hyperparameters per data point, with n the count the loss is
    divided by (``flashgp.priors.num_points``: the training points; for a minibatch model its
    ``num_data``, the size of ``data``). Without priors the objective is ``model.loss()`` alone.

    Args:
        model: a flashgp model (a ``flashgp.models.GPModel``, e.g. ``ExactGP``; batches are
            trained jointly, the sum of losses), or an object wrapping one as its
            ``flashgp_model`` attribute (``flashgp.botorch.FlashGPModel``), which is fitted.
        optimizer: "adam" (``iters`` steps) or "lbfgs" (``iters`` L-BFGS steps with a strong
            Wolfe line search; the probe vectors are fixed for the run so the objective is
            deterministic).
        lr: learning rate (Adam) or initial step length (L-BFGS; 1.0 is usual).
        iters: the number of steps of the whole run (a resumed run goes on to step ``iters``).
        progress: show a tqdm bar with the loss and the time per step.
        callback: ``callback(step, loss, model)`` after every step.
        seed: seeds the probe vectors (reproducible runs).
        checkpoint: a file path (a registered model class, ``flashgp.serialize.register_model``,
            as ``fg.save`` needs). The fit writes the model, the optimizer state (Adam moments and
            step counts; L-BFGS directions and history), the step, the loss history, the random
            states and the model's ``solver_state()`` there every ``checkpoint_every`` steps and
            at the end, atomically (the file always holds a whole checkpoint). Without ``resume``
            an existing file is overwritten.
        checkpoint_every: steps between checkpoints (default 10); needs ``checkpoint``.
        resume: continue from ``checkpoint`` when that file exists, else start at step 0 (so one
            command can be rerun until the run is done). The checkpoint must come from the same
            model configuration, training data, optimizer, lr and seed (ValueError naming the
            one that differs); a seeded run that is resumed ends where an uninterrupted run would.
        data: for models that train on minibatches (``model.trains_on_batches``, e.g. ``SVGP``),
            which keep no data: (x, y) tensors or arrays (left where they are, e.g. in CPU memory;
            each batch goes to the model's device) or a ``torch.utils.data.DataLoader`` of (x, y)
            pairs. Each step takes one batch (``flashgp.minibatches.Minibatches``: an epoch is
            ceil(n / batch_size) steps, its order drawn from ``seed``), so a resumed fit goes on
            mid-epoch with the batches an uninterrupted one would take; the model's ``num_data``
            is set to n. Other models: None.
        batch_size: points per batch with tensor data (default 1,024). For an ``ExactGP`` (no
            ``data``): each Adam step trains on a random subset of ``batch_size`` (>= 2) of its
            training rows, the loss the subset's exact -mll per point in float64 by Cholesky
            (``flashgp.subset_training``; batches drawn as for ``data``, so checkpoints resume
            exactly); the model still predicts with its own solver on all n points.
        natural_lr: natural-gradient step size for a model with ``variational="natural"``
            (1.0 is the full step, exact for a Gaussian likelihood and the whole data in one
            batch; 0.01-0.1 is usual for minibatches and other likelihoods); the other
            parameters take ``optimizer="adam"`` with ``lr``. Such a model needs it.
        cuda_graph: experimental: replay each Adam step of a minibatch model on CUDA with tensor
            data from one recorded CUDA graph (``flashgp.graph_step``; SVGP without natural
            parameters and without priors), instead of launching its few hundred kernels one by one (timings:
            ``benchmarks/results/svgp/cuda_graph_h100.md``). Off by default: a recording can fail
            (the fit then warns and goes on eagerly), and with it on a resumed fit is equal to
            an uninterrupted one only to round-off (Adam's step count lives on the GPU).

    Interruptions with ``checkpoint`` set: on Ctrl-C or SIGTERM (what schedulers, ``timeout``
    and ``docker stop`` send) the model goes back to the last completed step, which is written
    to ``checkpoint``, and ``flashgp.errors.FitInterrupted`` (a KeyboardInterrupt with ``step``,
    ``checkpoint`` and ``history``; for SIGTERM its ``__cause__`` is a
    ``flashgp.fit_signals.Terminated``) is raised. The SIGTERM handler exists only while the fit
    runs and only in the main thread; an ignored SIGTERM stays ignored, and a previous Python
    handler is called once the checkpoint is written (``fit_signals.TerminationHandler``). Any
    other exception also saves the last completed step first, then propagates unchanged. A
    resume checks the checkpoint's contents before using them (``flashgp.checkpoint_checks``:
    ModelFileError naming the file and what is wrong).

    ``iters``, ``lr``, ``seed`` and ``checkpoint_every`` may be numpy scalars.

    Numerical warnings (``flashgp.errors.NumericalWarning``, e.g. CG not converged) are shown
    the first time each kind appears; repeats are counted, listed in ``History.warnings`` and
    summarized in one warning per kind when the fit ends. When a run that took steps ends with
    a learned Gaussian noise within 5% of its floor, one more says so, with both numbers and how
    to lower the floor (nearly noise-free data: the floor keeps the mean from interpolating).

    Returns:
        History with ``loss`` (the objective: ``model.loss()``, negative mll per point for an
        ExactGP; with priors the MAP objective above),
        ``step_seconds`` and ``diagnostics`` for every step of the run (restored ones included),
        ``start_step`` (0, or the resumed step) and ``warnings``.
    """
    model = getattr(model, "flashgp_model", model)  # a wrapper (flashgp.botorch.FlashGPModel) fits its model
    optimizer, lr, iters, seed = _check_args(model, optimizer, lr, iters, callback, seed)
    path, every = _check_checkpoint_args(model, checkpoint, checkpoint_every, resume)
    batches = _minibatches(model, optimizer, data, batch_size, seed)
    natural = _natural_names(model, natural_lr, optimizer)
    graphs = _graphs_apply(model, batches, cuda_graph)
    if has_priors(model):
        check_finite(model)  # a value outside its prior's support: no step could be taken
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad and name not in natural]
    named += [(name, p) for name, p in model.named_parameters() if p.requires_grad and name in natural]
    params = [p for name, p in named if name not in natural]
    history = History()
    model.train()
    if natural:
        opt = NaturalAdam([{"params": params}, {"params": [p for name, p in named if name in natural],
                                                "natural": True, "lr": float(natural_lr),
                                                "scale": batches.num_data}], lr=lr)
    elif optimizer == "adam":  # capturable: its update can be recorded in a CUDA graph
        opt = torch.optim.Adam(params, lr=lr, capturable=graphs)
    else:
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=20, line_search_fn="strong_wolfe")
        seed = 0 if seed is None else seed
    generator = None if seed is None else torch.Generator(device=model.device).manual_seed(seed)
    saver = None
    if path is not None:
        settings = {"optimizer": optimizer, "lr": lr, "seed": seed, "natural_lr": natural_lr}
        settings.update(batches.settings() if batches is not None else {})
        saver = Checkpointer(path, every, model, opt, generator, [name for name, _ in named], settings)
        if resume and path.exists():
            try:
                history.start_step = saver.resume(history, iters)
            except BaseException:
                model.check_resume(None)  # the other processes of a sharded model learn of it
                raise
        model.check_resume(history.start_step)
    terminate = TerminationHandler(active=saver is not None)
    try:
        with terminate:
            graph = GraphSteps(model, opt) if graphs and GraphSteps.eligible(model, opt, batches) else None
            if graph is not None:
                model.check_data(batches.x, batches.y)  # once, for the steps that skip the checks
            _run(model, opt, optimizer, seed, generator, iters, history, saver, path, progress, callback, batches,
                 graph)
    except FitInterrupted:
        terminate.forward()  # SIGTERM: a previous Python handler gets it too, once the file is written
        raise
    _warn_noise_floor(model, history)
    return history


def _run(model, opt, optimizer: str, seed, generator, iters: int, history: History, saver, path,
         progress: bool, callback, batches, graph=None) -> None:
    """The steps of ``fit`` from ``history.start_step`` to ``iters`` (see there), with the
    checkpoint writes of ``saver`` and the rescue of the last completed step on any exception."""
    bar = tqdm(range(history.start_step, iters), disable=not progress, desc=f"fit ({optimizer})",
               leave=True, initial=history.start_step, total=iters)
    digest = WarningDigest()
    history.warnings = digest.records
    try:
        for step in bar:
            start = time.perf_counter()
            batch = None if batches is None else batches.batch(step)

            def closure():
                if optimizer == "lbfgs":  # same probes on every evaluation: a deterministic objective
                    generator.manual_seed(seed)
                opt.zero_grad()
                try:
                    loss = objective(model, (model.loss(generator=generator) if batch is None
                                             else batches.loss(model, batch) if isinstance(batches, SubsetBatches)
                                             else model.loss(generator=generator, batch=batch)).sum())
                except NotPSDError as err:  # hyperparameters where K_hat cannot be factored
                    if optimizer == "adam":
                        raise
                    warnings.warn(f"L-BFGS trial point rejected: {err}", NumericalWarning, stacklevel=2)
                    return torch.tensor(math.inf)  # the line search backs off from it
                if torch.isfinite(loss):
                    loss.backward()
                return loss

            replayed = None if graph is None else graph.step(*batch)
            with digest.step(step):
                try:
                    loss = replayed if replayed is not None else closure() if optimizer == "adam" else None
                except NotPSDError as err:
                    loss = err
                if replayed is None and (loss is None or (isinstance(loss, torch.Tensor) and torch.isfinite(loss))):
                    loss = opt.step(closure) if optimizer == "lbfgs" else (opt.step(), loss)[1]
            if isinstance(loss, NotPSDError):
                _stop(history, step, model, math.nan, reason=str(loss))
                break
            value = float(loss.detach())
            if not math.isfinite(value):
                _stop(history, step, model, value)
                break
            seconds = time.perf_counter() - start
            history.loss.append(value)
            history.step_seconds.append(seconds)
            history.diagnostics.append(dict(model.diagnostics))
            if saver is not None:
                saver.completed(step + 1, history, iters)
            bar.set_postfix(loss=f"{value:.4f}", s_per_step=f"{seconds:.3f}")
            if callback is not None:
                callback(step, value, model)
        if saver is not None:
            saver.save(history)  # the end, or an early stop: the last completed step
    except BaseException as err:
        bar.close()
        digest.summarize(len(history.loss) - history.start_step, stacklevel=4)
        if saver is None or isinstance(err, FitInterrupted):
            raise
        saved = saver.rescue(history)
        if saved and isinstance(err, KeyboardInterrupt):
            raise FitInterrupted(saver.latest.step, str(path), history) from err
        raise
    bar.close()
    digest.summarize(len(history.loss) - history.start_step, stacklevel=4)


def _graphs_apply(model, batches, cuda_graph) -> bool:
    """Whether steps are replayed from a CUDA graph (``cuda_graph``, ``flashgp.graph_step``), or
    ValueError when asked for where they cannot be: minibatches of tensors for a model on CUDA
    that allows it (``graph_capturable``) and has no priors."""
    if not isinstance(cuda_graph, (bool, np.bool_)):
        raise ValueError(f"cuda_graph: expected True or False, got {cuda_graph!r}")
    if not cuda_graph:
        return False
    if has_priors(model):
        raise ValueError("cuda_graph: a recorded step has no log prior term; a model with priors "
                         "(flashgp.priors) trains with cuda_graph=False")
    if not (batches is not None and batches.loader is None and model.device.type == "cuda"
            and getattr(model, "graph_capturable", False)):
        raise ValueError("cuda_graph: needs a minibatch model that allows it (SVGP without natural parameters) "
                         "on a CUDA device, trained on tensors (data=(x, y), not a DataLoader)")
    return True


def _minibatches(model, optimizer: str, data, batch_size, seed) -> Minibatches | SubsetBatches | None:
    """The batches of a model that trains on them (``data`` required), else None (``data`` and
    ``batch_size`` refused); sets the model's ``num_data``. An ExactGP with ``batch_size`` and
    no ``data`` trains on random subsets of its own rows (``flashgp.subset_training``)."""
    if not model.trains_on_batches and batch_size is not None and data is None and isinstance(model, ExactGP):
        if optimizer != "adam":
            raise ValueError(f"optimizer: subset (minibatch) training of an ExactGP takes 'adam'; L-BFGS needs "
                             f"a deterministic objective, and each step's subset differs; got {optimizer!r}")
        return SubsetBatches(model, batch_size, seed)
    if not model.trains_on_batches:
        for name, value in (("data", data), ("batch_size", batch_size)):
            if value is not None:
                raise ValueError(f"{name}: {type(model).__name__} trains on the data it holds; {name} is for "
                                 "models that train on minibatches (SVGP)")
        return None
    if data is None:
        raise ValueError(f"data: {type(model).__name__} keeps no training data; pass data=(x, y) or a DataLoader")
    if optimizer != "adam":
        raise ValueError(f"optimizer: minibatch training takes 'adam' (L-BFGS needs a deterministic "
                         f"objective), got {optimizer!r}")
    batches = Minibatches(data, batch_size, seed)
    model.num_data = batches.num_data
    return batches


def _natural_names(model, natural_lr, optimizer: str) -> set:
    """The names of the parameters that take natural-gradient steps (those of a
    ``NaturalVariational`` q), or ValueError when ``natural_lr`` and the model disagree."""
    names = {f"{prefix}.{name}" if prefix else name
             for prefix, module in model.named_modules() if isinstance(module, NaturalVariational)
             for name, _ in module.named_parameters()}
    if natural_lr is None:
        if names:
            raise ValueError("natural_lr: the model's q(u) is in natural parameters (variational='natural'); "
                             "pass natural_lr (e.g. 0.1), or build it with variational='cholesky' for Adam")
        return names
    if (isinstance(natural_lr, (bool, np.bool_)) or not isinstance(natural_lr, numbers.Real)
            or not 0 < natural_lr <= 1 or not math.isfinite(natural_lr)):
        raise ValueError(f"natural_lr: expected a number in (0, 1], got {natural_lr!r}")
    if not names:
        raise ValueError("natural_lr: the model has no natural-parameter q(u); build it with variational='natural'")
    if optimizer != "adam":
        raise ValueError(f"optimizer: natural-gradient steps go with 'adam' for the other parameters, got {optimizer!r}")
    return names


def _warn_noise_floor(model, history: History) -> None:
    """One NumericalWarning (also kept in ``history.warnings``) when this run took steps and the
    model's learned Gaussian noise ended on its floor (``fit_warnings.noise_floor_message``)."""
    if len(history.loss) <= history.start_step:
        return
    message = noise_floor_message(getattr(model, "likelihood", None))
    if message is not None:
        history.warnings.append((len(history.loss) - 1, message))
        warnings.warn(message, NumericalWarning, stacklevel=3)


def _check_checkpoint_args(model, checkpoint, checkpoint_every, resume) -> tuple[Path | None, int]:
    """(checkpoint as a Path or None, steps between checkpoints), or ValueError/TypeError."""
    if not isinstance(resume, (bool, np.bool_)):
        raise ValueError(f"resume: expected True or False, got {resume!r}")
    resume = bool(resume)
    if checkpoint_every is not None and (not _is_integer(checkpoint_every) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every: expected an int >= 1, got {checkpoint_every!r}")
    checkpoint_every = None if checkpoint_every is None else int(checkpoint_every)
    if checkpoint is None:
        if resume:
            raise ValueError("resume: resume=True needs checkpoint=PATH (the file to resume from)")
        if checkpoint_every is not None:
            raise ValueError("checkpoint_every: needs checkpoint=PATH (the file to write)")
        return None, 0
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint: expected a str or os.PathLike, got {type(checkpoint).__name__}")
    try:
        registered_name(file_model_of(model))
    except TypeError as err:
        raise TypeError(f"checkpoint: needs a model that fg.save can write; {err}") from None
    path = Path(checkpoint)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"checkpoint: {path} is a directory; expected a file path")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"checkpoint: the folder {folder} does not exist or is not writable")
    return path, DEFAULT_CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every


def _stop(history: History, step: int, model, value: float, reason: str | None = None) -> History:
    cause = reason or f"the loss is {value} (not finite)"
    message = (f"fit stopped at step {step}: {cause}; the step was not applied. "
               f"Parameters: {_parameter_summary(model)}")
    warnings.warn(message, NumericalWarning, stacklevel=4)  # _stop, _run, fit, the caller
    history.stopped_early = message
    return history
