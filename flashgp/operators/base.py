# The operator protocol: a matrix known only through products, its diagonal and its rows.
# Every solver in flashgp.linalg talks to matrices through this small interface.
from __future__ import annotations

import torch


class Operator:
    """A (batch of) square or rectangular matrices of shape ``(*batch, n_rows, n_cols)``.

    Subclasses implement ``_matmul``; ``diagonal``, ``rows`` and ``bilinear_grad`` have
    generic (slow) fallbacks only where that is safe. Nothing here builds a dense matrix
    unless ``to_dense`` is called.

    Gradients: an operator is a function of a few tensors (``grad_inputs()``, e.g. the
    kernel's raw hyperparameters, the inputs x, a noise diagonal). ``bilinear_grad(U, V)``
    returns, for each of them, d/dinput of sum_i u_i^T A v_i, without building A.
    """

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    # ----- sizes -------------------------------------------------------------------
    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size(self.shape[:-2])

    @property
    def n_rows(self) -> int:
        return self.shape[-2]

    @property
    def n_cols(self) -> int:
        return self.shape[-1]

    # ----- products ----------------------------------------------------------------
    def matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """A @ rhs. rhs: ``(*batch, n_cols, t)`` or ``(*batch, n_cols)`` -> ``(*batch, n_rows[, t])``."""
        if rhs.dim() == 0:
            raise ValueError("rhs: expected a vector or matrix, got a scalar")
        vector = rhs.dim() == len(self.batch_shape) + 1 or rhs.dim() == 1
        if vector:
            rhs = rhs.unsqueeze(-1)
        if rhs.shape[-2] != self.n_cols:
            raise ValueError(
                f"rhs: expected {self.n_cols} rows to match the operator, got shape {tuple(rhs.shape)}"
            )
        out = self._matmul(rhs)
        return out.squeeze(-1) if vector else out

    def __matmul__(self, rhs: torch.Tensor) -> torch.Tensor:
        return self.matmul(rhs)

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ----- entries -----------------------------------------------------------------
    def diagonal(self) -> torch.Tensor:
        """The diagonal, shape ``(*batch, n)``."""
        raise NotImplementedError

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Selected rows. index: ``(*batch, k)`` or (k,) long -> ``(*batch, k, n_cols)``."""
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:
        """The full matrix ``(*batch, n_rows, n_cols)``. Only for small operators and tests."""
        eye = torch.eye(self.n_cols, dtype=self.dtype, device=self.device)
        return self.matmul(eye.expand(*self.batch_shape, self.n_cols, self.n_cols))

    # ----- gradients ---------------------------------------------------------------
    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        """The tensors this operator is a differentiable function of (those requiring grad)."""
        return ()

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        """Gradients of sum_i left_i^T A right_i with respect to ``grad_inputs()``.

        left: ``(*batch, n_rows, t)``, right: ``(*batch, n_cols, t)``. Returns a tuple aligned with
        ``grad_inputs()`` (None where an input does not affect A).
        """
        return tuple(None for _ in self.grad_inputs())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype})"

