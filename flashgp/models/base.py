# GPModel: the interface every flashgp model implements (prior, training objective, posterior,
# and what files and checkpoints need), so fit, save/load, checkpoints, the estimator and the
# plots serve any registered model. ExactGP is the first implementation.
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn

from ..operators.base import Operator


@dataclass(frozen=True)
class Prior:
    """The prior at test inputs: mean ``(*batch, m)`` and covariance, an Operator ``(*batch, m, m)``."""

    mean: torch.Tensor
    covariance: Operator


class GPModel(nn.Module, abc.ABC):
    """A Gaussian-process model on the flashgp engine.

    A model holds its training data (``train_x`` ``(*batch, n, d)``, ``train_y`` ``(*batch, n)`` as
    buffers), its parts (kernel, likelihood, mean, solver configuration) and any solver state
    that training reuses between steps (preconditioner pivots, neighbour indices). It
    implements:

    - ``prior(x)``: the prior mean and covariance operator at inputs x ``(*batch, m, d)``.
    - ``loss(generator=None)``: the training objective, negated and divided by the number of
      data points, shape ``(*batch,)``, differentiable in the parameters; ``fg.fit`` minimizes its
      sum. ``generator`` fixes any randomness (CG probes) for deterministic optimizers.
    - ``posterior(x)``: the latent posterior at test inputs, a ``flashgp.distributions.Posterior``;
      ``predict(x)`` adds the likelihood's observation noise.
    - ``config()`` / ``from_config(config, tensors)``: the JSON-ready structure of the model
      (everything but its tensors) and the constructor that rebuilds it; with ``state_dict``
      they make the model file (``fg.save`` / ``fg.load``). A model class is made loadable by
      ``flashgp.serialize.register_model``. ``file_model()`` is what files hold (itself, unless
      the model is spread over processes).
    - ``solver_state()`` / ``load_solver_state(state)``: the solver state a resumed fit needs to
      continue exactly as an uninterrupted one (CPU tensors by name; {} when there is none).

    ``diagnostics`` (a dict) describes the last solve, for users and ``fg.fit``'s history.
    """

    #: the keys of ``config()`` (checked when a file is read)
    config_keys: frozenset = frozenset()
    #: the buffers holding the training data (files must hold them; staleness checks compare
    #: them by version, not by value); () for a model that keeps no data (``SVGP``)
    data_buffers: tuple = ("train_x", "train_y")
    #: whether ``loss(batch=(x, y))`` trains on minibatches of data passed to ``fg.fit``
    trains_on_batches: bool = False

    def __init__(self):
        super().__init__()
        self.diagnostics: dict = {}

    # ----- the data --------------------------------------------------------------------------
    @property
    def num_train(self) -> int:
        """The number of training points n."""
        return self.train_x.shape[-2]

    @property
    def input_dims(self) -> int:
        """d, the number of input columns."""
        return self.train_x.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's data and parameters."""
        return self.train_x.dtype

    @property
    def device(self) -> torch.device:
        """The device of the model's data and parameters."""
        return self.train_x.device

    @property
    def deterministic(self) -> bool:
        """Whether ``loss()`` is exact and deterministic at fixed parameters (no random probes, no
        iterative tolerance): then L-BFGS may polish a fit (the estimator's ``polish="auto"``)."""
        return False

    # ----- what a model implements -------------------------------------------------------------
    @abc.abstractmethod
    def prior(self, x: torch.Tensor) -> Prior:
        """The prior at inputs x ``(*batch, m, d)``."""

    @abc.abstractmethod
    def loss(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The negated training objective per data point, ``(*batch,)``, differentiable."""

    @abc.abstractmethod
    def posterior(self, x: torch.Tensor):
        """The latent posterior p(f(x*) | data) at x ``(*batch, m, d)``, a ``Posterior``."""

    def predict(self, x: torch.Tensor, noise=None):
        """The predictive distribution of observations y* at x: the posterior plus the
        likelihood's noise (``noise``: per-point test noise variances where the likelihood
        takes them)."""
        post = self.posterior(x)
        with torch.no_grad():
            post.noise = self.likelihood.noise_diag(post.mean.shape[-1], noise).expand_as(post.mean)
        return post

    @abc.abstractmethod
    def config(self) -> dict:
        """The model's structure as a JSON-ready dict with the keys ``config_keys``."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict, tensors: dict) -> GPModel:
        """A model with the structure ``config`` (a ``config()`` dict) and training data from
        ``tensors`` (a ``state_dict``); the caller loads the tensors into it afterwards."""

    def solver_state(self) -> dict:
        """CPU tensors (by name) of the solver state training reuses; {} when there is none."""
        return {}

    def file_model(self) -> GPModel:
        """The model that ``fg.save`` and fit checkpoints write for this one: itself. A model
        whose training rows are spread over processes gives a registered model holding all of
        them that shares its parameters (``ShardedExactGP``: an ``ExactGP``), so its files are
        those of that model."""
        return self

    def check_resume(self, step: int | None) -> None:
        """Called by ``fg.fit`` with a checkpoint before its first step: the step it goes on from
        (0: a fresh start; None: this process failed to read the checkpoint and is about to
        raise). Nothing to check for a model on one process; one spread over processes checks
        that all of them start from the same step and parameters."""

    @property
    def writes_checkpoints(self) -> bool:
        """Whether this process writes ``fg.fit``'s checkpoints of the model (True; of a model
        spread over processes, only rank 0 does)."""
        return True

    def load_solver_state(self, state: dict) -> None:
        """Take ``solver_state()`` of an identical model; anything unusable is ignored (the
        next solve then starts afresh)."""
