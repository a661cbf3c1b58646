# The data of a multitask model: targets (n, t) on a full grid, or rows with a task index each,
# turned into task-indexed inputs (N, d + 1) and flat targets (N,); the values that were not given
# chosen from them (lengthscales, task covariances, per-task noise and means).
from __future__ import annotations

import numbers
from types import SimpleNamespace

import torch

from ..initial_values import init_from_data
from ..kernels import LMC, Kernel, Multitask
from ..likelihoods import Gaussian
from ..likelihoods.gaussian import default_noise_floor
from ..means import Constant, Mean, TaskMean
from .validation import as_float_tensor

NOISE_FRACTION = 0.1  # initial noise variance of each task, as a fraction of its variance
# initial correlation between tasks observed apart (their covariance cannot be estimated before fitting)
INDEXED_CORRELATION = 0.5
# the q-th term of an LMC starts with lengthscales this many times the (q-1)-th's
LMC_LENGTHSCALE_RATIO = 2.0


def with_tasks(x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Task-indexed inputs ``(N, d + 1)``: x ``(N, d)`` with the task of each row as last column."""
    return torch.cat([x, tasks.to(x.dtype).unsqueeze(-1)], -1)


def task_grid_inputs(x: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """The full task-major grid ``(t m, d + 1)`` of inputs x ``(m, d)``: every point for task 0, then
    task 1, ... (``kernels.Multitask.task_grid`` recognises it)."""
    m = x.shape[-2]
    tasks = torch.arange(num_tasks, device=x.device).repeat_interleave(m)
    return with_tasks(x.repeat(num_tasks, 1), tasks)


def check_tasks(task_index, n: int, num_tasks: int | None, device, name: str = "task_index") -> tuple[torch.Tensor, int]:
    """(task_index as a long tensor ``(n,)``, num_tasks): integers in [0, num_tasks); num_tasks None:
    one more than the largest index."""
    if num_tasks is not None and (isinstance(num_tasks, bool) or not isinstance(num_tasks, numbers.Integral)
                                  or num_tasks < 1):
        raise ValueError(f"num_tasks: expected a positive int, got {num_tasks!r}")
    tasks = torch.as_tensor(task_index, device=device)
    if tasks.dim() != 1 or tasks.shape[0] != n:
        raise ValueError(f"{name}: expected one task per row, shape ({n},), got {tuple(tasks.shape)}")
    if tasks.is_floating_point():
        if not bool((torch.isfinite(tasks) & (tasks == tasks.round())).all()):
            raise ValueError(f"{name}: expected integer task indices, got non-integer values")
    elif tasks.dtype == torch.bool or tasks.is_complex():
        raise TypeError(f"{name}: expected integer task indices, got {tasks.dtype}")
    tasks = tasks.long()
    low, high = (int(v) for v in torch.aminmax(tasks))
    num_tasks = high + 1 if num_tasks is None else int(num_tasks)
    if low < 0 or high >= num_tasks:
        raise ValueError(f"{name}: expected task indices in [0, {num_tasks}) (num_tasks={num_tasks}), got "
                         f"values from {low} to {high}")
    return tasks, num_tasks


def task_data(x, y, task_index, num_tasks):
    """(inputs ``(N, d)``, targets ``(N,)``, tasks ``(N,)`` long, num_tasks, grid): from y ``(n, t)``
    (task_index None; the grid laid out task-major, NaN entries dropped, which makes the data
    heterotopic) or y ``(N,)`` with task_index ``(N,)``. ``grid``: whether every point has every task."""
    x = as_float_tensor(x, "x")
    x = x.unsqueeze(-1) if x.dim() == 1 else x
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x: expected shape (n, d) with n, d >= 1, got {tuple(x.shape)} (multitask models "
                         "take no batch dimensions)")
    y = as_float_tensor(y, "y", like=x, allow_nan=True)  # NaN: unobserved (refused below with task_index)
    if task_index is None:
        if y.dim() != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y: expected targets of shape ({x.shape[0]}, num_tasks), or y ({x.shape[0]},) "
                             f"with task_index; got {tuple(y.shape)}")
        t = y.shape[1]
        if num_tasks is not None and num_tasks != t:
            raise ValueError(f"num_tasks: y has {t} columns, got num_tasks={num_tasks!r}")
        observed = ~torch.isnan(y)
        if not bool(observed.any(0).all()):
            raise ValueError(f"y: tasks {(~observed.any(0)).nonzero().flatten().tolist()} have no observed "
                             "value (every entry NaN)")
        tasks = torch.arange(t, device=x.device).repeat_interleave(x.shape[0])
        points = x.repeat(t, 1)
        flat, keep = y.T.reshape(-1), observed.T.reshape(-1)
        grid = bool(keep.all())
        if not grid:  # unobserved entries: rows of the heterotopic form
            points, flat, tasks = points[keep], flat[keep], tasks[keep]
        return points, flat, tasks, t, grid
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y: with task_index, expected one target per row, shape ({x.shape[0]},), got "
                         f"{tuple(y.shape)}")
    if bool(torch.isnan(y).any()):
        raise ValueError("y: NaN targets with task_index; leave out the rows that were not observed")
    tasks, t = check_tasks(task_index, x.shape[0], num_tasks, x.device)
    missing = sorted(set(range(t)) - set(torch.unique(tasks).tolist()))
    if missing:
        raise ValueError(f"task_index: tasks {missing[:10]} of num_tasks={t} have no rows; every task needs "
                         "at least one observation (or lower num_tasks)")
    return x, y, tasks, t, False


def multitask_kernel(kernel, num_tasks: int, rank: int) -> Kernel:
    """``kernel`` as a multitask kernel: a ``Multitask`` or ``LMC`` as given (num_tasks checked), a list
    of kernels as an LMC of rank-``rank`` terms, any other kernel as ``Multitask(kernel, t, rank)``."""
    if isinstance(kernel, (list, tuple)):
        if not kernel or not all(isinstance(k, Kernel) for k in kernel):
            raise TypeError(f"kernel: expected a non-empty list of flashgp.kernels.Kernel for an LMC, got "
                            f"{[type(k).__name__ for k in kernel]}")
        kernel = LMC(*(Multitask(k, num_tasks, rank) for k in kernel))
    if isinstance(kernel, (Multitask, LMC)):
        if kernel.num_tasks != num_tasks:
            raise ValueError(f"kernel: has num_tasks={kernel.num_tasks}, the data {num_tasks} tasks")
        return kernel
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel: expected a flashgp.kernels.Kernel (or a list of them for an LMC), got "
                        f"{type(kernel).__name__}")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank <= num_tasks:
        raise ValueError(f"rank: expected an int from 0 to num_tasks ({num_tasks}), got {rank!r}")
    return Multitask(kernel, num_tasks, rank)


def task_parts(likelihood, mean, num_tasks: int):
    """The likelihood (default: ``Gaussian`` with one noise per task, batch shape (t,)) and mean
    (default: ``TaskMean``, one constant per task; a plain mean becomes the base of a TaskMean)."""
    likelihood = Gaussian(batch_shape=(num_tasks,)) if likelihood is None else likelihood
    if type(likelihood) is not Gaussian or tuple(likelihood.batch_shape) not in ((), (num_tasks,)):
        raise TypeError(f"likelihood: a multitask model takes Gaussian() (one noise for all tasks) or "
                        f"Gaussian(batch_shape=({num_tasks},)) (one per task), got {likelihood!r:.100}")
    mean = TaskMean(num_tasks) if mean is None else mean
    if not isinstance(mean, Mean):
        raise TypeError(f"mean: expected a flashgp mean, got {type(mean).__name__}")
    if not isinstance(mean, TaskMean):
        mean = TaskMean(num_tasks, mean)
    elif mean.num_tasks != num_tasks:
        raise ValueError(f"mean: has num_tasks={mean.num_tasks}, the data {num_tasks} tasks")
    return likelihood, mean


def init_task_values(model, x: torch.Tensor, y: torch.Tensor, tasks: torch.Tensor, grid: bool) -> None:
    """Choose the values not given: the base kernels' lengthscales from x ``(N, d)`` (``init_from_data``'s
    rule), each ``Multitask`` term's B from the tasks' covariance (the sample covariance on a grid,
    per-task variances with correlation INDEXED_CORRELATION otherwise; an LMC's Q terms share it
    equally), the noise floor and each task's noise (floor + NOISE_FRACTION of its variance) and
    a ``TaskMean``'s constants (each task's mean). An LMC's q-th term starts with lengthscales
    LMC_LENGTHSCALE_RATIO^q times the rule's, so that its terms differ."""
    t = model.num_tasks
    chosen = init_from_data(SimpleNamespace(kernel=model.kernel), data=(x, None))
    with torch.no_grad():
        ones = torch.zeros(t, dtype=torch.float64, device=y.device).index_add_(0, tasks, torch.ones_like(y, dtype=torch.float64))
        means = torch.zeros_like(ones).index_add_(0, tasks, y.double()) / ones
        var = torch.zeros_like(ones).index_add_(0, tasks, (y.double() - means[tasks]).square()) / ones
        var = torch.where(torch.isfinite(var) & (var > 0), var, torch.ones_like(var))
        if grid:
            table = y.double().reshape(t, -1)
            cov = torch.cov(table) if table.shape[1] > 1 else torch.diag(var)
            cov = cov.reshape(t, t)
        else:
            scale = var.sqrt()
            corr = torch.full((t, t), INDEXED_CORRELATION, dtype=torch.float64, device=y.device).fill_diagonal_(1.0)
            cov = scale.unsqueeze(-1) * corr * scale
        members = model.kernel.terms
        for q, member in enumerate(members):
            if "task_factor" in member._unset:
                member.set_task_covariance(cov / len(members))
            for name, module in member.base.named_modules(prefix=f"kernel.members.{q}.base"):
                if q and f"{name}.lengthscale" in chosen:  # LMC terms apart: equal terms would stay equal
                    module.lengthscale = module.lengthscale * LMC_LENGTHSCALE_RATIO ** q
        likelihood = model.likelihood
        if "noise_floor" in likelihood._unset:
            likelihood.noise_floor = default_noise_floor(float(var.max()), x.dtype)
        if "noise" in likelihood._unset:
            floor = likelihood.noise_floor
            noise = floor + NOISE_FRACTION * var.clamp_min(floor)
            likelihood.noise = noise if likelihood.noise.dim() else noise.mean()
        base = model.mean.base
        if isinstance(base, Constant) and "constant" in base._unset:
            base.constant = means.to(base.raw_constant.dtype) if base.raw_constant.dim() else means.mean()
