# Shape helpers shared by operators and backends: broadcasting shapes, and summing a broadcast
# gradient back to the shape of the tensor it belongs to.
from __future__ import annotations

import torch


def broadcast_shapes(*shapes) -> torch.Size:
    """The broadcast of several shapes (plain Python; avoids torch's slow first-call path)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        sizes = {s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0} - {1}
        if len(sizes) > 1:
            raise ValueError(f"shapes: cannot broadcast {[tuple(s) for s in shapes]}")
        out.append(sizes.pop() if sizes else 1)
    return torch.Size(out)


def sum_to_shape(grad: torch.Tensor, shape) -> torch.Tensor:
    """Undo broadcasting: sum ``grad`` down to ``shape`` (extra leading dims and size-1 dims)."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for i, size in enumerate(shape):
        if size == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad
