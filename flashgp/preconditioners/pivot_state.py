# PivotCache, the state of the pivoted-Cholesky preconditioners (PivotedCholesky, RPCholesky): a
# model's pivots from its last fresh factorization, reused (as a Nystrom factor) by its next builds
# until refresh_every or the CG iterations say refresh; and when to grow the rank (max_rank).
from __future__ import annotations

import torch
from torch import Tensor

from ..operators.base import Operator
from .base import PreconditionerState
from .pivoted_cholesky import nystrom_factor, pivoted_cholesky_preconditioner

# how a build that chose its pivots afresh reports itself (``source``), per pivot rule
FRESH_SOURCES = {"greedy": "greedy", "sampled": "sampled"}
# the pivots have gone stale once a step needs more CG iterations than this many times (plus
# STALE_SLACK) the iterations of the step that chose them; the next build then chooses afresh
STALE_GROWTH = 1.5
STALE_SLACK = 2
# PivotedCholesky.max_rank: a fresh factor whose solve needs more than STALE_GROWTH * (the CG
# minimum, at least GROW_FLOOR) + STALE_SLACK iterations doubles the rank of the next build
GROW_FLOOR = 10
_STATE_SCALARS = ("n", "rank", "builds", "base_iterations", "stale")


class PivotCache(PreconditionerState):
    """The pivots of one model's last fresh pivoted Cholesky and when to choose new ones: the
    ``PreconditionerState`` of ``PivotedCholesky`` (rule "greedy") and ``RPCholesky`` (rule
    "sampled").

    A model holds one (a plain attribute: not a parameter or buffer, so ``fg.save`` leaves it
    out and ``set_train_data`` replaces it); fit checkpoints carry its ``state_dict()`` (alias
    ``state()``) so that a resumed run ends where an uninterrupted one does. It never changes
    results beyond the choice of preconditioner: every factor it gives is a pivoted-Cholesky
    (Nystrom) factor of the current kernel matrix, so P = L L^T + noise is SPD.

    Args:
        rule: how fresh pivots are chosen, "greedy" or "sampled"; the state serves only the
            configurations with that ``pivot_rule`` (``serves``), so a model that switches
            between them starts afresh.

    Attributes:
        pivots: ``(*batch, k)`` long, in pivot order, or None (nothing cached).
        counts: ``(*batch,)`` long, the leading pivots that are real per batch element, or None when
            all k are (an element whose greedy run stopped early has meaningless pivots after
            its count; the rebuild gives it zero columns there, as the greedy run did).
        key: (batch shape, n, dtype, device, rank) of the operator the pivots were chosen on.
        builds: preconditioner builds from these pivots, the fresh one included.
        base_iterations: CG iterations of the solve with the fresh factor (None until known).
        stale: a later solve needed more than STALE_GROWTH * base_iterations + STALE_SLACK.
        source: how the last build got its factor: "greedy" or "sampled" (fresh pivots, by the
            rule), "reused", or None (no pivots).
        blocks: the spatial blocks of the last block preconditioner ``(*batch, m, b)`` long, or None;
            builds from the same pivots reuse them (a fresh build orders the points afresh,
            at the current lengthscales).
        remaining_error: after a fresh build, the largest remaining diagonal error of
            K - L L^T and the threshold under which the factorization stops early, as a pair of
            floats (None after other builds).
        grown_rank: the rank fresh builds use once training has grown it (None: the config's
            rank; see ``PivotedCholesky.max_rank``). ``clear`` keeps it: it never shrinks.
    """

    def __init__(self, rule: str = "greedy"):
        if rule not in FRESH_SOURCES:
            raise ValueError(f"rule: expected one of {sorted(FRESH_SOURCES)}, got {rule!r}")
        self.rule = rule
        self.grown_rank: int | None = None
        self.clear()

    def serves(self, config) -> bool:
        """Whether ``config`` chooses its pivots by this state's rule (PivotedCholesky: "greedy",
        RPCholesky: "sampled")."""
        return getattr(config, "pivot_rule", None) == self.rule

    def clear(self) -> None:
        """Forget the pivots: the next build chooses them greedily."""
        self.pivots: Tensor | None = None
        self.counts: Tensor | None = None
        self.key: tuple | None = None
        self.builds = 0
        self.base_iterations: int | None = None
        self.stale = False
        self.source: str | None = None
        self.remaining_error: tuple[float, float] | None = None
        self.blocks: Tensor | None = None  # the block preconditioner's spatial blocks, if any
        self._vecchia = None  # the VecchiaState of the legacy ``vecchia`` method

    def _key(self, op: Operator, rank: int) -> tuple:
        return (tuple(op.batch_shape), op.shape[-1], op.dtype, op.device, rank)

    # ----- the three steps of a build (a cache of pivots over rows split across processes,
    # ``flashgp.distributed.ShardedPivotCache``, replaces them) ---------------------------------
    def _rebuild(self, kernel_op: Operator, pivots: Tensor, counts: Tensor | None) -> Tensor | None:
        """The factor at the current hyperparameters from cached pivots, or None (choose anew)."""
        return nystrom_factor(kernel_op, pivots, counts)

    def _fresh(self, kernel_op: Operator, config, rank: int, info: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(factor, pivots, counts) of new pivots chosen by ``config``'s rule."""
        return config.fresh_factor(kernel_op, rank, info)

    def _assemble(self, kernel_op: Operator, noise: Tensor, rank: int, config, factor: Tensor | None):
        """The preconditioner from ``factor`` (None only for rank 0)."""
        return pivoted_cholesky_preconditioner(kernel_op, noise, rank, config.block_size, factor, self.blocks)

    def rank(self, config) -> int:
        """The rank of the next fresh build for ``config`` (a ``flashgp.PivotedCholesky`` or
        ``flashgp.RPCholesky``): its rank, or the grown one, kept within [config.rank,
        config.max_rank]."""
        if config.max_rank is None or self.grown_rank is None:
            return config.rank
        return min(max(self.grown_rank, config.rank), config.max_rank)

    def preconditioner(self, kernel_op: Operator, noise: Tensor, config):
        """P = L L^T + diag(noise) for ``kernel_op`` ``(*batch, n, n)``, noise ``(*batch, n)``, or L L^T
        plus diagonal blocks when ``config.block_size`` > 0 (``pivoted_cholesky_preconditioner``).

        config: a ``flashgp.PivotedCholesky`` or ``flashgp.RPCholesky`` (its ``fresh_factor``
        chooses new pivots). L is rebuilt from the cached pivots while fewer than
        ``config.refresh_every`` builds used them, they are not stale and the operator's shape,
        dtype and device are those they were chosen on; else (or if the rebuild fails) new ones
        are chosen. Sets ``source``. No gradient flows through P. (``config.build`` calls this
        for training builds.)
        """
        with torch.no_grad():
            noise = noise.detach()
            self.remaining_error = None
            if config.rank == 0:
                self.source = None
                return self._assemble(kernel_op, noise, 0, config, None)
            rank = self.rank(config)
            key = self._key(kernel_op, rank)
            factor = None
            if (self.pivots is not None and self.key == key and not self.stale
                    and self.builds < config.refresh_every):
                factor = self._rebuild(kernel_op, self.pivots, self.counts)
            if factor is not None:
                self.builds += 1
                self.source = "reused"
            else:
                info = {}
                factor, pivots, counts = self._fresh(kernel_op, config, rank, info)
                self.clear()
                self.remaining_error = (info["remaining_error"], info["stop_threshold"])
                full = bool((counts == pivots.shape[-1]).all())
                self.pivots, self.counts = pivots, None if full else counts
                self.key, self.builds, self.source = key, 1, FRESH_SOURCES[self.rule]
            precond = self._assemble(kernel_op, noise, rank, config, factor)
            self.blocks = getattr(precond, "index", None)
            return precond

    def vecchia(self, kernel_op: Operator, noise: Tensor, config):
        """The Vecchia preconditioner for ``config`` (a ``flashgp.Vecchia``) from a VecchiaState
        kept inside this cache: what engines that hold one PivotCache for every configuration
        call. ``config.build(kernel_op, noise, VecchiaState())`` is the same. Sets ``source``:
        "searched" or "reused"."""
        from .vecchia_config import VecchiaState  # late: vecchia_config imports this module's base
        if self._vecchia is None:
            self._vecchia = VecchiaState()
        precond = config.build(kernel_op, noise, self._vecchia)
        self.source, self.remaining_error = self._vecchia.source, None
        return precond

    def record_iterations(self, iterations: int, floor: int = 0, max_rank: int | None = None) -> None:
        """Note the CG iterations of the solve with the last-built preconditioner. ``floor``: the
        solver's minimum (``CG.lanczos_iters``); ``max_rank``: the config's. A fresh factor of
        full rank that leaves CG well above the floor makes the next build grow the rank, up to
        max_rank (None: no growth)."""
        if self.source in FRESH_SOURCES.values():
            self.base_iterations = int(iterations)
            rank = self.key[-1]
            weak = iterations > STALE_GROWTH * max(floor, GROW_FLOOR) + STALE_SLACK
            if (weak and max_rank is not None and rank < max_rank
                    and self.pivots.shape[-1] == rank):  # a greedy run that stopped early is exact
                self.grown_rank = min(max_rank, 2 * rank)
                self.stale = True
        elif self.source == "reused" and self.base_iterations is not None:
            if iterations > STALE_GROWTH * self.base_iterations + STALE_SLACK:
                self.stale = True

    # ----- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """CPU tensors describing the cache (empty when nothing is cached), for fit checkpoints."""
        return self.state()

    def load_state_dict(self, state: dict, dtype: torch.dtype, device) -> None:
        """``load_state``: take ``state_dict()`` of a cache (also one written by earlier versions,
        whose fit checkpoints store ``state()``), or clear the cache if it is not usable."""
        self.load_state(state, dtype, device)

    def state(self) -> dict:
        """CPU tensors describing the cache (empty when nothing is cached), for fit checkpoints."""
        if self.pivots is None:
            return {}
        _, n, _, _, rank = self.key
        state = {"pivots": self.pivots.detach().cpu(), "n": n, "rank": rank, "builds": self.builds,
                 "base_iterations": -1 if self.base_iterations is None else self.base_iterations,
                 "stale": int(self.stale)}
        state = {name: torch.tensor(v) if name in _STATE_SCALARS else v for name, v in state.items()}
        if self.counts is not None:
            state["counts"] = self.counts.detach().cpu()
        if self.grown_rank is not None:
            state["grown_rank"] = torch.tensor(self.grown_rank)
        return state

    def load_state(self, state: dict, dtype: torch.dtype, device) -> None:
        """Take ``state()`` of a cache on an operator of ``dtype`` and ``device``. Anything that
        does not describe a usable cache (other names or shapes, pivots out of range) clears it
        instead: the next build then chooses its pivots greedily."""
        self.clear()
        if not _valid_state(state):
            return
        pivots = state["pivots"].to(device)
        counts = state.get("counts")
        self.pivots, self.counts = pivots, None if counts is None else counts.to(device)
        self.key = (tuple(pivots.shape[:-1]), int(state["n"]), dtype, torch.device(device),
                    int(state["rank"]))
        self.builds, self.stale = int(state["builds"]), bool(state["stale"])
        base = int(state["base_iterations"])
        self.base_iterations = None if base < 0 else base
        self.grown_rank = int(state["grown_rank"]) if "grown_rank" in state else None


def _valid_state(state) -> bool:
    """Whether ``state`` has the names, dtypes, shapes and ranges that ``PivotCache.state`` writes."""
    if not isinstance(state, dict) or not state:
        return False
    names = set(_STATE_SCALARS) | {"pivots"}
    if not names <= set(state) <= names | {"counts", "grown_rank"}:
        return False
    if not all(isinstance(v, Tensor) and v.dtype == torch.long for v in state.values()):
        return False
    if any(state[name].dim() != 0 for name in (*_STATE_SCALARS, "grown_rank") if name in state):
        return False
    if "grown_rank" in state and int(state["grown_rank"]) < 1:
        return False
    pivots, n, rank = state["pivots"], int(state["n"]), int(state["rank"])
    if pivots.dim() < 1 or pivots.shape[-1] > min(n, rank) or int(state["builds"]) < 1:
        return False
    if bool(((pivots < 0) | (pivots >= n)).any()):
        return False
    counts = state.get("counts")
    if counts is not None and (counts.shape != pivots.shape[:-1] or bool(
            ((counts < 0) | (counts > pivots.shape[-1])).any())):
        return False
    return True
