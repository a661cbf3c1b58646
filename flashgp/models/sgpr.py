# SGPR: sparse GP regression with inducing points (Titsias' collapsed variational bound), exact
# in float64 by the Woodbury identity at O(n m^2), the n x m cross-covariance taken in row blocks.
from __future__ import annotations

import time

import torch
from torch import nn

from ..inducing import INIT_METHODS, select_inducing
from ..initial_values import init_from_data
from ..kernels import Kernel
from ..likelihoods import Likelihood
from ..linalg.inducing import block_rows
from ..means import Mean
from ..objectives import sgpr_elbo
from ..operators import KernelOperator
from ..serialize import (kernel_from_config, kernel_to_config, likelihood_from_config, likelihood_to_config,
                         mean_from_config, mean_to_config, register_model)
from .base import Prior
from .finite import parameters_finite
from .regression import RegressionModel
from .sgpr_prediction import SGPRPrediction
from .validation import check_test_inputs

DEFAULT_INDUCING = 500


def _check_options(jitter, memory_budget, seed) -> None:
    if jitter is not None and (isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not jitter > 0):
        raise ValueError(f"jitter: expected None or a positive number (relative to K_zz's mean diagonal), got {jitter!r}")
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                      or memory_budget <= 0):
        raise ValueError(f"memory_budget: expected None or a positive number of bytes, got {memory_budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r}")


