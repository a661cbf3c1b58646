# Torch side of the fused Triton backend: which kernels it supports, K @ V, and the analytic
# bilinear gradient of Scale(stationary) kernels (mirrors stationary.py), all without storing K.
"""Fused (Triton) backend for Scale(RBF | Matern | RQ) kernels and their bare forms.

Triton itself is imported lazily (``triton_kernels``) so that ``import flashgp`` never needs it,
and so that TRITON_INTERPRET=1 (CPU testing) can be set by a caller before the first fused call.
Kernel entries are computed in float32 whatever the input dtype (``precision`` picks fp16x3, the
default, tf32x3, fp32, tf32 or bf16 arithmetic, see ``triton_kernels.PRECISIONS``); results come
back in the input dtype.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass

import torch

from ..kernels.matern import Matern
from ..kernels.rbf import RBF
from ..kernels.rq import RQ
from ..kernels.scale import Scale
from ..shapes import broadcast_shapes, sum_to_shape
from .layout import padded_rows
from .stationary import StationaryParts

PRECISIONS = ("fp32", "tf32x3", "fp16x3", "tf32", "bf16")
DEFAULT_PRECISION = "fp16x3"  # float32-level accuracy, the fastest such K @ V (triton_kernels.PRECISIONS)
MAX_D = 128  # = triton_kernels.MAX_D, kept here so that support checks need no triton import


@dataclass
class FusedParts(StationaryParts):
    """kernel = outputscale * profile(r2); ``profile`` names the Triton profile."""

    profile: str = "rbf"

    def alpha(self):
        """RQ's alpha ``(*batch,)``, differentiable; None for the other profiles."""
        return self.base.alpha if self.profile == "rq" else None


def _profile_name(base) -> str | None:
    if type(base) is RBF:
        return "rbf"
    if type(base) is Matern:
        return {0.5: "matern12", 1.5: "matern32", 2.5: "matern52"}[base.nu]
    if type(base) is RQ:
        return "rq"
    return None


def fused_parts(kernel) -> FusedParts | None:
    """Split ``kernel`` into (Scale or None, base, profile) if the fused kernels can evaluate it.

    Supported: RBF, Matern(nu = 0.5, 1.5, 2.5), RQ, each bare or inside one Scale, with ARD,
    active_dims and batch shapes. Anything else (sums, products, other kernels): None.
    """
    scale, base = (kernel, kernel.base) if isinstance(kernel, Scale) else (None, kernel)
    profile = _profile_name(base)
    return None if profile is None else FusedParts(scale, base, profile)


def fused_supported(kernel) -> bool:
    """Whether the fused Triton kernels can evaluate ``kernel`` (see ``fused_parts``)."""
    return fused_parts(kernel) is not None


def _kernels(backend: str = "triton"):
    """The module of fused kernels: Triton's (``triton``) or the compiled CPU ones (``cpu``)."""
    if backend == "cpu":
        return importlib.import_module("flashgp.backends.cpu_fused")
    if backend != "triton":
        raise ValueError(f"backend: expected 'triton' or 'cpu', got {backend!r}")
    return importlib.import_module("flashgp.backends.triton_kernels")


def _symmetric():
    return importlib.import_module("flashgp.backends.triton_symmetric")


def _dense():
    return importlib.import_module("flashgp.backends.triton_dense")


def fused_available(device: torch.device | str) -> bool:
    """Whether fused kernels can run on ``device``: triton imports, and the device is CUDA or the
    kernels were loaded under TRITON_INTERPRET=1 (Triton's CPU interpreter, for tests)."""
    device = torch.device(device)
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if device.type != "cuda" and not interpret:
        return False  # decided without importing triton
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        kernels = _kernels()
    except (ImportError, RuntimeError):
        return False
    if kernels.INTERPRETED:
        return True
    return device.type == "cuda" and torch.cuda.is_available()


