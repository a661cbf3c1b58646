# Triton kernels of the dense backend on a GPU: one pass that writes a stationary kernel matrix
# (and outputscale * dk/dr2) to memory, and the product K @ V of a stored matrix.
"""Dense K and dK/dr2 tiles from lengthscale-scaled, centred inputs (see ``triton_kernels`` for
the entry math, shared here): r2 elementwise for D <= DIRECT_MAX_D, else by an IEEE float32
geometry dot, the profile and its derivative, times the per-batch output scale, stored once,
in rows padded to ``layout.ROW_ALIGN`` elements (``layout.padded_rows``).

The stored product reads K through Hopper's tensor memory accelerator (TMA: Triton tensor
descriptors, tiles copied to shared memory asynchronously, several in flight), which needs
16-byte aligned rows. On an H200 it was faster than cuBLAS's (V^T K)^T (t = 11; 1.41x at
n = 41,157 and 1.46x at 44,000, ``python benchmarks/dense_matmul.py --n 15000 36000 41157 44000``);
a Triton kernel with plain tile loads only matched cuBLAS.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .layout import padded_rows
from .triton_entry import INTERPRETED, PROFILES, _RQ, _columns, _product, _profile, _sq_dist, _sq_dist_cols
from .triton_kernels import (MIN_DOT, PRECISIONS, UNRANGED_PRECISION, _check, _direct, _operand,
                             _padded, _prepared)

DENSE_CONFIG = (64, 64, 4)  # BLOCK_M, BLOCK_N, num_warps (not tuned: a store-bound kernel)
# BLOCK_M, BLOCK_N, num_warps, tiles in flight of the stored product: the best setting common to
# n = 15,000, 41,157 and 44,000 of a 10-setting sweep (t = 11, tf32x3, one H200)
STORED_CONFIG = (64, 64, 4, 4)
STORED_MAX_T = 64   # columns of V per pass over K; wider V takes several passes


@triton.jit
def _dense_profile_kernel(Z1, Z2, N1, N2, ALPHA, SCALE, K, DK, n1, n2, d,
                          s_z1b, s_z1n, s_z1d, s_z2b, s_z2n, s_z2d, s_n1b, s_n2b, s_ab, s_sb,
                          s_kb, s_kn, s_dkb, s_dkn,
                          PROFILE: tl.constexpr, NEED_DK: tl.constexpr, D_DIRECT: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """K[b, rows, cols] = scale_b k(r2), DK[b, rows, cols] = scale_b dk/dr2 for one tile."""
    pid_m, pid_n, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < n1, cols < n2
    Z1, Z2 = Z1 + pid_b * s_z1b, Z2 + pid_b * s_z2b
    if D_DIRECT > 0:
        a_cols = _columns(Z1, rows, row_ok, s_z1n, s_z1d, D_DIRECT)
        r2 = _sq_dist_cols(a_cols, Z2, cols, col_ok, s_z2n, s_z2d, D_DIRECT)
    else:
        dims = tl.arange(0, BLOCK_D)
        a = tl.load(Z1 + rows[:, None] * s_z1n + dims[None, :] * s_z1d,
                    mask=row_ok[:, None] & (dims[None, :] < d), other=0.0)
        b = tl.load(Z2 + cols[:, None] * s_z2n + dims[None, :] * s_z2d,
                    mask=col_ok[:, None] & (dims[None, :] < d), other=0.0)
        a2 = tl.load(N1 + pid_b * s_n1b + rows, mask=row_ok, other=0.0)
        b2 = tl.load(N2 + pid_b * s_n2b + cols, mask=col_ok, other=0.0)
        r2 = _sq_dist(a, b, a2, b2, "ieee")
    alpha = 1.0
    if PROFILE == _RQ:
        alpha = tl.load(ALPHA + pid_b * s_ab)
    k, dk, _ = _profile(r2, alpha, PROFILE)
    scale = tl.load(SCALE + pid_b * s_sb)
    ok = row_ok[:, None] & col_ok[None, :]
    offsets = rows.to(tl.int64)[:, None] * s_kn + cols[None, :]  # n1 * n2 may pass 2^31
    tl.store(K + pid_b * s_kb + offsets, scale * k, mask=ok)
    if NEED_DK:
        offsets = rows.to(tl.int64)[:, None] * s_dkn + cols[None, :]
        tl.store(DK + pid_b * s_dkb + offsets, scale * dk, mask=ok)


def dense_profile(z1: torch.Tensor, z2: torch.Tensor, profile: str, scale: torch.Tensor | None = None,
                  alpha: torch.Tensor | None = None, derivative: bool = True) -> tuple:
    """(K, scale * dk/dr2 or None), each (B, n1, n2) float32, for the unit-scale ``profile`` on
    z1 (B, n1, D), z2 (B, n2, D) times ``scale`` (B,) (default 1); alpha (B,) for "rq"."""
    block_m, block_n, num_warps = DENSE_CONFIG
    _check(z1, z2, profile, alpha, "fp32", block_m, block_n, num_warps)
    (bsz, n1, d), n2 = z1.shape, z2.shape[1]
    z1, z2, n1sq, n2sq, alpha = _prepared(z1, z2, alpha)
    scale = torch.ones(bsz, device=z1.device) if scale is None else scale.float().expand(bsz).contiguous()
    k = padded_rows((bsz, n1, n2), z1.device)
    dk = padded_rows((bsz, n1, n2), z1.device) if derivative else k  # k: a placeholder pointer, never written
    if n1 and n2:
        grid = (triton.cdiv(n1, block_m), triton.cdiv(n2, block_n), bsz)
        _dense_profile_kernel[grid](
            z1, z2, n1sq, n2sq, alpha, scale, k, dk, n1, n2, d, *z1.stride(), *z2.stride(),
            n1sq.stride(0), n2sq.stride(0), alpha.stride(0), scale.stride(0), k.stride(0),
            k.stride(1), dk.stride(0), dk.stride(1), PROFILE=PROFILES[profile], NEED_DK=derivative,
            D_DIRECT=_direct(d), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(MIN_DOT, _padded(d)),
            num_warps=num_warps)
    return k, dk if derivative else None


# ----- stored matrices: the product -----------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _has_tma(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def stored_product_ready(k: torch.Tensor) -> bool:
    """Whether ``stored_kv_matmul`` can read ``k`` ``(*batch, n1, n2)`` in place: float32, unit
    column stride, 16-byte aligned start and rows, on a GPU with TMA (compute capability 9 or
    more) or on the CPU under Triton's interpreter."""
    if k.dtype != torch.float32 or k.dim() < 2 or k.stride(-1) != 1:
        return False
    if k.is_cuda:
        if not _has_tma(k.device.index if k.device.index is not None else torch.cuda.current_device()):
            return False
    elif not (INTERPRETED and k.device.type == "cpu"):
        return False
    return (k.stride(-2) * 4) % 16 == 0 and k.data_ptr() % 16 == 0 and \
        all((s * 4) % 16 == 0 for s in k.stride()[:-2])


