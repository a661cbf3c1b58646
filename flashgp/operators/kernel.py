# The kernel matrix K(x1, x2) as an operator, computed densely, in row blocks or by fused Triton
# kernels. Its gradients come from the kernel's own formula (blocked autograd or analytic profiles).
from __future__ import annotations

import torch

from ..backends import block_rows_for, blocked_bilinear_grad, blocked_matmul, choose_backend
from ..backends.choice import DENSE_BUFFERS, DENSE_BUFFERS_CPU_FUSED, DENSE_BUFFERS_STATIONARY
from ..backends.fused import (DEFAULT_PRECISION, PRECISIONS, cpu_ready, fused_bilinear_grad,
                             fused_dense, fused_matmul, fused_parts, fused_ready, stored_matmul,
                             stored_ready)
from ..backends.layout import padded_rows
from ..backends.stationary import profile_block, stationary_bilinear_grad, stationary_parts
from ..kernels.stationary import LOW_PRECISION_RESOLUTION, roundoff_resolution, scaled_sq_dist
from ..shapes import broadcast_shapes, sum_to_shape
from .base import Operator
from .dense import Dense

# entries of one row block when a dense matrix is built or its gradient summed on CUDA (larger
# blocks, fewer launches; the blocks' temporaries are the third buffer of DENSE_BUFFERS_STATIONARY)
DENSE_TILE_ENTRIES_CUDA = 1 << 26
# stored matrices with fewer entries keep torch's (cuBLAS's) product: the Triton one saves GPU
# time but costs more host time per call (about 0.25 ms), and at small n the host sets the pace
# of CG. On an H200, profiled training steps of elevators (n = 14,940) were slower with the
# Triton product, those of kin40k (36,000) and protein (41,157) faster.
STORED_PRODUCT_MIN_ENTRIES = 1 << 29  # n ~ 23,000


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if index.dim() == 1:
        return x[..., index, :]
    x = x.expand(*index.shape[:-1], *x.shape[-2:])
    return x.gather(-2, index.unsqueeze(-1).expand(*index.shape, x.shape[-1]))


