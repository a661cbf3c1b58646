# Fused K(z1, z2) @ V for inputs of up to DIRECT_MAX_D columns and more than one column of V,
# from packed point records and padded operands (no masks in the tile loop). CUDA, or CPU with
# TRITON_INTERPRET=1.
"""K @ V on point records: the tile loop of ``triton_kernels.kv_matmul`` for d <= 8, t >= 2.

Each point of z1 and z2 is one record of RECORD floats (its d coordinates, then zeros), so a
column tile's coordinates arrive in one 16- or 32-byte load per point, where one load per
coordinate (each with its own address arithmetic) did before. z2 and V are padded with zero
rows up to a multiple of BLOCK_N and V with zero columns up to BLOCK_T, so the loop needs no
masks: the entries of padded points are finite and meet zero rows of V. For "fp16x3" V arrives
split into its float16 parts (hi, lo) from the host (``_fp16_parts``), so no tile splits it
again; the kernel entries are split per tile as before (``triton_entry._dot_fp16_parts``).

sm_90 SASS of the tile loop, compiled on the CPU machine for (128, 32, 4, 1), fp16x3: RBF 13.25
instructions per kernel entry and 96 registers, against 17.6 and 95 for the strided kernel;
Matern 5/2 17.3 and 105 registers, against 21.1 and 127.
"""
from __future__ import annotations

from typing import Callable

import torch
import triton
import triton.language as tl

from .triton_entry import _RQ, _columns, _dot_fp16_parts, _product, _profile_prescaled, _sq_dist_tuples

# Launch settings (BLOCK_M, BLOCK_N, num_warps, num_stages) of the fp16x3 product by profile, the
# fastest or within 2% of it at n = 100k, 200k and 1M (d = 3, t = 11, one H200), for RBF and for
# Matern 5/2 faster than (128, 32, 4, 1) at all three sizes. The other profiles (not timed) take
# Matern's, the other precisions triton_kernels.KV_CONFIGS.
FP16X3_CONFIGS = {"rbf": (128, 64, 4, 2), "other": (128, 32, 4, 3)}


def fp16x3_config(profile: str) -> tuple:
    """The default launch setting of the fp16x3 record product for ``profile``."""
    return FP16X3_CONFIGS["rbf" if profile == "rbf" else "other"]


@triton.jit
def _record_columns(rec, RECORD: tl.constexpr):
    """The RECORD (4 or 8) columns of a (N, RECORD) tile of records, as a tuple of (N,) vectors
    in order (splits of the record's halves, which stay in the thread that loaded them)."""
    n: tl.constexpr = rec.shape[0]
    if RECORD == 4:
        even, odd = tl.split(tl.reshape(rec, (n, 2, 2)))       # columns 0, 2 and 1, 3
        c0, c2 = tl.split(even)
        c1, c3 = tl.split(odd)
        out = (c0, c1, c2, c3)
    else:
        k0, k1 = tl.split(tl.reshape(rec, (n, 2, 2, 2)))    # [n, i, j]: column 4 i + 2 j (+ 1)
        c00, c01 = tl.split(k0)                             # columns 4 i and 4 i + 2
        c10, c11 = tl.split(k1)                             # columns 4 i + 1 and 4 i + 3
        c0, c4 = tl.split(c00)
        c2, c6 = tl.split(c01)
        c1, c5 = tl.split(c10)
        c3, c7 = tl.split(c11)
        out = (c0, c1, c2, c3, c4, c5, c6, c7)
    return out


