# The pivot-based preconditioner configurations (PivotConfig: builds from a PivotCache, training
# and prediction) and the greedy one, PivotedCholesky.
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import PreconditionerConfig, check_noise, check_number, check_purpose, tagged
from .pivot_state import PivotCache
from .pivoted_cholesky import pivoted_cholesky_preconditioner, pivoted_cholesky_with_pivots


class PivotConfig(PreconditionerConfig):
    """A configuration whose preconditioner is P = L L^T + diag(noise) (or L L^T plus diagonal
    blocks) with L a partial Cholesky factor of K at pivots, chosen by ``fresh_factor`` (the
    rule ``pivot_rule``) and reused across training steps by its state, a ``PivotCache``.

    Subclasses are frozen dataclasses with the fields rank, refresh_every, max_rank, eval_rank
    and block_size, and implement ``fresh_factor(kernel_op, rank, info)``.
    """

    pivot_rule: str = "greedy"

    def new_state(self) -> PivotCache:
        return PivotCache(self.pivot_rule)

    def fresh_factor(self, kernel_op, rank: int, info: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(factor ``(*batch, n, k)``, pivots ``(*batch, k)`` long, counts ``(*batch,)`` long) of new pivots
        (``pivoted_cholesky_with_pivots``'s contract); ``info`` receives remaining_error and
        stop_threshold."""
        raise NotImplementedError

    def build(self, kernel_op, noise: Tensor, state: PivotCache | None = None, purpose: str = "train"):
        """Training: ``state.preconditioner`` (pivots reused while current, else fresh ones).
        Prediction: a fresh factor of rank ``eval_rank``, or of the rank training grew to
        (``state.rank``), without touching the state. Returns a LowRankPlusDiag
        (``spectrum_floor`` 1) or, with blocks, a LowRankPlusBlockDiag."""
        check_purpose(purpose)
        noise = check_noise(noise)
        state = self._state_for(state)
        with torch.no_grad():
            if purpose == "train":
                precond = state.preconditioner(kernel_op, noise, self)
            else:
                rank = state.rank(self) if self.eval_rank is None else self.eval_rank
                factor = None if rank == 0 else self.fresh_factor(kernel_op, rank, {})[0]
                precond = pivoted_cholesky_preconditioner(kernel_op, noise, rank, self.block_size, factor)
        return tagged(precond, self.kind)

    def record_iterations(self, state: PivotCache, iterations: int, floor: int = 0) -> None:
        """Pivot staleness and rank growth (``PivotCache.record_iterations``)."""
        state.record_iterations(iterations, floor=floor, max_rank=self.max_rank)

    def _check_pivot_fields(self) -> None:
        check_number(self, "rank", integer=True, allow_zero=True)
        check_number(self, "refresh_every", integer=True)
        if self.max_rank is not None:
            check_number(self, "max_rank", integer=True, allow_zero=True)
            if self.max_rank < self.rank:
                raise ValueError(f"max_rank: expected None or an int >= rank ({self.rank}), "
                                 f"got {self.max_rank}")
        if self.eval_rank is not None:
            check_number(self, "eval_rank", integer=True, allow_zero=True)
        check_number(self, "block_size", integer=True, allow_zero=True)


@dataclass(frozen=True)
class PivotedCholesky(PivotConfig):
    """Preconditioner P = L L^T + noise, L the rank-``rank`` pivoted Cholesky factor of K
    (with ``block_size``: plus diagonal blocks of K_hat - L L^T over near points).

    Args:
        rank: the number of columns of L (0: the diagonal preconditioner P = noise).
        refresh_every: how many preconditioner builds of a model's training (``model.mll()``
            calls on the CG path) may share the pivots of one greedy pivoted Cholesky. The
            greedy run takes ``rank`` sequential steps; with its pivots P kept, the next builds
            get L = K[:, P] chol(K[P, P])^{-T} at the new hyperparameters from one row
            evaluation, one small Cholesky and a product with its inverse. 1 chooses fresh pivots at
            every build. Fresh pivots are also chosen early when a step's CG iterations exceed
            1.5 times (plus 2) those of the step that chose the pivots (the preconditioner has
            gone stale), when the training data or its shape, dtype or device change, and when
            the rebuild fails. Any such P is SPD, so the mll estimate stays unbiased; only the
            CG iterations and the variance of the log-det estimate depend on how good it is.
            ``model.diagnostics["precond_pivots"]`` says "greedy" or "reused" per step. With
            fixed probes (L-BFGS, ``polish_lbfgs``) the estimate at given hyperparameters then
            also depends on where the pivots were chosen (between refreshes it is smooth in
            the hyperparameters); refresh_every=1 makes it a function of them alone.
        max_rank: let a model's training grow the rank up to this (None: the rank stays fixed).
            When the solve with freshly chosen pivots needs more than 1.5 times (plus 2) the CG
            minimum (``CG.lanczos_iters``, counted as at least 10), the preconditioner is too
            weak for the current hyperparameters (small noise, many points per lengthscale):
            the next build doubles the rank, up to max_rank, and chooses new pivots. The rank
            never shrinks during a fit. Memory: the factor is n x rank in the data's dtype (the
            float64 Woodbury solve converts it in blocks of rows). At the hyperparameters the n = 1M fit
            reached, a CPU stand-in needed 79 / 36 / 20 CG iterations at rank 100 / 200 / 400
            (``python benchmarks/precond_rank.py --n 20000 --ranks 100 200 400``).
        eval_rank: the rank of the preconditioner of the posterior mean solve (None: the rank
            training ended with, grown or not). The prediction solve runs to ``CG.eval_tol``, far
            below training's tolerance, so it profits most from a larger rank. At the
            hyperparameters of the n = 1M fit on an H200 it took 868 CG iterations and 351 s at
            rank 400, 198 iterations and 98 s at rank 1600, at the cost of an n x 1600 float32
            factor (``python examples/large_gpu_fit.py --n 1000000 --iters 0 --test 100000
            --backend triton --precision tf32x3 --root-rank 50 --eval-tol 0.01 --precond-rank 400
            [--eval-precond-rank 1600] --raw-parameters benchmarks/million_fit_parameters.json``).
        block_size: 0 (default) for P = L L^T + noise. b > 0 adds the part of K_hat that L
            misses at short range: P = L L^T + blockdiag(K_hat - L L^T) over blocks of b
            points that lie near each other (a k-d ordering of the lengthscale-scaled inputs,
            ``linalg.spatial``). Each block is factored exactly (float64), so solves, log det
            and probe samples stay exact for P, and P is SPD for any L. Memory: n x b numbers
            more, as much as b more columns of L; build cost: n b kernel entries and n b k
            multiply-adds. It helps where the noise is small against the kernel's local
            variation (many points per lengthscale) in few dimensions, which a low rank cannot
            capture. On an H200, blocks of 256 took protein (d = 9) from 20-54 to 20-22 CG
            iterations per training step (0.105 to 0.076 s per step, test NLL 0.980 to 0.871)
            and its posterior mean solve from 204 to 87 iterations; they made elevators (d = 18)
            slower: 0.024 to 0.034-0.063 s per step, 42 to 86 iterations for its posterior mean
            (``python benchmarks/uci.py --data .uci --device cuda --iters 20 --datasets
            elevators,kin40k,protein --libs flashgp --precond-blocks 0``, and 256). At n = 1M
            (d = 3) they cut the residual of y left after a fixed number of CG iterations; at
            UCI sizes a build and a solve cost more than without blocks. Hence the
            default 0.
    """

    kind = "pivoted_cholesky"
    pivot_rule = "greedy"

    rank: int = 100
    refresh_every: int = 10
    max_rank: int | None = None
    eval_rank: int | None = None
    block_size: int = 0

    def __post_init__(self):
        self._check_pivot_fields()

    def fresh_factor(self, kernel_op, rank: int, info: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(factor, pivots, counts) of a greedy pivoted Cholesky of rank ``rank`` (``info``
        receives remaining_error and stop_threshold)."""
        return pivoted_cholesky_with_pivots(kernel_op, rank, info=info)
