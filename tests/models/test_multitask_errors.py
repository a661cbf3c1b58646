# Argument errors of fg.MultitaskGP, its kernels (Multitask, LMC), TaskMean, its predictions and
# posteriors: each bad input raises a ValueError or TypeError whose message names the argument.
import re

import numpy as np
import pytest
import torch

import flashgp as fg
from flashgp.kernels import LMC, RBF, Matern, Multitask
from flashgp.likelihoods import FixedNoise, Gaussian, StudentT
from flashgp.means import Constant, TaskMean

F64 = torch.float64
N, T, D = 10, 3, 2
_g = torch.Generator().manual_seed(0)
X = torch.rand(N, D, generator=_g, dtype=F64)
Y = torch.randn(N, T, generator=_g, dtype=F64)
YF = torch.randn(N, generator=_g, dtype=F64)  # one target per row, with TASKS
TASKS = torch.arange(N) % T


def kern():
    return Matern(nu=2.5, ard_dims=D)


def with_nan(y, rows, cols):
    y = y.clone()
    y[rows, cols] = float("nan")
    return y


CONSTRUCTOR = {  # name -> (kwargs of MultitaskGP beyond the kernel, exception, message pattern)
    "task_index_above_num_tasks": (dict(x=X, y=YF, task_index=TASKS, num_tasks=2), ValueError,
                                   r"task_index: expected task indices in \[0, 2\)"),
    "task_index_negative": (dict(x=X, y=YF, task_index=TASKS - 1), ValueError,
                            r"task_index: expected task indices in \[0, 2\).*from -1"),
    "task_index_non_integer": (dict(x=X, y=YF, task_index=TASKS.to(F64) + 0.5), ValueError,
                               "task_index: expected integer task indices"),
    "task_index_nan": (dict(x=X, y=YF, task_index=torch.full((N,), float("nan"))), ValueError,
                       "task_index: expected integer task indices"),
    "task_index_bool": (dict(x=X, y=YF, task_index=TASKS > 0), TypeError, "task_index: expected integer"),
    "task_index_too_short": (dict(x=X, y=YF, task_index=TASKS[:-1]), ValueError,
                             r"task_index: expected one task per row, shape \(10,\), got \(9,\)"),
    "task_index_too_long": (dict(x=X, y=YF, task_index=np.arange(N + 1) % T), ValueError,
                            r"task_index: expected one task per row"),
    "task_index_2d": (dict(x=X, y=YF, task_index=TASKS.unsqueeze(-1)), ValueError,
                      "task_index: expected one task per row"),
    "rank_above_num_tasks": (dict(x=X, y=Y, rank=T + 1), ValueError, r"rank: expected an int from 0 to num_tasks \(3\)"),
    "rank_negative": (dict(x=X, y=Y, rank=-1), ValueError, "rank: expected an int"),
    "rank_float": (dict(x=X, y=Y, rank=1.0), ValueError, "rank: expected an int"),
    "rank_bool": (dict(x=X, y=Y, rank=True), ValueError, "rank: expected an int"),
    "y_1d_without_task_index": (dict(x=X, y=YF), ValueError, r"y: expected targets of shape \(10, num_tasks\)"),
    "y_wrong_rows": (dict(x=X, y=Y[:-1]), ValueError, r"y: expected targets of shape \(10, num_tasks\).*\(9, 3\)"),
    "y_3d": (dict(x=X, y=Y.unsqueeze(0)), ValueError, "y: expected targets of shape"),
    "y_2d_with_task_index": (dict(x=X, y=Y, task_index=TASKS), ValueError,
                             r"y: with task_index, expected one target per row, shape \(10,\)"),
    "y_with_task_index_wrong_length": (dict(x=X, y=YF[:-2], task_index=TASKS), ValueError,
                                       "y: with task_index, expected one target per row"),
    "num_tasks_not_columns": (dict(x=X, y=Y, num_tasks=2), ValueError, "num_tasks: y has 3 columns, got num_tasks=2"),
    "num_tasks_zero": (dict(x=X, y=YF, task_index=TASKS, num_tasks=0), ValueError, "num_tasks: expected a positive int"),
    "num_tasks_float": (dict(x=X, y=YF, task_index=TASKS, num_tasks=3.0), ValueError, "num_tasks: expected a positive int"),
    "task_column_all_nan": (dict(x=X, y=with_nan(Y, slice(None), 2)), ValueError, "^y: "),
    "nan_targets_with_task_index": (dict(x=X, y=with_nan(YF, 3, ...), task_index=TASKS), ValueError, "^y: "),
    "x_with_batch": (dict(x=X.expand(2, N, D), y=Y), ValueError, "x: expected shape \\(n, d\\).*no batch dimensions"),
    "x_empty": (dict(x=X[:0], y=Y[:0]), ValueError, r"x: expected shape \(n, d\) with n, d >= 1"),
    "x_nan": (dict(x=with_nan(X, 0, 0), y=Y), ValueError, "x: expected finite values"),
    "likelihood_fixed_noise": (dict(x=X, y=Y, likelihood=FixedNoise(torch.ones(N * T))), TypeError,
                               r"likelihood: a multitask model takes Gaussian\(\)"),
    "likelihood_student_t": (dict(x=X, y=Y, likelihood=StudentT()), TypeError, "likelihood: a multitask model"),
    "likelihood_wrong_batch": (dict(x=X, y=Y, likelihood=Gaussian(batch_shape=(2,))), TypeError,
                               r"likelihood: .*Gaussian\(batch_shape=\(3,\)\)"),
    "kernel_string": (dict(x=X, y=Y, kernel="rbf"), TypeError, "kernel: expected a flashgp.kernels.Kernel"),
    "kernel_torch_module": (dict(x=X, y=Y, kernel=torch.nn.Linear(2, 2)), TypeError, "kernel: expected a flashgp"),
    "kernel_list_of_strings": (dict(x=X, y=Y, kernel=["rbf"]), TypeError, "kernel: expected a non-empty list"),
    "multitask_kernel_wrong_tasks": (dict(x=X, y=Y, kernel=Multitask(RBF(), 2)), ValueError,
                                     "kernel: has num_tasks=2, the data 3 tasks"),
    "lmc_wrong_tasks": (dict(x=X, y=Y, kernel=LMC(Multitask(RBF(), 4), Multitask(RBF(), 4))), ValueError,
                        "kernel: has num_tasks=4"),
    "mean_string": (dict(x=X, y=Y, mean="zero"), TypeError, "mean: expected a flashgp mean"),
    "task_mean_wrong_tasks": (dict(x=X, y=Y, mean=TaskMean(2)), ValueError, "mean: has num_tasks=2, the data 3 tasks"),
    "solver_string": (dict(x=X, y=Y, solver="cg"), TypeError, "solver: expected"),
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR))
def test_constructor_errors(case):
    """Each bad MultitaskGP argument raises the named exception with a message naming it."""
    kwargs, exc, pattern = CONSTRUCTOR[case]
    kwargs = {"kernel": kern(), **kwargs}
    with pytest.raises(exc, match=pattern):
        fg.MultitaskGP(**kwargs)