def fused_ready(kernel, x1: torch.Tensor, x2: torch.Tensor | None = None) -> bool:
    """Whether ``kernel`` on inputs x1 (and x2) can use the fused backend here and now."""
    parts = fused_parts(kernel)
    if parts is None:
        return False
    dims = x1.shape[-1]  # columns the base kernel sees: Scale selects first, then the base
    for module in (parts.scale, parts.base):
        if module is not None and module.active_dims is not None:
            dims = len(module.active_dims)
    return dims <= MAX_D and fused_available(x1.device)


def cpu_ready(kernel, x1: torch.Tensor, x2: torch.Tensor | None = None) -> bool:
    """Whether the fused CPU kernels (``cpu_fused``) can evaluate ``kernel`` on x1 (and x2): a kernel
    ``fused_parts`` accepts, float32 or float64 CPU inputs, and the compiled library loads (it is
    compiled on the first call of a process that gets this far)."""
    if fused_parts(kernel) is None or x1.device.type != "cpu" or x1.dtype not in (torch.float32, torch.float64):
        return False
    if x2 is not None and (x2.device.type != "cpu" or x2.dtype != x1.dtype):
        return False
    return _kernels("cpu").available()


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")


# ----- shapes -----------------------------------------------------------------------------------
def _flat(x: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """x ``(*b, n, c)`` broadcast to ``(*batch, n, c)`` and flattened to (B, n, c)."""
    return x.expand(*batch, *x.shape[-2:]).reshape(-1, *x.shape[-2:])


def _per_batch(value: torch.Tensor | None, batch: torch.Size) -> torch.Tensor | None:
    """A ``(*kernel_batch,)`` hyperparameter broadcast to (B,)."""
    return None if value is None else value.expand(batch).reshape(-1)


def _centred(z1: torch.Tensor, z2: torch.Tensor):
    """z1, z2 minus the mean of z2: distances unchanged, float32 round-off smaller."""
    shift = z2.mean(-2, keepdim=True)
    return z1 - shift, z2 - shift


@torch.no_grad()
def _flat_inputs(parts: FusedParts, x1: torch.Tensor, x2: torch.Tensor | None, *shapes):
    """(a, b, outputscale, alpha, batch): the scaled, centred inputs flattened to (B, n, D) over
    the batch shared by the inputs, the kernel's hyperparameters and ``shapes``; outputscale and
    alpha detached, ``(*kernel_batch,)`` or None."""
    z1 = parts.scaled_inputs(x1)
    z2 = z1 if x2 is None else parts.scaled_inputs(x2)
    o, alpha = parts.outputscale(), parts.alpha()
    batch = broadcast_shapes(z1.shape[:-2], z2.shape[:-2], *shapes, () if o is None else o.shape,
                             () if alpha is None else alpha.shape)
    a, b = _centred(_flat(z1, batch), _flat(z2, batch))
    return a, b, o, alpha, batch


# ----- K @ V ------------------------------------------------------------------------------------
def fused_matmul(kernel, x1: torch.Tensor, x2: torch.Tensor | None, rhs: torch.Tensor,
                 precision: str = DEFAULT_PRECISION, block_m: int | None = None,
                 block_n: int | None = None, backend: str = "triton") -> torch.Tensor:
    """kernel(x1, x2) @ rhs by the fused Triton kernel (``backend="triton"``) or the fused CPU
    kernels (``"cpu"``, ``cpu_fused``: computed in x's dtype, ``precision`` ignored), without
    forming the kernel matrix.

    x1 ``(*b, n1, d)``, x2 ``(*b, n2, d)`` or None (x1), rhs ``(*b, n2, t)`` -> ``(*batch, n1, t)`` in rhs's
    dtype; ``kernel`` must satisfy ``fused_supported``. Not differentiable (no graph is built).
    With x2 None and one column the symmetric kernel computes each entry of an off-diagonal
    tile once (``triton_symmetric``; block_m must then be a multiple of block_n). With more
    columns its transposed tile product made it slower than the rectangular kernel on an H200
    (n = 100k, t = 11: ``python benchmarks/tune_kernels.py --n 100000 --d 3 --t 11 --ops matmul
    sym_matmul --precisions tf32x3``), so those use ``kv_matmul``.
    """
    _check_precision(precision)
    parts = fused_parts(kernel)
    if parts is None:
        raise ValueError(f"kernel: {type(kernel).__name__} is not supported by the fused backend")
    with torch.no_grad():
        a, b, o, alpha, batch = _flat_inputs(parts, x1, x2, rhs.shape[:-2])
        if backend == "cpu" and x2 is None:  # each pair of points once (any t)
            out = _kernels("cpu").sym_kv_matmul(a, _flat(rhs, batch), parts.profile, _per_batch(alpha, batch))
        elif backend == "triton" and x2 is None and rhs.shape[-1] == 1:  # off-diagonal entries once
            out = _symmetric().sym_kv_matmul(a, _flat(rhs, batch), parts.profile,
                                             _per_batch(alpha, batch), precision, block_m, block_n)
        else:
            out = _kernels(backend).kv_matmul(a, b, _flat(rhs, batch), parts.profile,
                                              _per_batch(alpha, batch), precision, block_m, block_n)
        if o is not None:
            out = out * _per_batch(o, batch).to(out.dtype)[:, None, None]
    return out.to(rhs.dtype).reshape(*batch, *out.shape[-2:])


# ----- stored matrix @ V ------------------------------------------------------------------------
def stored_ready(k: torch.Tensor) -> bool:
    """Whether ``stored_matmul`` can multiply the stored matrix k ``(*batch, n1, n2)`` in place
    (``triton_dense.stored_product_ready``: float32 in aligned rows, on a GPU with TMA or under
    the CPU interpreter; batch dimensions that flatten without a copy)."""
    if not fused_available(k.device) or k.dim() < 2:
        return False
    try:
        flat = k.view(-1, *k.shape[-2:])
    except RuntimeError:
        return False
    return _dense().stored_product_ready(flat)


def stored_matmul(k: torch.Tensor, rhs: torch.Tensor, precision: str = "tf32x3") -> torch.Tensor:
    """k @ rhs for a stored k ``(*batch, n1, n2)`` that ``stored_ready`` accepts and rhs ``(*b, n2, t)``
    float32, by ``triton_dense.stored_kv_matmul`` -> ``(*batch, n1, t)`` float32 (torch's product
    where the broadcast batch of k does not flatten without a copy). No graph is built."""
    _check_precision(precision)
    batch = broadcast_shapes(k.shape[:-2], rhs.shape[:-2])
    try:
        flat = k.expand(*batch, *k.shape[-2:]).view(-1, *k.shape[-2:])
    except RuntimeError:
        return k @ rhs
    with torch.no_grad():
        out = _dense().stored_kv_matmul(flat, _flat(rhs, batch), precision)
    return out.reshape(*batch, *out.shape[-2:])


# ----- dense matrix ---------------------------------------------------------------------------
def fused_dense(kernel, x1: torch.Tensor, x2: torch.Tensor | None, derivative: bool = True,
                backend: str = "triton") -> tuple:
    """(K, outputscale * dk/dr2 or None), each ``(*batch, n1, n2)``, written by one pass: float32 by
    Triton (``triton_dense``), or in x's dtype by the fused CPU kernels (``backend="cpu"``, K alone:
    ``derivative`` must be False). x1 ``(*b, n1, d)``, x2 ``(*b, n2, d)`` or None (x1). No graph is built."""
    parts = fused_parts(kernel)
    if parts is None:
        raise ValueError(f"kernel: {type(kernel).__name__} is not supported by the fused backend")
    if backend == "cpu":
        if derivative:
            raise ValueError("derivative: the fused CPU kernels write K alone")
        return _cpu_dense(parts, x1, x2), None
    dense = _dense()
    with torch.no_grad():
        a, b, o, alpha, batch = _flat_inputs(parts, x1, x2)
        k, dk = dense.dense_profile(a, b, parts.profile, _per_batch(o, batch), _per_batch(alpha, batch),
                                    derivative)
    shape = (*batch, *k.shape[-2:])
    return k.reshape(shape), None if dk is None else dk.reshape(shape)


@torch.no_grad()
def _cpu_dense(parts: FusedParts, x1: torch.Tensor, x2: torch.Tensor | None) -> torch.Tensor:
    a, b, o, alpha, batch = _flat_inputs(parts, x1, x2)
    k = padded_rows((a.shape[0], a.shape[1], b.shape[1]), dtype=a.dtype)  # rows aligned as dense K's
    _kernels("cpu").kernel_tile(a, b, parts.profile, _per_batch(alpha, batch), out=k)
    if o is not None:
        k.mul_(_per_batch(o, batch).to(k.dtype)[:, None, None])
    return k.reshape(*batch, *k.shape[-2:])


# ----- bilinear gradient ------------------------------------------------------------------------
def _z_grad(z, h_sum, hz, scale):
    """2 o sum_b H_ab (z_a - z_b) = 2 o (z_a rowsum_h[a] - hz[a]), from d r2_ab / d z_a = 2 (z_a - z_b)."""
    return 2 * scale * (z.to(hz.dtype) * h_sum[..., None] - hz)


def fused_bilinear_grad(parts: FusedParts, x1: torch.Tensor, x2: torch.Tensor | None,
                        left: torch.Tensor, right: torch.Tensor, targets,
                        precision: str = DEFAULT_PRECISION, block_m: int | None = None,
                        block_n: int | None = None, backend: str = "triton") -> tuple:
    """Gradients of sum_i left_i^T K right_i with respect to ``targets`` (kernel params, inputs).

    The fused counterpart of ``stationary.stationary_bilinear_grad``: x1 ``(*b, n1, d)``, x2
    ``(*b, n2, d)`` or None for K(x1, x1), left ``(*b, n1, t)``, right ``(*b, n2, t)``. Fused row passes give
    g_z1, g_z2, g_outputscale (and RQ's g_alpha); one autograd.grad over the n x D graph maps
    them onto ``targets``. The column side is the row kernel on the transpose (W^T = right
    left^T, z1 <-> z2), skipped when z2 needs no gradient. For K(x1, x1) a single pass on
    [left, right], [right, left] gives W + W^T, hence both sides at once; when x1 needs no
    gradient either, the symmetric kernel gives the hyperparameters' alone, each pair of points
    computed once (``_symmetric_param_grad``; Triton only). ``backend`` as in ``fused_matmul``
    (the CPU kernels work in x's dtype). Matern-1/2: dk/dr2 is
    taken as 0 where r2 == 0 (it is unbounded there), so its x-gradients for near-duplicate
    points are approximate.
    """
    _check_precision(precision)
    if backend == "triton" and x2 is None and not x1.requires_grad:
        return _symmetric_param_grad(parts, x1, left, right, targets, precision, block_m, block_n)
    with torch.enable_grad():
        z1 = parts.scaled_inputs(x1)
        z2 = z1 if x2 is None else parts.scaled_inputs(x2)
        o, alpha = parts.outputscale(), parts.alpha()
    batch = broadcast_shapes(z1.shape[:-2], z2.shape[:-2], left.shape[:-2], right.shape[:-2],
                                   () if o is None else o.shape, () if alpha is None else alpha.shape)
    a, b = _centred(_flat(z1.detach(), batch), _flat(z2.detach(), batch))
    u, v = _flat(left, batch), _flat(right, batch)
    alpha_b = _per_batch(None if alpha is None else alpha.detach(), batch)
    kernels = _kernels(backend)
    launch = dict(profile=parts.profile, alpha=alpha_b, precision=precision, block_m=block_m,
                  block_n=block_n)
    work = torch.float32 if backend == "triton" else a.dtype  # the kernels' arithmetic
    scale = 1.0 if o is None else _per_batch(o.detach(), batch).to(work)[:, None, None]
    with torch.no_grad():
        if x2 is None and z1.requires_grad:  # W + W^T = [u v] [v u]^T: both sides in one pass,
            uv, vu = torch.cat([u, v], -1), torch.cat([v, u], -1)  # so wk and wda count twice
            if backend == "cpu":  # W + W^T is symmetric: each pair of points once
                h, hz, wk, wda = kernels.sym_row_grad(a, uv, vu, parts.profile, alpha_b)
            else:
                h, hz, wk, wda = kernels.row_grad(a, a, uv, vu, **launch)
            wk, wda = wk / 2, None if wda is None else wda / 2
            grads = [_z_grad(a, h, hz, scale).to(z1.dtype).reshape(*batch, *a.shape[-2:])]
        else:
            h, hz, wk, wda = kernels.row_grad(a, b, u, v, **launch)
            grads = [_z_grad(a, h, hz, scale).to(z1.dtype).reshape(*batch, *a.shape[-2:])]
            if x2 is not None and z2.requires_grad:
                h, hz, _, _ = kernels.row_grad(b, a, v, u, need_wk=False, **launch)
                grads.append(_z_grad(b, h, hz, scale).to(z2.dtype).reshape(*batch, *b.shape[-2:]))
        outs = [z1, z2][:len(grads)]
        if o is not None:  # K = o * K_unit: dL/do = sum W K_unit
            outs.append(o)
            grads.append(wk.sum(-1).to(o.dtype).reshape(batch))
        if alpha is not None:  # dK/dalpha = o * dK_unit/dalpha
            g_alpha = wda.sum(-1) * (1.0 if o is None else scale.reshape(-1))
            outs.append(alpha)
            grads.append(g_alpha.to(alpha.dtype).reshape(batch))
        grads = [sum_to_shape(g, out.shape) for out, g in zip(outs, grads)]
    live = [(out, g) for out, g in zip(outs, grads) if out.requires_grad]
    if not live:
        return tuple(None for _ in targets)
    return torch.autograd.grad([out for out, _ in live], targets, [g for _, g in live],
                               allow_unused=True)


def _symmetric_param_grad(parts: FusedParts, x: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                          targets, precision: str, block_m: int | None, block_n: int | None) -> tuple:
    """``fused_bilinear_grad`` for K(x, x) with x not needing a gradient: the hyperparameters'
    gradients from the pair sums of ``triton_symmetric.sym_param_grad``.

    x ``(*b, n, d)``, left and right ``(*b, n, t)``. The lengthscales reach autograd through probe =
    scaled_inputs(ones) = 1 / lengthscale ``(*kb, 1, D)``: z = x * probe, and d/d log z_k of
    sum(W * o k) is 2 o s_k, so the probe's gradient is 2 o s / probe.
    """
    with torch.enable_grad():
        probe = parts.scaled_inputs(x.new_ones(1, x.shape[-1]))
        o, alpha = parts.outputscale(), parts.alpha()
    with torch.no_grad():
        z = parts.scaled_inputs(x)
        batch = broadcast_shapes(z.shape[:-2], left.shape[:-2], right.shape[:-2], probe.shape[:-2],
                                 () if o is None else o.shape, () if alpha is None else alpha.shape)
        z = _flat(z, batch)
        s, wk, wda = _symmetric().sym_param_grad(
            z - z.mean(-2, keepdim=True), _flat(left, batch), _flat(right, batch), parts.profile,
            _per_batch(None if alpha is None else alpha.detach(), batch), precision, block_m, block_n)
        scale = torch.ones_like(wk) if o is None else _per_batch(o.detach(), batch).float()  # (B,)
        g_probe = 2 * scale[:, None] * s / _flat(probe.detach(), batch)[:, 0]
        outs, grads = [probe], [g_probe.reshape(*batch, 1, -1)]
        if o is not None:  # K = o * K_unit: dL/do = sum W K_unit
            outs.append(o)
            grads.append(wk.reshape(batch))
        if alpha is not None:  # dK/dalpha = o * dK_unit/dalpha
            outs.append(alpha)
            grads.append((scale * wda).reshape(batch))
        grads = [sum_to_shape(g.to(out.dtype), out.shape) for out, g in zip(outs, grads)]
    live = [(out, g) for out, g in zip(outs, grads) if out.requires_grad]
    if not live:
        return tuple(None for _ in targets)
    return torch.autograd.grad([out for out, _ in live], targets, [g for _, g in live],
                               allow_unused=True)
