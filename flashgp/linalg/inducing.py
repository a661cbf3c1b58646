# The low-rank algebra of inducing-point models (SGPR): whitened cross-covariances accumulated in
# row blocks, in float64, so that the n x m cross-covariance is never held whole.
"""Collapsed inducing-point algebra.

With inducing inputs Z (m, d), K_zz = L L^T (float64 Cholesky) and a diagonal noise S, the
Nystrom approximation Q = K_xz K_zz^{-1} K_zx of K and the data enter only through

    M = L^{-1} K_zx S^{-1} K_xz L^{-T} (m, m),   v = L^{-1} K_zx S^{-1} r (m,),

with r = y - m(x). Two ways to accumulate them over row blocks of x (each block's K_zx (m, b) is
evaluated, used and dropped; with gradients and several blocks, each block's forward pass is
recomputed in the backward pass, ``torch.utils.checkpoint``):

- ``gram_terms`` (the default): G = K_zx S^{-1} K_xz and g = K_zx S^{-1} r first (one GEMM per
  block, 2 b m^2 flops, and one in the backward pass, ``WeightedGram``), then M = L^{-1} G L^{-T}
  (O(m^3)). Its rounding error grows with cond(K_zz)^2 instead of cond(K_zz).
- ``whitened_terms``: A = L^{-1} K_zx per block (a triangular solve), then A S^{-1} A^T; about
  three times the flops, the error growing with cond(K_zz). ``objectives.sgpr_elbo`` takes it
  when L's diagonal says K_zz is ill-conditioned (``WELL_CONDITIONED``).

Everything is float64 whatever the model's dtype (``float64_kernel`` evaluates the kernel with its
parameters cast, differentiably). Memory: O(m^2) plus one block.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from ..shapes import sum_to_shape
from .cholesky import safe_cholesky

# the float64 cross-covariance block and its temporaries (about four of its size) take at most
# this many bytes unless the model sets another budget (on a GPU: one block, no recomputation,
# up to n m = 134M entries, e.g. n = 67,000 at m = 2,000)
DEFAULT_BLOCK_BYTES = {"cpu": 256 * 1024**2, "cuda": 4 * 1024**3}
BLOCK_TEMPORARIES = 4
# the Gram path is used while (max L_ii / min L_ii)^2, a lower bound of cond(K_zz), stays below this
WELL_CONDITIONED = 1e5


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


def block_rows(m: int, batch: int, budget: int | None = None, device: torch.device | None = None) -> int:
    """Rows of x per block: a float64 (batch, b, m) block and its temporaries within ``budget``
    bytes (None: ``DEFAULT_BLOCK_BYTES`` of the device type); at least 1."""
    if budget is None:
        budget = DEFAULT_BLOCK_BYTES["cuda" if device is not None and torch.device(device).type == "cuda" else "cpu"]
    return max(1, int(budget) // (BLOCK_TEMPORARIES * 8 * max(1, m) * max(1, batch)))


def whitened_cross(kernel, x: Tensor, z: Tensor, chol: Tensor) -> Tensor:
    """A = L^{-1} K(z, x): ``(*batch, m, b)`` float64, for x ``(*batch, b, d)``, z ``(*batch, m, d)`` and
    chol = L ``(*batch, m, m)`` the float64 Cholesky factor of K(z, z)."""
    cross = float64_kernel(kernel, z, x)
    return torch.linalg.solve_triangular(chol, cross.expand(*chol.shape[:-2], *cross.shape[-2:]), upper=False)


def _block_terms(kernel, x: Tensor, z: Tensor, chol: Tensor, weights: Tensor, resid: Tensor):
    """(A W A^T ``(*batch, m, m)``, A W r ``(*batch, m)``) for one block: W = diag(weights)."""
    a = whitened_cross(kernel, x, z, chol)
    aw = a * weights.unsqueeze(-2)
    return aw @ a.transpose(-1, -2), (aw @ resid.unsqueeze(-1)).squeeze(-1)


def whitened_terms(kernel, x: Tensor, z: Tensor, chol: Tensor, weights: Tensor, resid: Tensor,
                   rows: int) -> tuple[Tensor, Tensor]:
    """M = A S^{-1} A^T ``(*batch, m, m)`` and v = A S^{-1} r ``(*batch, m)``, float64, accumulated over
    blocks of ``rows`` points.

    x ``(*batch, n, d)``, z ``(*batch, m, d)``, chol = L ``(*batch, m, m)`` float64 with L L^T = K(z, z),
    weights = 1 / noise ``(*batch, n)``, resid = y - m(x) ``(*batch, n)``. Differentiable in the
    kernel's parameters, x, z, chol, weights and resid; with gradients and more than one block,
    each block is recomputed in the backward pass instead of being stored.
    """
    _, weights, resid = _expanded(x, z, chol, weights, resid)
    total_m, total_v = accumulate_blocks(_block_terms, kernel, x, z, (chol,), weights, resid, rows)
    return 0.5 * (total_m + total_m.transpose(-1, -2)), total_v


class WeightedGram(torch.autograd.Function):
    """(K^T diag(w) K ``(*batch, m, m)``, K^T diag(w) r ``(*batch, m)``) for K ``(*batch, b, m)``, w, r
    ``(*batch, b)``, with a backward pass of one GEMM: dK = W (K (dG + dG^T) + r dg^T),
    dw_i = k_i^T dG k_i + r_i k_i^T dg, dr = W K dg."""

    @staticmethod
    def forward(ctx, cross, weights, resid):
        weighted = cross * weights.unsqueeze(-1)
        ctx.save_for_backward(cross, weights, resid)
        return weighted.transpose(-1, -2) @ cross, (weighted.transpose(-1, -2) @ resid.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def backward(ctx, grad_gram, grad_vec):
        cross, weights, resid = ctx.saved_tensors
        sym = grad_gram + grad_gram.transpose(-1, -2)
        spread = cross @ sym  # (*batch, b, m)
        along = (cross @ grad_vec.unsqueeze(-1)).squeeze(-1)  # k_i^T dg, (*batch, b)
        d_cross = weights.unsqueeze(-1) * (spread + resid.unsqueeze(-1) * grad_vec.unsqueeze(-2))
        d_weights = 0.5 * (spread * cross).sum(-1) + resid * along
        d_resid = weights * along
        return (sum_to_shape(d_cross, cross.shape), d_weights if ctx.needs_input_grad[1] else None,
                d_resid if ctx.needs_input_grad[2] else None)


def _gram_block(kernel, x, z, weights, resid):
    return WeightedGram.apply(float64_kernel(kernel, x, z), weights, resid)


def accumulate_blocks(block_fn, kernel, x, z, extra, weights, resid, rows):
    """Sum block_fn(kernel, x_part, z, *extra, w_part, r_part) over row blocks (recomputed in the
    backward pass when gradients are on and there is more than one block)."""
    n = x.shape[-2]
    blocks = [slice(start, min(start + rows, n)) for start in range(0, n, rows)]
    recompute = torch.is_grad_enabled() and len(blocks) > 1
    total_a, total_b = None, None
    for part in blocks:
        args = (kernel, x[..., part, :], z, *extra, weights[..., part], resid[..., part])
        a, b = checkpoint(block_fn, *args, use_reentrant=False) if recompute else block_fn(*args)
        total_a = a if total_a is None else total_a + a
        total_b = b if total_b is None else total_b + b
    return total_a, total_b


def gram_terms(kernel, x: Tensor, z: Tensor, chol: Tensor, weights: Tensor, resid: Tensor,
               rows: int) -> tuple[Tensor, Tensor]:
    """M ``(*batch, m, m)`` and v ``(*batch, m)`` as ``whitened_terms`` returns them, from G = K_zx W K_xz
    and g = K_zx W r accumulated first (``WeightedGram``), then whitened by ``chol``."""
    batch, weights, resid = _expanded(x, z, chol, weights, resid)
    gram, g = accumulate_blocks(_gram_block, kernel, x, z, (), weights, resid, rows)
    gram = gram.expand(*batch, *gram.shape[-2:])
    half = torch.linalg.solve_triangular(chol, gram, upper=False)
    whitened = torch.linalg.solve_triangular(chol, half.transpose(-1, -2), upper=False)
    v = torch.linalg.solve_triangular(chol, g.expand(*batch, g.shape[-1]).unsqueeze(-1), upper=False).squeeze(-1)
    return 0.5 * (whitened + whitened.transpose(-1, -2)), v


def _expanded(x, z, chol, weights, resid):
    n = x.shape[-2]
    batch = torch.broadcast_shapes(x.shape[:-2], z.shape[:-2], chol.shape[:-2], weights.shape[:-1],
                                   resid.shape[:-1])
    return batch, weights.double().expand(*batch, n), resid.double().expand(*batch, n)


def well_conditioned(chol: Tensor) -> bool:
    """Whether the Gram path may be used: (max L_ii / min L_ii)^2 < WELL_CONDITIONED in every
    batch element (a cheap lower bound of cond(K_zz))."""
    diag = chol.detach().diagonal(dim1=-2, dim2=-1)
    return bool(((diag.amax(-1) / diag.amin(-1)).square() < WELL_CONDITIONED).all())


def inducing_terms(kernel, x: Tensor, z: Tensor, chol: Tensor, weights: Tensor, resid: Tensor,
                   rows: int) -> tuple[Tensor, Tensor, str]:
    """(M, v, path): ``gram_terms`` while ``well_conditioned(chol)``, else ``whitened_terms``;
    path names the one taken ("gram" or "whitened")."""
    if well_conditioned(chol):
        return (*gram_terms(kernel, x, z, chol, weights, resid, rows), "gram")
    return (*whitened_terms(kernel, x, z, chol, weights, resid, rows), "whitened")


def inducing_cholesky(kzz: Tensor, jitter: float | None) -> tuple[Tensor, float]:
    """(L, absolute jitter added) with L L^T = K_zz + jitter I: ``jitter`` relative to the mean
    diagonal when given (plus what ``safe_cholesky`` may still need), else only what
    ``safe_cholesky`` needs (0 when none)."""
    if jitter is None:
        return safe_cholesky(kzz)
    added = jitter * float(kzz.detach().diagonal(dim1=-2, dim2=-1).mean())
    eye = torch.eye(kzz.shape[-1], dtype=kzz.dtype, device=kzz.device)
    chol, extra = safe_cholesky(kzz + added * eye)
    return chol, added + extra
