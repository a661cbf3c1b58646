# Engine: the interface of an inference engine. A model hands it the kernel, the inputs, the noise
# diagonal and the centred targets; it returns the two terms of the exact objective, solves, and
# the factorization predictions need, with typed records of what it did.
from __future__ import annotations

import abc
import time

import torch


def seconds_since(start: float, device: torch.device) -> float:
    """Seconds from ``start`` (a ``time.perf_counter()`` reading) until the work queued on
    ``device`` has finished (CUDA runs asynchronously: without the wait, a timing would be
    that of queueing the kernels)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


class Engine(abc.ABC):
    """Inference with K_hat = K(x, x) + diag(noise) for one solver configuration.

    ``config``: the solver object it is built from (``fg.Cholesky()``, ``fg.CG(...)``; ``config.engine()``
    gives the engine). ``name`` ("cholesky", "cg") is ``model.diagnostics["path"]`` and the key
    under which models find how to predict with it.

    Shapes: x ``(*batch, n, d)``; noise ``(*batch, n)``; resid = y - m(x) ``(*batch, n)``.
    """

    name: str = ""
    #: whether ``inv_quad_logdet`` is exact and deterministic (then L-BFGS may polish a fit)
    exact: bool = False

    def __init__(self, config):
        self.config = config

    @abc.abstractmethod
    def inv_quad_logdet(self, kernel, x, noise, resid, state=None, generator=None):
        """(resid^T K_hat^{-1} resid ``(*batch,)``, log det K_hat ``(*batch,)``, info record), both
        differentiable in the kernel's parameters, the noise and resid. ``state``: the
        preconditioner state a model keeps between training steps (None: a fresh one);
        ``generator``: fixes random probes where the engine uses them."""

    def state_for(self, state):
        """The solver state this engine's solves use and update: ``state`` (a model's, or None)
        when it serves the engine's configuration, else a fresh one. The exact engine keeps none
        and returns ``state`` unchanged."""
        return state

    @abc.abstractmethod
    def system(self, kernel, x, noise, state=None):
        """The factorized or operator form of K_hat that predictions solve with (no gradients)."""

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.config == self.config

    def __hash__(self) -> int:
        return hash((type(self), self.config))
