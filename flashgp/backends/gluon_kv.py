# Hopper (sm_90) K @ V for stationary kernels written in Gluon: each tile's tensor-core products
# run asynchronously under the next tile's kernel-entry math. CUDA only; triton_kernels is the reference.
"""K(z1, z2) @ V with asynchronous warpgroup MMA (wgmma), for D <= DIRECT_MAX_D and t >= 2.

The Triton kernel (``triton_kernels._kv_matmul_kernel``) computes a tile of kernel entries,
multiplies it by V's rows on the tensor cores and waits for them before the next tile: with the
kernel tile in registers Triton 3.6 waits after every dot (benchmarks/results/session6/). Here
the loop is pipelined by hand:

    tile j:  entries K_j (CUDA cores: distances, profile)   while the products of tile j-1 run
             wait for tile j-1's products; OUT += their sum
             V_j to shared memory (tf32 halves), then issue K_j V_j asynchronously

The kernel tile is computed directly in the register layout of wgmma's A operand, so it never
goes through shared memory. Arithmetic is that of ``triton_kernels``: inputs prescaled by the
profile's constant (``PRESCALE``), r2 summed elementwise in float32, k by MUFU.EX2 (and
MUFU.LG2 for RQ), and the "tf32x3" product: both operands split into tf32 halves, three
tensor-core products per tile summed in a fresh accumulator, added to OUT on the CUDA cores.
"tf32" keeps one product. Gluon has no CPU interpreter: this module is only used on CUDA devices
of compute capability 9.x, and its tests run on the GPU machine.
"""
from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, warpgroup_mma,
                                                              warpgroup_mma_init,
                                                              warpgroup_mma_wait)

from .triton_entry import PROFILES

_LN2 = gl.constexpr(0.6931471805599453)
_RQ = gl.constexpr(4)
# (BLOCK_M, BLOCK_N, num_warps) by padded t: rows per program, columns per tile, warps (a
# multiple of 4: one warpgroup per 64 rows at most)
CONFIGS = {16: (128, 32, 4), 32: (128, 32, 4), 64: (128, 16, 4)}
DIRECT_MAX_D = 8
MAX_T = 64
PRECISIONS = ("tf32x3", "tf32")


@gluon.jit
def _ex2_neg(x):
    """2^-x, one MUFU.EX2 (negation folded into its operand)."""
    return gl.inline_asm_elementwise("{ .reg .f32 t; neg.f32 t, $1; ex2.approx.ftz.f32 $0, t; }",
                                     "=f,f", [x], dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _lg2(x):
    """log2(x), one MUFU.LG2."""
    return gl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=gl.float32,
                                     is_pure=True, pack=1)


@gluon.jit
def _k_prescaled(r2, alpha, PROFILE: gl.constexpr):
    """k from r2 of prescaled inputs (``triton_entry._profile_prescaled``, the same formulas)."""
    if PROFILE == 0:
        k = _ex2_neg(r2)
    elif PROFILE == 1:
        k = _ex2_neg(gl.sqrt(r2))
    elif PROFILE == 2:
        s = gl.sqrt(r2)
        k = (1.0 + s * _LN2) * _ex2_neg(s)
    elif PROFILE == 3:
        s = gl.sqrt(r2)
        k = (1.0 + s * (_LN2 + s * (_LN2 * _LN2 / 3.0))) * _ex2_neg(s)
    else:
        k = _ex2_neg(alpha * _lg2(1.0 + r2))
    return k


@gluon.jit
def _keep_live(x, never):
    """x, read once more by a store that never runs (``never`` is 0 at run time, unknown to the
    compiler): ptxas then keeps x's registers, the A operand of an in-flight wgmma, out of reach
    of the next tile's math instead of waiting for the products before that math."""
    return gl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.b32 p, $8, 0; @p st.global.v4.b32 [$12], {$0, $1, $2, $3}; }",
        "=f,=f,=f,=f,0,1,2,3,r,r,r,r,l,l,l,l", [x, never, never.to(gl.int64)], dtype=gl.float32,
        is_pure=False, pack=4)


@gluon.jit
def _tf32_split(x):
    """(hi, lo): hi = x rounded to tf32 (ties away), lo = x - hi exactly."""
    bits = x.to(gl.uint32, bitcast=True)
    hi = ((bits + 0x1000) & 0xFFFFE000).to(gl.float32, bitcast=True)
    return hi, x - hi


