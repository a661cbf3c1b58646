# Triton kernels of the dense backend on a GPU: one that writes a stationary kernel matrix (and
# outputscale * dk/dr2) in one pass, replacing ~15 elementwise torch passes over n^2 entries, and
# the product of a stored symmetric matrix that reads only its upper triangle of tiles.
"""Kernels on stored kernel matrices.

``dense_profile``: dense K and dK/dr2 tiles from lengthscale-scaled, centred inputs (see
``triton_kernels`` for the entry math, shared here): r2 elementwise for D <= DIRECT_MAX_D, else
by an IEEE float32 geometry dot, the profile and its derivative, times the per-batch output
scale, stored once. Rows are padded to a multiple of ROW_ALIGN floats (the result is a view), so
that the product below loads whole rows of a tile as vectors.

``sym_dense_kv_matmul``: K V for a stored symmetric K. A CG iteration of the dense backend is
bound by reading K; this reads each tile above the diagonal once and applies it to both sides
(the tile layout of ``triton_symmetric``), so about half of K is read.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_entry import PROFILES, _RQ, _add_rows, _columns, _product, _profile, _sq_dist, _sq_dist_cols
from .triton_kernels import KV_MAX_T, MIN_DOT, PRECISIONS, _check, _direct, _operand, _padded, _padded_t, _prepared
from .triton_symmetric import _grid, _tile_range

DENSE_CONFIG = (64, 64, 4)  # BLOCK_M, BLOCK_N, num_warps (not tuned: a store-bound kernel)
ROW_ALIGN = 16  # floats: dense_profile pads its rows to a multiple (64-byte aligned row starts)
# (BLOCK_M, BLOCK_N, num_warps, num_stages, CHUNK) of the symmetric stored product: not yet tuned
SYM_DENSE_CONFIG = (64, 64, 4, 3, 32)


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
    k = _padded_rows(bsz, n1, n2, z1.device)
    dk = _padded_rows(bsz, n1, n2, z1.device) if derivative else k  # k: a placeholder, never written
    if n1 and n2:
        grid = (triton.cdiv(n1, block_m), triton.cdiv(n2, block_n), bsz)
        _dense_profile_kernel[grid](
            z1, z2, n1sq, n2sq, alpha, scale, k, dk, n1, n2, d, *z1.stride(), *z2.stride(),
            n1sq.stride(0), n2sq.stride(0), alpha.stride(0), scale.stride(0), k.stride(0),
            k.stride(1), dk.stride(0), dk.stride(1), PROFILE=PROFILES[profile], NEED_DK=derivative,
            D_DIRECT=_direct(d), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(MIN_DOT, _padded(d)),
            num_warps=num_warps)
    return k, dk if derivative else None


def _padded_rows(bsz: int, n1: int, n2: int, device) -> torch.Tensor:
    """An uninitialized float32 (bsz, n1, n2) view whose row stride is n2 rounded up to ROW_ALIGN."""
    width = -(-n2 // ROW_ALIGN) * ROW_ALIGN
    return torch.empty(bsz, n1, width, device=device, dtype=torch.float32)[..., :n2]


# ----- K V for a stored symmetric K ---------------------------------------------------------------
@triton.jit
def _stored_tile(side, cols, row_ok, n, FULL: tl.constexpr):
    """The (BLOCK_M, BLOCK_N) tile of stored rows ``side`` (row pointers) at ``cols``; FULL: every
    column is < n, so the mask depends on the row alone and the loads can be vectors."""
    if FULL:
        k = tl.load(side + cols[None, :], mask=row_ok[:, None], other=0.0)
    else:
        k = tl.load(side + cols[None, :], mask=row_ok[:, None] & (cols < n)[None, :], other=0.0)
    return k


@triton.jit
def _both_sides(acc, k, v_rows, V, OUT, cols, n, cols_t, t_ok, s_vn, s_vt, s_on, s_ot,
                PRODUCT: tl.constexpr, OPERAND: tl.constexpr):
    """A tile right of the diagonal square serves both halves: acc + k V[cols] for its rows (returned)
    and k^T V[rows] added atomically into OUT[cols]."""
    col_ok = cols < n
    part = _product(tl.trans(k), v_rows, tl.zeros((k.shape[1], v_rows.shape[1]), dtype=tl.float32),
                    PRODUCT, OPERAND)
    tl.atomic_add(OUT + cols[:, None] * s_on + cols_t[None, :] * s_ot, part,
                  mask=col_ok[:, None] & t_ok[None, :], sem="relaxed")
    return _add_rows(acc, k, V, cols, col_ok, cols_t, t_ok, s_vn, s_vt, PRODUCT, OPERAND)


@triton.jit
def _sym_dense_kv_kernel(KD, V, OUT, n, t, s_kb, s_kn, s_vb, s_vn, s_vt, s_ob, s_on, s_ot,
                         PRODUCT: tl.constexpr, OPERAND: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, CHUNK: tl.constexpr):
    """OUT[b] += this program's share of KD[b] @ V[b] (OUT starts at zero), KD[b] symmetric with
    column stride 1; only tiles on or above the diagonal square are read (``_tile_range``)."""
    pid_m, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    first, last = _tile_range(pid_m, pid_c, n, BLOCK_M, BLOCK_N, CHUNK)
    if first < last:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols_t = tl.arange(0, BLOCK_T)
        row_ok, t_ok = rows < n, cols_t < t
        V, OUT = V + pid_b * s_vb, OUT + pid_b * s_ob
        side = KD + pid_b * s_kb + rows.to(tl.int64)[:, None] * s_kn
        v_rows = tl.load(V + rows[:, None] * s_vn + cols_t[None, :] * s_vt,
                         mask=row_ok[:, None] & t_ok[None, :], other=0.0)
        acc = tl.zeros((BLOCK_M, BLOCK_T), dtype=tl.float32)
        full = tl.minimum(last, n // BLOCK_N)  # tiles before this one lie inside the matrix
        if pid_c == 0:  # the diagonal square holds every ordered pair of its points: row sums only
            for tile in range(first, full):
                cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
                k = _stored_tile(side, cols, row_ok, n, True)
                acc = _add_rows(acc, k, V, cols, cols < n, cols_t, t_ok, s_vn, s_vt, PRODUCT, OPERAND)
            if full < last:
                cols = full * BLOCK_N + tl.arange(0, BLOCK_N)
                k = _stored_tile(side, cols, row_ok, n, False)
                acc = _add_rows(acc, k, V, cols, cols < n, cols_t, t_ok, s_vn, s_vt, PRODUCT, OPERAND)
        else:  # right of the square: K_ab serves (a, b) and (b, a)
            for tile in range(first, full):
                cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
                k = _stored_tile(side, cols, row_ok, n, True)
                acc = _both_sides(acc, k, v_rows, V, OUT, cols, n, cols_t, t_ok, s_vn, s_vt, s_on,
                                  s_ot, PRODUCT, OPERAND)
            if full < last:
                cols = full * BLOCK_N + tl.arange(0, BLOCK_N)
                k = _stored_tile(side, cols, row_ok, n, False)
                acc = _both_sides(acc, k, v_rows, V, OUT, cols, n, cols_t, t_ok, s_vn, s_vt, s_on,
                                  s_ot, PRODUCT, OPERAND)
        tl.atomic_add(OUT + rows[:, None] * s_on + cols_t[None, :] * s_ot, acc,
                      mask=row_ok[:, None] & t_ok[None, :], sem="relaxed")


def sym_dense_kv_matmul(k: torch.Tensor, v: torch.Tensor, precision: str = "tf32x3",
                        block_m: int | None = None, block_n: int | None = None,
                        num_warps: int | None = None, num_stages: int | None = None,
                        chunk: int | None = None) -> torch.Tensor:
    """k @ v for a stored symmetric k (B, n, n) float32, reading only its tiles on or above the
    diagonal (the lower triangle is never read, so it must equal the upper one's transpose).

    v (B, n, t); returns (B, n, t) float32. ``precision``: "fp32", "tf32x3" (float32-level
    accuracy on the tensor cores, the default), "tf32" or "bf16", the product arithmetic of
    ``triton_kernels.PRECISIONS``. Rows whose stride is a multiple of 16 floats (``dense_profile``
    pads them so) load as vectors. Partial sums are added atomically, so on a GPU the last bits
    of the result can differ from run to run. Launch settings default to SYM_DENSE_CONFIG.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, got {precision!r}")
    if not isinstance(k, torch.Tensor) or k.dim() != 3 or k.dtype != torch.float32 \
            or k.shape[1] != k.shape[2]:
        got = f"{tuple(k.shape)} {k.dtype}" if isinstance(k, torch.Tensor) else type(k).__name__
        raise ValueError(f"k: expected a square float32 tensor (B, n, n), got {got}")
    if not isinstance(v, torch.Tensor) or v.dim() != 3 or v.shape[:2] != k.shape[:2] \
            or v.device != k.device:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"v: expected (B, n, t) = ({k.shape[0]}, {k.shape[1]}, t) on {k.device}, "
                         f"got {got}")
    defaults = SYM_DENSE_CONFIG
    block_m, block_n, num_warps, num_stages, chunk = (
        default if given is None else given
        for given, default in zip((block_m, block_n, num_warps, num_stages, chunk), defaults))
    if block_m % block_n:
        raise ValueError(f"block_m: expected a multiple of block_n = {block_n}, got {block_m}")
    _, product, operand = PRECISIONS[precision]
    k = k if k.stride(2) == 1 else k.contiguous()
    v = _operand(v, operand)
    (bsz, n, t) = v.shape
    out = torch.zeros(bsz, n, t, device=v.device, dtype=torch.float32)
    if n == 0 or t == 0:
        return out
    grid = _grid(n, bsz, block_m, block_n, chunk)
    for c in range(0, t, KV_MAX_T):
        vc, oc = v[..., c:c + KV_MAX_T].contiguous(), out[..., c:c + KV_MAX_T]
        _sym_dense_kv_kernel[grid](
            k, vc, oc, n, vc.shape[2], k.stride(0), k.stride(1), *vc.stride(), *oc.stride(),
            PRODUCT=product, OPERAND=operand, BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_T=max(MIN_DOT, _padded_t(vc.shape[2])), CHUNK=chunk, num_warps=num_warps,
            num_stages=num_stages)
    return out
