# The priors attached to a model as a whole: their log density (the MAP term fg.fit adds), the n
# it is divided by, and the JSON entries model files keep. Re-exported by flashgp.priors.
"""Model-level prior terms (``fg.priors.log_prior`` and friends; see ``flashgp.priors``)."""
from __future__ import annotations

import numbers

import torch

from .kernels.constraints import ExactValues, attached_priors as _priors_of, check_prior_shape, prior_value
from .priors import prior_from_config

def attached(model) -> list:
    """(module path as in ``model.named_modules()``, name, prior, raw) of every attached prior."""
    return [(path, name, prior, raw) for path, module in model.named_modules()
            for name, (prior, raw) in _priors_of(module).items()]


def has_priors(model) -> bool:
    """Whether any module of ``model`` has a prior attached."""
    return any(_priors_of(module) for module in model.modules())


def log_prior(model) -> torch.Tensor:
    """The sum of the log densities of every attached prior at the current values (every element
    of a hyperparameter, batch elements included), a differentiable scalar; 0 without priors."""
    total = None
    for path, module in model.named_modules():
        for name, (prior, raw) in _priors_of(module).items():
            value = prior_value(module, name, raw)
            check_prior_shape(prior, value, f"{path or 'the model'}.{name}")
            term = prior.log_prob(value).sum()
            total = term if total is None else total + term
    if total is None:
        like = next(iter(model.parameters()), None)
        return torch.zeros((), dtype=torch.get_default_dtype() if like is None else like.dtype,
                           device=None if like is None else like.device)
    return total


def num_points(model) -> int:
    """n of the MAP objective, the count ``model.loss()`` is divided by: ``num_data`` for a model
    that trains on minibatches (``SVGP``: the size of the data ``fg.fit`` was given), else
    ``num_train`` (the training points; a ``MultitaskGP``'s observed (point, task) entries)."""
    n = getattr(model, "num_data", None) if getattr(model, "trains_on_batches", False) else model.num_train
    if not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"model: the number of training points is unknown ({n!r}); a MAP objective needs it")
    return int(n)


def objective(model, loss: torch.Tensor) -> torch.Tensor:
    """What ``fg.fit`` minimizes, given ``loss = model.loss(...).sum()``: ``loss`` itself when no
    prior is attached, else ``loss - log_prior(model) / num_points(model)``."""
    if not has_priors(model):
        return loss
    return loss - log_prior(model).to(loss.dtype) / num_points(model)


def check_finite(model) -> None:
    """ValueError naming the hyperparameters whose value lies outside their prior's support (a
    log density of -inf, or NaN), where no fit can start."""
    bad = []
    for path, name, prior, raw in attached(model):
        module = model.get_submodule(path)
        with torch.no_grad():
            if not bool(torch.isfinite(prior.log_prob(prior_value(module, name, raw))).all()):
                bad.append(f"{path}.{'raw_' if raw else ''}{name} ({prior!r})")
    if bad:
        raise ValueError(f"model: the log prior is not finite at the current values of {', '.join(bad)}; "
                         "set values inside the prior's support or change the prior")


# ----- files ------------------------------------------------------------------------------------

def priors_config(model) -> list:
    """The JSON-ready list of ``model``'s priors for its file: {"module": path, "name", "raw",
    "prior": ``to_config()``} each."""
    return [{"module": path, "name": name, "raw": raw, "prior": prior.to_config()}
            for path, name, prior, raw in attached(model)]


def read_config(entries) -> list:
    """The (module path, name, raw, prior) of each entry of a ``priors_config`` list, checked
    without a model: ValueError naming the entry when it is malformed (keys, types, a name
    twice for one module, a prior ``prior_from_config`` refuses); TypeError when ``entries``
    is not a list."""
    if not isinstance(entries, list):
        raise TypeError(f"priors: expected a list, got {type(entries).__name__}")
    read, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"priors[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"module", "name", "raw", "prior"}:
            raise ValueError(f"{where}: expected a dict with the keys ['module', 'name', 'prior', 'raw']")
        path, name, raw = entry["module"], entry["name"], entry["raw"]
        if not isinstance(path, str):
            raise ValueError(f"{where}: module {path!r:.100} is not a kernel, likelihood or mean of the model")
        if not isinstance(name, str) or not isinstance(raw, bool) or (path, name) in seen:
            raise ValueError(f"{where}: expected a str name (once per module) and raw true or false")
        seen.add((path, name))
        try:
            prior = prior_from_config(entry["prior"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where} ({path}.{name}): {err}") from None
        read.append((path, name, raw, prior))
    return read


def attach_config(model, entries) -> None:
    """Attach the priors of ``entries`` (a ``priors_config`` list, ``read_config``) to
    ``model``'s modules; ValueError naming the entry when it is malformed or names no
    hyperparameter of the model (TypeError when ``entries`` is not a list)."""
    modules = dict(model.named_modules())
    for i, (path, name, raw, prior) in enumerate(read_config(entries)):
        if not isinstance(modules.get(path), ExactValues):
            raise ValueError(f"priors[{i}]: module {path!r:.100} is not a kernel, likelihood or mean of the model")
        try:
            modules[path].set_prior(name, prior, raw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"priors[{i}] ({path}.{name}): {err}") from None


