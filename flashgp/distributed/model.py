# ShardedExactGP: an ExactGP whose training rows are split across the processes of a
# torch.distributed group; fg.fit trains it on every process alike, and posterior() predicts on all.
from __future__ import annotations

import time

import torch

from ..distributions import Posterior
from ..distributions.covariances import DenseDowndated, PosteriorCovariance
from ..initial_values import init_from_data
from ..linalg import mbcg
from ..models.exact_gp import ExactGP
from ..models.finite import parameters_finite
from ..models.state import StateSnapshot
from ..models.validation import check_test_inputs, check_train_data
from ..operators import kernel_operator
from ..operators.added_diag import AddedDiag
from ..operators.kernel import KernelOperator
from ..solvers import CG
from .group import Shards
from .mll import sharded_mll
from .operator import ShardedKernelOperator
from .precond import check_config, sharded_preconditioner


def check_solver(solver) -> CG:
    """``solver`` if a ShardedExactGP can use it (``fg.CG`` with no preconditioner or
    ``fg.PivotedCholesky`` without blocks), else TypeError / NotImplementedError naming it."""
    if not isinstance(solver, CG):
        raise TypeError(f"solver: ShardedExactGP takes fg.CG(...) (precond None or fg.PivotedCholesky), got "
                        f"{solver!r}; fg.Cholesky and fg.Auto factor the whole n x n matrix on one process, "
                        "which rows split across processes cannot do")
    try:
        check_config(solver.precond)
    except NotImplementedError as err:
        raise NotImplementedError(f"solver: {err}") from err
    return solver


