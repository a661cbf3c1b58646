# The low-rank algebra of inducing-point models (SGPR): whitened cross-covariances accumulated in
# row blocks, in float64, so that the n x m cross-covariance is never held whole.
"""Collapsed inducing-point algebra.

With inducing inputs Z (m, d), K_zz = L L^T (float64 Cholesky) and a diagonal noise S, the
Nystrom approximation Q = K_xz K_zz^{-1} K_zx of K and the data enter only through

    A = L^{-1} K_zx (m, n),   M = A S^{-1} A^T (m, m),   v = A S^{-1} r (m,),

with r = y - m(x). ``whitened_terms`` accumulates M and v over row blocks of x: each block's
K_zx (m, b) is evaluated, whitened (one triangular solve) and dropped. With gradients, each
block's forward pass is recomputed in the backward pass (``torch.utils.checkpoint``), so
training also holds one block at a time. Everything is float64 whatever the model's dtype
(``float64_kernel`` evaluates the kernel with its parameters cast, differentiably).

Cost: O(n m^2) flops (two per entry of the triangular solve and of the Gram product), one
kernel evaluation of n x m entries (two with gradients), memory O(m^2 + b m).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

# the float64 cross-covariance block and its temporaries (about four of its size) take at most
# this many bytes unless the model sets another budget
DEFAULT_BLOCK_BYTES = 256 * 1024**2
BLOCK_TEMPORARIES = 4


def float64_kernel(kernel, x1: Tensor, x2: Tensor | None = None, diag: bool = False) -> Tensor:
    """kernel(x1, x2) (or its diagonal) evaluated in float64, differentiable in the kernel's
    parameters and the inputs whatever their dtype (the parameters are cast, not copied)."""
    x1 = x1.double()
    x2 = None if x2 is None else x2.double()
    tensors = dict(kernel.named_parameters())
    tensors.update(kernel.named_buffers())
    if all(t.dtype == torch.float64 for t in tensors.values() if t.is_floating_point()):
        return kernel(x1, x2, diag=diag) if diag else kernel(x1, x2)
    cast = {name: t.double() if t.is_floating_point() else t for name, t in tensors.items()}
    if diag:
        return functional_call(kernel, cast, (x1, x2), {"diag": True})
    return functional_call(kernel, cast, (x1, x2))


def block_rows(m: int, batch: int, budget: int | None = None) -> int:
    """Rows of x per block: a float64 (batch, b, m) block and its temporaries within ``budget``
    bytes (``DEFAULT_BLOCK_BYTES`` when None); at least 1."""
    budget = DEFAULT_BLOCK_BYTES if budget is None else budget
    return max(1, int(budget) // (BLOCK_TEMPORARIES * 8 * max(1, m) * max(1, batch)))


def whitened_cross(kernel, x: Tensor, z: Tensor, chol: Tensor) -> Tensor:
    """A = L^{-1} K(z, x): (*batch, m, b) float64, for x (*batch, b, d), z (*batch, m, d) and
    chol = L (*batch, m, m) the float64 Cholesky factor of K(z, z)."""
    cross = float64_kernel(kernel, z, x)
    return torch.linalg.solve_triangular(chol, cross.expand(*chol.shape[:-2], *cross.shape[-2:]), upper=False)


def _block_terms(kernel, x: Tensor, z: Tensor, chol: Tensor, weights: Tensor, resid: Tensor):
    """(A W A^T (*batch, m, m), A W r (*batch, m)) for one block: W = diag(weights)."""
    a = whitened_cross(kernel, x, z, chol)
    aw = a * weights.unsqueeze(-2)
    return aw @ a.transpose(-1, -2), (aw @ resid.unsqueeze(-1)).squeeze(-1)


def whitened_terms(kernel, x: Tensor, z: Tensor, chol: Tensor, weights: Tensor, resid: Tensor,
                   rows: int) -> tuple[Tensor, Tensor]:
    """M = A S^{-1} A^T (*batch, m, m) and v = A S^{-1} r (*batch, m), float64, accumulated over
    blocks of ``rows`` points.

    x (*batch, n, d), z (*batch, m, d), chol = L (*batch, m, m) float64 with L L^T = K(z, z),
    weights = 1 / noise (*batch, n), resid = y - m(x) (*batch, n). Differentiable in the
    kernel's parameters, x, z, chol, weights and resid; with gradients and more than one block,
    each block is recomputed in the backward pass instead of being stored.
    """
    n = x.shape[-2]
    batch = torch.broadcast_shapes(x.shape[:-2], z.shape[:-2], chol.shape[:-2], weights.shape[:-1],
                                   resid.shape[:-1])
    weights = weights.double().expand(*batch, n)
    resid = resid.double().expand(*batch, n)
    blocks = [slice(start, min(start + rows, n)) for start in range(0, n, rows)]
    recompute = torch.is_grad_enabled() and len(blocks) > 1
    total_m, total_v = None, None
    for part in blocks:
        args = (kernel, x[..., part, :], z, chol, weights[..., part], resid[..., part])
        if recompute:
            block_m, block_v = checkpoint(_block_terms, *args, use_reentrant=False)
        else:
            block_m, block_v = _block_terms(*args)
        total_m = block_m if total_m is None else total_m + block_m
        total_v = block_v if total_v is None else total_v + block_v
    return 0.5 * (total_m + total_m.transpose(-1, -2)), total_v
