# Minibatch SGD for an ExactGP's hyperparameters (Chen et al. 2020, "Stochastic gradient descent in
# correlated settings: a study on Gaussian processes"): each step's loss is the exact negative log
# marginal likelihood of a random subset of m training rows, per point, on the float64 Cholesky engine.
"""The subset objective of ``fg.fit(exact_gp, batch_size=m)``.

``subset_loss(model, rows)`` is ``-log N(y_S; m(x_S), K_SS + diag(s_S)) / m`` for the rows S of
the model's training data (m = len(rows)): the model's kernel, mean and training noise
(``model.train_noise()`` at those rows, so ``FixedNoise`` works), factored by Cholesky in
float64 whatever the model's solver (O(m^3) time, m^2 memory per step).

Scaling: Chen et al. analyse the subset log likelihood scaled to the full data, (n / m) log
p(y_S); dividing that by n gives the per-point loss used here, the same scale as ``ExactGP.loss()``
(-mll / n), so a learning rate means the same in full-batch and minibatch training, and a prior's
term stays ``-log_prior / n`` (``flashgp.priors.objective``).

``SubsetBatches`` draws the rows of each step with ``flashgp.minibatches.Minibatches`` (an epoch
is ceil(n / m) steps, each epoch's order a permutation drawn from the seed and the epoch only), so
a resumed fit takes the rows an uninterrupted one would.
"""
from __future__ import annotations

import numbers
import time

import torch

from .minibatches import Minibatches
from .models import ExactGP
from .objectives import gaussian_log_density
from .solvers import Cholesky


def subset_loss(model, rows: torch.Tensor) -> torch.Tensor:
    """The exact negative log marginal likelihood of ``model``'s training rows ``rows`` (a 1-D
    index tensor, m >= 1 entries) divided by m: a float64 scalar, differentiable in the
    hyperparameters. Sets ``model.diagnostics`` ({"n": m, "path": "cholesky", "subset": True,
    "jitter", "seconds"}). The Cholesky configuration is the model's when its solver is a
    ``fg.Cholesky``, else ``fg.Cholesky()``."""
    start = time.perf_counter()
    rows = rows.to(model.train_x.device)
    x, y = model.train_x[..., rows, :], model.train_y[..., rows]
    noise = model.train_noise()[..., rows]
    solver = model.solver if isinstance(model.solver, Cholesky) else Cholesky()
    resid = (y - model.mean(x)).double()
    try:
        inv_quad, logdet, info = solver.engine().inv_quad_logdet(model.kernel, x.double(), noise.double(), resid)
    except ValueError as err:  # NotPSDError: diagnosed as ExactGP.mll does, else raised as it is
        model._nonfinite(err)
        raise
    m = rows.shape[0]
    value = -gaussian_log_density(inv_quad, logdet, m)
    model.diagnostics = {"n": m, **info.as_dict(), "subset": True, "seconds": time.perf_counter() - start}
    return value


class SubsetBatches:
    """The training rows of every step of ``fg.fit(model, batch_size=m)`` for an ExactGP
    (``flashgp.minibatches.Minibatches`` over the row indices 0..n-1, ``seed`` None meaning 0):
    ``batch(step)`` is a CPU index tensor of m rows (the last batch of an epoch may be smaller
    when m does not divide n; m >= n: all rows, in a new order each step), ``loss(model, rows)``
    its ``subset_loss``, ``settings()`` what a resumed fit must repeat."""

    loader = None  # never a DataLoader (fg.fit's CUDA-graph path checks it)

    def __init__(self, model, batch_size, seed: int | None = None):
        check_model(model)
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 2:
            raise ValueError(f"batch_size: expected an int >= 2 (the training points per subset), got {batch_size!r}")
        rows = torch.arange(model.num_train)
        self._order = Minibatches((rows, rows), int(batch_size), seed)
        self.num_data, self.batch_size = self._order.num_data, self._order.batch_size
        self.batches_per_epoch = self._order.batches_per_epoch

    def batch(self, step: int) -> torch.Tensor:
        return self._order.batch(step)[0]

    @staticmethod
    def loss(model, rows: torch.Tensor) -> torch.Tensor:
        return subset_loss(model, rows)

    def settings(self) -> dict:
        return self._order.settings()


def check_model(model) -> None:
    """ValueError unless ``model`` is an ExactGP without batch dimensions (data ``(n, d)``, a
    kernel and mean without batch shapes, training noise ``(n,)``)."""
    if not isinstance(model, ExactGP):
        raise ValueError(f"batch_size: subset training is for ExactGP models, got {type(model).__name__}")
    shapes = {"kernel": tuple(getattr(model.kernel, "batch_shape", ())),
              "mean": tuple(getattr(model.mean, "batch_shape", ())),
              "training noise": tuple(model.train_noise().shape[:-1])}  # a likelihood's own shape may be per task
    if model.train_x.dim() != 2 or any(shapes.values()):
        parts = ", ".join(f"{name} {shape}" for name, shape in shapes.items() if shape)
        raise ValueError(f"batch_size: subset (minibatch) training takes an ExactGP without batch dimensions "
                         f"(x of shape (n, d)); this {type(model).__name__} has data of shape "
                         f"{tuple(model.train_x.shape)}{' and batch shapes: ' + parts if parts else ''}; fit it "
                         "full-batch (batch_size=None) or fit each GP of the batch separately")
    if model.num_train < 2:
        raise ValueError(f"batch_size: subset training needs at least 2 training points, the model has {model.num_train}")