@triton.jit
def _stored_kv_kernel(K_DESC, V_DESC, OUT, n1, n2, t, s_on, PRODUCT: tl.constexpr,
                      OPERAND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_T: tl.constexpr, STAGES: tl.constexpr):
    """OUT[rows, :t] = K[rows, :] @ V for one row block; K (n1, n2) and V (n2, BLOCK_T) are read
    by tensor descriptors, which fill tiles past n1, n2 with zeros."""
    pid_m = tl.program_id(0)
    acc = tl.zeros((BLOCK_M, BLOCK_T), dtype=tl.float32)
    for start in tl.range(0, n2, BLOCK_N, num_stages=STAGES):
        k = K_DESC.load([pid_m * BLOCK_M, start])
        v = V_DESC.load([start, 0])
        acc = _product(k, v, acc, PRODUCT, OPERAND)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols_t = tl.arange(0, BLOCK_T)
    tl.store(OUT + rows[:, None] * s_on + cols_t[None, :], acc,
             mask=(rows[:, None] < n1) & (cols_t[None, :] < t))


def stored_kv_matmul(k: torch.Tensor, v: torch.Tensor, precision: str = "tf32x3",
                     block_m: int | None = None, block_n: int | None = None,
                     num_warps: int | None = None, num_stages: int | None = None) -> torch.Tensor:
    """k @ v for a stored k (B, n1, n2) float32 laid out as ``stored_product_ready`` asks (e.g.
    from ``padded_rows``), v (B, n2, t); returns (B, n1, t) float32. ``precision``: the product
    arithmetic, as for ``triton_kernels.kv_matmul`` ("tf32x3" about float32 accuracy; "fp16x3"
    runs as "tf32x3", as K is not ranged into float16's span). Launch settings default to
    STORED_CONFIG; V passes through a zero-padded copy of 16, 32 or 64 columns, and wider V
    takes one pass over k per STORED_MAX_T columns."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, got {precision!r}")
    if not isinstance(k, torch.Tensor) or k.dim() != 3 or not stored_product_ready(k):
        got = f"{tuple(k.shape)} {k.dtype} strides {k.stride()}" if isinstance(k, torch.Tensor) \
            else type(k).__name__
        raise ValueError("k: expected a float32 (B, n1, n2) with 16-byte aligned rows on a GPU with "
                         f"TMA or under the Triton interpreter (see padded_rows), got {got}")
    if not isinstance(v, torch.Tensor) or v.dim() != 3 or v.shape[0] != k.shape[0] \
            or v.shape[1] != k.shape[2] or v.device != k.device:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"v: expected (B, n2, t) = ({k.shape[0]}, {k.shape[2]}, t) on {k.device}, "
                         f"got {got}")
    block_m, block_n, num_warps, num_stages = (g if g is not None else default for g, default in
                                               zip((block_m, block_n, num_warps, num_stages), STORED_CONFIG))
    _, product, operand = PRECISIONS[UNRANGED_PRECISION.get(precision, precision)]
    (bsz, n1, n2), t = k.shape, v.shape[2]
    out = torch.empty(bsz, n1, t, device=k.device, dtype=torch.float32)
    if n1 == 0 or n2 == 0 or t == 0:
        return out.zero_()
    v = _operand(v, operand)
    grid = (triton.cdiv(n1, block_m),)
    # per call the host work is kept small (CG calls this once per iteration, and at n ~ 15,000
    # the kernel takes about 0.25 ms on an H200): one padded copy of V, two descriptors, a launch
    for c in range(0, t, STORED_MAX_T):
        width = min(STORED_MAX_T, t - c)
        block_t = _padded(width)
        vc = torch.nn.functional.pad(v[..., c:c + width], (0, block_t - width)).contiguous()
        for b in range(bsz):
            k_desc = TensorDescriptor(k[b], [n1, n2], [k.stride(1), 1], [block_m, block_n])
            v_desc = TensorDescriptor(vc[b], [n2, block_t], [block_t, 1], [block_n, block_t])
            oc = out[b, :, c:] if c or bsz > 1 else out
            _stored_kv_kernel[grid](k_desc, v_desc, oc, n1, n2, width, t, PRODUCT=product,
                                    OPERAND=operand, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_T=block_t,
                                    STAGES=num_stages, num_warps=num_warps)
    return out