@triton.jit
def _records_kv_kernel(Z1, Z2, V, VL, OUT, ALPHA, n1, n2, s_z1b, s_z2b, s_vb, s_ob, s_ab,
                       PROFILE: tl.constexpr, PRODUCT: tl.constexpr, OPERAND: tl.constexpr,
                       D: tl.constexpr, RECORD: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
    """OUT[b, rows] (n1, BLOCK_T) = sum over column tiles of k(r2(z1 rows, z2 cols)) @ V[b, cols].

    Z1 (B, n1, RECORD), Z2 (B, n2, RECORD) records of prescaled points (``_profile_prescaled``),
    n2 a multiple of BLOCK_N; V (B, n2, BLOCK_T), for PRODUCT "fp16x3" V's float16 hi part and
    VL its lo part (else VL is unused). Padded rows and columns are zero.
    """
    pid_m, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n1
    Z1, Z2 = Z1 + pid_b * s_z1b, Z2 + pid_b * s_z2b
    V, VL = V + pid_b * s_vb, VL + pid_b * s_vb
    a = _columns(Z1, rows, row_ok, RECORD, 1, D)
    alpha = 1.0
    if PROFILE == _RQ:
        alpha = tl.load(ALPHA + pid_b * s_ab)
    slots, cols_t = tl.arange(0, RECORD), tl.arange(0, BLOCK_T)
    acc = tl.zeros((BLOCK_M, BLOCK_T), dtype=tl.float32)
    for start in range(0, n2, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        b = _record_columns(tl.load(Z2 + cols[:, None] * RECORD + slots[None, :]), RECORD)
        k = _profile_prescaled(_sq_dist_tuples(a, b, D), alpha, PROFILE)
        at = cols[:, None] * BLOCK_T + cols_t[None, :]
        if PRODUCT == "fp16x3":
            acc = _dot_fp16_parts(k, tl.load(V + at), tl.load(VL + at), acc)
        else:
            acc = _product(k, tl.load(V + at), acc, PRODUCT, OPERAND)
    tl.store(OUT + pid_b * s_ob + rows[:, None] * BLOCK_T + cols_t[None, :], acc, mask=row_ok[:, None])


# ----- launcher (torch side) ------------------------------------------------------------------
def record_size(d: int) -> int:
    """Floats per point record: 4 for d <= 4, else 8 (d <= 8)."""
    return 4 if d <= 4 else 8


def _zero_padded(x: torch.Tensor, rows: int, width: int) -> torch.Tensor:
    """x (B, n, c) as float32 (B, rows >= n, width >= c), zero beyond: point records (width
    ``record_size(d)``) and padded operands alike."""
    out = torch.zeros(x.shape[0], rows, width, device=x.device, dtype=torch.float32)
    out[:, :x.shape[1], :x.shape[2]] = x
    return out


def _fp16_parts(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) float16 parts of float32 v (ranged for float16, ``triton_kernels._fp16_ranged``):
    hi = fp16(v), lo = fp16(v - hi), the split ``triton_entry._fp16_split`` makes in a kernel."""
    hi = v.half()
    return hi, (v - hi.float()).half()


def records_kv(z1: torch.Tensor, z2: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor,
               profile: int, modes: tuple, config: tuple, chunk: int,
               block_t: Callable[[int], int]) -> torch.Tensor:
    """(B, n1, t) = K @ v by ``_records_kv_kernel``, ``chunk`` columns of v per launch.

    z1 (B, n1, d), z2 (B, n2, d) prescaled float32 points (d <= 8), put into records once for
    all launches; v (B, n2, t) float32, ranged for "fp16x3"; alpha (B,); profile: the PROFILES
    code; modes (product, operand) as in ``triton_kernels.PRECISIONS``; config (block_m,
    block_n, num_warps, num_stages); block_t(w): the BLOCK_T of a launch of w columns.
    """
    product, operand = modes
    block_m, block_n, num_warps, num_stages = config
    (bsz, n1, d), (n2, t) = z1.shape, v.shape[1:]
    rows2 = triton.cdiv(n2, block_n) * block_n
    r1, r2 = _zero_padded(z1, n1, record_size(d)), _zero_padded(z2, rows2, record_size(d))
    outs = []
    for c in range(0, t, chunk):
        width = min(chunk, t - c)
        vc = _zero_padded(v[..., c:c + chunk], rows2, block_t(width))
        vc, vl = _fp16_parts(vc) if product == "fp16x3" else (vc, vc)
        out = torch.empty(bsz, n1, vc.shape[2], device=v.device, dtype=torch.float32)
        _records_kv_kernel[(triton.cdiv(n1, block_m), bsz)](
            r1, r2, vc, vl, out, alpha, n1, rows2, r1.stride(0), r2.stride(0), vc.stride(0),
            out.stride(0), alpha.stride(0), PROFILE=profile, PRODUCT=product, OPERAND=operand, D=d,
            RECORD=r1.shape[2], BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_T=vc.shape[2],
            num_warps=num_warps, num_stages=num_stages)
        outs.append(out[..., :width])
    return outs[0] if len(outs) == 1 else torch.cat(outs, -1)