@gluon.jit
def _tile_step(acc, part, prev_hi, prev_lo, side, Z2, V, start, n2, s_z2n, s_z2d, s_vn, s_vt, t,
               alpha, never, v_hi_smem, v_lo_smem, PROFILE: gl.constexpr, D: gl.constexpr,
               SPLIT: gl.constexpr, KEEP_LIVE: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_T: gl.constexpr,
               col_layout: gl.constexpr, v_layout: gl.constexpr):
    """One column tile: its kernel entries while the previous tile's products (on prev_hi,
    prev_lo) run, then wait, add their sum to acc and issue this tile's products.
    Returns (acc, the in-flight products, this tile's hi and lo halves)."""
    v_rows = start + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, v_layout))
    v_cols = gl.arange(0, BLOCK_T, layout=gl.SliceLayout(0, v_layout))
    v = gl.load(V + v_rows[:, None] * s_vn + v_cols[None, :] * s_vt,
                mask=(v_rows < n2)[:, None] & (v_cols < t)[None, :], other=0.0)
    cols = start + gl.arange(0, BLOCK_N, layout=col_layout)
    col_ok = cols < n2
    b = gl.load(Z2 + cols * s_z2n, mask=col_ok, other=0.0)
    diff = side[0][:, None] - b[None, :]
    r2 = diff * diff
    for k in gl.static_range(1, D):
        b = gl.load(Z2 + cols * s_z2n + k * s_z2d, mask=col_ok, other=0.0)
        diff = side[k][:, None] - b[None, :]
        r2 += diff * diff
    kt = _k_prescaled(r2, alpha, PROFILE)
    # kt passes through the wait so that its math stays before it, under the products
    part, kt, prev_hi, prev_lo = warpgroup_mma_wait(num_outstanding=0,
                                                    deps=(part, kt, prev_hi, prev_lo))
    acc = acc + part
    if KEEP_LIVE:
        _keep_live(prev_hi, never)
        if SPLIT:
            _keep_live(prev_lo, never)
    if SPLIT:
        k_hi, k_lo = _tf32_split(kt)
        v_hi, v_lo = _tf32_split(v)
        v_hi_smem.store(v_hi)
        v_lo_smem.store(v_lo)
    else:
        k_hi, k_lo = kt, kt
        v_hi_smem.store(v)
    fence_async_shared()
    gl.thread_barrier()
    # a fresh accumulator (not the registers of the sum just added to acc: ptxas serializes the
    # products when an accumulator of an in-flight wgmma is read by another instruction)
    fresh = gl.zeros_like(part)
    if SPLIT:
        part = warpgroup_mma(k_lo, v_hi_smem, fresh, use_acc=False, is_async=True)
        part = warpgroup_mma(k_hi, v_lo_smem, part, is_async=True)
        part = warpgroup_mma(k_hi, v_hi_smem, part, is_async=True)
    else:
        part = warpgroup_mma(k_hi, v_hi_smem, fresh, use_acc=False, is_async=True)
    return acc, part, k_hi, k_lo


@gluon.jit
def _gluon_kv_kernel(Z1, Z2, V, OUT, ALPHA, n1, n2, t, never,
                     s_z1b, s_z1n, s_z1d, s_z2b, s_z2n, s_z2d, s_vb, s_vn, s_vt, s_ob, s_on, s_ot,
                     s_ab, PROFILE: gl.constexpr, D: gl.constexpr, SPLIT: gl.constexpr,
                     KEEP_LIVE: gl.constexpr,
                     BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_T: gl.constexpr,
                     num_warps: gl.constexpr):
    """OUT[b, rows] = K(z1 rows, z2) @ V[b]; see the module docstring. SPLIT: tf32x3 (else tf32)."""
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_T, 8])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=1)
    row_layout: gl.constexpr = gl.SliceLayout(1, a_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, a_layout)
    v_layout: gl.constexpr = gl.BlockedLayout([1, 4], [32 // (BLOCK_T // 4), BLOCK_T // 4],
                                              [num_warps, 1], [1, 0])
    b_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_T], gl.float32,
                                                                  transposed=True)

    pid_m, pid_b = gl.program_id(0), gl.program_id(1).to(gl.int64)
    Z1, Z2, V = Z1 + pid_b * s_z1b, Z2 + pid_b * s_z2b, V + pid_b * s_vb
    rows = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_layout)
    row_ok = rows < n1
    side = ()
    for k in gl.static_range(D):
        side = side + (gl.load(Z1 + rows * s_z1n + k * s_z1d, mask=row_ok, other=0.0),)
    alpha = 1.0
    if PROFILE == _RQ:
        alpha = gl.load(ALPHA + pid_b * s_ab)

    v_hi_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_N, BLOCK_T], b_layout)
    v_lo_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_N, BLOCK_T], b_layout)

    acc = gl.zeros([BLOCK_M, BLOCK_T], gl.float32, layout=acc_layout)
    part = warpgroup_mma_init(gl.zeros([BLOCK_M, BLOCK_T], gl.float32, layout=acc_layout))
    # two register sets for the kernel tile, x and y, alternate: the products of one run while
    # the other is computed (a single loop-carried set made ptxas wait before the math)
    x_hi = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=a_layout)
    x_lo = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=a_layout)
    y_hi = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=a_layout)
    y_lo = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=a_layout)
    for start in range(0, n2, 2 * BLOCK_N):
        acc, part, x_hi, x_lo = _tile_step(
            acc, part, y_hi, y_lo, side, Z2, V, start, n2, s_z2n, s_z2d, s_vn, s_vt, t, alpha, never,
            v_hi_smem, v_lo_smem, PROFILE, D, SPLIT, KEEP_LIVE, BLOCK_N, BLOCK_T, col_layout, v_layout)
        acc, part, y_hi, y_lo = _tile_step(
            acc, part, x_hi, x_lo, side, Z2, V, start + BLOCK_N, n2, s_z2n, s_z2d, s_vn, s_vt, t,
            alpha, never, v_hi_smem, v_lo_smem, PROFILE, D, SPLIT, KEEP_LIVE, BLOCK_N, BLOCK_T, col_layout, v_layout)
    part = warpgroup_mma_wait(num_outstanding=0, deps=(part, y_hi, y_lo))[0]
    acc = acc + part

    out_rows = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, acc_layout))
    out_cols = gl.arange(0, BLOCK_T, layout=gl.SliceLayout(0, acc_layout))
    gl.store(OUT + pid_b * s_ob + out_rows[:, None] * s_on + out_cols[None, :] * s_ot, acc,
             mask=(out_rows < n1)[:, None] & (out_cols < t)[None, :])


