# The Vecchia preconditioner's configuration (fg.Vecchia) and its state, the neighbour index that
# training steps share (Vecchia.refresh_every).
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..operators.sparse_inverse import SparseInverseCholesky
from .base import PreconditionerConfig, PreconditionerState, check_noise, check_number, check_purpose, tagged
from .vecchia import vecchia_preconditioner

_SCALARS = ("n", "neighbors", "seed", "builds")


class VecchiaState(PreconditionerState):
    """The neighbour index of a model's last Vecchia search, shared by its next builds.

    Attributes:
        index: ``(*batch, n, m + 1)`` long (``vecchia_index``), or None.
        key: (batch shape, n, device, neighbors, seed) of the search.
        builds: builds that used the index, the search's included.
        source: "searched" or "reused" (the last build), or None.

    ``state_dict()`` holds the index (n (m + 1) integers: 248 MB at n = 1M, m = 30), so that a
    resumed fit reuses it as an uninterrupted one does.
    """

    def __init__(self):
        self.clear()

    def serves(self, config) -> bool:
        return isinstance(config, Vecchia)

    def clear(self) -> None:
        super().clear()
        self.index: Tensor | None = None
        self.key: tuple | None = None
        self.builds = 0

    def state_dict(self) -> dict[str, Tensor]:
        if self.index is None:
            return {}
        _, n, _, neighbors, seed = self.key
        return {"index": self.index.detach().cpu(), "n": torch.tensor(n),
                "neighbors": torch.tensor(neighbors), "seed": torch.tensor(seed),
                "builds": torch.tensor(self.builds)}

    def load_state_dict(self, state: dict, dtype: torch.dtype, device) -> None:
        self.clear()
        if not _valid_state(state):
            return
        index = state["index"].to(device)
        self.index, self.builds = index, int(state["builds"])
        self.key = (tuple(index.shape[:-2]), int(state["n"]), torch.device(device),
                    int(state["neighbors"]), int(state["seed"]))


def _valid_state(state) -> bool:
    """Whether ``state`` has the names, dtypes, shapes and ranges ``VecchiaState.state_dict`` writes."""
    if not isinstance(state, dict) or set(state) != {"index", *_SCALARS}:
        return False
    if not all(isinstance(v, Tensor) and v.dtype == torch.long for v in state.values()):
        return False
    if any(state[name].dim() != 0 for name in _SCALARS):
        return False
    index, n, m = state["index"], int(state["n"]), int(state["neighbors"])
    width = min(m, n - 1) + 1 if n > 1 else 2
    if index.dim() < 2 or index.shape[-2:] != (n, width) or int(state["builds"]) < 1 or m < 1:
        return False
    return not bool(((index < 0) | (index > n)).any())


@dataclass(frozen=True)
class Vecchia(PreconditionerConfig):
    """Preconditioner P = (U^T U)^{-1}, U a sparse inverse Cholesky factor of K_hat: each point
    conditioned on its ``neighbors`` nearest predecessors in a random order of the points, in
    the lengthscale-scaled inputs (``preconditioners.vecchia``). For stationary kernels in few dimensions
    with many points per lengthscale and a small noise, where a low-rank factor is far from
    K_hat: random orders make the first points sparse, so the conditionals cover long range
    as well as short.

    CG then runs on U K_hat U^T with N(0, I) probes (the same estimator as preconditioned CG
    with N(0, P) probes; no triangular solve is needed), so its residuals and ``CG.tol`` are
    measured in the P^{-1} norm in training. Needs a KernelOperator (any backend).

    Args:
        neighbors: predecessors per point (m). Memory: n (m + 1) weights and indices; build:
            n kernel blocks of (m + 1)^2 entries and their float64 Cholesky factors, plus a
            nearest-neighbour search (grid for up to 4 dimensions, else exhaustive blocks).
        refresh_every: preconditioner builds of a model's training that share one neighbour
            search (the weights are rebuilt at every build; the neighbours were chosen at the
            lengthscales of the search). 1 searches at every build.
        seed: the random order's seed.

    Measured: at n = 1M (d = 3, Matern 5/2, the final hyperparameters of a 1M fit, one H200) a
    training step with Vecchia(30) and ``lanczos_iters=10`` took 9.88 s (10 CG iterations),
    against 18.45 s for rank 800 with 20 iterations (``python examples/large_gpu_fit.py --n
    1000000 --backend triton --precision fp16x3 --iters 2 --vecchia 30 --lanczos-iters 10
    --raw-parameters benchmarks/million_fit_parameters.json``, and ``--precond-rank 800
    --lanczos-iters 20`` in place of the Vecchia options);
    a build with the neighbours reused costs a fraction of one with a new search. On a CPU
    stand-in of that state (n = 12,000) its 10-iteration mll was 1.8e-4 nats per point off
    float64 Cholesky and its gradient 0.3%, where rank 400 with 25 iterations was 0.77 nats off
    with a gradient pointing the wrong way (``python benchmarks/precond_rank.py --n 12000
    --lengthscale 0.1181 0.1075 0.1265 --outputscale 1.9793 --noise 0.008908 --ranks 400
    --vecchia 30 --lanczos-iters 10 --reference --repeats 2 --backend dense``). On UCI sets (H200, 20 Adam
    steps) it made protein's step faster (20 CG iterations a step instead of 20-61, a lower test
    NLL) and elevators' and kin40k's slightly slower, with their RMSE and NLL unchanged. Not the
    default: high-dimensional inputs make nearest neighbours a weak guide, and the search there
    is exhaustive (O(n^2)).
    """

    kind = "vecchia"

    neighbors: int = 30
    refresh_every: int = 10
    seed: int = 0

    def __post_init__(self):
        check_number(self, "neighbors", integer=True)
        check_number(self, "refresh_every", integer=True)
        check_number(self, "seed", integer=True, allow_zero=True)

    def new_state(self) -> VecchiaState:
        return VecchiaState()

    def build(self, kernel_op, noise: Tensor, state: VecchiaState | None = None,
              purpose: str = "train") -> SparseInverseCholesky:
        """The Vecchia preconditioner of kernel_op + diag(noise), with the state's neighbour
        index while it is current (fewer than ``refresh_every`` builds used it, same batch
        shape, n, device, neighbours and seed), else a new search. Training and prediction
        alike (a prediction build counts as a build of the index). Sets ``state.source``:
        "searched" or "reused"."""
        check_purpose(purpose)
        noise = check_noise(noise)
        state = self._state_for(state)
        with torch.no_grad():
            key = (tuple(kernel_op.batch_shape), kernel_op.shape[-1], kernel_op.device,
                   self.neighbors, self.seed)
            reuse = state.index is not None and state.key == key and state.builds < self.refresh_every
            precond = vecchia_preconditioner(kernel_op, noise, self.neighbors, self.seed,
                                             state.index if reuse else None)
            state.index, state.key = precond.index, key
            state.builds = state.builds + 1 if reuse else 1
            state.source = "reused" if reuse else "searched"
            state.remaining_error = None
        return tagged(precond, self.kind)