class ShardedExactGP(ExactGP):
    """An exact GP whose n training rows are split across the processes of a ``torch.distributed``
    group: each process builds it with its own contiguous block of rows (rank 0 the first rows,
    blocks may be uneven, each at least one row), the same parts and the same solver.

    Args:
        x_local: ``(n_local, d)`` this process's rows of the inputs (no batch dimensions).
        y_local: ``(n_local,)`` its targets.
        kernel, likelihood, mean: as for ``fg.ExactGP`` (a ``FixedNoise`` likelihood holds the
            noise of all n rows).
        solver: ``fg.CG(...)`` (default ``fg.CG()``) with ``precond=None`` or
            ``fg.PivotedCholesky(rank=k)`` without blocks. Its pivots are chosen afresh at every
            ``mll()`` (as with ``refresh_every=1``; ``refresh_every``, ``max_rank`` and
            ``eval_rank`` do not apply). ``fg.Cholesky``, ``fg.Auto`` and other preconditioners
            are refused (TypeError / NotImplementedError naming ``solver``).
        group: the process group (None: the default one, which must be initialised).

    Construction is a collective (the row counts, x and y are all-gathered once: every process
    then holds all n inputs and targets, ``x_all`` and ``y_all``), and so are ``mll``, ``loss``,
    ``posterior`` and ``predict``: every process calls them together, with the same arguments.

    Initial values: ``fg.init_from_data`` is run on the gathered data (its ``data=(x_all,
    y_all)`` argument) instead of the local rows, so the values the parts were not given are
    those a single-process ``ExactGP`` on all rows chooses, on every process (the same
    statistics of the same tensors). Nothing else of ExactGP's construction changes.

    Training: ``mll(generator)`` is ``sharded_mll`` with the solver's tol, max_iters, probes,
    lanczos_iters, reorthogonalize, backend, memory_budget, precision and precond; the value and the
    gradients are the same on every process, so ``fg.fit(model, ..., seed=s)`` called on every
    process (the same seed: the probes are rows of one (n, probes) block) keeps the parameters
    identical. ``num_train`` and ``diagnostics["n"]`` are the global n (the loss is per point).

    Predictions: ``posterior(x)`` (every process the same x ``(m, d)``): the mean
    m(x) + K(x, X) alpha, alpha = K_hat^{-1} (y - m) by sharded CG to ``solver.eval_tol`` and
    gathered (n floats), K(x, X) evaluated locally (every process holds X). For m up to
    ``solver.exact_var_max`` the covariance is exact: K(x, x) - K(x, X) K_hat^{-1} K(X, x), the m
    columns solved by sharded CG to eval_tol and the m x m product all-reduced; beyond, the
    covariance raises NotImplementedError (no sharded LOVE root yet). alpha is cached while the
    model is unchanged.

    Files: ``fg.save(model, path)`` writes an ``fg.ExactGP`` file holding all n rows
    (``file_model``), from whichever process calls it; ``fg.fit(model, checkpoint=path)``
    (the same path on every process, one they all see) is written by rank 0 alone and resumed
    by every process, on any number of them (the parameters, optimizer state and probe
    generator are the same on all; the file holds all rows). ``flashgp.distributed.load``
    splits a model file's rows over the processes.

    Not supported yet: batch dimensions, replacing the data (``set_train_data``,
    ``condition_on_observations``), inputs that require grad.
    """

    def __init__(self, x_local, y_local, kernel, likelihood=None, mean=None, solver=None, group=None):
        solver = check_solver(CG() if solver is None else solver)  # before the first collective
        x_local, y_local = check_train_data(x_local, y_local)
        if x_local.dim() != 2:
            raise NotImplementedError(f"x_local: ShardedExactGP takes (n_local, d) inputs without batch "
                                      f"dimensions, got shape {tuple(x_local.shape)}")
        # set before nn.Module.__init__ (plain attributes): _take_data and _init_values need them
        self._group = group
        self._shards = Shards(x_local.shape[-2], group, device=x_local.device)
        self._x_all = self._y_all = None
        self._alpha = None  # (snapshot, alpha over all n rows) of the last posterior
        super().__init__(x_local, y_local, kernel, likelihood, mean, solver)

    # ----- data: local rows, global statistics -----------------------------------------------
    @property
    def shards(self) -> Shards:
        """The row split (rank, world size, counts, this process's row range)."""
        return self._shards

    @property
    def num_train(self) -> int:
        """The number of training points over all processes, n."""
        return self._shards.n

    @property
    def x_all(self) -> torch.Tensor:
        """Every process's inputs ``(n, d)`` in rank order (gathered once, at construction)."""
        return self._x_all

    @property
    def y_all(self) -> torch.Tensor:
        """Every process's targets ``(n,)`` in rank order."""
        return self._y_all

    def _take_data(self) -> None:
        super()._take_data()
        self._x_all = self._shards.gather(self.train_x, dim=-2)
        self._y_all = self._shards.gather(self.train_y, dim=-1)

    def _init_values(self) -> None:
        init_from_data(self, data=(self._x_all, self._y_all))

    def _check_noise_count(self, n: int) -> None:
        super()._check_noise_count(self._shards.n)  # a FixedNoise likelihood holds all n rows' noise

    def set_train_data(self, x, y) -> None:
        if self._x_all is not None:
            raise NotImplementedError("set_train_data: the rows of a ShardedExactGP cannot be replaced yet; "
                                      "build a new ShardedExactGP on every process")
        super().set_train_data(x, y)

    def condition_on_observations(self, x, y, noise=None):
        raise NotImplementedError("condition_on_observations: not supported by ShardedExactGP yet")

    def solver_state(self) -> dict:
        return {}  # fresh pivots at every step: nothing to carry

    # ----- files and checkpoints: those of an ExactGP on all rows ------------------------------
    def file_model(self) -> ExactGP:
        """An ``fg.ExactGP`` on all n rows (``x_all``, ``y_all``) sharing this model's kernel,
        likelihood, mean and solver (their parameters, priors and frozen flags): what
        ``fg.save`` and ``fg.fit``'s checkpoints write, so a file of a sharded model is an
        ordinary ExactGP file (``fg.load`` on one process, ``flashgp.distributed.load`` on any
        number) and a checkpoint resumes on any number of processes. No collective."""
        return ExactGP(self._x_all, self._y_all, self.kernel, self.likelihood, self.mean, self.solver)

    @property
    def writes_checkpoints(self) -> bool:
        """Only rank 0 writes ``fg.fit``'s checkpoints (every process reads them to resume, so
        the path must be one they all see)."""
        return self._shards.rank == 0

    def load_solver_state(self, state: dict) -> None:
        pass

    # ----- training ---------------------------------------------------------------------------
    def mll(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(y | x) / n over all n rows (``sharded_mll``), the same on every process; a collective."""
        start = time.perf_counter()
        self._check_noise_count(self.num_train)
        if not parameters_finite(self):
            self._nonfinite(None)
        cg = self.solver
        value, info = sharded_mll(self.kernel, self.mean, self.likelihood, self.train_x, self.train_y,
                                  group=self._group, probes=cg.probes, tol=cg.tol, max_iters=cg.max_iters,
                                  lanczos_iters=cg.lanczos_iters, generator=generator, backend=cg.backend,
                                  memory_budget=cg.memory_budget, reorthogonalize=cg.reorthogonalize,
                                  precond=cg.precond, precision=cg.precision)
        if not bool(torch.isfinite(value).all()):
            self._nonfinite(None)
        self.diagnostics = {"n": self.num_train, "path": "cg", "cg_iterations": info.get("iterations"), **info,
                            "seconds": time.perf_counter() - start}
        return value

    # ----- prediction -------------------------------------------------------------------------
    def _system(self):
        """(AddedDiag(sharded K, this process's noise rows), its preconditioner or None)."""
        cg, shards = self.solver, self._shards
        op = ShardedKernelOperator(self.kernel, self.train_x, shards, self._x_all, backend=cg.backend,
                                   memory_budget=cg.memory_budget, precision=cg.precision)
        noise_local = self.likelihood.noise_diag(shards.n).expand(shards.n)[shards.start:shards.stop]
        return AddedDiag(op, noise_local), sharded_preconditioner(cg.precond, op, noise_local)

    def _solve(self, system, rhs: torch.Tensor) -> tuple[torch.Tensor, object]:
        cg = self.solver
        result = mbcg(system[0], rhs, system[1], tol=cg.eval_tol, max_iters=cg.max_iters,
                      reorthogonalize=cg.reorthogonalize, row_sum=self._shards.row_sum)
        return result.solution, result

    def _alpha_all(self, system) -> torch.Tensor:
        """K_hat^{-1} (y - m) over all n rows, the same on every process (cached while unchanged)."""
        if self._alpha is not None and self._alpha[0].matches(self):
            return self._alpha[1]
        shards = self._shards
        snapshot = StateSnapshot(self)
        resid = self.train_y - self.mean(self._x_all)[shards.start:shards.stop]
        alpha_local, result = self._solve(system, resid.unsqueeze(-1))
        alpha = shards.gather(alpha_local, dim=-2).squeeze(-1)
        self._alpha = (snapshot, alpha)
        self.diagnostics = {"n": shards.n, "path": "cg", "cg_iterations": result.iterations,
                            "residual": float(result.residual.max()), "converged": bool(result.converged)}
        return alpha

    def posterior(self, x) -> Posterior:
        """The latent posterior at x ``(m, d)``, the same on every process (a collective: all
        processes pass the same x). See the class docstring."""
        start = time.perf_counter()
        x = check_test_inputs(x, self.train_x)
        if x.dim() != 2:
            raise NotImplementedError(f"x: ShardedExactGP predicts at (m, d) inputs only, got shape {tuple(x.shape)}")
        cg, shards = self.solver, self._shards
        with torch.no_grad():
            self._check_noise_count(self.num_train)
            if not parameters_finite(self):
                self._nonfinite(None)
            system = self._system()
            alpha = self._alpha_all(system)
            diagnostics = dict(self.diagnostics)
            cross = KernelOperator(self.kernel, x, self._x_all, backend=cg.backend, memory_budget=cg.memory_budget,
                                   precision=cg.precision)
            mean = self.mean(x) + cross.matmul(alpha.unsqueeze(-1)).squeeze(-1)
            prior = kernel_operator(self.kernel, x)
            if x.shape[-2] <= cg.exact_var_max:
                k_local = KernelOperator(self.kernel, self.train_x, x, backend="dense").to_dense()  # (n_local, m)
                solved, result = self._solve(system, k_local)
                downdate = shards.all_reduce(k_local.transpose(-1, -2) @ solved)
                covariance = DenseDowndated(prior, downdate)
                diagnostics.update(variance_method="cg", variance_cg_iterations=result.iterations,
                                   variance_residual=float(result.residual.max()))
            else:
                covariance = _NoCovariance(prior, x.shape[-2])
                diagnostics.update(variance_method=None)
        diagnostics["seconds"] = time.perf_counter() - start
        self.diagnostics = diagnostics
        post = Posterior(mean, covariance, diagnostics=self.diagnostics)
        post.covariance.guard = self._stale_guard(StateSnapshot(self))
        return post


class _NoCovariance(PosteriorCovariance):
    """The covariance of a sharded posterior with more test points than ``CG.exact_var_max``."""

    def __init__(self, prior, m: int):
        self.shape, self.dtype, self.device = torch.Size((m, m)), prior.dtype, prior.device

    def _unavailable(self, *args):
        raise NotImplementedError("covariance: ShardedExactGP computes variances for at most solver.exact_var_max "
                                  "test points (exact sharded CG solves); larger sets need a sharded LOVE root, "
                                  "not built yet. Predict in chunks of at most exact_var_max points")

    _matmul = _diagonal = _rows = _unavailable

    def to_dense(self):
        self._unavailable()
