# What a ShardedExactGP's predictions reuse while its parameters stay put: the posterior mean's
# solve and a LOVE root of K_hat^{-1}, both kept as this process's rows (computed by sharded CG and
# sharded Lanczos), and their gathered copies for test points that each process holds alone.
from __future__ import annotations

import time

import torch

from ..engines.bbmm import LANCZOS_SEED, LanczosRoot
from ..linalg import mbcg
from ..linalg.lanczos import lanczos, lanczos_root_with_half
from ..models.state import StateSnapshot
from ..operators.added_diag import AddedDiag
from .operator import ShardedKernelOperator
from .precond import sharded_preconditioner


class ShardedPrediction:
    """The cached solves of one state of a ``ShardedExactGP`` (``snapshot``): built lazily, each
    a collective the first time (every process asks for it together), reused afterwards.

    - ``alpha_local()``: ``(n_local,)`` this process's rows of K_hat^{-1} (y - m), sharded CG to
      ``solver.eval_tol``;
    - ``root()``: a ``LanczosRoot`` whose ``root`` is this process's rows ``(n_local, k)`` of R
      with R R^T ~ K_hat^{-1} (k = min(``solver.root_rank``, n) Lanczos steps from the seeded
      start one process uses: the rows of the same vector), ``back``/``half`` as on one process;
    - ``alpha_all()``, ``root_all()``: every process's rows gathered, ``(n,)`` and ``(n, k)``
      (n k floats each process holds), for ``ShardedExactGP.local_posterior``;
    - ``solve(rhs_local)``: K_hat^{-1} applied to this process's rows of a block (sharded CG).

    ``diagnostics`` records the mean solve (cg_iterations, residual, converged, seconds) and the
    root (root_seconds).
    """

    def __init__(self, model):
        self.model, self.snapshot = model, StateSnapshot(model)
        cg, shards = model.solver, model.shards
        self.solver, self.shards = cg, shards
        self.op = ShardedKernelOperator(model.kernel, model.train_x, shards, model.x_all, backend=cg.backend,
                                        memory_budget=cg.memory_budget, precision=cg.precision)
        self.noise_local = model.likelihood.noise_diag(shards.n).expand(shards.n)[shards.start:shards.stop]
        self.noise_level = model.likelihood.noise_diag(shards.n).expand(shards.n).mean()
        self.system = AddedDiag(self.op, self.noise_local)
        rank = None  # a fresh factor of eval_rank, or of the rank training grew to (as on one process)
        if cg.precond is not None:
            eval_rank = getattr(cg.precond, "eval_rank", None)
            rank = model.pivot_cache.rank(cg.precond) if eval_rank is None else eval_rank
        self.precond = sharded_preconditioner(cg.precond, self.op, self.noise_local, rank=rank)
        self.diagnostics: dict = {}
        self._alpha = self._root = self._alpha_all = self._root_all = None

    def matches(self, model) -> bool:
        return self.snapshot.matches(model)

    def solve(self, rhs_local: torch.Tensor):
        """(K_hat^{-1} rhs, the mbcg result) for this process's rows ``(n_local, t)`` of a block."""
        cg = self.solver
        result = mbcg(self.system, rhs_local, self.precond, tol=cg.eval_tol, max_iters=cg.max_iters,
                      reorthogonalize=cg.reorthogonalize, row_sum=self.shards.row_sum)
        return result.solution, result

    def alpha_local(self) -> torch.Tensor:
        if self._alpha is None:
            start, shards, model = time.perf_counter(), self.shards, self.model
            resid = model.train_y - model.mean(model.x_all)[shards.start:shards.stop]
            solution, result = self.solve(resid.unsqueeze(-1))
            self._alpha = solution.squeeze(-1)
            self.diagnostics.update(cg_iterations=result.iterations, residual=float(result.residual.max()),
                                    converged=bool(result.converged), mean_solve_seconds=time.perf_counter() - start)
        return self._alpha

    def root(self) -> LanczosRoot:
        if self._root is None:
            start, shards = time.perf_counter(), self.shards
            gen = torch.Generator(device=self.op.device).manual_seed(LANCZOS_SEED)
            init = torch.randn(shards.n, generator=gen, device=self.op.device, dtype=self.op.dtype)
            steps = min(self.solver.root_rank, shards.n)
            q, t = lanczos(self.system.matmul, init[shards.start:shards.stop], steps, row_sum=shards.row_sum,
                           n=shards.n)
            self._root = LanczosRoot(*lanczos_root_with_half(q, t),
                                     complete=q.shape[-1] == shards.n or q.shape[-1] < steps)
            self.diagnostics["root_seconds"] = time.perf_counter() - start
        return self._root

    def alpha_all(self) -> torch.Tensor:
        if self._alpha_all is None:
            self._alpha_all = self.shards.gather(self.alpha_local(), dim=-1)
        return self._alpha_all

    def root_all(self) -> LanczosRoot:
        if self._root_all is None:
            root = self.root()
            self._root_all = LanczosRoot(self.shards.gather(root.root, dim=-2), root.back, root.half,
                                         complete=root.complete)
        return self._root_all
