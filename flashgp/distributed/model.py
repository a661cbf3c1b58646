# ShardedExactGP: an ExactGP whose training rows are split across the processes of a
# torch.distributed group; fg.fit trains it on every process alike, and posterior() predicts on all.
from __future__ import annotations

import time

import torch

from ..distributions import Posterior
from ..distributions.covariances import DenseDowndated, Downdated
from ..initial_values import init_from_data
from ..models.exact_gp import ExactGP
from ..models.finite import parameters_finite
from ..models.prediction import root_growth, warn_root_change
from ..models.validation import check_test_inputs, check_train_data
from ..operators import kernel_operator
from ..operators.kernel import KernelOperator
from ..solvers import CG
from .group import Shards
from .mll import sharded_mll
from .pivots import ShardedPivotCache
from .precond import check_config
from .prediction import ShardedPrediction


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
            ``fg.PivotedCholesky(rank=k)`` without blocks. Its pivots are kept between
            ``mll()`` calls as one process's model keeps them (``refresh_every``, ``max_rank``:
            a ``ShardedPivotCache``, in checkpoints as ``solver_state``); predictions build a
            fresh factor of ``eval_rank`` or the rank training reached. ``fg.Cholesky``, ``fg.Auto`` and other preconditioners
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

    Predictions: ``posterior(x)`` (every process the same x ``(m, d)``; a collective): the mean
    m(x) + K(x, X) alpha with alpha = K_hat^{-1} (y - m) solved by sharded CG to
    ``solver.eval_tol`` and kept as this process's rows, each process computing its columns
    K(x, X_local) alpha_local and one all-reduce summing them (m n / G kernel entries each). For
    m up to ``solver.exact_var_max`` the covariance is exact: K(x, x) - K(x, X) K_hat^{-1} K(X, x),
    the m columns solved by sharded CG to eval_tol and the m x m product all-reduced; beyond,
    LOVE: K(x, x) - W W^T with W = K(x, X) R, R R^T ~ K_hat^{-1} a rank-``solver.root_rank``
    Lanczos root built by sharded Lanczos (kept as this process's rows; W summed by the same
    all-reduce as the mean: m (1 + k) floats), warning as on one process when its variances have
    not converged. ``local_posterior(x)``: each process its own test points, against the
    gathered alpha and R, without collectives once they are built. alpha and R are cached while
    the model is unchanged (``ShardedPrediction``).

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
        self._cache = None  # the ShardedPrediction of the last posterior
        self._pivots = None  # the training builds' pivots (a ShardedPivotCache, made with the shards)
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
        """The pivots later steps reuse (``ShardedPivotCache.state_dict``: that of one process's
        cache, global row indices), for checkpoints."""
        return self._pivots.state_dict()

    def load_solver_state(self, state: dict) -> None:
        self._pivots.load_state_dict(state, self.train_x.dtype, self.train_x.device)

    @property
    def pivot_cache(self) -> ShardedPivotCache:
        """The pivots the training builds reuse (the same on every process)."""
        return self._pivots

    def preconditioner_state(self, solver=None) -> ShardedPivotCache:
        return self._pivots

    def _data_changed(self) -> None:
        self._pivots = ShardedPivotCache(self._shards)

    # ----- files and checkpoints: those of an ExactGP on all rows ------------------------------
    def file_model(self) -> ExactGP:
        """An ``fg.ExactGP`` on all n rows (``x_all``, ``y_all``) sharing this model's kernel,
        likelihood, mean and solver (their parameters, priors and frozen flags): what
        ``fg.save`` and ``fg.fit``'s checkpoints write, so a file of a sharded model is an
        ordinary ExactGP file (``fg.load`` on one process, ``flashgp.distributed.load`` on any
        number) and a checkpoint resumes on any number of processes. No collective."""
        return ExactGP(self._x_all, self._y_all, self.kernel, self.likelihood, self.mean, self.solver)

    def check_resume(self, step: int | None) -> None:
        """Every process must go on from the same step with the same parameters (a collective:
        one all-gather of two floats). ValueError on every process otherwise, naming each
        process's step: a checkpoint path that not every process sees (a node-local folder on
        several machines) or a failed read on one of them would otherwise pair the collectives
        of different steps. A process that failed (``step`` None) takes part and returns, so
        that its own error is raised."""
        with torch.no_grad():
            params = [p.detach().double().reshape(-1) for p in self.parameters()]
            total = torch.cat(params).sum() if params else torch.zeros((), dtype=torch.float64)
        mine = torch.tensor([-1.0 if step is None else float(step), float(total)], dtype=torch.float64,
                            device=self._shards.device)
        every = self._shards.stack(mine).cpu()
        if step is None or bool((every == every[0]).all()):
            return
        steps = ", ".join(f"rank {r}: {'failed' if s < 0 else int(s)}" for r, s in enumerate(every[:, 0].tolist()))
        what = "steps" if bool((every[:, 0] != every[0, 0]).any()) else "parameters"
        raise ValueError(f"checkpoint: the processes would start from different {what} ({steps}); "
                         "every process must read the same checkpoint file (a path all of them see, "
                         "e.g. on a shared file system) and build the model with the same parts")

    @property
    def writes_checkpoints(self) -> bool:
        """Only rank 0 writes ``fg.fit``'s checkpoints (every process reads them to resume, so
        the path must be one they all see)."""
        return self._shards.rank == 0

    # ----- training ---------------------------------------------------------------------------
    def mll(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(y | x) / n over all n rows (``sharded_mll``), the same on every process; a collective."""
        start = time.perf_counter()
        self._check_noise_count(self.num_train)
        if not parameters_finite(self):
            self._nonfinite(None)
        cg = self.solver
        value, info = sharded_mll(self.kernel, self.mean, self.likelihood, self.train_x, self.train_y,
                                  group=self._group, shards=self._shards, x_all=self._x_all, state=self._pivots,
                                  probes=cg.probes, tol=cg.tol, max_iters=cg.max_iters,
                                  lanczos_iters=cg.lanczos_iters, generator=generator, backend=cg.backend,
                                  memory_budget=cg.memory_budget, reorthogonalize=cg.reorthogonalize,
                                  precond=cg.precond, precision=cg.precision)
        if not bool(torch.isfinite(value).all()):
            self._nonfinite(None)
        self.diagnostics = {"n": self.num_train, "path": "cg", "cg_iterations": info.get("iterations"), **info,
                            "seconds": time.perf_counter() - start}
        return value

    # ----- prediction ---------------------------------------------------------------------------
    def _sharded_prediction(self) -> ShardedPrediction:
        """The cached solves of the current state (``ShardedPrediction``), made anew once it changed."""
        if self._cache is None or not self._cache.matches(self):
            self._cache = ShardedPrediction(self)
        return self._cache

    def _checked_inputs(self, x) -> torch.Tensor:
        x = check_test_inputs(x, self.train_x)
        if x.dim() != 2:
            raise NotImplementedError(f"x: ShardedExactGP predicts at (m, d) inputs only, got shape {tuple(x.shape)}")
        self._check_noise_count(self.num_train)
        if not parameters_finite(self):
            self._nonfinite(None)
        return x

    def _love(self, x, rows, alpha, root, cache, total=None) -> tuple:
        """(mean ``(m,)``, the LOVE covariance k(x, x) - W W^T, its diagnostics) from one product
        of K(x, X_rows) with [alpha, R] (their rows ``rows`` of X), W = K(x, X) R ``(m, k)``;
        ``total`` sums the product over processes (None: ``rows`` are all of X)."""
        cg = self.solver
        cross = KernelOperator(self.kernel, x, rows, backend=cg.backend, memory_budget=cg.memory_budget,
                               precision=cg.precision)
        both = cross.matmul(torch.cat([alpha.unsqueeze(-1), root.root], -1))  # (m, 1 + k)
        both = both if total is None else total(both)
        left = both[:, 1:]
        change = 0.0 if root.complete else float(
            root_growth(left, root, self.kernel.diag(x), cache.noise_level).median())
        warn_root_change(change, root.root.shape[-1], stacklevel=5)
        covariance = Downdated(kernel_operator(self.kernel, x), left, left)
        return self.mean(x) + both[:, 0], covariance, {"variance_method": "lanczos", "variance_root_change": change}

    def _finish(self, mean, covariance, cache, extra: dict, start: float) -> Posterior:
        self.diagnostics = {"n": self.num_train, "path": "cg", **cache.diagnostics, **extra,
                            "seconds": time.perf_counter() - start}
        post = Posterior(mean, covariance, diagnostics=self.diagnostics)
        post.covariance.guard = self._stale_guard(cache.snapshot)
        return post

    def posterior(self, x) -> Posterior:
        """The latent posterior at x ``(m, d)``, the same on every process (a collective: all
        processes pass the same x). See the class docstring."""
        start = time.perf_counter()
        cg, shards = self.solver, self._shards
        with torch.no_grad():
            x = self._checked_inputs(x)
            cache = self._sharded_prediction()
            alpha = cache.alpha_local()
            if x.shape[-2] <= cg.exact_var_max:
                k_local = KernelOperator(self.kernel, self.train_x, x, backend="dense").to_dense()  # (n_local, m)
                solved, result = cache.solve(k_local)
                both = shards.all_reduce(k_local.transpose(-1, -2) @ torch.cat([alpha.unsqueeze(-1), solved], -1))
                mean = self.mean(x) + both[:, 0]
                covariance = DenseDowndated(kernel_operator(self.kernel, x), both[:, 1:])
                extra = {"variance_method": "cg", "variance_cg_iterations": result.iterations,
                         "variance_residual": float(result.residual.max())}
            else:  # the mean and W summed by one all-reduce: m (1 + k) floats
                mean, covariance, extra = self._love(x, self.train_x, alpha, cache.root(), cache, shards.all_reduce)
        return self._finish(mean, covariance, cache, extra, start)

    def local_posterior(self, x) -> Posterior:
        """The latent posterior at this process's own test points x ``(m_r, d)`` (each process
        its own, any m_r >= 1), evaluated by this process alone against all n rows with the
        gathered solve and LOVE root (``ShardedPrediction.alpha_all``, ``root_all``: n and
        n x root_rank floats on every process). Building those is a collective: the first call
        after the model changed must be made on every process together (later calls need not).
        Variances by LOVE (``solver.root_rank``), whatever m_r is."""
        start = time.perf_counter()
        with torch.no_grad():
            x = self._checked_inputs(x)
            cache = self._sharded_prediction()
            mean, covariance, extra = self._love(x, self._x_all, cache.alpha_all(), cache.root_all(), cache)
        return self._finish(mean, covariance, cache, extra, start)
