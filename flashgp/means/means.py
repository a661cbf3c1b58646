# Prior mean functions m(x) of a GP: zero, a learned constant, a learned linear function.
# x (*batch, n, d) -> (*batch, n).
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import nn

from ..kernels.constraints import ExactValues
from ..shapes import as_batch_shape, broadcast_shapes


class Mean(ExactValues):
    """Base class of mean functions: ``forward(x)`` maps ``(*batch, n, d)`` to ``(*batch, n)``."""

    @property
    def batch_shape(self) -> torch.Size:
        """The leading shape of the mean's parameters (``()`` when unbatched)."""
        return torch.Size()


def _finite_values(value, name: str, shape, dtype: torch.dtype) -> torch.Tensor:
    """A finite number or tensor broadcast to ``shape`` as ``dtype``; ValueError/TypeError otherwise."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(f"{name}: expected a finite number or a tensor of them, got {value!r:.80}")
    if isinstance(value, torch.Tensor) and value.is_complex():
        raise TypeError(f"{name}: expected real values, got {value.dtype}")
    try:  # straight to ``dtype``: Python floats keep their float64 precision
        tensor = torch.as_tensor(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name}: expected a finite number or a tensor of them, "
                        f"got {type(value).__name__}") from None
    if not torch.all(torch.isfinite(tensor)):
        raise ValueError(f"{name}: expected finite values, got {tensor.tolist()}")
    try:
        return tensor.expand(shape)
    except RuntimeError:
        raise ValueError(f"{name}: expected a number or values broadcastable to shape {tuple(shape)}, "
                         f"got shape {tuple(tensor.shape)}") from None


class Zero(Mean):
    """m(x) = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)


class Constant(Mean):
    """m(x) = constant (learned), shape ``(*batch,)``.

    Args:
        constant: the initial value; None (default): not given, so ``ExactGP`` starts it at the
            mean of the training targets (``fg.init_from_data``); 0 where the mean is used alone.
        batch_shape: leading shape for batches of independent GPs.
    """

    def __init__(self, constant: float | None = None, batch_shape: Sequence[int] = ()):
        super().__init__()
        shape = as_batch_shape(batch_shape)
        if constant is None:
            self._unset.add("constant")
        value = 0.0 if constant is None else constant
        self.raw_constant = nn.Parameter(_finite_values(value, "constant", shape,
                                                        torch.get_default_dtype()).clone())
        self.remember_exact("raw_constant", _finite_values(value, "constant", shape, torch.float64), "plain")

    @property
    def batch_shape(self) -> torch.Size:
        return self.raw_constant.shape

    @property
    def constant(self) -> torch.Tensor:
        return self.raw_constant

    @constant.setter
    def constant(self, value) -> None:
        exact = _finite_values(value, "constant", self.raw_constant.shape, torch.float64)
        value = _finite_values(value, "constant", self.raw_constant.shape, self.raw_constant.dtype)
        with torch.no_grad():
            self.raw_constant.copy_(value)
        self._unset.discard("constant")
        self.remember_exact("raw_constant", exact, "plain")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw_constant.unsqueeze(-1).expand(*broadcast_shapes(x.shape[:-2], self.raw_constant.shape), x.shape[-2])


class Linear(Mean):
    """m(x) = x @ weights + bias; weights ``(*batch, d)``, bias ``(*batch,)`` when ``bias=True``."""

    def __init__(self, input_dims: int, bias: bool = True, batch_shape: Sequence[int] = ()):
        super().__init__()
        if isinstance(input_dims, bool) or not isinstance(input_dims, numbers.Integral) or input_dims < 1:
            raise ValueError(f"input_dims: expected a positive int, got {input_dims!r}")
        batch_shape = as_batch_shape(batch_shape)
        self.weights = nn.Parameter(torch.zeros(*batch_shape, int(input_dims)))
        self.bias = nn.Parameter(torch.zeros(batch_shape)) if bias else None

    @property
    def batch_shape(self) -> torch.Size:
        return self.weights.shape[:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.weights.shape[-1]:
            raise ValueError(f"x: expected {self.weights.shape[-1]} columns, got {x.shape[-1]}")
        out = (x * self.weights.unsqueeze(-2)).sum(-1)
        return out if self.bias is None else out + self.bias.unsqueeze(-1)


class TaskMean(Mean):
    """A mean per task on task-indexed inputs ``(*batch, n, d + 1)`` (last column: the task, as in
    ``kernels.Multitask``): m(x, a) = base(x)[a] for a base with batch shape (t,) (one
    ``Constant`` per task by default), or base(x) for an unbatched base shared by all tasks.

    Args:
        num_tasks: t.
        base: a mean over the d input columns with batch shape (t,) or (); None: ``Constant``
            with batch shape (t,), its values not given (a model starts them at each task's mean).
    """

    def __init__(self, num_tasks: int, base: Mean | None = None):
        super().__init__()
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, numbers.Integral) or num_tasks < 1:
            raise ValueError(f"num_tasks: expected a positive int, got {num_tasks!r}")
        base = Constant(batch_shape=(int(num_tasks),)) if base is None else base
        if not isinstance(base, Mean) or isinstance(base, TaskMean):
            raise TypeError(f"base: expected a flashgp mean over the inputs, got {type(base).__name__}")
        if tuple(base.batch_shape) not in ((), (int(num_tasks),)):
            raise ValueError(f"base: expected batch shape ({int(num_tasks)},) or (), got {tuple(base.batch_shape)}")
        self.num_tasks, self.base = int(num_tasks), base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = self.base(x[..., :-1])  # (t, *batch, n) or (*batch, n)
        if tuple(self.base.batch_shape) == ():
            return values
        tasks = x[..., -1].long()
        values = values.expand(self.num_tasks, *tasks.shape)
        return values.gather(0, tasks.unsqueeze(0)).squeeze(0)