# ----- launcher ------------------------------------------------------------------------------
def supported(z1: torch.Tensor, t: int, precision: str) -> bool:
    """Whether ``gluon_kv_matmul`` applies: a CUDA device of compute capability 9.x (wgmma),
    D <= DIRECT_MAX_D input columns, 2 <= t and a precision in PRECISIONS."""
    return (z1.is_cuda and precision in PRECISIONS and 2 <= t and z1.shape[-1] <= DIRECT_MAX_D
            and torch.cuda.get_device_capability(z1.device)[0] == 9)


def gluon_kv_matmul(z1: torch.Tensor, z2: torch.Tensor, v: torch.Tensor, profile: str,
                    alpha: torch.Tensor | None = None, precision: str = "tf32x3",
                    block_m: int | None = None, block_n: int | None = None,
                    num_warps: int | None = None, keep_live: bool = True) -> torch.Tensor:
    """K(z1, z2) @ v for the unit-scale ``profile`` (as ``triton_kernels.kv_matmul``).

    z1 (B, n1, D), z2 (B, n2, D) with D <= DIRECT_MAX_D, v (B, n2, t) with t >= 2, alpha (B,)
    for "rq"; precision "tf32x3" or "tf32". Returns (B, n1, t) float32. Columns of v beyond
    MAX_T run as further launches. ``keep_live``: the never-taken stores of ``_keep_live``.
    """
    from .triton_kernels import _check, _prepared
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if z1.dim() != 3 or z1.shape[-1] > DIRECT_MAX_D:
        raise ValueError(f"z1: expected (B, n1, D) with D <= {DIRECT_MAX_D}, got {tuple(z1.shape)}")
    if v.dim() != 3 or v.shape[:2] != z2.shape[:2] or v.shape[-1] < 2:
        raise ValueError(f"v: expected (B, n2, t) = ({z2.shape[0]}, {z2.shape[1]}, t >= 2), got "
                         f"{tuple(v.shape)}")
    t_all = v.shape[-1]
    bt = max(16, triton.next_power_of_2(min(t_all, MAX_T)))
    dm, dn, dw = CONFIGS[bt]
    block_m, block_n, num_warps = block_m or dm, block_n or dn, num_warps or dw
    _check(z1, z2, profile, alpha, precision, block_m, block_n, num_warps)
    z1, z2, _, _, alpha = _prepared(z1, z2, alpha, precision, prescale=profile)
    v = v.float()
    (bsz, n1, d), n2 = z1.shape, z2.shape[1]
    out = torch.empty(bsz, n1, t_all, device=z1.device, dtype=torch.float32)
    if n1 == 0 or n2 == 0:
        return out.zero_()
    grid = (triton.cdiv(n1, block_m), bsz)
    for c in range(0, t_all, MAX_T):
        vc, oc = v[..., c:c + MAX_T], out[..., c:c + MAX_T]
        t = vc.shape[-1]
        _gluon_kv_kernel[grid](
            z1, z2, vc, oc, alpha, n1, n2, t, 0, *z1.stride(), *z2.stride(), *vc.stride(),
            *oc.stride(), alpha.stride(0), PROFILE=PROFILES[profile], D=d,
            SPLIT=precision == "tf32x3", KEEP_LIVE=keep_live, BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_T=max(16, triton.next_power_of_2(t)), num_warps=num_warps)
    return out
