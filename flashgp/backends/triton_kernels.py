# Fused Triton kernels for stationary kernels: K(z1, z2) @ V and the per-row sums of the analytic
# gradient, one tile loop over columns each, with K never stored. CUDA, or CPU with TRITON_INTERPRET=1.
"""Fused stationary-kernel products on lengthscale-scaled inputs.

Inputs are z1 = x1 / lengthscale (B, n1, D) and z2 (B, n2, D), already centred (the caller
subtracts a common shift, which leaves distances unchanged and keeps float32 accurate). The
output scale is applied by the caller. Every kernel entry is

    r2_ab = sum_k (a_k - b_k)^2     for D <= DIRECT_MAX_D: elementwise, exact float32 (no cancellation)
    r2_ab = |a|^2 + |b|^2 - 2 a.b   wider D: one dot per tile (clamped >= 0; set to 0 at or below
                                    eps-level round-off)
    K_ab  = k(r2_ab)                (profile: rbf, matern12, matern32, matern52, rq)

accumulated in float32. A single column (t = 1, Lanczos) is summed elementwise instead of
through a dot padded to 16 columns. Whether a launch runs on the GPU or in Triton's interpreter is fixed
when this module is imported (TRITON_INTERPRET=1 must be set before that): see ``INTERPRETED``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# the per-entry math; INTERPRETED, PROFILES and the operand splits are re-exported for callers and tests
from .triton_entry import (INTERPRETED, PRESCALE, PROFILES, _RQ, _add_rows,  # noqa: F401
                           _dot, _fp16_split, _product, _profile, _row_side, _sq_dist,
                           _sq_dist_cols, _tf32_split, _tile_terms)
from .triton_records import fp16x3_config, records_kv

# ----- named parameters: block sizes and precision -------------------------------------------
# Launch configurations (BLOCK_M rows of z1 per program, BLOCK_N columns of z2 per step of the
# tile loop, num_warps, num_stages). The direct (d <= DIRECT_MAX_D) and d = 20 entries are the
# fastest of a sweep on one H200 (n = 100k, RBF, d = 3 and 20; the direct ones, e.g.
# ``python benchmarks/tune_kernels.py --n 100000 --d 3 --t 11 --ops matmul grad_xx --precisions
# tf32x3 fp32 tf32``, with --t 1 for t1, sweeping --block-m --block-n --num-warps --num-stages);
# the wide-D entries (padded D >= 64) come from ptxas register reports (no spills) and were not
# timed. The dot "narrow" entries (one stage, 32 columns) come from a sweep at Matern 5/2, tf32x3,
# t = 11 (``python benchmarks/tune_kernels.py --ops matmul grad --precisions tf32x3 --profile
# matern52 --n 41157 --d 9 --t 11``, and --n 100000 --d 20, over --block-m 32 64 128 --block-n
# 16 32 64 --num-warps 4 8 --num-stages 1 2 3). K @ V: 1.87x faster at d = 9 (n = 41,157) and
# 1.30x at d = 20 (n = 100k) than (128, 64, 4, 3); (64, 32, 4, 1) was 9% faster still at d = 9
# but 8% slower at d = 20. Gradients: 1.90x and 1.51x faster than (64, 32, 4, 2). A tf32x3
# K @ V in two tensor-core products per tile (V split into tf32 parts on the host) was slower at
# d = 3 and is not kept.
KV_CONFIGS = {  # (geometry, product) -> config
    ("direct", "t1"): (64, 32, 4, 3),       # one column: elementwise sum, no dot
    ("direct", "fp32"): (64, 64, 4, 1),
    ("direct", "tf32x3"): (128, 32, 4, 1),
    ("direct", "fp16x3"): (128, 32, 4, 1),   # kv_matmul with t > 1: triton_records.FP16X3_CONFIGS
    ("direct", "tensor"): (128, 64, 4, 3),   # tf32, bf16
    ("dot", "narrow"): (128, 32, 4, 1),      # padded D <= 32
    ("dot", "wide"): (64, 32, 8, 2),
}
GRAD_CONFIGS = {
    ("direct", "fp32"): (128, 64, 4, 3),
    ("direct", "tensor"): (128, 32, 4, 1),   # tf32x3, tf32, bf16
    ("dot", "narrow"): (64, 32, 4, 1),       # padded D + 1 <= 32 (64 rows with 8 warps hit an
                                             # illegal memory access in tf32x3 at d = 20, t = 1, 11)
    ("dot", "wide"): (32, 16, 4, 2),
}
KV_MAX_T, GRAD_MAX_T = 64, 32   # columns of V (of u, v) per launch; wider runs as several launches
DIRECT_MAX_D = 8         # up to this many input columns r2 is summed elementwise (no dot, no padding)
MIN_DOT = 16             # tl.dot needs every dimension >= 16: D and t are zero-padded up to it
MAX_D = 128              # widest scaled input handled in one tile (wider: the blocked backend)

# precision mode -> (geometry dots a.b and H @ z, product dots K @ V and U V^T, product operand dtype)
# The geometry dots feed |a|^2 + |b|^2 - 2 a.b, which cancels for near points: plain tf32 (10-bit
# mantissa) would leave errors ~1e-3 |z|^2 in r2, so the reduced modes use 3xTF32 there (tensor
# cores, about float32 accuracy). Only the products, where errors average out, drop precision.
# "tf32x3" splits each float32 operand into two tf32 parts (3 tensor-core products): float32-level
# accuracy at tensor-core speed. "fp16x3" does the same for K @ V with float16 parts (the
# kernel entry k in [0, 1] and V, ranged per column into float16's span on the host by powers of
# two): three float16 products, each twice a tf32 product's rate, and half the registers for the
# kernel tile's parts. On an H200 it was as accurate as tf32x3 (K @ V within 1.2e-6 of float64,
# n = 20,000: ``python benchmarks/product_accuracy.py --n 20000 --d 3 20 --profiles rbf matern52
# --precisions fp32 tf32x3 fp16x3``) and 1.13x (Matern 5/2) to 1.27x (RBF) faster at n = 1M,
# d = 3, t = 11 (``python benchmarks/gpu_kernels.py --n 1000000 --d 3 --t 11 --kernel rbf
# --skip-blocked --repeats 3 --precisions tf32x3 fp16x3 --ops matmul``, and --kernel matern52);
# its gradient passes run in tf32x3 (UNRANGED_PRECISION). "fp32" computes every dot on the CUDA
# cores (IEEE float32; a 3xTF32 geometry dot was tried for it at d = 20 and was not faster).
PRECISIONS = {
    "fp32": ("ieee", "ieee", "float32"),
    "tf32x3": ("tf32x3", "tf32x3", "float32"),
    "fp16x3": ("tf32x3", "fp16x3", "float32"),
    "tf32": ("tf32x3", "tf32", "float32"),
    "bf16": ("tf32x3", None, "bfloat16"),   # bf16 operands, float32 accumulation (Maddox et al. 2022)
}

# Products whose operands are not ranged into float16's span (the gradient kernels' W = U V^T,
# whose columns sum together; a stored K of any scale) run "fp16x3" as "tf32x3", the same
# float32-level accuracy.
UNRANGED_PRECISION = {"fp16x3": "tf32x3"}


# ----- K @ V ------------------------------------------------------------------------------------
@triton.jit
def _kv_matmul_kernel(Z1, Z2, N1, N2, V, OUT, ALPHA, n1, n2, d, t,
                      s_z1b, s_z1n, s_z1d, s_z2b, s_z2n, s_z2d, s_n1b, s_n2b,
                      s_vb, s_vn, s_vt, s_ob, s_on, s_ot, s_ab,
                      PROFILE: tl.constexpr, GEOMETRY: tl.constexpr, PRODUCT: tl.constexpr,
                      OPERAND: tl.constexpr, D_DIRECT: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    """OUT[b, rows] = sum over column tiles of k(r2(z1 rows, z2 cols)) @ V[b, cols].

    z1, z2 come multiplied by the profile's prescale (``_prepared``; k by ``_profile_prescaled``).
    (Stored matrices: ``triton_dense.stored_kv_matmul``.)

    D_DIRECT > 0: r2 summed elementwise over that many columns (else one geometry dot per tile).
    BLOCK_T == 1: a single column of V, summed elementwise (no dot).
    """
    pid_m, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims, cols_t = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_T)
    row_ok = rows < n1
    Z1, Z2, V = Z1 + pid_b * s_z1b, Z2 + pid_b * s_z2b, V + pid_b * s_vb
    side = _row_side(Z1, N1 + pid_b * s_n1b, rows, row_ok, dims, d, s_z1n, s_z1d, D_DIRECT)
    alpha = 1.0
    if PROFILE == _RQ:
        alpha = tl.load(ALPHA + pid_b * s_ab)
    t_ok = cols_t < t
    if BLOCK_T == 1:  # per-entry sums, reduced over the columns once at the end
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_T), dtype=tl.float32)
    for start in range(0, n2, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        k = _tile_terms(side, Z2, N2 + pid_b * s_n2b, cols, cols < n2, dims, d, s_z2n, s_z2d,
                        alpha, PROFILE, GEOMETRY, D_DIRECT, True)
        acc = _add_rows(acc, k, V, cols, cols < n2, cols_t, t_ok, s_vn, s_vt, PRODUCT, OPERAND)
    if BLOCK_T == 1:
        tl.store(OUT + pid_b * s_ob + rows * s_on, tl.sum(acc, axis=1), mask=row_ok)
    else:
        tl.store(OUT + pid_b * s_ob + rows[:, None] * s_on + cols_t[None, :] * s_ot, acc,
                 mask=row_ok[:, None] & t_ok[None, :])


# ----- per-row sums for the analytic gradient -------------------------------------------------
@triton.jit
def _row_grad_kernel(Z1, Z2, N1, N2, U, V, ALPHA, HZ, WK, WDA, n1, n2, d, t,
                     s_z1b, s_z1n, s_z1d, s_z2b, s_z2n, s_z2d, s_n1b, s_n2b,
                     s_ub, s_un, s_ut, s_vb, s_vn, s_vt, s_ab,
                     PROFILE: tl.constexpr, NEED_WK: tl.constexpr, GEOMETRY: tl.constexpr,
                     PRODUCT: tl.constexpr, OPERAND: tl.constexpr, D_DIRECT: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_T: tl.constexpr):
    """Per row a: sum_b H_ab z2_b and sum_b H_ab, sum_b W_ab K_ab, sum_b W_ab dK_ab/dalpha.

    W = U V^T and H = W * dk/dr2, one (BLOCK_M, BLOCK_N) tile at a time. HZ is (B, n1, BLOCK_D):
    columns < d hold sum_b H_ab z2_b, column d holds sum_b H_ab (z2 is extended by a column of
    ones there, so one dot gives both; BLOCK_D > d). WK, WDA are (B, n1); the sums of W * K and
    W * dK/dalpha are kept per tile entry and reduced once at the end.
    """
    pid_m, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims, cols_t = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_T)
    row_ok = rows < n1
    Z1, Z2 = Z1 + pid_b * s_z1b, Z2 + pid_b * s_z2b
    side = _row_side(Z1, N1 + pid_b * s_n1b, rows, row_ok, dims, d, s_z1n, s_z1d, D_DIRECT)
    u = tl.load(U + pid_b * s_ub + rows[:, None] * s_un + cols_t[None, :] * s_ut,
                mask=row_ok[:, None] & (cols_t[None, :] < t), other=0.0)
    alpha = 1.0
    if PROFILE == _RQ:
        alpha = tl.load(ALPHA + pid_b * s_ab)
    hz = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    wk = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    wda = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, n2, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < n2
        b = tl.load(Z2 + cols[:, None] * s_z2n + dims[None, :] * s_z2d,
                    mask=col_ok[:, None] & (dims[None, :] < d), other=0.0)
        if D_DIRECT > 0:
            r2 = _sq_dist_cols(side, Z2, cols, col_ok, s_z2n, s_z2d, D_DIRECT)
        else:  # the coordinate tile b serves r2 and the H z2 product
            b2 = tl.load(N2 + pid_b * s_n2b + cols, mask=col_ok, other=0.0)
            r2 = _sq_dist(side[0], b, side[1], b2, GEOMETRY)
        k, dk, dka = _profile(r2, alpha, PROFILE)
        # padded rows of V are zero, so W (and H) vanish on padded columns
        v = tl.load(V + pid_b * s_vb + cols[:, None] * s_vn + cols_t[None, :] * s_vt,
                    mask=col_ok[:, None] & (cols_t[None, :] < t), other=0.0)
        w = _product(u, tl.trans(v), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), PRODUCT, OPERAND)
        b_ones = tl.where(dims[None, :] == d, 1.0, b)  # column d: the row sums of H
        hz = _dot(w * dk, b_ones, hz, GEOMETRY)
        if NEED_WK:
            wk += w * k
            if PROFILE == _RQ:
                wda += w * dka
    out_b = pid_b * n1
    tl.store(HZ + (out_b + rows[:, None]) * BLOCK_D + dims[None, :], hz, mask=row_ok[:, None])
    if NEED_WK:
        tl.store(WK + out_b + rows, tl.sum(wk, axis=1), mask=row_ok)
        if PROFILE == _RQ:
            tl.store(WDA + out_b + rows, tl.sum(wda, axis=1), mask=row_ok)


# ----- launchers (torch side) -----------------------------------------------------------------
def _padded(size: int) -> int:
    return max(MIN_DOT, triton.next_power_of_2(size))


def _padded_t(t: int) -> int:
    """Columns of V per launch as the kernel sees them: 1 stays 1 (no dot), else a dot's width."""
    return 1 if t == 1 else _padded(t)


