# Conditioning a regression model on new observations (BoTorch's fantasies): a new model on the
# union of the data whose prediction cache is carried over instead of rebuilt from scratch.
"""``condition_on_observations``: the model given q more observations, without refitting.

The result is an ordinary model of the same class on the union of the data, with copies of the
parts (same hyperparameters, nothing shared), so it predicts exactly as a model rebuilt on all
the data would, saves and trains like one, and never disagrees with ``set_train_data``. What is
saved is the work: the old prediction cache hands the new one what it can (``conditioned``):

* Cholesky: the factor is extended by the new rows (``engines.cholesky_update``), O(n^2 q);
* CG: the posterior mean solve starts from the old solution (zeros on the new rows);
* anything else (another engine after ``fg.Auto`` switched, SGPR): the cache is rebuilt lazily.

Batches: y ``(*s, *b, q)`` with x ``(*b, q, d)`` gives a model with batch shape (*s, *b) (s fantasy
samples for each of b sets of new points), its data the old data repeated along the batch;
an extended Cholesky factor keeps one copy of the old factor for all of them.
"""
from __future__ import annotations

import copy

import torch

from ..likelihoods import FixedNoise
from ..shapes import broadcast_shapes
from .validation import as_float_tensor, check_test_inputs


def _new_batch(model, x: torch.Tensor, y: torch.Tensor) -> torch.Size:
    try:
        return broadcast_shapes(model.train_x.shape[:-2], model.train_y.shape[:-1], x.shape[:-2], y.shape[:-1])
    except ValueError:
        raise ValueError(f"y: batch dimensions of y {tuple(y.shape[:-1])}, x {tuple(x.shape[:-2])} and the "
                         f"model's data {tuple(model.train_y.shape[:-1])} do not broadcast") from None


def _copy(model):
    """A deep copy of ``model`` sharing its training data and without its prediction cache or
    preconditioner state (both replaced right after)."""
    memo = {id(model.train_x): model.train_x, id(model.train_y): model.train_y}
    for name in ("_prediction", "_precond_state"):
        value = getattr(model, name, None)
        if value is not None:
            memo[id(value)] = None
    return copy.deepcopy(model, memo)


def _noise(model, new, noise, batch: torch.Size, q: int) -> None:
    """Give ``new``'s FixedNoise likelihood the old variances and ``noise`` for the new points."""
    if not isinstance(model.likelihood, FixedNoise):
        if noise is not None:
            raise ValueError(f"noise: the model's {type(model.likelihood).__name__} likelihood has its own "
                             "noise; pass noise only for a FixedNoise likelihood")
        return
    if noise is None:
        raise ValueError("noise: a FixedNoise likelihood needs the variances of the new observations, "
                         f"shape ({q},) or (*batch, {q})")
    noise = as_float_tensor(noise, "noise", like=model.train_y).detach()
    if noise.dim() == 0 or noise.shape[-1] != q:
        raise ValueError(f"noise: expected shape ({q},) or (*batch, {q}), one variance per new observation, "
                         f"got {tuple(noise.shape)}")
    old = model.likelihood.noise
    shape = broadcast_shapes(batch, old.shape[:-1], noise.shape[:-1])
    new.likelihood.noise = torch.cat([old.expand(*shape, old.shape[-1]), noise.expand(*shape, q)], -1)


def condition_on_observations(model, x, y, noise=None):
    """``model`` conditioned on observations y at x (see the module docstring).

    x: ``(q, d)`` or ``(*b, q, d)``; y: ``(q,)`` or ``(*s, *b, q)``; noise: the new points' noise
    variances ``(q,)`` or ``(*batch, q)``, required for (and only for) a FixedNoise likelihood.
    Returns a model of ``model``'s class in ``model``'s mode (train/eval).

    Gradients: when x or y require grad (grad mode on), the new model's data and its extended
    Cholesky factor and alpha keep their graph, and its posteriors are differentiable in x and y
    as well as in their own test inputs, through every term (fantasy-based acquisition
    functions such as BoTorch's qKnowledgeGradient need this). That graph is built once: call
    ``backward`` once per conditioned model (BoTorch conditions anew at every evaluation). The
    CG path and models whose cache is rebuilt refuse such inputs (NotImplementedError); without
    grad the new data are constants.
    """
    if not getattr(model, "conditions_on_rows", True):
        raise NotImplementedError(f"condition_on_observations: {type(model).__name__} does not take new "
                                  "observations this way; build a new model on all the data")
    x = check_test_inputs(x, model.train_x)
    y = as_float_tensor(y, "y", like=model.train_y)
    track = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    if not track:
        x, y = x.detach(), y.detach()
    q = x.shape[-2]
    if y.dim() == 0 or y.shape[-1] != q:
        raise ValueError(f"y: expected shape ({q},) or (*batch, {q}), one value per row of x, got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"y: expected finite values, got {int((~torch.isfinite(y)).sum())} NaN or infinite")
    batch = _new_batch(model, x, y)
    n, d = model.train_x.shape[-2:]
    with torch.no_grad():
        cache = model._prediction_cache()
    new = _copy(model)
    _noise(model, new, noise, batch, q)
    new.set_train_data(torch.cat([model.train_x.expand(*batch, n, d), x.expand(*batch, q, d)], -2),
                       torch.cat([model.train_y.expand(*batch, n), y.expand(*batch, q)], -1))
    update = getattr(cache, "conditioned", None)
    if update is not None and new._cache_key() == cache.key:
        with torch.set_grad_enabled(track):
            new._prediction = update(new, x)
        if new._prediction is not None:
            new._prediction.key = cache.key
            new._prediction.data_grad = track
    elif track:
        raise NotImplementedError(f"x, y: gradients through conditioning need the Cholesky path of an exact GP "
                                  f"({type(model).__name__} with {getattr(cache, 'solver', None)!r} rebuilds its "
                                  "predictions); pass x and y without grad, or use fg.Cholesky()")
    return new
