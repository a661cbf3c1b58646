# MultitaskGP: an exact GP over several correlated outputs (ICM or LMC), on task-indexed inputs, so
# ExactGP's engines, predictions, files and checkpoints serve it; the structure lives in the kernel.
from __future__ import annotations

import torch

from ..distributions.multitask import MultitaskPosterior
from ..serialize import kernel_from_config, likelihood_from_config, mean_from_config, register_model, solver_from_config
from ..solvers import resolve_solver
from ..operators import kernel_operator
from .base import Prior
from .exact_gp import ExactGP
from .kronecker_prediction import KRONECKER_PREDICT_MAX, KroneckerPrediction
from .regression import RegressionModel
from .multitask_data import (check_tasks, init_task_values, multitask_kernel, task_data, task_grid_inputs,
                             task_parts, with_tasks)
from .validation import as_float_tensor


@register_model("MultitaskGP")
class MultitaskGP(ExactGP):
    """Exact GP regression of t correlated outputs: k((x, a), (x', b)) = B[a, b] k_x(x, x')
    (intrinsic coregionalisation, ``kernels.Multitask``) or a sum of such terms (``kernels.LMC``),
    one Gaussian noise variance and one constant mean per task.

    Args:
        x: inputs (n, d) (or (n,) for d = 1).
        y: targets (n, t), every point observed for every task (NaN entries are left out: the
            model then holds the observed entries as rows with a task each); or (n,) with
            ``task_index``.
        kernel: the kernel over the inputs (e.g. ``Matern(nu=2.5, ard_dims=d)``, without an output
            scale: B carries the tasks' variances), made ``Multitask(kernel, t, rank)``; a list of
            kernels: an ``LMC`` of one rank-``rank`` term each; a ``Multitask`` or ``LMC`` as given.
        num_tasks: t (default: y's columns, or one more than the largest task index).
        rank: rank of W in B = W Wᵀ + diag(v), 1 <= rank <= t.
        task_index: (n,) the task of each row of x and y (tasks observed apart, BoTorch's
            ``MultiTaskGP`` data).
        likelihood: ``Gaussian(batch_shape=(t,))`` (default, one noise per task) or ``Gaussian()``.
        mean: ``TaskMean(t)`` (default, one constant per task) or a mean over the inputs.
        solver: as ``ExactGP``'s. With ``fg.Auto()`` the exact path is taken up to
            ``max_cholesky_n`` points (n, not n t, on a grid: the eigendecomposition path below),
            CG beyond.

    Data on a full grid are stored task-major (``train_x`` ``(n t, d + 1)``, last column the task,
    ``train_y`` ``(n t,)``), where the kernel finds its Kronecker structure: CG multiplies by
    B ⊗ K_x in O(n² t + n t²) per vector, and the exact path (``fg.Cholesky``, a per-task noise)
    factors B and K_x by their eigendecompositions in O(n³ + t³) (diagnostics["structure"] =
    "kronecker"). Rows with a task each are multiplied block by block (``operators.TaskBlocks``).

    ``posterior(x)`` gives every task at x: a ``MultitaskPosterior`` (mean and variance (m, t),
    ``task_covariance()`` (m, t, t), samples (s, m, t)); ``posterior(x, task_index=i)`` one task
    per test row (a ``Posterior`` over the m rows).
    """

    conditions_on_rows = False  # derived targets / task-indexed rows: rebuild the model instead

    config_keys = frozenset({"kernel", "likelihood", "mean", "solver", "num_tasks"})

    def __init__(self, x, y, kernel, num_tasks: int | None = None, rank: int = 1, task_index=None,
                 likelihood=None, mean=None, solver=None):
        points, flat, tasks, t, grid = task_data(x, y, task_index, num_tasks)
        self.num_tasks = t
        kernel = multitask_kernel(kernel, t, rank)
        likelihood, mean = task_parts(likelihood, mean, t)
        self._init_data = (points, flat, tasks, grid)
        super().__init__(with_tasks(points, tasks), flat, kernel, likelihood, mean, solver)

    def _take_data(self) -> None:
        """Store the task-indexed rows the constructor built (``set_train_data`` takes user data)."""
        x, y = self._checked_data
        del self._checked_data
        self.to(dtype=x.dtype, device=x.device)
        RegressionModel.set_train_data(self, x, y)

    def set_train_data(self, x, y, task_index=None) -> None:
        """Replace the training data, in the constructor's forms: y ``(n, t)`` (NaN: unobserved), or y
        ``(n,)`` with ``task_index`` ``(n,)``; t stays the model's. Hyperparameters are kept."""
        points, flat, tasks, _, _ = task_data(x, y, task_index, self.num_tasks)
        like = self.train_x
        RegressionModel.set_train_data(self, with_tasks(points.to(like.dtype), tasks), flat.to(like.dtype))

    def _init_values(self) -> None:
        points, flat, tasks, grid = self._init_data
        del self._init_data
        init_task_values(self, points.to(self.dtype), flat.to(self.dtype), tasks, grid)

    # ----- structure -------------------------------------------------------------------
    @property
    def task_covariance(self) -> torch.Tensor:
        """The kernel's task covariance B ``(t, t)`` (an LMC's: the sum of its terms')."""
        return self.kernel.task_covariance

    @property
    def input_dims(self) -> int:
        """d, the input columns (the task column of ``train_x`` not counted)."""
        return self.train_x.shape[-1] - 1

    @property
    def grid_points(self) -> int | None:
        """n when the training data are a full task grid (every point observed for every task), else None."""
        grid = self.kernel.task_grid(self.train_x)
        return None if grid is None else grid.shape[-2]

    def _kronecker_points(self) -> int | None:
        """n when the data are a full task grid and the kernel factors as B ⊗ K_x (ICM: its
        ``exact_factors``), else None."""
        return self.grid_points if callable(getattr(self.kernel, "exact_factors", None)) else None

    def _active_solver(self):
        """The solver for the structure: on a grid with a Kronecker-factored exact path (ICM), Auto
        decides by the n points, else by the n t rows."""
        grid = self._kronecker_points()
        return resolve_solver(self.solver, self.num_train if grid is None else grid)

    def _new_prediction(self, snapshot):
        """Exact predictions from the Kronecker eigendecompositions on a grid of at most
        ``KRONECKER_PREDICT_MAX`` points (an ICM kernel: ``kernels.Multitask``), whatever the solver;
        else the solver's (``models.prediction``)."""
        solver = self._active_solver()
        grid = self._kronecker_points()
        if grid is not None and grid <= KRONECKER_PREDICT_MAX:
            return KroneckerPrediction(self, solver, snapshot)
        if getattr(solver, "local_neighbors", 0):
            raise ValueError("solver: CG(local_neighbors=...) searches neighbours in the input space, where a "
                             "multitask model's task column is no distance; use LOVE (the default), "
                             "CG(exact_var_max=...) or CG(variance_tol=...) for its variances")
        return super()._new_prediction(snapshot)

    def train_noise(self) -> torch.Tensor:
        """Each training row's task's noise variance ``(N,)``."""
        return self.likelihood.noise.expand(self.num_tasks)[self.train_x[..., -1].long()]

    # ----- prediction ---------------------------------------------------------------
    def _test_inputs(self, x, task_index):
        """(task-indexed test inputs, m, whether all tasks): x ``(m, d)`` for every task, or one task per
        row with ``task_index`` ``(m,)``."""
        x = as_float_tensor(x, "x", like=self.train_x)
        d = self.input_dims
        x = x.unsqueeze(-1) if x.dim() == 1 and d == 1 else x
        if x.dim() != 2 or x.shape[-1] != d or x.shape[0] == 0:
            raise ValueError(f"x: expected test inputs of shape (m, {d}), got {tuple(x.shape)}")
        if task_index is None:
            return task_grid_inputs(x, self.num_tasks), x.shape[0], True
        tasks, _ = check_tasks(task_index, x.shape[0], self.num_tasks, x.device)
        return with_tasks(x, tasks), x.shape[0], False

    def prior(self, x, task_index=None) -> Prior:
        """The prior mean and covariance operator at test inputs x ``(m, d)``: every task (task-major,
        ``(t m,)`` and ``(t m, t m)``) or one task per row with ``task_index`` ``(m,)``."""
        inputs, _, _ = self._test_inputs(x, task_index)
        return Prior(self.mean(inputs), kernel_operator(self.kernel, inputs))

    def posterior(self, x, task_index=None, noise: bool = False):
        """The latent posterior at test inputs x ``(m, d)``: every task (``MultitaskPosterior``) or, with
        ``task_index`` ``(m,)``, the given task of each row (a ``Posterior`` over the m rows).
        ``noise``: add each row's task's noise (``predict``)."""
        inputs, _, every = self._test_inputs(x, task_index)
        flat = super().posterior(inputs)
        if noise:
            with torch.no_grad():
                flat.noise = self.likelihood.noise.detach().expand(self.num_tasks)[inputs[:, -1].long()]
        return MultitaskPosterior(flat, self.num_tasks) if every else flat

    def predict(self, x, task_index=None):
        """The predictive distribution of observations: ``posterior`` plus each task's noise."""
        return self.posterior(x, task_index, noise=True)

    # ----- files and checkpoints ------------------------------------------------------
    def config(self) -> dict:
        return {**super().config(), "num_tasks": self.num_tasks}

    @classmethod
    def from_config(cls, config: dict, tensors: dict) -> MultitaskGP:
        """A MultitaskGP on the stored task-indexed rows (their layout, grid or not, as saved)."""
        x = tensors["train_x"]
        return cls(x[:, :-1], tensors["train_y"], kernel_from_config(config["kernel"]),
                   num_tasks=config["num_tasks"], task_index=x[:, -1],
                   likelihood=likelihood_from_config(config["likelihood"]),
                   mean=mean_from_config(config["mean"]), solver=solver_from_config(config["solver"]))
