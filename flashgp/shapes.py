# Shape helpers shared by operators, backends and modules: broadcasting shapes, summing a broadcast
# gradient back to the shape of its tensor, and checking batch_shape arguments.
from __future__ import annotations

import numbers

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


def as_batch_shape(value, name: str = "batch_shape") -> torch.Size:
    """A ``batch_shape`` argument (a sequence of ints >= 1, e.g. ``(2,)`` or ``()``) as a torch.Size."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name}: expected a tuple of ints such as (2,) or (), got {value!r}")
    sizes = list(value)
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
        raise TypeError(f"{name}: expected a tuple of ints such as (2,) or (), got {value!r}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"{name}: expected sizes >= 1, got {tuple(int(s) for s in sizes)}")
    return torch.Size(int(s) for s in sizes)
