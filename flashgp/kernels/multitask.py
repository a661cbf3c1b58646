# Multi-output kernels on task-indexed inputs: the last input column holds each row's task, and
# k((x, a), (x', b)) = B[a, b] k_x(x, x') (intrinsic coregionalisation, ICM) or a sum of such
# terms (the linear model of coregionalisation, LMC). Their operators keep the structure.
"""Multi-output kernels. Inputs ``(*batch, N, d + 1)``: d input columns, then the task of each row
(an integer in [0, t) stored in the floating dtype of the inputs).

``Multitask(base, num_tasks, rank)``: k((x, a), (x', b)) = B[a, b] base(x, x') with the task
covariance B = W Wᵀ + diag(v), W ``(t, rank)`` and v ``(t,)`` > 0 learned (GPyTorch's
``IndexKernel`` times a data kernel; BoTorch's ``MultiTaskGP``). ``LMC(*members)``: the sum of
``Multitask`` members with their own base kernels and task covariances.

Structure (``operator``): inputs laid out as a full grid, task-major (rows a n … (a + 1) n − 1
hold the same n points x_1 … x_n for task a; ``task_grid``), give K = B ⊗ K_x, a ``Kronecker``
operator whose products cost O(n² t + n t²) per column instead of (n t)²; any other layout (tasks
observed at different points) a ``TaskBlocks`` operator, one pass over the N² kernel entries per
product. ``exact_factors`` gives (K_x, B) in float64 for the exact engine's eigendecomposition path.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .base import Kernel, check_operator_inputs
from .constraints import PositiveProperty, register_positive

# task grids found for the last inputs seen (a model's training inputs come back at every step)
CACHED_GRIDS = 4


def _count(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


def dct_factor(num_tasks: int, rank: int) -> torch.Tensor:
    """The default W ``(t, rank)``: column j is cos(pi (a + 1/2) j / t) / 2^j over tasks a, so
    B = W Wᵀ + diag(v) starts with a positive correlation between all tasks (column 0) and
    columns that differ (gradient steps then move them apart: equal columns would stay equal)."""
    a = torch.arange(num_tasks, dtype=torch.float64).unsqueeze(-1) + 0.5
    j = torch.arange(rank, dtype=torch.float64)
    return torch.cos(math.pi * a * j / num_tasks) * 0.5 ** j * math.sqrt(0.5)


class Multitask(Kernel):
    """k((x, a), (x', b)) = B[a, b] base(x, x'), B = W Wᵀ + diag(v) (see the module docstring).

    Args:
        base: the kernel over the d input columns (its ``active_dims`` index those columns).
            Leave out an output scale: B carries each task's variance.
        num_tasks: t.
        rank: the columns of W, 0 <= rank <= t (rank t: any positive definite B; rank 0: B
            diagonal, independent tasks sharing the base kernel's hyperparameters).
        task_factor: initial W ``(t, rank)``; None: ``dct_factor`` (the model replaces values
            that were not given by ones from its data).
        task_variance: initial v ``(t,)`` > 0; None: 0.5.
    """

    def __init__(self, base: Kernel, num_tasks: int, rank: int = 1, task_factor=None, task_variance=None):
        if not isinstance(base, Kernel):
            raise TypeError(f"base: expected a flashgp.kernels.Kernel, got {type(base).__name__}")
        if isinstance(base, (Multitask, LMC)) or callable(getattr(base, "operator", None)):
            raise TypeError(f"base: expected a kernel over the inputs, got {type(base).__name__}")
        if base.batch_shape != torch.Size():
            raise ValueError(f"base: multitask kernels take an unbatched base kernel, got batch_shape "
                             f"{tuple(base.batch_shape)}")
        num_tasks = _count(num_tasks, "num_tasks")
        rank = _count(rank, "rank", low=0)
        if rank > num_tasks:
            raise ValueError(f"rank: expected at most num_tasks ({num_tasks}), got {rank}")
        super().__init__()
        self.base, self.num_tasks, self.rank = base, num_tasks, rank
        given = task_factor is not None
        w = dct_factor(num_tasks, rank) if not given else torch.as_tensor(task_factor, dtype=torch.float64)
        if w.shape != (num_tasks, rank) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"task_factor: expected finite values of shape ({num_tasks}, {rank}), got "
                             f"shape {tuple(w.shape)}")
        self.task_factor = nn.Parameter(w.to(torch.get_default_dtype()).clone())
        self.remember_exact("task_factor", w.clone(), "plain")
        if not given:
            self._unset = getattr(self, "_unset", set()) | {"task_factor"}
        register_positive(self, "task_variance", task_variance, (num_tasks,), placeholder=0.5)
        self._grids = {}  # id(x) -> (x, key, grid inputs or None)

    task_variance = PositiveProperty("The tasks' own variances v, shape (t,).")

    @property
    def terms(self) -> tuple:
        """The ``Multitask`` terms of this kernel: itself (an ``LMC`` gives its members)."""
        return (self,)

    @property
    def task_covariance(self) -> torch.Tensor:
        """B = W Wᵀ + diag(v) ``(t, t)``, differentiable."""
        w = self.task_factor
        return w @ w.transpose(-1, -2) + torch.diag_embed(self.task_variance)

    def set_task_covariance(self, cov: torch.Tensor, floor: float = 0.05) -> None:
        """Set W and v from a target covariance ``cov`` ``(t, t)`` (symmetric): W from its ``rank``
        leading eigenpairs scaled by (1 - floor), v = diag(cov - W Wᵀ), at least ``floor`` diag(cov)."""
        cov = torch.as_tensor(cov, dtype=torch.float64).detach()
        cov = 0.5 * (cov + cov.T)
        evals, evecs = torch.linalg.eigh(cov)
        top = evals.flip(0)[:self.rank].clamp_min(0) * (1 - floor)
        w = evecs.flip(1)[:, :self.rank] * top.sqrt()
        w = torch.where(w.abs().sum(0) > 0, w, dct_factor(self.num_tasks, self.rank).to(cov) * cov.diagonal().mean().sqrt())
        # (a column of zeros would get no gradient: the DCT pattern, scaled, stands in for it)
        diag = cov.diagonal().clamp_min(1e-12)
        v = torch.maximum(diag - (w * w).sum(-1), floor * diag)
        with torch.no_grad():
            self.task_factor.copy_(w.to(self.task_factor.dtype))
        self.remember_exact("task_factor", w.clone(), "plain")
        self._unset = getattr(self, "_unset", set()) - {"task_factor"}
        self.task_variance = v

    # ----- evaluation ------------------------------------------------------------------
    def evaluate(self, x1, x2, diag):
        b = self.task_covariance
        t1, t2 = x1[..., -1].long(), x2[..., -1].long()
        k = self.base(x1[..., :-1], x2[..., :-1], diag=diag)
        if diag:
            return b[t1, t1] * k
        return b[t1.unsqueeze(-1), t2.unsqueeze(-2)] * k

    def task_grid(self, x: torch.Tensor) -> torch.Tensor | None:
        """The n inputs ``(n, d)`` when x ``(N, d + 1)`` is a full task-major grid of this kernel's
        t tasks (N = n t; see the module docstring), else None. Remembered per tensor and version."""
        key = (x._version, x.shape, x.stride(), x.dtype, x.device)
        cached = self._grids.get(id(x))
        if cached is not None and cached[0] is x and cached[1] == key:
            return cached[2]
        grid = find_grid(x, self.num_tasks)
        self._grids.pop(id(x), None)
        while len(self._grids) >= CACHED_GRIDS:
            self._grids.pop(next(iter(self._grids)))
        self._grids[id(x)] = (x, key, grid)
        return grid

    def operator(self, x1: torch.Tensor, x2: torch.Tensor | None = None, **options):
        """K(x1, x2) with its structure: a ``Kronecker`` (B ⊗ K_x) when both are task grids, else
        ``TaskBlocks``; ``options`` go to the base kernel's ``KernelOperator``s (backend, precision,
        memory_budget, block_rows)."""
        from ..operators import Dense, KernelOperator, Kronecker, TaskBlocks
        check_operator_inputs(x1, x2, "multitask kernels do not differentiate with respect to their inputs")
        g1 = self.task_grid(x1) if x1.dim() == 2 else None
        g2 = g1 if x2 is None else (self.task_grid(x2) if x2.dim() == 2 else None)
        if g1 is not None and g2 is not None:
            return Kronecker(Dense(self.task_covariance), KernelOperator(self.base, g1, None if x2 is None else g2,
                                                                         **options))
        return TaskBlocks(self.base, self.task_covariance, x1, x2, **options)

    def exact_factors(self, x: torch.Tensor):
        """(K_x ``(n, n)``, B ``(t, t)``), both float64 and differentiable, when x is a task grid;
        else None (the exact engine then factors the whole matrix)."""
        grid = self.task_grid(x) if x.dim() == 2 else None
        if grid is None:
            return None
        return self.base(grid.double()), self.task_covariance.double()


class LMC(Kernel):
    """The linear model of coregionalisation: the sum of ``Multitask`` members (each its own base
    kernel and task covariance, all with the same num_tasks). Its operator is the sum of theirs."""

    def __init__(self, *members: Multitask):
        if not members or not all(isinstance(m, Multitask) for m in members):
            raise TypeError("members: expected one or more Multitask kernels")
        if len({m.num_tasks for m in members}) != 1:
            raise ValueError(f"members: expected one num_tasks, got {[m.num_tasks for m in members]}")
        super().__init__()
        self.members = nn.ModuleList(members)
        self.num_tasks = members[0].num_tasks

    @property
    def terms(self) -> tuple:
        """The ``Multitask`` members."""
        return tuple(self.members)

    @property
    def task_covariance(self) -> torch.Tensor:
        """The sum of the members' B ``(t, t)`` (the covariance between tasks at one input, up to the
        base kernels' values there)."""
        return sum(m.task_covariance for m in self.members)

    def evaluate(self, x1, x2, diag):
        return sum(m.evaluate(x1, x2, diag) for m in self.members)

    def task_grid(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.members[0].task_grid(x)

    def operator(self, x1: torch.Tensor, x2: torch.Tensor | None = None, **options):
        from ..operators import SumOperator
        return SumOperator(*(m.operator(x1, x2, **options) for m in self.members))


def find_grid(x: torch.Tensor, num_tasks: int) -> torch.Tensor | None:
    """The n inputs ``(n, d)`` when x ``(N, d + 1)`` holds the same n points for each of the
    ``num_tasks`` tasks in task-major order, else None. O(N d), one read-back."""
    total = x.shape[-2]
    if total % num_tasks or total == 0:
        return None
    n = total // num_tasks
    tasks = torch.arange(num_tasks, device=x.device, dtype=x.dtype).repeat_interleave(n)
    points = x[:n, :-1]
    same = torch.equal(x[:, -1], tasks) and torch.equal(x[:, :-1].reshape(num_tasks, n, -1),
                                                        points.unsqueeze(0).expand(num_tasks, n, points.shape[-1]))
    return points if same else None
