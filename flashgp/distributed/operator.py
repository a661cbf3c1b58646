# The kernel matrix K(x, x) with its rows split across processes: each process multiplies its
# rows K(x_local, x_all) by the gathered vector block through the ordinary KernelOperator, so every
# local backend (dense, blocked, fused Triton) serves it unchanged.
from __future__ import annotations

import torch

from ..operators.base import Operator
from ..operators.kernel import KernelOperator
from .group import Shards


class ShardedKernelOperator(Operator):
    """This process's view of the symmetric K(x, x) whose rows are split across ``shards``:
    a map from its rows of a vector block to its rows of the product.

    Shape ``(*batch, n_local, n_local)``: ``matmul(v_local (*batch, n_local, t))`` all-gathers v
    to ``(*batch, n, t)`` and returns K(x_local, x_all) v, this process's rows of K v. (The
    shape is that of the local block only so that ``AddedDiag(op, noise_local)`` and the solvers'
    size checks see the local rows; the operator is not the block K(x_local, x_local).)

    Args:
        kernel: a ``flashgp.kernels.Kernel``.
        x_local: ``(*batch, n_local, d)`` this process's rows of the inputs.
        shards: the row split (``Shards``); ``shards.n_local`` must be ``x_local``'s rows.
        x_all: ``(*batch, n, d)`` every process's rows (None: all-gathered here, a collective).
        backend, memory_budget, precision: as for ``KernelOperator`` (the local rows' product).

    In a group of one process the local operator is K(x, x) itself (x2 None), so the path is
    that of one process. Otherwise its gradient pass is rectangular: the row and the column side
    each take a pass over n_local x n entries (one process's symmetric pass visits each of its
    n^2 / 2 pairs once), so that pass scales as G / 2 against one process, the products as G.

    Gradients: ``grad_inputs()`` are the kernel's parameters that require grad;
    ``bilinear_grad(left_local, right_local)`` gathers ``right``, takes the gradient of
    left_local^T K(x_local, x_all) right_all from the local ``KernelOperator`` and all-reduces
    it, so every process returns the gradient of the full sum_ij left_i K_ij right_j (its rows i
    split across processes: the processes' terms add up to it exactly). Inputs that require
    grad (learned inputs, deep kernels) are not supported yet.
    """

    def __init__(self, kernel, x_local: torch.Tensor, shards: Shards, x_all: torch.Tensor | None = None,
                 backend: str = "auto", memory_budget: int | None = None, **options):
        if x_local.requires_grad or (x_all is not None and x_all.requires_grad):
            raise NotImplementedError("ShardedKernelOperator: inputs that require grad (learned inputs, "
                                      "deep kernels) are not supported yet")
        if x_local.shape[-2] != shards.n_local:
            raise ValueError(f"x_local: expected {shards.n_local} rows (this process's shard), "
                             f"got shape {tuple(x_local.shape)}")
        if x_all is None:
            x_all = shards.gather(x_local, dim=-2)
        if x_all.shape[-2] != shards.n:
            raise ValueError(f"x_all: expected {shards.n} rows, got shape {tuple(x_all.shape)}")
        self.shards, self.kernel = shards, kernel
        self.x_local, self.x_all = x_local, x_all
        # a group of one holds every row: the symmetric K(x, x) of one process, whose products and
        # gradient passes take the symmetric kernels (each pair of points once)
        self.local = KernelOperator(kernel, x_local, None if shards.world_size == 1 else x_all,
                                    backend=backend, memory_budget=memory_budget, **options)
        batch = self.local.batch_shape
        self.shape = torch.Size((*batch, shards.n_local, shards.n_local))
        self.dtype, self.device = self.local.dtype, self.local.device
        self.backend, self.precision = self.local.backend, self.local.precision
        self._row_op = None  # K(x_all, x_local) for rows(), built on first use

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """rhs ``(*b, n_local, t)`` -> ``(*batch, n_local, t)``: one all-gather of the block, then
        this process's rows of the product."""
        return self.local._matmul(self.shards.gather(rhs, dim=-2))

    def diagonal(self) -> torch.Tensor:
        """This process's rows of K's diagonal, ``(*batch, n_local)``."""
        with torch.no_grad():
            return self.kernel.diag(self.x_local).expand(self.shape[:-1])

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of K, GLOBAL row indices ``(m,)`` or ``(*batch, m)`` long, at this
        process's columns: K(x_all[index], x_local), ``(*batch, m, n_local)``, without gradient
        (K is symmetric, so these are this process's rows of K's columns ``index``: what the
        sharded pivoted Cholesky needs of a pivot). No collective."""
        if self._row_op is None:
            with torch.no_grad():  # the blocked backend: nothing stored, rows evaluated on request
                self._row_op = KernelOperator(self.kernel, self.x_all.detach(), self.x_local.detach(),
                                              backend="blocked")
        return self._row_op.rows(index)

    def to_dense(self) -> torch.Tensor:
        raise NotImplementedError("ShardedKernelOperator.to_dense: the operator is spread over processes; "
                                  "local_rows() gives this process's rows K(x_local, x_all)")

    def local_rows(self) -> torch.Tensor:
        """K(x_local, x_all), ``(*batch, n_local, n)``, dense (small problems and tests only)."""
        return self.local.to_dense()

    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        return self.local.grad_inputs()

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        """Gradients of the full sum_ij left_i K_ij right_j, the same on every process: left,
        right ``(*b, n_local, t)`` this process's rows. Two collectives: the gather of ``right``
        and one all-reduce of the gradients, flattened together."""
        right_all = self.shards.gather(right, dim=-2)
        grads = self.local.bilinear_grad(left, right_all)
        present = [g for g in grads if g is not None]
        if not present:
            return tuple(grads)
        flat = torch.cat([g.reshape(-1) for g in present])
        flat = self.shards.all_reduce(flat)
        out, offset = [], 0
        for g in grads:
            if g is None:
                out.append(None)
                continue
            out.append(flat[offset: offset + g.numel()].reshape(g.shape).to(g.dtype))
            offset += g.numel()
        return tuple(out)