class KernelOperator(Operator):
    """K = kernel(x1, x2) of shape ``(*batch, n1, n2)`` without (necessarily) storing it.

    Args:
        kernel: a ``flashgp.kernels.Kernel``.
        x1: ``(*batch, n1, d)`` inputs; may require grad (learned inputs, deep kernels).
        x2: ``(*batch, n2, d)``, or None for the symmetric K(x1, x1).
        backend: "auto" (dense while it fits ``memory_budget`` bytes, else fused Triton kernels
            for float32 data on CUDA, or the fused CPU kernels off CUDA, where the kernel allows,
            else blocked), "dense", "blocked", "triton" (fused kernels for Scale(RBF | Matern |
            RQ) on CUDA, or on CPU under TRITON_INTERPRET=1) or "cpu" (the compiled CPU kernels
            of ``backends.cpu_fused`` for the same kernels, in x's dtype, float32 or float64);
            other kernels or devices fall back to blocked. The resolved choice is ``self.backend``.
        block_rows: rows per block for the blocked backend (default from a tile budget).
        precision: arithmetic of the fused kernels, "fp16x3" (default), "tf32x3", "fp32",
            "tf32" or "bf16" (see ``flashgp.backends.triton_kernels.PRECISIONS``); they compute
            in float32 or below whatever the dtype of x. The dense backend's Triton product of a stored
            float32 K keeps float32 accuracy in every mode (3xTF32; IEEE float32 for "fp32").

    The dense backend keeps the matrix and, when gradients are needed, its autograd graph
    (so ``bilinear_grad`` costs one backward pass); for Scale(stationary) kernels it keeps
    outputscale * dk/dr2 instead, or, for float32 data where the fused Triton kernels run, and
    off CUDA where the fused CPU kernels run (which also build it), nothing: their gradient pass
    recomputes the entries (cheaper than a dozen passes over two stored matrices), and the
    memory budget counts K alone (``backends.choice.DENSE_BUFFERS_CPU_FUSED``). The blocked
    backend re-evaluates blocks.
    """

    def __init__(self, kernel, x1: torch.Tensor, x2: torch.Tensor | None = None, backend: str = "auto",
                 memory_budget: int | None = None, block_rows: int | None = None,
                 precision: str = DEFAULT_PRECISION):
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
        self.kernel, self.x1, self.x2, self.precision = kernel, x1, x2, precision
        other = x1 if x2 is None else x2
        batch = broadcast_shapes(x1.shape[:-2], other.shape[:-2], kernel.batch_shape)
        self.shape = torch.Size((*batch, x1.shape[-2], other.shape[-2]))
        self.dtype, self.device = x1.dtype, x1.device
        nbatch = int(torch.Size(batch).numel())
        self._parts = stationary_parts(kernel)
        ready = fused_ready(kernel, x1, x2)  # the fused kernels can evaluate this kernel here
        fused = (backend == "triton" or (backend == "auto" and x1.is_cuda)) and ready
        # the fused CPU kernels serve "auto", "cpu" and dense matrices; compiled on a machine's first use
        native = backend != "blocked" and not x1.is_cuda and cpu_ready(kernel, x1, x2)
        buffers = DENSE_BUFFERS if self._parts is None else (
            DENSE_BUFFERS_CPU_FUSED if native else DENSE_BUFFERS_STATIONARY)
        self.backend = choose_backend(backend, self.n_rows, self.n_cols, self.dtype, nbatch, memory_budget,
                                      fused, x1.device, buffers, native=native)
        # whose fused kernels give the gradients: float32 dense matrices take Triton's where those
        # run (one pass that recomputes K instead of a dozen torch passes over the stored K and
        # dK); off CUDA the fused CPU kernels build dense matrices and give their gradients
        self._fused_backend = None
        if self.backend in ("triton", "cpu"):
            self._fused_backend = self.backend
        elif self.backend == "dense" and self.dtype == torch.float32 and ready:
            self._fused_backend = "triton"
        elif self.backend == "dense" and native:
            self._fused_backend = "cpu"
        self._fused_parts = fused_parts(kernel) if self._fused_backend else None
        dense_on_gpu = self.backend == "dense" and x1.is_cuda
        self.block_rows = block_rows or block_rows_for(
            self.n_rows, self.n_cols, nbatch, *([DENSE_TILE_ENTRIES_CUDA] if dense_on_gpu else []))
        self.params = tuple(p for p in kernel.parameters() if p.requires_grad)
        self._dense = None
        self._row_inputs = None  # scaled inputs for _stationary_rows, computed on first use
        self._dense_derivative = None
        self._stored_ready = None  # whether the stored matrix takes the Triton product
        if self.backend == "dense" and torch.is_grad_enabled() and self._inputs():
            if self._parts is not None:  # keep K (and dK/dr2 unless fused): gradients need no graph
                self._dense, self._dense_derivative = self._stationary_dense(
                    derivative=self._fused_parts is None)
            else:  # build now, outside the no-grad solver code, so its graph serves bilinear_grad
                self._dense = kernel(x1, x2)

    # ----- dense cache -------------------------------------------------------------
    def _dense_matrix(self) -> torch.Tensor:
        """The dense matrix (dense backend), built once: for Scale(stationary) kernels without a
        graph (their gradients come from dk/dr2), otherwise with its graph if grad is on."""
        if self._dense is None:
            if self._parts is not None:
                self._dense = self._stationary_dense(derivative=False)[0]
            else:
                self._dense = self.kernel(self.x1, self.x2)
        return self._dense

    @torch.no_grad()
    def _stationary_dense(self, derivative: bool):
        """(K, outputscale * dk/dr2 or None), each ``(*batch, n1, n2)``, for a Scale(stationary)
        kernel: by one fused Triton pass for float32 data on CUDA where the kernel allows, else
        filled in row blocks of ``block_rows`` so that only one block of temporaries (squared
        distances, exponentials) exists at a time."""
        if self.dtype == torch.float32 and self.x1.is_cuda and fused_ready(self.kernel, self.x1, self.x2):
            x2 = None if self.x2 is None else self.x2.detach()
            k, dk = fused_dense(self.kernel, self.x1.detach(), x2, derivative)  # one pass on the GPU
            return k.expand(self.shape), None if dk is None else dk.expand(self.shape)
        if not derivative and self._fused_backend == "cpu":  # one pass of the fused CPU kernels
            x2 = None if self.x2 is None else self.x2.detach()
            return fused_dense(self.kernel, self.x1.detach(), x2, False, "cpu")[0].expand(self.shape), None
        parts = self._parts
        z2 = parts.scaled_inputs((self.x1 if self.x2 is None else self.x2).detach())
        z1 = z2 if self.x2 is None else parts.scaled_inputs(self.x1.detach())
        o = parts.outputscale()
        o = None if o is None else o.detach()
        k = padded_rows(self.shape, self.device, self.dtype)  # aligned rows: see stored_ready
        dk = padded_rows(self.shape, self.device, self.dtype) if derivative else None
        for start in range(0, self.n_rows, self.block_rows):
            stop = min(self.n_rows, start + self.block_rows)
            k_block, dk_block = profile_block(parts, z1[..., start:stop, :], z2, o, derivative)
            k[..., start:stop, :] = k_block
            if derivative:
                dk[..., start:stop, :] = dk_block
        return k, dk

    # ----- products and entries -----------------------------------------------------
    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        if self.backend == "dense":
            dense = self._dense_matrix().detach()
            if rhs.dtype == torch.float32 and self._stored_product(dense):  # float32 accuracy
                return stored_matmul(dense, rhs, "fp32" if self.precision == "fp32" else "tf32x3")
            if self.x2 is None and dense.is_cuda:  # K symmetric: K V = (V^T K)^T, which cuBLAS
                # runs 1.1-1.4x faster for skinny V on an H200 (benchmarks/dense_matmul.py)
                return (rhs.transpose(-1, -2).contiguous() @ dense).transpose(-1, -2)
            return dense @ rhs
        other = self.x1 if self.x2 is None else self.x2
        if self.backend in ("triton", "cpu"):
            x2 = None if self.x2 is None else self.x2.detach()
            return fused_matmul(self.kernel, self.x1.detach(), x2, rhs, self.precision,
                                backend=self.backend)
        return blocked_matmul(self.kernel, self.x1.detach(), other.detach(), rhs, self.block_rows)

    def _stored_product(self, dense: torch.Tensor) -> bool:
        """Whether products with the stored matrix go through ``triton_dense.stored_kv_matmul``
        (1.6x cuBLAS's speed on an H200): float32 K in aligned rows, where it can run. Asked once."""
        if self._stored_ready is None:
            self._stored_ready = dense.shape[-2:].numel() >= STORED_PRODUCT_MIN_ENTRIES and stored_ready(dense)
        return self._stored_ready

    def diagonal(self) -> torch.Tensor:
        if self.x2 is not None and self.x2 is not self.x1:
            raise ValueError("diagonal: only defined for the symmetric operator K(x1, x1)")
        with torch.no_grad():
            return self.kernel.diag(self.x1).expand(self.shape[:-1])

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        if self._dense is not None:
            return Dense(self._dense.detach().expand(self.shape)).rows(index)
        if self._parts is not None:
            return self._stationary_rows(index)
        other = self.x1 if self.x2 is None else self.x2
        with torch.no_grad():
            out = self.kernel(_gather_rows(self.x1.detach(), index), other.detach())
        return out.expand(*self.batch_shape, *out.shape[-2:]) if index.dim() == 1 else out

    @torch.no_grad()
    def _stationary_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows of outputscale * profile(r2) for Scale(stationary) kernels, with the scaled, centred
        inputs and their squared norms computed once per operator (pivoted Cholesky asks for
        one row at a time: this keeps each row to a handful of tensor operations)."""
        if self._row_inputs is None:
            other = self.x1 if self.x2 is None else self.x2
            z2 = self._parts.scaled_inputs(other.detach())
            z1 = z2 if self.x2 is None else self._parts.scaled_inputs(self.x1.detach())
            shift = z2.mean(-2, keepdim=True)
            z1, z2 = z1 - shift, z2 - shift
            b2 = z2.pow(2).sum(-1).unsqueeze(-2)
            if self.dtype != torch.float64 and float(roundoff_resolution(
                    self.dtype, b2.amax(-1, keepdim=True), b2).max()) > LOW_PRECISION_RESOLUTION:
                # points many lengthscales from the centre (outliers): float32 rows would be off by
                # up to a sixth of the outputscale (seen on protein), so evaluate them in float64
                z1, z2 = z1.double(), z2.double()
                b2 = z2.pow(2).sum(-1).unsqueeze(-2)
            o = self._parts.outputscale()
            self._row_inputs = (z1, z2, b2, None if o is None else o.detach().reshape(*o.shape, 1, 1))
        z1, z2, b2, outputscale = self._row_inputs
        a = _gather_rows(z1, index)
        a2 = a.pow(2).sum(-1, keepdim=True)
        r2 = torch.clamp_min(a2 + b2 - 2 * a @ z2.transpose(-1, -2), 0.0)
        out = self._parts.base.profile(r2.masked_fill_(r2 <= roundoff_resolution(r2.dtype, a2, b2), 0.0))
        out = (out if outputscale is None else out * outputscale).to(self.dtype)
        return out.expand(*self.batch_shape, *out.shape[-2:]) if index.dim() == 1 else out

    @torch.no_grad()
    def diagonal_blocks(self, index: torch.Tensor) -> torch.Tensor:
        """Diagonal blocks K[I_j, I_j] of the symmetric K(x1, x1), in float64.

        index: ``(*batch, m, b)`` long (a batch shape broadcastable to the operator's), the points
        of m blocks of b. Returns ``(*batch, m, b, b)`` float64. Scale(stationary) kernels get their
        squared distances in float64 from the scaled inputs; other kernels are evaluated in the
        data's dtype on the gathered points and converted.
        """
        if self.x2 is not None and self.x2 is not self.x1:
            raise ValueError("diagonal_blocks: only defined for the symmetric operator K(x1, x1)")
        index = index.expand(*self.batch_shape, *index.shape[-2:])
        m, b = index.shape[-2:]
        flat = index.flatten(-2)  # (*batch, m b)
        if self._parts is not None:
            z = self._parts.scaled_inputs(self.x1.detach())
            zb = _gather_rows(z, flat).double().unflatten(-2, (m, b))  # (*batch, m, b, D)
            out = self._parts.base.profile(scaled_sq_dist(zb, zb))
            o = self._parts.outputscale()
            return out if o is None else out * o.detach().double().reshape(*o.shape, 1, 1, 1)
        xb = _gather_rows(self.x1.detach(), flat).unflatten(-2, (m, b)).movedim(-3, 0)
        return self.kernel(xb, xb).double().movedim(0, -3)

    def to_dense(self) -> torch.Tensor:
        return self._dense_matrix() if self.backend == "dense" else self.kernel(self.x1, self.x2)

    def locality_inputs(self) -> torch.Tensor:
        """The points whose nearness makes entries of K large, ``(*batch, n, D)``: the scaled inputs
        of a Scale(stationary) kernel (lengthscales applied), else x1. For spatial blocks."""
        x = self.x1.detach()
        return x if self._parts is None else self._parts.scaled_inputs(x).detach()

    # ----- gradients ----------------------------------------------------------------
    def _inputs(self) -> list[torch.Tensor]:
        xs = [self.x1] if self.x2 is None else [self.x1, self.x2]
        return list(self.params) + [x for x in xs if x.requires_grad]

    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(self._inputs())

    def bilinear_grad(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        """Gradients of sum_i left_i^T K right_i for ``grad_inputs()``. left ``(*b, n1, t)``, right
        ``(*b, n2, t)``, b broadcastable with the batch; over batch dimensions that K lacks (AddedDiag
        with a batched diagonal) the gradients are summed."""
        inputs = self._inputs()
        if not inputs:
            return ()
        if self._fused_parts is not None:
            return fused_bilinear_grad(self._fused_parts, self.x1, self.x2, left, right, inputs,
                                       self.precision, backend=self._fused_backend)
        if self._parts is not None:
            cached = None
            if self.backend == "dense" and self._dense_derivative is not None:
                cached = (self._dense, self._dense_derivative)
            return stationary_bilinear_grad(self._parts, self.x1, self.x2, left, right, inputs,
                                            self.block_rows, cached)
        if self.backend == "dense":
            dense = self._dense_matrix()
            if dense.requires_grad:
                weights = left @ right.transpose(-1, -2)
                if weights.shape != dense.shape:  # left, right batched beyond K: sum that batch
                    weights = sum_to_shape(weights, dense.shape)
                self._dense = dense.detach()  # the graph is consumed by this call
                return torch.autograd.grad(dense, inputs, weights, allow_unused=True)
        grads = blocked_bilinear_grad(self.kernel, self.x1, self.x2, left, right, self.params,
                                      self.block_rows)
        xs = [self.x1] if self.x2 is None else [self.x1, self.x2]
        x_grads = [g for x, g in zip(xs, grads[len(self.params):]) if x.requires_grad]
        return tuple(grads[: len(self.params)]) + tuple(x_grads)