@register_model("SGPR")
class SGPR(RegressionModel):
    """Sparse GP regression with m inducing inputs Z (Titsias 2009; GPflow's ``SGPR``, GPyTorch's
    ``InducingPointKernel``): trained on the collapsed evidence lower bound, ``elbo()``
    (``loss() = -elbo()``), which is at most the exact log marginal likelihood and equals it when
    the inducing points explain the kernel on the data; predictions are the bound's optimal
    posterior.

    Args:
        x: training inputs (n, d), or (b, n, d) for a batch of b independent GPs; (n,) is (n, 1).
        y: training targets (n,) or (b, n).
        kernel: a ``flashgp.kernels.Kernel``.
        inducing: the number of inducing points m (at most n; default 500, or n when smaller),
            chosen from x by ``init``; or the inducing inputs themselves, a tensor (m, d) or
            ``(*batch, m, d)``.
        likelihood: ``Gaussian()`` (default) or ``FixedNoise(noise)`` (one variance per point).
        mean: ``Constant()`` (default), ``Zero()`` or ``Linear(d)``.
        init: how m inducing points are chosen from x: "kmeans++" (default; spread over the
            inputs) or "rpcholesky" (randomly pivoted Cholesky at the kernel's initial
            hyperparameters), ``flashgp.inducing.select_inducing``.
        learn_inducing: train the inducing inputs with the hyperparameters (default True; False
            keeps them fixed, a buffer).
        jitter: added to K_zz's diagonal, relative to its mean (None: only when K_zz does not
            factor, with a warning).
        memory_budget: bytes for one block of the float64 cross-covariance and its temporaries
            (default 256 MiB on a CPU, 4 GiB on a GPU): beyond, the n x m matrix is taken in
            row blocks, each recomputed in the backward pass.
        seed: seeds the choice of inducing points.

    Every bound, solve and log determinant is exact in float64 by the Woodbury identity at
    O(n m^2 + m^3) time (no CG, no probes: deterministic, so L-BFGS may polish a fit) and
    O(m^2 + block) memory; float32 models compute in float64 too. ``inducing_points``
    ``(*batch, m, d)`` holds Z; ``diagnostics`` after ``elbo()``: path "sgpr", inducing (m), blocks,
    jitter (added to K_zz), seconds.
    """

    config_keys = frozenset({"kernel", "likelihood", "mean", "init", "learn_inducing", "jitter",
                             "memory_budget", "seed"})

    def __init__(self, x, y, kernel: Kernel, inducing=None, likelihood: Likelihood | None = None,
                 mean: Mean | None = None, init: str = "kmeans++", learn_inducing: bool = True,
                 jitter: float | None = None, memory_budget: int | None = None, seed: int = 0):
        super().__init__(x, y, kernel, likelihood, mean)
        if init not in INIT_METHODS:
            raise ValueError(f"init: expected one of {INIT_METHODS}, got {init!r}")
        if not isinstance(learn_inducing, bool):
            raise TypeError(f"learn_inducing: expected True or False, got {learn_inducing!r}")
        _check_options(jitter, memory_budget, seed)
        self.init, self.learn_inducing, self.jitter = init, learn_inducing, jitter
        self.memory_budget, self.seed = memory_budget, seed
        self._take_data()
        init_from_data(self)
        self._set_inducing(self._inducing_inputs(inducing))

    def _inducing_inputs(self, inducing) -> torch.Tensor:
        """Z ``(*batch, m, d)`` from the ``inducing`` argument (a count or a tensor)."""
        x = self.train_x
        n, d = x.shape[-2:]
        if inducing is None or (isinstance(inducing, int) and not isinstance(inducing, bool)):
            m = min(DEFAULT_INDUCING, n) if inducing is None else inducing
            if m < 1:
                raise ValueError(f"inducing: expected a positive number of inducing points, got {m}")
            with torch.no_grad():
                return select_inducing(x, min(m, n), self.init, self.kernel, self.seed)
        if not isinstance(inducing, torch.Tensor):
            raise TypeError(f"inducing: expected a number of inducing points or a tensor (m, d), "
                            f"got {type(inducing).__name__}")
        z = inducing.detach().to(dtype=x.dtype, device=x.device)
        if z.dim() == 1 and d == 1:
            z = z.unsqueeze(-1)
        if z.dim() < 2 or z.shape[-1] != d or z.shape[-2] < 1:
            raise ValueError(f"inducing: expected inducing inputs of shape (m, {d}) or (*batch, m, {d}), "
                             f"got {tuple(inducing.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("inducing: the inducing inputs contain NaN or infinite values")
        return z.clone()

    def _set_inducing(self, z: torch.Tensor) -> None:
        if self.learn_inducing:
            self.inducing_points = nn.Parameter(z)
        else:
            self.register_buffer("inducing_points", z)

    @property
    def deterministic(self) -> bool:
        """Always True: the bound is exact (Woodbury, float64) and uses no random numbers."""
        return True

    @property
    def num_inducing(self) -> int:
        """The number of inducing points m."""
        return self.inducing_points.shape[-2]

    # ----- training -----------------------------------------------------------------
    def elbo(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The collapsed evidence lower bound divided by n, ``(*batch,)``, differentiable in the
        hyperparameters and the inducing inputs (``objectives.sgpr_elbo``). ``generator`` is
        accepted for the model interface and unused (the bound is deterministic)."""
        start = time.perf_counter()
        self._check_noise_count(self.num_train)
        if not parameters_finite(self):
            self._nonfinite(None)
        try:
            value, info = sgpr_elbo(self.kernel, self.mean, self.likelihood, self.train_x, self.train_y,
                                    self.inducing_points, self.jitter, self._rows())
        except ValueError as err:  # NotPSDError from K_zz
            self._nonfinite(err)
            raise
        if not bool(torch.isfinite(value).all()):
            self._nonfinite(None)
        self.diagnostics = {"n": self.num_train, "path": "sgpr", **info, "seconds": time.perf_counter() - start}
        return value.to(self.dtype)

    def loss(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """-elbo(): the negative collapsed bound per point, ``(*batch,)``."""
        return -self.elbo(generator)

    def _rows(self) -> int:
        batch = int(torch.Size(torch.broadcast_shapes(self.train_x.shape[:-2],
                                                      self.inducing_points.shape[:-2])).numel())
        return block_rows(self.num_inducing, batch, self.memory_budget, self.device)

    def prior(self, x) -> Prior:
        """The prior mean ``(*batch, m)`` and kernel operator ``(*batch, m, m)`` at inputs x (m, d) or
        ``(*batch, m, d)`` (the exact kernel, not its Nystrom approximation)."""
        x = check_test_inputs(x, self.train_x)
        return Prior(self.mean(x), KernelOperator(self.kernel, x))

    # ----- files and checkpoints ------------------------------------------------------
    def config(self) -> dict:
        """The kernel, likelihood and mean (``flashgp.serialize``) and the SGPR options; the
        inducing inputs are a tensor of the state dict."""
        return {"kernel": kernel_to_config(self.kernel), "likelihood": likelihood_to_config(self.likelihood),
                "mean": mean_to_config(self.mean), "init": self.init, "learn_inducing": self.learn_inducing,
                "jitter": self.jitter, "memory_budget": self.memory_budget, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict, tensors: dict) -> SGPR:
        """An SGPR on tensors["train_x"], tensors["train_y"] with tensors["inducing_points"]."""
        if "inducing_points" not in tensors:
            raise ValueError("inducing_points: the model file holds no inducing inputs")
        return cls(tensors["train_x"], tensors["train_y"], kernel_from_config(config["kernel"]),
                   inducing=tensors["inducing_points"], likelihood=likelihood_from_config(config["likelihood"]),
                   mean=mean_from_config(config["mean"]), init=config["init"],
                   learn_inducing=config["learn_inducing"], jitter=config["jitter"],
                   memory_budget=config["memory_budget"], seed=config["seed"])

    # ----- prediction ---------------------------------------------------------------
    def _new_prediction(self, snapshot) -> SGPRPrediction:
        return SGPRPrediction(self, snapshot, self._rows())
