# Finishing a first-order fit with deterministic L-BFGS steps. Adam at a fixed learning rate stops
# near the optimum of the marginal likelihood but not at it (its steps keep a size of about lr);
# a few L-BFGS steps with a line search then converge, as scikit-learn's L-BFGS-B fit does.
# Any GPModel: the objective is -model.loss() (an ExactGP's mll per point), with the log prior
# of attached priors (flashgp.priors) a MAP objective, as fg.fit's.
from __future__ import annotations

import math
import warnings

import torch

from .errors import NotPSDError, NumericalWarning
from .fit import History, fit
from .priors import has_priors, objective

REJECTED_TRIAL = "L-BFGS trial point rejected"  # how fit() words a line-search trial it backed off from


def _objective(model, seed: int) -> float:
    """-model.loss() summed over batches (an ExactGP's mll per point) at the current parameters,
    plus log_prior / n with priors attached (``flashgp.priors.objective``), with probes seeded
    by ``seed`` (CG path); -inf where the kernel matrix cannot be factored."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    try:
        with torch.no_grad():
            return -float(objective(model, model.loss(generator=generator).sum()))
    except NotPSDError:
        return -math.inf


def polish_lbfgs(model, steps: int = 5, seed: int = 0, progress: bool = False) -> History:
    """Run ``steps`` L-BFGS steps (each up to 20 iterations, strong Wolfe line search, lr 1.0) on
    ``model.loss()`` of a ``flashgp.models.GPModel``, keeping them only if they raised the
    objective -loss (the mll per point for an ExactGP; "mll" below). With priors attached
    (``flashgp.priors``) the objective is the MAP one ``fg.fit`` minimizes, -loss + log_prior / n
    ("log posterior" in the warning).

    The probe vectors are fixed by ``seed``, so on the CG path the objective is deterministic too.
    Line-search trial points where the kernel matrix cannot be factored are backed off from
    without a warning (they are part of the search); other warnings pass through.
    If the mll ends lower than it started, or not finite, the parameters go back to where they were
    and a ``NumericalWarning`` gives both values (a start where the kernel matrix cannot be
    factored counts as mll -inf, so any finite end point is kept).

    Returns:
        The L-BFGS run's ``History`` (``stopped_early`` also notes a reverted polish).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    before = _objective(model, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, optimizer="lbfgs", lr=1.0, iters=steps, progress=progress, seed=seed)
    for warning in caught:  # trial points the line search backed off from are part of its work
        if not str(warning.message).startswith(REJECTED_TRIAL):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    after = _objective(model, seed)
    if not (math.isfinite(after) and after >= before):  # NaN fails both tests
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
        what = "log posterior" if has_priors(model) else "mll"
        message = (f"L-BFGS polish ended at {what} {after:.6g} per point, below the {before:.6g} it "
                   f"started from; the parameters were reset to the starting point")
        warnings.warn(message, NumericalWarning, stacklevel=2)
        history.stopped_early = message
    return history
