# The preconditioner protocol: what CG and the log-det estimate use of a built preconditioner
# (Preconditioner), how a configuration builds one (PreconditionerConfig), and what a model keeps
# between the builds of its training steps (PreconditionerState). No imports from the rest of
# flashgp: the operators that implement Preconditioner import this module.
"""Three roles, so that the inference engine never asks which kind of preconditioner it has:

* ``PreconditionerConfig``: a frozen dataclass the user passes as ``fg.CG(precond=...)``.
  ``config.new_state()`` gives the state that serves it; ``config.build(kernel_op, noise,
  state, purpose)`` gives a ``Preconditioner`` (no gradient); after each training solve the
  engine calls ``config.record_iterations(state, iterations, floor)``.
* ``PreconditionerState``: one per model, kept across training steps (pivots, a neighbour
  index, ...); ``state_dict()`` / ``load_state_dict()`` for fit checkpoints.
* ``Preconditioner``: P ``(*batch, n, n)``, SPD: ``solve``, ``logdet``, ``sample``; a split one
  (P^{-1} = U^T U) also ``mul`` and ``mul_t``; ``spectrum_floor`` and ``info()``.
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

PURPOSES = ("train", "predict")


@dataclass(frozen=True)
class PreconditionerInfo:
    """What a built preconditioner reports for ``model.diagnostics``.

    kind: the configuration that built it ("pivoted_cholesky", "rpcholesky", "nystrom",
        "vecchia"; an operator built directly says "low_rank", "low_rank_blocks" or
        "sparse_inverse").
    rank: columns of its low-rank part (0: none).
    block_size: points per diagonal block (0: no blocks).
    neighbors: predecessors per point of a Vecchia factor (0: not one).
    block_repairs: for preconditioners built from small Cholesky factors (blocks, Vecchia),
        {"jittered_blocks", "max_jitter", "diagonal_blocks"}; None for the others.
    """

    kind: str
    rank: int
    block_size: int
    neighbors: int
    block_repairs: dict | None


class Preconditioner(ABC):
    """A built preconditioner P ``(*batch, n, n)``, symmetric positive definite, without gradient.

    Subclasses give ``shape``, ``dtype``, ``device`` and the three abstract methods; the class
    attributes below are the defaults of a preconditioner that is applied as a whole.

    Attributes:
        split: True when P^{-1} = U^T U with U known by its products (``mul``, ``mul_t``):
            CG then runs on U K_hat U^T (``linalg.inv_quad_logdet``) and never calls ``solve``
            in training.
        spectrum_floor: a number mu > 0 with mu <= every eigenvalue of P^{-1} K_hat in exact
            arithmetic, or None (no bound known). Certified variances (``models.certified``)
            use Gauss-Radau bounds where it is known.
        rank: columns of a low-rank part (0: none). block_size: points per diagonal block.
        build_info: what the build reports (block repairs, neighbours), or None.
        kind: the configuration that built it (``info().kind``); builders set it.
        sharded_rows: ``(start, stop, n)`` when P's rows are split across processes and this
            object holds rows start:stop of n (``flashgp.distributed``: its solve, log det and
            samples then sum over every process's rows); None (default): it holds all rows.
            ``linalg.inv_quad_logdet`` with sharded rows takes only such a preconditioner.
    """

    split: bool = False
    sharded_rows: tuple[int, int, int] | None = None
    spectrum_floor: float | None = None
    rank: int = 0
    block_size: int = 0
    build_info: dict | None = None
    kind: str = "preconditioner"

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size(self.shape[:-2])

    @abstractmethod
    def solve(self, rhs: Tensor) -> Tensor:
        """P^{-1} rhs for rhs ``(*batch, n, t)`` -> ``(*batch, n, t)``."""

    @abstractmethod
    def logdet(self) -> Tensor:
        """log det P, shape ``(*batch,)``."""

    @abstractmethod
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``num_samples`` draws from N(0, P), shape ``(*batch, n, num_samples)``."""

    def mul(self, rhs: Tensor) -> Tensor:
        """U rhs for a split preconditioner (P^{-1} = U^T U), rhs ``(*batch, n, t)``."""
        raise TypeError(f"{type(self).__name__} is not split: it has no factor U to multiply by")

    def mul_t(self, rhs: Tensor) -> Tensor:
        """U^T rhs for a split preconditioner (P^{-1} = U^T U), rhs ``(*batch, n, t)``."""
        raise TypeError(f"{type(self).__name__} is not split: it has no factor U to multiply by")

    def info(self) -> PreconditionerInfo:
        """Rank, blocks, neighbours and block repairs of this preconditioner (diagnostics)."""
        built = self.build_info
        repairs = None if built is None else {
            "jittered_blocks": built.get("jittered_blocks", 0),
            "max_jitter": built.get("max_jitter", 0.0),
            "diagonal_blocks": built.get("diagonal_blocks", 0)}
        neighbors = 0 if built is None else built.get("neighbors", 0)
        return PreconditionerInfo(kind=self.kind, rank=int(self.rank), block_size=int(self.block_size),
                                  neighbors=int(neighbors), block_repairs=repairs)


class PreconditionerState:
    """What one model keeps between the preconditioner builds of its training steps.

    Attributes:
        source: what the last build did, for ``model.diagnostics["precond_pivots"]`` (e.g.
            "greedy", "sampled", "reused", "searched", "sketched"), or None.
        remaining_error: after a build that measured it, (the largest remaining diagonal error
            of K - L L^T, the threshold under which the factorization stops early); else None.
    """

    source: str | None = None
    remaining_error: tuple | None = None

    def serves(self, config) -> bool:
        """Whether this state can be passed to ``config.build`` (else use ``config.new_state()``)."""
        raise NotImplementedError

    def clear(self) -> None:
        """Forget everything cached: the next build starts afresh."""
        self.source, self.remaining_error = None, None

    def state_dict(self) -> dict[str, Tensor]:
        """CPU tensors describing the state, for fit checkpoints ({} when nothing is cached)."""
        return {}

    def load_state_dict(self, state: dict, dtype: torch.dtype, device) -> None:
        """Take ``state_dict()`` of a state on an operator of ``dtype`` and ``device``; anything
        that does not describe a usable state clears this one instead."""
        self.clear()


class EmptyState(PreconditionerState):
    """The state of a configuration that keeps nothing between builds (``config_type``'s)."""

    def __init__(self, config_type: type):
        self.config_type = config_type
        self.clear()

    def serves(self, config) -> bool:
        return isinstance(config, self.config_type)


class PreconditionerConfig:
    """The base of the preconditioner configurations (frozen dataclasses: fields are settings).

    ``kind`` names the configuration in ``PreconditionerInfo``. Subclasses implement
    ``new_state`` and ``build``; ``record_iterations`` is a no-op unless they use it.
    """

    kind: str = "preconditioner"

    def new_state(self) -> PreconditionerState:
        """A fresh state of the class that serves this configuration."""
        raise NotImplementedError

    def build(self, kernel_op, noise: Tensor, state: PreconditionerState | None = None,
              purpose: str = "train") -> Preconditioner:
        """The preconditioner of K_hat = kernel_op + diag(noise), under no_grad.

        kernel_op: a flashgp KernelOperator ``(*batch, n, n)`` (some configurations accept any
        symmetric PSD Operator); noise: ``(*batch, n)`` positive. state: this model's state (None:
        a fresh one, nothing reused); it is updated. purpose: "train" (the training solves) or
        "predict" (the posterior mean solve, to a tighter tolerance).
        """
        raise NotImplementedError

    def record_iterations(self, state: PreconditionerState, iterations: int, floor: int = 0) -> None:
        """Note the CG iterations of the training solve with the last build (``floor``: the
        solver's minimum, ``CG.lanczos_iters``)."""

    # ----- helpers of the builders ------------------------------------------------------------
    def _state_for(self, state: PreconditionerState | None) -> PreconditionerState:
        """``state`` if it serves this configuration, a fresh one for None; else TypeError."""
        if state is None:
            return self.new_state()
        if not isinstance(state, PreconditionerState) or not state.serves(self):
            raise TypeError(f"state: a {type(state).__name__} does not serve {type(self).__name__}; "
                            f"use config.new_state()")
        return state


def check_purpose(purpose) -> None:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose: expected one of {PURPOSES}, got {purpose!r}")


def check_noise(noise) -> Tensor:
    """noise ``(*batch, n)`` tensor, detached."""
    if not isinstance(noise, Tensor):
        raise TypeError(f"noise: expected a torch.Tensor, got {type(noise).__name__}")
    return noise.detach()


def tagged(precond: Preconditioner, kind: str) -> Preconditioner:
    """``precond`` with its ``kind`` set (the configuration that built it)."""
    precond.kind = kind
    return precond


def check_number(config, name: str, integer: bool = False, allow_zero: bool = False) -> None:
    """Check the field ``name`` of the frozen dataclass ``config``: a finite number > 0 (>= 0 with
    ``allow_zero``), an int if ``integer``; numpy scalars are stored as Python int/float."""
    value = getattr(config, name)
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name}: expected {'an int' if integer else 'a number'}, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}: expected {'>= 0' if allow_zero else '> 0'}, got {value}")
    object.__setattr__(config, name, int(value) if integer else float(value))
