# Blocked torch backend: K @ V and bilinear gradients one row block at a time, so memory is
# O(n * block) and the full kernel matrix never exists. Works on any device.
from __future__ import annotations

from typing import Sequence

import torch

# entries of one (block x n2) kernel tile; with autograd temporaries ~10 such buffers live at once
DEFAULT_TILE_ENTRIES = 1 << 21


def block_rows_for(n1: int, n2: int, batch: int = 1, tile_entries: int = DEFAULT_TILE_ENTRIES) -> int:
    """Rows per block so that a (batch, block, n2) tile holds about ``tile_entries`` entries."""
    return max(1, min(n1, tile_entries // max(1, n2 * batch)))


def _blocks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def blocked_matmul(kernel, x1: torch.Tensor, x2: torch.Tensor, rhs: torch.Tensor,
                   block_rows: int) -> torch.Tensor:
    """K(x1, x2) @ rhs without forming K. x1 ``(*b, n1, d)``, x2 ``(*b, n2, d)``, rhs ``(*b, n2, t)``."""
    with torch.no_grad():
        outs = [kernel(x1[..., s:e, :], x2) @ rhs for s, e in _blocks(x1.shape[-2], block_rows)]
    return torch.cat(outs, dim=-2)


def blocked_bilinear_grad(kernel, x1: torch.Tensor, x2: torch.Tensor | None, left: torch.Tensor,
                          right: torch.Tensor, params: Sequence[torch.Tensor], block_rows: int) -> list:
    """Gradients of sum_i left_i^T K right_i with respect to ``params``, x1 and x2.

    The kernel is re-evaluated block by block with autograd; only one block's graph exists at
    a time. ``x2=None`` means K(x1, x1). left ``(*b, n1, t)``, right ``(*b, n2, t)``.
    Returns [grad per param..., grad x1 or None, grad x2 or None] (None for x2 when x2 is None).
    """
    with torch.enable_grad():
        x1d = x1.detach().requires_grad_(x1.requires_grad)
        x2d = x1d if x2 is None else x2.detach().requires_grad_(x2.requires_grad)
        targets = list(params) + [t for t in (x1d, None if x2 is None else x2d) if t is not None
                                  and t.requires_grad]
        grads = [None] * len(targets)
        right_t = right.transpose(-1, -2)
        for s, e in _blocks(x1.shape[-2], block_rows):
            weights = left[..., s:e, :] @ right_t
            k = kernel(x1d[..., s:e, :], x2d)
            if not targets:
                break
            found = torch.autograd.grad((k * weights).sum(), targets, allow_unused=True)
            grads = [g if a is None else (a if g is None else a + g) for a, g in zip(found, grads)]
    out = grads[: len(params)]
    rest = iter(grads[len(params):])
    out.append(next(rest) if x1.requires_grad else None)
    if x2 is not None:
        out.append(next(rest) if x2.requires_grad else None)
    return out
