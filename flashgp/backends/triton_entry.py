# Per-entry math of the fused Triton kernels: squared distances, the stationary profiles and
# their derivatives, exp, the tf32x3 tile product, and the row set-up, kernel tile and row product of
# a tile loop. Shared by triton_kernels, triton_symmetric and triton_dense.
"""Elementwise pieces of a fused kernel entry (see ``triton_kernels`` for the whole scheme).

Whether Triton runs these on the GPU or in its CPU interpreter is fixed when this module is
imported (TRITON_INTERPRET=1 must be set before that): see ``INTERPRETED``.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

ROUNDOFF = tl.constexpr(8 * 2.0**-23)  # r2 <= ROUNDOFF * (|a|^2 + |b|^2) is round-off: set to 0

PROFILES = {"rbf": 0, "matern12": 1, "matern32": 2, "matern52": 3, "rq": 4}
_RQ = tl.constexpr(4)

# fixed at import, as triton.jit decides it (triton < 3.4 has no knobs: read the variable itself)
_KNOBS = getattr(triton, "knobs", None)
INTERPRETED = bool(_KNOBS.runtime.interpret if _KNOBS is not None
                   else os.environ.get("TRITON_INTERPRET", "0") == "1")
# In the interpreter there is no inline PTX (``_exp2``).
_INTERPRETED = tl.constexpr(INTERPRETED)
_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)
_RBF_EXP2 = tl.constexpr(-0.5 * 1.4426950408889634)  # exp(-r2 / 2) = 2^(_RBF_EXP2 r2)


# ----- per-entry math ---------------------------------------------------------------------------
@triton.jit
def _sq_dist(a, b, a2, b2, GEOMETRY: tl.constexpr):
    """r2 (M, N) from rows a (M, Dp), b (N, Dp) and their squared norms a2 (M,), b2 (N,)."""
    norms = a2[:, None] + b2[None, :]
    r2 = tl.maximum(norms - 2.0 * _dot(a, tl.trans(b), tl.zeros(norms.shape, tl.float32), GEOMETRY),
                    0.0)
    return tl.where(r2 <= ROUNDOFF * norms, 0.0, r2)


@triton.jit
def _columns(Z, idx, ok, s_n, s_d, D: tl.constexpr):
    """The D coordinate columns of points ``idx`` of Z, as a tuple of D (len(idx),) vectors.

    Loaded once per program for the rows (so the tile loop reads only the columns' coordinates).
    """
    out = ()
    for k in tl.static_range(D):
        out = out + (tl.load(Z + idx * s_n + k * s_d, mask=ok, other=0.0),)
    return out


@triton.jit
def _sq_dist_cols(a_cols, Z2, cols, col_ok, s_z2n, s_z2d, D: tl.constexpr):
    """r2 (M, N) = sum over the D input columns of (a_k - b_k)^2, elementwise in float32, from the
    row columns ``a_cols`` (a tuple from ``_columns``) and the coordinates of ``cols`` of Z2."""
    return _sq_dist_tuples(a_cols, _columns(Z2, cols, col_ok, s_z2n, s_z2d, D), D)


@triton.jit
def _sq_dist_tuples(a_cols, b_cols, D: tl.constexpr):
    """r2 (M, N) = sum over the first D coordinates of (a_k - b_k)^2, elementwise in float32,
    from tuples of coordinate vectors a_cols (M,) and b_cols (N,)."""
    diff = a_cols[0][:, None] - b_cols[0][None, :]
    r2 = diff * diff
    for k in tl.static_range(1, D):
        diff = a_cols[k][:, None] - b_cols[k][None, :]
        r2 += diff * diff
    return r2


@triton.jit
def _mufu(x, OP: tl.constexpr):
    """One special-function (MUFU) instruction per element on the GPU, tl's equivalent in the
    interpreter (no inline PTX there). OP:

        "ex2"      2^x: ex2.approx.ftz (tl.exp2 adds a compare and two multiplies per entry
                   to handle subnormal results, which no kernel entry needs)
        "ex2_neg"  2^-x, the negation folded into MUFU.EX2's operand (Triton's -x is a
                   subtraction from zero, one more instruction per entry)
        "lg2"      log2(x): lg2.approx (CUDA's __log2f: absolute error 2^-22.6 on [0.5, 2],
                   2 ulp elsewhere; for RQ's q >= 1 a relative error of about 1e-7 alpha
                   log2(2 q) in k = 2^(-alpha log2 q)), where tl.log2 is a libdevice
                   polynomial of some 30 instructions. Not yet timed or run on a GPU.
    """
    if _INTERPRETED:
        if OP == "lg2":
            out = tl.log2(x)
        elif OP == "ex2_neg":
            out = tl.exp2(-x)
        else:
            out = tl.exp2(x)
    elif OP == "lg2":
        out = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                        dtype=tl.float32, is_pure=True, pack=1)
    elif OP == "ex2_neg":
        out = tl.inline_asm_elementwise("{ .reg .f32 t; neg.f32 t, $1; ex2.approx.ftz.f32 $0, t; }",
                                        "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)
    else:
        out = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                        dtype=tl.float32, is_pure=True, pack=1)
    return out


@triton.jit
def _exp2(x):
    """2^x elementwise (``_mufu``)."""
    return _mufu(x, "ex2")


@triton.jit
def _exp2_neg(x):
    """2^-x elementwise (``_mufu``)."""
    return _mufu(x, "ex2_neg")


@triton.jit
def _log2(x):
    """log2(x) elementwise (``_mufu``)."""
    return _mufu(x, "lg2")


@triton.jit
def _exp(x):
    """exp(x) = 2^(x log2 e), see ``_exp2``."""
    return _exp2(x * _LOG2E)


@triton.jit
def _profile(r2, alpha, PROFILE: tl.constexpr):
    """(k, dk/dr2, dk/dalpha) elementwise; unused terms are removed by the compiler. RQ divides
    once per entry and takes its log by MUFU.LG2 (``_log2``): 1.7x fewer instructions per
    entry than with r2 / (2 alpha) and tl.log (sm_90 SASS of the symmetric gradient kernel).

    Matern-1/2 has dk/dr2 = -exp(-r) / (2 r), unbounded at r = 0: it is set to 0 where r2 == 0.
    """
    if PROFILE == 0:  # RBF: exp(-r2 / 2)
        k = _exp2(_RBF_EXP2 * r2)
        dk = -0.5 * k
        dka = 0.0 * k
    elif PROFILE == 1:  # Matern 1/2: exp(-r)
        r = tl.sqrt(r2)
        k = _exp(-r)
        dk = tl.where(r2 > 0.0, -0.5 * k / tl.maximum(r, 1e-30), 0.0)
        dka = 0.0 * k
    elif PROFILE == 2:  # Matern 3/2: (1 + s) exp(-s), s = sqrt(3 r2)
        s = tl.sqrt(3.0 * r2)
        e = _exp(-s)
        k = (1.0 + s) * e
        dk = -1.5 * e
        dka = 0.0 * k
    elif PROFILE == 3:  # Matern 5/2: (1 + s + s^2 / 3) exp(-s), s = sqrt(5 r2)
        s = tl.sqrt(5.0 * r2)
        e = _exp(-s)
        k = (1.0 + s + s * s / 3.0) * e
        dk = (-5.0 / 6.0) * (1.0 + s) * e
        dka = 0.0 * k
    else:  # RQ: q^-alpha, q = 1 + r2 / (2 alpha)
        q = 1.0 + r2 * (0.5 / alpha)
        log2_q = _log2(q)
        k = _exp2(-alpha * log2_q)
        q_inv = 1.0 / q
        dk = -0.5 * k * q_inv
        dka = k * (1.0 - q_inv - log2_q * _LN2)
    return k, dk, dka


# Products need k alone: their inputs are multiplied by c beforehand (``PRESCALE``: c^2 per
# profile; RQ: 1 / (2 alpha)), so that the profile's constant factors cost nothing per entry.
PRESCALE = {"rbf": 0.5 * 1.4426950408889634, "matern12": 1.4426950408889634 ** 2,
            "matern32": 3 * 1.4426950408889634 ** 2, "matern52": 5 * 1.4426950408889634 ** 2}


@triton.jit
def _profile_prescaled(r2, alpha, PROFILE: tl.constexpr):
    """k elementwise from r2 = c^2 r2_true (``PRESCALE``), with s = sqrt(r2) = s_true log2(e):

        rbf       2^-r2                  matern32  (1 + s ln2) 2^-s
        matern12  2^-s                   matern52  (1 + s (ln2 + s ln2^2 / 3)) 2^-s
        rq        2^(-alpha log2(1 + r2))   (c^2 = 1 / (2 alpha))

    Per entry fewer sm_90 SASS instructions than ``_profile`` (a few for RBF and the Materns, many
    for RQ with its log by MUFU.LG2)."""
    if PROFILE == 0:
        k = _exp2_neg(r2)
    elif PROFILE == 1:
        k = _exp2_neg(tl.sqrt(r2))
    elif PROFILE == 2:
        s = tl.sqrt(r2)
        k = (1.0 + s * _LN2) * _exp2_neg(s)
    elif PROFILE == 3:
        s = tl.sqrt(r2)
        k = (1.0 + s * (_LN2 + s * (_LN2 * _LN2 / 3.0))) * _exp2_neg(s)
    else:
        k = _exp2_neg(alpha * _log2(1.0 + r2))
    return k


# ----- tiles -----------------------------------------------------------------------------------
@triton.jit
def _row_side(Z, NSQ, rows, row_ok, dims, d, s_zn, s_zd, D_DIRECT: tl.constexpr):
    """What the tile loop needs of the program's rows: their coordinate columns (D_DIRECT > 0)
    or the (BLOCK_M, BLOCK_D) coordinate tile and squared norms (geometry dot)."""
    if D_DIRECT > 0:
        side = _columns(Z, rows, row_ok, s_zn, s_zd, D_DIRECT)
    else:
        a = tl.load(Z + rows[:, None] * s_zn + dims[None, :] * s_zd,
                    mask=row_ok[:, None] & (dims[None, :] < d), other=0.0)
        side = (a, tl.load(NSQ + rows, mask=row_ok, other=0.0))
    return side


@triton.jit
def _tile_terms(side, Z, NSQ, cols, col_ok, dims, d, s_zn, s_zd, alpha, PROFILE: tl.constexpr,
                GEOMETRY: tl.constexpr, D_DIRECT: tl.constexpr, PRESCALED: tl.constexpr = False):
    """(k, dk/dr2, dk/dalpha) on the (BLOCK_M, BLOCK_N) tile of the rows ``side`` and ``cols``;
    PRESCALED: k alone, from prescaled inputs (``_profile_prescaled``)."""
    if D_DIRECT > 0:
        r2 = _sq_dist_cols(side, Z, cols, col_ok, s_zn, s_zd, D_DIRECT)
    else:
        b = tl.load(Z + cols[:, None] * s_zn + dims[None, :] * s_zd,
                    mask=col_ok[:, None] & (dims[None, :] < d), other=0.0)
        r2 = _sq_dist(side[0], b, side[1], tl.load(NSQ + cols, mask=col_ok, other=0.0), GEOMETRY)
    if PRESCALED:
        out = _profile_prescaled(r2, alpha, PROFILE)
    else:
        out = _profile(r2, alpha, PROFILE)
    return out


@triton.jit
def _add_rows(acc, k, V, cols, col_ok, cols_t, t_ok, s_vn, s_vt, PRODUCT: tl.constexpr,
              OPERAND: tl.constexpr):
    """acc + k @ V[cols] (padded rows and columns of V load as zero, so padded entries of the
    K tile add nothing); for one column of V (BLOCK_T == 1) the per-entry sums acc + k * V[cols],
    with acc of the tile's shape."""
    if cols_t.shape[0] == 1:
        out = acc + k * tl.load(V + cols * s_vn, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    else:
        out = _product(k, tl.load(V + cols[:, None] * s_vn + cols_t[None, :] * s_vt,
                                  mask=col_ok[:, None] & t_ok[None, :], other=0.0), acc, PRODUCT, OPERAND)
    return out


@triton.jit
def _tf32_split(x):
    """(hi, lo) with hi = x rounded to tf32 (10-bit mantissa, to nearest, ties away) and lo =
    x - hi (exact): two integer ops per element (cvt.rna.tf32.f32 costs four on sm_90, with an
    inf check that finite kernel entries and CG vectors do not need)."""
    bits = x.to(tl.uint32, bitcast=True)
    hi = ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return hi, x - hi


@triton.jit
def _fp16_split(x):
    """(hi, lo) float16 parts of float32 x: hi = x rounded to float16, lo = x - hi rounded to
    float16 (subnormal below 2^-14: absolute error at most 2^-25). For |x| <= 2^15."""
    hi = x.to(tl.float16)
    return hi, (x - hi.to(tl.float32)).to(tl.float16)


@triton.jit
def _dot_fp16_parts(x, y_hi, y_lo, acc):
    """acc + x @ y in the "fp16x3" way (see ``_dot``), y given as its float16 parts (y_hi, y_lo):
    x_lo y_hi + x_hi y_lo + x_hi y_hi in three float16 tensor-core products with float32 sums."""
    x_hi, x_lo = _fp16_split(x)
    tile = tl.dot(x_lo, y_hi, tl.zeros(acc.shape, tl.float32), out_dtype=tl.float32)
    tile = tl.dot(x_hi, y_lo, tile, out_dtype=tl.float32)
    return acc + tl.dot(x_hi, y_hi, tile, out_dtype=tl.float32)


@triton.jit
def _dot(x, y, acc, PRECISION: tl.constexpr):
    """acc + x @ y for float32 x, y, with tl.dot's input precision ("ieee", "tf32") or "tf32x3":
    x_hi y_hi + x_hi y_lo + x_lo y_hi in three tf32 tensor-core products (the dropped x_lo y_lo
    is ~2^-22 of |x||y|), summed in a fresh accumulator and added to ``acc`` on the CUDA cores.
    Tensor-core accumulation rounds its sums coarsely: chaining every tile of a 20,000-column
    product on one accumulator left errors of 1.2e-4 to 1.7e-4 (H200, against float64), most
    of what the operand splitting gains, so each tile's sum is taken out once. Triton's own tf32x3 does that
    too but waits after each of its products and adds a NaN check per tile."""
    if PRECISION == "fp16x3":
        y_hi, y_lo = _fp16_split(y)
        out = _dot_fp16_parts(x, y_hi, y_lo, acc)
    elif PRECISION == "tf32x3":
        x_hi, x_lo = _tf32_split(x)
        y_hi, y_lo = _tf32_split(y)
        tile = tl.dot(x_lo, y_hi, tl.zeros(acc.shape, tl.float32), input_precision="tf32")
        tile = tl.dot(x_hi, y_lo, tile, input_precision="tf32")
        out = acc + tl.dot(x_hi, y_hi, tile, input_precision="tf32")
    else:
        out = tl.dot(x, y, acc, input_precision=PRECISION)
    return out


@triton.jit
def _product(x, y, acc, PRODUCT: tl.constexpr, OPERAND: tl.constexpr):
    """acc + x @ y, float32 accumulation. OPERAND "bfloat16": both operands rounded to bfloat16
    values (kept in float32 registers) and multiplied on the tf32 tensor cores, which take such
    values exactly, so each product is the exact product of the bf16 operands: the numerics of
    a bf16 matrix product with float32 accumulation (Maddox et al. 2022), for the work of one
    tf32 product (not yet timed or run on a GPU). Triton's own bf16 dot is not used: on an H200 it gave wrong products (d = 8,
    t = 11) and an illegal memory access (d = 20), and Triton 3.6's interpreter multiplies bf16
    dot operands as raw uint16 bits."""
    if OPERAND == "bfloat16":
        x, y = x.to(tl.bfloat16).to(tl.float32), y.to(tl.bfloat16).to(tl.float32)
        out = tl.dot(x, y, acc, input_precision="ieee" if _INTERPRETED else "tf32")
    else:
        out = _dot(x, y, acc, PRODUCT)
    return out