@pytest.mark.parametrize("case", ["all_nan_column", "nan_with_task_index"])
def test_specific_nan_messages(case):
    """A task whose column is all NaN is named; NaN targets with task_index get their own advice."""
    if case == "all_nan_column":
        with pytest.raises(ValueError, match=r"y: tasks \[2\] have no observed value"):
            fg.MultitaskGP(X, with_nan(Y, slice(None), 2), kern())
    else:
        with pytest.raises(ValueError, match="y: NaN targets with task_index"):
            fg.MultitaskGP(X, with_nan(YF, 3, ...), kern(), task_index=TASKS)


def test_task_without_rows():
    """task_index with num_tasks above the tasks present (check_tasks allows it): a working model
    or an error naming task_index / num_tasks, not one about the mean's constant."""
    try:
        model = fg.MultitaskGP(X, YF, kern(), task_index=TASKS, num_tasks=4)
    except ValueError as err:
        assert re.match(r"(task_index|num_tasks): ", str(err)), str(err)
    else:
        assert bool(torch.isfinite(model.mll()).all())


def test_set_train_data_checks_the_task_column():
    """set_train_data with inputs lacking a task column (or non-integer tasks) raises ValueError."""
    model = fg.MultitaskGP(X, Y, Matern(nu=2.5))
    with pytest.raises(ValueError, match="x|task"):
        model.set_train_data(X, YF)


@pytest.fixture(scope="module")
def model():
    return fg.MultitaskGP(X, Y, kern(), solver=fg.Cholesky())


PREDICTION = {  # name -> (x, task_index, message pattern); every one a ValueError
    "x_task_indexed_columns": (torch.rand(4, D + 1, dtype=F64), None, r"x: expected test inputs of shape \(m, 2\)"),
    "x_one_column": (torch.rand(4, 1, dtype=F64), None, r"x: expected test inputs of shape \(m, 2\), got \(4, 1\)"),
    "x_batched": (torch.rand(2, 4, D, dtype=F64), None, "x: expected test inputs of shape"),
    "x_empty": (torch.rand(0, D, dtype=F64), None, "x: expected test inputs of shape"),
    "x_nan": (torch.full((4, D), float("nan"), dtype=F64), None, "x: expected finite values"),
    "task_index_out_of_range": (torch.rand(4, D, dtype=F64), [0, 1, 2, 3], r"task_index: expected task indices in \[0, 3\)"),
    "task_index_negative": (torch.rand(4, D, dtype=F64), [0, -1, 2, 1], r"task_index: .*from -1"),
    "task_index_wrong_length": (torch.rand(4, D, dtype=F64), [0, 1, 2], r"task_index: expected one task per row, shape \(4,\)"),
    "task_index_non_integer": (torch.rand(4, D, dtype=F64), [0.0, 1.5, 2.0, 1.0], "task_index: expected integer"),
}