def _direct(d: int) -> int:
    """D_DIRECT: d when r2 is summed elementwise, 0 when a geometry dot computes it."""
    return d if d <= DIRECT_MAX_D else 0


def _config(op: str, d: int, t: int, precision: str, given: tuple, table: dict | None = None) -> tuple:
    """(block_m, block_n, num_warps, num_stages): the ``given`` ones where not None, else the
    defaults of ``table`` (KV_CONFIGS / GRAD_CONFIGS for op "matmul" / "grad") for d, t and precision."""
    table = table or (KV_CONFIGS if op == "matmul" else GRAD_CONFIGS)
    if not _direct(d):
        width = _padded(d) if op == "matmul" else _padded(d + 1)
        key = ("dot", "narrow" if width <= 32 else "wide")
    elif op == "matmul" and t == 1:
        key = ("direct", "t1")
    elif precision == "fp32" or (op == "matmul" and precision in ("tf32x3", "fp16x3")):
        key = ("direct", precision)
    else:
        key = ("direct", "tensor")
    return tuple(g if g is not None else default for g, default in zip(given, table[key]))


def _check(z1, z2, profile, alpha, precision, block_m, block_n, num_warps):
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {tuple(PROFILES)}, got {profile!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, got {precision!r}")
    if z1.dim() != 3 or z2.dim() != 3 or z1.shape[0] != z2.shape[0] or z1.shape[2] != z2.shape[2]:
        raise ValueError(f"z2: expected (B, n2, D) matching z1 (B, n1, D), got {tuple(z2.shape)} "
                         f"and {tuple(z1.shape)}")
    if z1.shape[2] > MAX_D:
        raise ValueError(f"z1: at most {MAX_D} columns (MAX_D) are supported, got {z1.shape[2]}")
    if profile == "rq" and (alpha is None or alpha.shape != (z1.shape[0],)):
        raise ValueError(f"alpha: the rq profile needs a (B,) tensor, got "
                         f"{None if alpha is None else tuple(alpha.shape)}")
    for name, block, low in (("block_m", block_m, MIN_DOT), ("block_n", block_n, MIN_DOT),
                             ("num_warps", num_warps, 1)):
        if not isinstance(block, int) or block < low or block & (block - 1):
            raise ValueError(f"{name}: expected a power of two >= {low}, got {block!r}")


def _laid_out(z: torch.Tensor, by_column: bool) -> torch.Tensor:
    """z (B, n, D) as contiguous float32, stored by point (strides (n D, D, 1)) or by column
    (strides (n D, 1, n)): then a tile's coordinate k is one contiguous run and the point stride
    1 is specialized by Triton at launch, which removes per-element address arithmetic. On an
    H200 by column was faster for the tensor-core precisions and slower for the fp32 gradient,
    so ``_prepared`` picks it per precision."""
    if by_column:
        return z.float().transpose(-1, -2).contiguous().transpose(-1, -2)
    return z.float().contiguous()


def _operand(v: torch.Tensor, operand: str) -> torch.Tensor:
    """v as the kernels read it: float32, with bfloat16 values for OPERAND "bfloat16" (rounded
    here, so one-column products, which skip the dot, see bf16 vectors too)."""
    return v.to(torch.bfloat16).float() if operand == "bfloat16" else v.float()


def _prepared(z1, z2, alpha, precision="tf32x3", prescale: str | None = None):
    """Float32 inputs laid out for ``precision`` (``_laid_out``; offsets within a batch element
    fit in int32), their squared norms (B, n) and alpha (B,) (a dummy for the other profiles).
    With ``prescale`` (a profile name) the inputs are first multiplied by that profile's c
    (sqrt of ``PRESCALE``; RQ: 1 / sqrt(2 alpha)), for kernels that evaluate k by
    ``_profile_prescaled``."""
    if prescale == "rq":
        c = (2 * alpha.to(z1.dtype)).rsqrt()[:, None, None]
        z1, z2 = z1 * c, z2 * c
    elif prescale is not None:
        z1, z2 = z1 * PRESCALE[prescale] ** 0.5, z2 * PRESCALE[prescale] ** 0.5
    by_column = precision != "fp32"
    z1, z2 = _laid_out(z1, by_column), _laid_out(z2, by_column)
    n1sq, n2sq = z1.pow(2).sum(-1), z2.pow(2).sum(-1)
    alpha = torch.ones(z1.shape[0], device=z1.device) if alpha is None else alpha.float()
    return z1, z2, n1sq, n2sq, alpha


def kv_matmul(z1: torch.Tensor, z2: torch.Tensor, v: torch.Tensor, profile: str,
              alpha: torch.Tensor | None = None, precision: str = "tf32x3", block_m: int | None = None,
              block_n: int | None = None, num_warps: int | None = None,
              num_stages: int | None = None) -> torch.Tensor:
    """K(z1, z2) @ v for the unit-scale ``profile``.

    z1 (B, n1, D), z2 (B, n2, D), v (B, n2, t), alpha (B,) for "rq". Returns (B, n1, t) float32.
    Launch settings default to KV_CONFIGS (see ``_config``), for fp16x3 at d <= DIRECT_MAX_D and
    t > 1 to ``triton_records.fp16x3_config``; t > KV_MAX_T runs as several launches of KV_MAX_T
    columns.
    """
    given = (block_m, block_n, num_warps, num_stages)
    if precision == "fp16x3" and _direct(z1.shape[-1]) and v.shape[-1] > 1 and profile in PROFILES:
        block_m, block_n, num_warps, num_stages = (
            g if g is not None else dflt for g, dflt in zip(given, fp16x3_config(profile)))
    else:
        block_m, block_n, num_warps, num_stages = _config("matmul", z1.shape[-1], v.shape[-1],
                                                          precision, given)
    _check(z1, z2, profile, alpha, precision, block_m, block_n, num_warps)
    if v.dim() != 3 or v.shape[:2] != z2.shape[:2]:
        raise ValueError(f"v: expected (B, n2, t) = ({z2.shape[0]}, {z2.shape[1]}, t), got {tuple(v.shape)}")
    z1, z2, n1sq, n2sq, alpha = _prepared(z1, z2, alpha, precision, prescale=profile)
    return _launch_kv(v, z1.shape[1], (block_m, block_n, num_warps, num_stages), precision,
                      inputs=(z1, z2, n1sq, n2sq, alpha, profile))


def _launch_kv(v, n1, config, precision, inputs):
    """out (B, n1, t) = K @ v by ``_kv_matmul_kernel`` (one column, or d > DIRECT_MAX_D) or
    ``triton_records.records_kv`` (the rest), KV_MAX_T columns per launch, with K
    computed from ``inputs`` = (prepared z1, z2, their squared norms, alpha, profile); v as
    given (``_operand`` casts it for ``precision``, ``_fp16_ranged`` scales it for fp16x3)."""
    block_m, block_n, num_warps, num_stages = config
    geometry, product, operand = PRECISIONS[precision]
    v = _operand(v, operand)
    bsz, n2, t = v.shape
    if n1 == 0 or n2 == 0 or t == 0:
        return torch.zeros(bsz, n1, t, device=v.device, dtype=torch.float32)
    v, unscale = _fp16_ranged(v, product)
    z1, z2, n1sq, n2sq, alpha, profile = inputs
    d = z1.shape[-1]
    if _direct(d) and t > 1:  # point records, no masks (triton_records)
        out = records_kv(z1, z2, v, alpha, PROFILES[profile], (product, operand), config,
                         KV_MAX_T, _padded)
        return out if unscale is None else out * unscale
    grid = (triton.cdiv(n1, block_m), bsz)
    outs = []
    for c in range(0, t, KV_MAX_T):
        vc = v[..., c:c + KV_MAX_T].contiguous()
        oc = torch.empty(bsz, n1, vc.shape[2], device=v.device, dtype=torch.float32)
        outs.append(oc)
        _kv_matmul_kernel[grid](
            z1, z2, n1sq, n2sq, vc, oc, alpha, n1, n2, d, vc.shape[2], *z1.stride(), *z2.stride(),
            n1sq.stride(0), n2sq.stride(0), *vc.stride(), *oc.stride(), alpha.stride(0),
            PROFILE=PROFILES[profile], GEOMETRY=geometry, PRODUCT=product, OPERAND=operand,
            D_DIRECT=_direct(d), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=_padded(d),
            BLOCK_T=_padded_t(vc.shape[2]), num_warps=num_warps, num_stages=num_stages)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
    return out if unscale is None else out * unscale


def _fp16_ranged(v: torch.Tensor, product: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For the "fp16x3" product of more than one column: (v scaled per column by a power of two
    so that its largest magnitude lies in [2^13, 2^14), the factor (B, 1, t) that undoes it on
    the result). The product splits v into float16 parts; in this range they keep float32's
    relative accuracy down to 2^-27 of the column's largest entry. Powers of two make both
    scalings exact; all-zero columns are left as they are. Otherwise (v, None): other products,
    and one column, which is summed elementwise in float32, take v as it is."""
    if product != "fp16x3" or v.shape[-1] == 1:
        return v, None
    colmax = v.abs().amax(-2, keepdim=True)
    _, exponent = torch.frexp(colmax)            # colmax < 2^exponent
    exponent = torch.where(colmax > 0, exponent, 14)
    return torch.ldexp(v, 14 - exponent), torch.ldexp(torch.ones_like(colmax), exponent - 14)


def row_grad(z1: torch.Tensor, z2: torch.Tensor, u: torch.Tensor, v: torch.Tensor, profile: str,
             alpha: torch.Tensor | None = None, precision: str = "tf32x3", need_wk: bool = True,
             block_m: int | None = None, block_n: int | None = None,
             num_warps: int | None = None, num_stages: int | None = None) -> tuple:
    """Row sums for the gradient of sum(W * K), W = u v^T, from the unit-scale ``profile``.

    z1 (B, n1, D), z2 (B, n2, D), u (B, n1, t), v (B, n2, t), alpha (B,) for "rq".
    Returns (rowsum_h (B, n1), hz (B, n1, D), wk (B, n1) or None, wdk_alpha (B, n1) or None)
    with H = W * dk/dr2: rowsum_h[a] = sum_b H_ab, hz[a] = sum_b H_ab z2[b], wk[a] = sum_b W_ab
    K_ab, wdk_alpha[a] = sum_b W_ab dK_ab/dalpha ("rq" only); wk and wdk_alpha need ``need_wk``.
    Launch settings default to GRAD_CONFIGS; t > GRAD_MAX_T runs as several launches
    (W = u v^T is a sum over columns, so their results add up).
    """
    precision = UNRANGED_PRECISION.get(precision, precision)
    block_m, block_n, num_warps, num_stages = _config(
        "grad", z1.shape[-1], u.shape[-1], precision, (block_m, block_n, num_warps, num_stages))
    _check(z1, z2, profile, alpha, precision, block_m, block_n, num_warps)
    if u.dim() != 3 or v.dim() != 3 or u.shape[:2] != z1.shape[:2] or v.shape[:2] != z2.shape[:2] \
            or u.shape[2] != v.shape[2]:
        raise ValueError(f"v: expected u (B, n1, t) and v (B, n2, t) matching z1 and z2, got "
                         f"{tuple(u.shape)} and {tuple(v.shape)}")
    (bsz, n1, d), n2, t = z1.shape, z2.shape[1], u.shape[2]
    geometry, product, operand = PRECISIONS[precision]
    z1, z2, n1sq, n2sq, alpha = _prepared(z1, z2, alpha, precision)
    u, v = _operand(u, operand), _operand(v, operand)
    dp = _padded(d + 1)  # one spare column of HZ carries the row sums of H
    wk, wda = (torch.zeros(bsz, n1, device=z1.device, dtype=torch.float32) for _ in range(2))
    hz = torch.zeros(bsz, n1, dp, device=z1.device, dtype=torch.float32)
    grid = (triton.cdiv(n1, block_m), bsz)
    for c in range(0, t if n1 and n2 else 0, GRAD_MAX_T):
        uc, vc = u[..., c:c + GRAD_MAX_T].contiguous(), v[..., c:c + GRAD_MAX_T].contiguous()
        outs = (hz, wk, wda) if c == 0 else tuple(torch.zeros_like(o) for o in (hz, wk, wda))
        _row_grad_kernel[grid](
            z1, z2, n1sq, n2sq, uc, vc, alpha, *outs, n1, n2, d, uc.shape[2],
            *z1.stride(), *z2.stride(), n1sq.stride(0), n2sq.stride(0), *uc.stride(), *vc.stride(),
            alpha.stride(0), PROFILE=PROFILES[profile], NEED_WK=need_wk, GEOMETRY=geometry,
            PRODUCT=product, OPERAND=operand, D_DIRECT=_direct(d), BLOCK_M=block_m,
            BLOCK_N=block_n, BLOCK_D=dp, BLOCK_T=_padded(uc.shape[2]), num_warps=num_warps,
            num_stages=num_stages)
        if c:
            for total, part in zip((hz, wk, wda), outs):
                total += part
    return (hz[..., d], hz[..., :d], wk if need_wk else None,
            wda if need_wk and profile == "rq" else None)
