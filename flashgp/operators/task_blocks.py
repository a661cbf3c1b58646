# K[i, j] = B[s_i, s_j] k(x_i, x_j) for tasks s observed at different inputs (heterotopic data):
# one kernel operator per task's rows against all columns, the task scaling applied to the columns.
from __future__ import annotations

import torch

from ..shapes import sum_to_shape
from .base import Operator
from .kernel import KernelOperator


class TaskBlocks(Operator):
    """K ``(N1, N2)`` with K[i, j] = B[s_i, s_j] k(x_i, x_j).

    Args:
        kernel: the base kernel k over the d input columns.
        b: the task covariance B ``(t, t)`` (may require grad: ``bilinear_grad`` returns its gradient).
        x1: task-indexed inputs ``(N1, d + 1)`` (last column: the task); x2: ``(N2, d + 1)`` or None
            (the symmetric K(x1, x1)).
        options: passed to each ``KernelOperator`` (backend, precision, memory_budget, block_rows).

    A product takes, for each task a, the rows of x1 of that task against all of x2, with the
    right-hand side scaled by B[a, s_j]: t kernel products that together touch each of the
    N1 N2 entries once. The gradient of B adds one product with the transposed blocks.
    """

    def __init__(self, kernel, b: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor | None = None, **options):
        if x1.dim() != 2 or (x2 is not None and x2.dim() != 2):
            raise ValueError(f"x1, x2: expected task-indexed inputs (N, d + 1), got shapes {tuple(x1.shape)}"
                             f"{'' if x2 is None else ', ' + str(tuple(x2.shape))}")
        other = x1 if x2 is None else x2
        self.kernel, self.b, self.options = kernel, b, options
        self.tasks1, self.tasks2 = x1[:, -1].long(), other[:, -1].long()
        self.inputs1, self.inputs2 = x1[:, :-1], other[:, :-1]
        self.symmetric = x2 is None
        self.shape = torch.Size((x1.shape[0], other.shape[0]))
        self.dtype, self.device = x1.dtype, x1.device
        present = torch.unique(self.tasks1).tolist()  # one read-back per operator
        self.index = {a: (self.tasks1 == a).nonzero().squeeze(-1) for a in present}
        self.blocks = {a: KernelOperator(kernel, self.inputs1[rows], self.inputs2, **options)
                       for a, rows in self.index.items()}
        self.backend = next(iter(self.blocks.values())).backend if self.blocks else "dense"
        self.precision = options.get("precision", "fp16x3")

    def _scale(self, a: int) -> torch.Tensor:
        """B[a, s_j] for every column j ``(N2, 1)``."""
        return self.b.detach()[a][self.tasks2].unsqueeze(-1).to(self.dtype)

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        out = rhs.new_zeros(*rhs.shape[:-2], self.n_rows, rhs.shape[-1])
        for a, rows in self.index.items():
            out[..., rows, :] = self.blocks[a]._matmul(self._scale(a) * rhs)
        return out

    def diagonal(self) -> torch.Tensor:
        if not self.symmetric:
            raise ValueError("diagonal: needs a square (symmetric) operator")
        b = self.b.detach().to(self.dtype)
        return b[self.tasks1, self.tasks1] * self.kernel(self.inputs1, diag=True)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        if index.dim() != 1:
            raise ValueError(f"index: expected a 1-D index, got shape {tuple(index.shape)}")
        k = KernelOperator(self.kernel, self.inputs1[index], self.inputs2, **self.options).to_dense()
        b = self.b.detach().to(self.dtype)
        return b[self.tasks1[index].unsqueeze(-1), self.tasks2.unsqueeze(0)] * k.detach()

    def to_dense(self) -> torch.Tensor:
        b = self.b.to(self.dtype)
        k = self.kernel(self.inputs1, self.inputs2)
        return b[self.tasks1.unsqueeze(-1), self.tasks2.unsqueeze(0)] * k

    # ----- gradients -------------------------------------------------------------------
    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        seen, out = set(), []
        for block in self.blocks.values():
            for t in block.grad_inputs():
                if id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
        return (*out, self.b) if self.b.requires_grad else tuple(out)

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        """The base kernel's parameters: each block's gradient with its scaled columns, summed;
        B[a, b]: sum over the columns of left_aᵀ K(x_a, x_b) right_b, from K(x2, x1_a) left_a."""
        inputs = self.grad_inputs()
        position = {id(t): n for n, t in enumerate(inputs)}
        grads = [None] * len(inputs)
        grad_b = torch.zeros_like(self.b, dtype=torch.float64) if self.b.requires_grad else None
        for a, rows in self.index.items():
            block, own = self.blocks[a], self.blocks[a].grad_inputs()
            if own:
                for t, g in zip(own, block.bilinear_grad(left[..., rows, :], self._scale(a) * right)):
                    if g is not None:
                        n = position[id(t)]
                        grads[n] = g if grads[n] is None else grads[n] + g
            if grad_b is not None:
                back = KernelOperator(self.kernel, self.inputs2, self.inputs1[rows], **self.options)
                per_column = (back._matmul(left[..., rows, :]) * right).sum(-1)  # (*batch, N2)
                per_column = per_column.reshape(-1, per_column.shape[-1]).sum(0).double()
                grad_b[a].index_add_(0, self.tasks2, per_column)
        if grad_b is not None:
            grads[-1] = sum_to_shape(grad_b.to(self.b.dtype), self.b.shape)
        return tuple(grads)