@pytest.mark.parametrize("method", ["posterior", "predict"])
@pytest.mark.parametrize("case", list(PREDICTION))
def test_prediction_errors(model, case, method):
    """posterior / predict refuse test inputs of the wrong shape and bad test task indices."""
    x, tasks, pattern = PREDICTION[case]
    with pytest.raises(ValueError, match=pattern):
        getattr(model, method)(x, task_index=tasks)


def test_posterior_method_errors(model):
    """MultitaskPosterior.log_prob needs y (m, t); prior(x) takes test inputs of d columns."""
    post = model.posterior(torch.rand(4, D, dtype=F64))
    with pytest.raises(ValueError, match=r"y: expected shape \(4, 3\), got \(3, 4\)"):
        post.log_prob(torch.zeros(T, 4))
    with pytest.raises(ValueError, match=r"x: expected test inputs of shape \(m, 2\)"):
        model.prior(torch.rand(4, D + 1, dtype=F64))


KERNELS = {  # name -> (callable, exception, message pattern)
    "base_not_a_kernel": (lambda: Multitask("rbf", T), TypeError, "base: expected a flashgp.kernels.Kernel"),
    "base_is_multitask": (lambda: Multitask(Multitask(RBF(), T), T), TypeError, "base: expected a kernel over the inputs"),
    "base_batched": (lambda: Multitask(RBF(batch_shape=(2,)), T), ValueError, "base: multitask kernels take an unbatched"),
    "num_tasks_zero": (lambda: Multitask(RBF(), 0), ValueError, "num_tasks: expected an int >= 1"),
    "num_tasks_bool": (lambda: Multitask(RBF(), True), ValueError, "num_tasks: expected an int"),
    "rank_above_num_tasks": (lambda: Multitask(RBF(), T, T + 1), ValueError, r"rank: expected at most num_tasks \(3\)"),
    "rank_negative": (lambda: Multitask(RBF(), T, -1), ValueError, "rank: expected an int >= 0"),
    "task_factor_shape": (lambda: Multitask(RBF(), T, 2, task_factor=torch.ones(T, 1)), ValueError,
                          r"task_factor: expected finite values of shape \(3, 2\)"),
    "task_factor_nan": (lambda: Multitask(RBF(), T, 1, task_factor=torch.full((T, 1), float("nan"))), ValueError,
                        "task_factor: expected finite values"),
    "task_variance_negative": (lambda: Multitask(RBF(), T, task_variance=-torch.ones(T)), ValueError,
                               "task_variance: expected finite values > 0"),
    "lmc_empty": (lambda: LMC(), TypeError, "members: expected one or more Multitask kernels"),
    "lmc_not_multitask": (lambda: LMC(RBF()), TypeError, "members: expected one or more Multitask kernels"),
    "lmc_mixed_tasks": (lambda: LMC(Multitask(RBF(), 2), Multitask(RBF(), 3)), ValueError,
                        r"members: expected one num_tasks, got \[2, 3\]"),
    "task_mean_num_tasks": (lambda: TaskMean(0), ValueError, "num_tasks: expected a positive int"),
    "task_mean_nested": (lambda: TaskMean(T, TaskMean(T)), TypeError, "base: expected a flashgp mean over the inputs"),
    "task_mean_batch": (lambda: TaskMean(T, Constant(batch_shape=(2,))), ValueError, r"base: expected batch shape \(3,\)"),
}


@pytest.mark.parametrize("case", list(KERNELS))
def test_kernel_and_mean_errors(case):
    """Multitask, LMC and TaskMean constructor errors name the argument."""
    make, exc, pattern = KERNELS[case]
    with pytest.raises(exc, match=pattern):
        make()


def test_operator_input_errors():
    """Multitask kernels refuse inputs that require grad and x2 with other columns than x1."""
    kernel = Multitask(RBF(), T).double()
    x = torch.cat([X, (torch.arange(N) % T).to(F64).unsqueeze(-1)], -1)
    with pytest.raises(ValueError, match="x1, x2: multitask kernels do not differentiate"):
        kernel.operator(x.clone().requires_grad_())
    with pytest.raises(ValueError, match="x2: expected 3 columns like x1, got 4"):
        kernel.operator(x, torch.rand(5, 4, dtype=F64))


def test_local_variances_refused():
    """CG(local_neighbors=...) would search neighbours with the task column as a coordinate:
    refused when the posterior is asked for (tasks observed apart; a grid predicts exactly by
    its eigendecompositions), naming the solver and the alternatives."""
    model = fg.MultitaskGP(X, YF, kern(), task_index=TASKS, solver=fg.CG(local_neighbors=8))
    with pytest.raises(ValueError, match=r"solver: CG\(local_neighbors=...\).*LOVE"):
        model.posterior(torch.rand(3, D, dtype=F64))
