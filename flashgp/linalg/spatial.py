# Spatial blocks of points: a k-d style ordering in which every run of b consecutive points is a
# box of its own. The block preconditioner takes its diagonal blocks over these runs.
from __future__ import annotations

import torch
from torch import Tensor


def check_count(value, name: str) -> None:
    """``value`` (the argument ``name``) must be a positive python int (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


@torch.no_grad()
def spatial_order(z: Tensor, block: int) -> Tensor:
    """A permutation (n,) long of the points z (n, d) in which every aligned run of ``block``
    points (positions [i b, (i + 1) b)) lies in a box of its own: near points share runs.

    Recursive halving, one level at a time for all segments together: each segment of more than
    ``block`` points is sorted along its widest coordinate and cut at the multiple of ``block``
    nearest its middle (at least one block from its start). Every segment starts at a multiple
    of ``block``, so all runs are full but the last. About log2(n / block) levels of two stable
    sorts of n keys each; no per-segment Python loop.
    """
    check_count(block, "block")
    if not isinstance(z, Tensor) or z.dim() != 2:
        raise ValueError(f"z: expected a tensor of shape (n, d), got {getattr(z, 'shape', type(z))}")
    n, d = z.shape
    device = z.device
    order = torch.arange(n, device=device)
    starts = torch.zeros(1, dtype=torch.long, device=device)
    sizes = torch.full((1,), n, dtype=torch.long, device=device)
    while n and int(sizes.max()) > block:
        segment = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)  # (n,)
        points = z[order]
        index = segment.unsqueeze(-1).expand(n, d)
        low = torch.full((len(sizes), d), float("inf"), dtype=z.dtype, device=device)
        high = torch.full((len(sizes), d), float("-inf"), dtype=z.dtype, device=device)
        low = low.scatter_reduce(0, index, points, "amin")
        high = high.scatter_reduce(0, index, points, "amax")
        widest = (high - low).argmax(-1)  # (segments,)
        key = points.gather(-1, widest[segment].unsqueeze(-1)).squeeze(-1)
        by_key = torch.argsort(key, stable=True)
        by_segment = by_key[torch.argsort(segment[by_key], stable=True)]  # sorted within segments
        order = order[by_segment]
        split = sizes > block
        halves = torch.clamp_min(torch.round(sizes / (2 * block)), 1).long() * block
        first = torch.where(split, halves, sizes)
        starts = torch.stack([starts, starts + first], -1).flatten()
        sizes = torch.stack([first, sizes - first], -1).flatten()
        keep = sizes > 0
        starts, sizes = starts[keep], sizes[keep]
    return order


@torch.no_grad()
def block_index(z: Tensor, block: int) -> Tensor:
    """Indices of spatial blocks for points z ``(*batch, n, d)``: (*batch, ceil(n / block), block)
    long, each batch element ordered by ``spatial_order`` on its own. The last block is padded
    with the index n (no point) when block does not divide n."""
    check_count(block, "block")
    if not isinstance(z, Tensor) or z.dim() < 2:
        raise ValueError(f"z: expected a tensor of shape (*batch, n, d), got {getattr(z, 'shape', type(z))}")
    n = z.shape[-2]
    flat = z.reshape(-1, n, z.shape[-1])
    blocks = -(-n // block)
    out = torch.full((flat.shape[0], blocks * block), n, dtype=torch.long, device=z.device)
    for i, points in enumerate(flat):
        out[i, :n] = spatial_order(points, block)
    return out.reshape(*z.shape[:-2], blocks, block)
