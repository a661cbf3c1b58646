# Analytic bilinear gradients for Scale(stationary) kernels: per entry only the profile and its
# derivative dk/dr2; the rest is matrix products. Replaces autograd over n^2 kernel entries.
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.scale import Scale
from ..kernels.stationary import Stationary, scaled_sq_dist
from ..shapes import broadcast_shapes, sum_to_shape


@dataclass
class StationaryParts:
    """kernel = outputscale * base(r2); ``scale`` is None for a bare stationary kernel."""

    scale: Scale | None
    base: Stationary

    def scaled_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(*b, n, d)`` -> the lengthscale-scaled columns the base kernel sees (differentiable)."""
        if self.scale is not None:
            x = self.scale.select_dims(x)
        return self.base.select_dims(x) / self.base.lengthscale

    def outputscale(self):
        return None if self.scale is None else self.scale.outputscale


def stationary_parts(kernel) -> StationaryParts | None:
    """Split ``kernel`` into (Scale, Stationary base) when the analytic gradient applies."""
    scale, base = (kernel, kernel.base) if isinstance(kernel, Scale) else (None, kernel)
    if isinstance(base, Stationary) and base.has_profile_derivative:
        return StationaryParts(scale, base)
    return None


def _matrix_scale(outputscale):
    return outputscale.reshape(*outputscale.shape, 1, 1)


def profile_block(parts: StationaryParts, z1: torch.Tensor, z2: torch.Tensor, outputscale,
                  derivative: bool = True):
    """(K, outputscale * dk/dr2 or None), each ``(*b, m, n)``, for scaled inputs z1 ``(*b, m, D)``, z2
    ``(*b, n, D)``; ``derivative=False`` evaluates the profile alone."""
    r2 = scaled_sq_dist(z1, z2)
    k, dk = parts.base.profile_and_derivative(r2) if derivative else (parts.base.profile(r2), None)
    if outputscale is None:
        return k, dk
    o = _matrix_scale(outputscale)
    return k.mul_(o), None if dk is None else dk.mul_(o)


def block_gradients(weights, k, dk_scaled, z1, z2, outputscale):
    """Per-block pieces (grad z1 block, grad z2, grad outputscale) of sum(weights * K).

    weights ``(*b, m, n)`` = left_block @ right^T; k = K block; dk_scaled = outputscale * dk/dr2.
    Uses d r2_ab / d z_a = 2 (z_a - z_b), d r2_ab / d z_b = 2 (z_b - z_a), dK/do = K / o.
    """
    h = weights * dk_scaled
    g_z1 = 2 * (z1 * h.sum(-1, keepdim=True) - h @ z2)
    g_z2 = 2 * (z2 * h.sum(-2).unsqueeze(-1) - h.transpose(-1, -2) @ z1)
    g_o = None if outputscale is None else (weights * k).sum((-1, -2)) / outputscale
    return g_z1, g_z2, g_o


def stationary_bilinear_grad(parts: StationaryParts, x1, x2, left, right, targets, block_rows: int,
                             cached=None) -> tuple:
    """Gradients of sum_i left_i^T K right_i w.r.t. ``targets`` (kernel params and inputs).

    x1 ``(*b, n1, d)``, x2 ``(*b, n2, d)`` or None for K(x1, x1); left ``(*b, n1, t)``, right ``(*b, n2, t)``.
    The batch shapes need only broadcast: left and right may carry batch dimensions that K
    lacks (AddedDiag with a batched diagonal), and the gradients are summed over them.
    ``cached`` = (K, outputscale * dk/dr2) for the whole matrix (dense backend) skips
    re-evaluation. Only n x D tensors carry an autograd graph.
    """
    with torch.enable_grad():
        z1 = parts.scaled_inputs(x1)
        z2 = z1 if x2 is None else parts.scaled_inputs(x2)
        o = parts.outputscale()
    z1d, z2d = z1.detach(), z2.detach()
    o_d = None if o is None else o.detach()
    # the accumulators take the batch of the blocks' gradients (that of z, the outputscale, left
    # and right together); sum_to_shape below sums it back to the inputs' shapes
    batch = broadcast_shapes(left.shape[:-2], right.shape[:-2], () if o is None else o.shape)
    g_z1 = z1d.new_zeros(*broadcast_shapes(z1d.shape[:-2], batch), *z1d.shape[-2:])
    g_z2 = z2d.new_zeros(*broadcast_shapes(z2d.shape[:-2], batch), *z2d.shape[-2:])
    g_o = 0.0
    right_t = right.transpose(-1, -2)
    n1 = z1d.shape[-2]
    for s in range(0, n1, block_rows):
        e = min(n1, s + block_rows)
        zb = z1d[..., s:e, :]
        if cached is not None:
            k, dk = (c[..., s:e, :] for c in cached)
        else:
            k, dk = profile_block(parts, zb, z2d, o_d)
        gb1, gb2, gbo = block_gradients(left[..., s:e, :] @ right_t, k, dk, zb, z2d, o_d)
        g_z1[..., s:e, :] += gb1
        g_z2 += gb2
        if gbo is not None:
            g_o = g_o + gbo
    outs, grads = [z1], [g_z1 + g_z2 if x2 is None else g_z1]
    if x2 is not None:
        outs.append(z2)
        grads.append(g_z2)
    if o is not None:
        outs.append(o)
        grads.append(g_o.expand_as(o) if g_o.dim() < o.dim() else g_o)
    live = [(out, sum_to_shape(g, out.shape)) for out, g in zip(outs, grads) if out.requires_grad]
    if not live:
        return tuple(None for _ in targets)
    return torch.autograd.grad([o for o, _ in live], targets, [g for _, g in live], allow_unused=True)

