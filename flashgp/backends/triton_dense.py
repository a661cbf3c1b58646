# Triton kernels of the dense backend on a GPU: write a stationary kernel matrix and outputscale *
# dk/dr2 in one pass, and sum the analytic gradient's rows from those stored matrices in one pass.
"""Dense K and dK/dr2 tiles from lengthscale-scaled, centred inputs (see ``triton_kernels`` for
the entry math, shared here): r2 elementwise for D <= DIRECT_MAX_D, else by an IEEE float32
geometry dot, the profile and its derivative, times the per-batch output scale, stored once."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_kernels import (MIN_DOT, PROFILES, _RQ, _check, _direct, _padded, _prepared, _profile,
                             _sq_dist, _sq_dist_direct)

DENSE_CONFIG = (64, 64, 4)  # BLOCK_M, BLOCK_N, num_warps (not tuned: a store-bound kernel)


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
        r2 = _sq_dist_direct(Z1, Z2, rows, cols, row_ok, col_ok, s_z1n, s_z1d, s_z2n, s_z2d,
                             D_DIRECT, BLOCK_M, BLOCK_N)
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
    k = torch.empty(bsz, n1, n2, device=z1.device, dtype=torch.float32)
    dk = torch.empty_like(k) if derivative else k  # k: a placeholder pointer, never written
    if n1 and n2:
        grid = (triton.cdiv(n1, block_m), triton.cdiv(n2, block_n), bsz)
        _dense_profile_kernel[grid](
            z1, z2, n1sq, n2sq, alpha, scale, k, dk, n1, n2, d, *z1.stride(), *z2.stride(),
            n1sq.stride(0), n2sq.stride(0), alpha.stride(0), scale.stride(0), k.stride(0),
            k.stride(1), dk.stride(0), dk.stride(1), PROFILE=PROFILES[profile], NEED_DK=derivative,
            D_DIRECT=_direct(d), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(MIN_DOT, _padded(d)),
            num_warps=num_warps)
    return k, dk if derivative else None


@triton.jit
def _stored_row_grad_kernel(K, DK, Z, U, V, HZ, WK, n1, n2, d, t,
                            s_kb, s_kn, s_dkb, s_dkn, s_zb, s_zn, s_zd, s_ub, s_un, s_ut,
                            s_vb, s_vn, s_vt,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            BLOCK_T: tl.constexpr):
    """Per row a of stored K, DK (B, n1, n2): sum_b H_ab z_b and sum_b H_ab (HZ, column d), and
    sum_b W_ab K_ab (WK), with W = U V^T formed per tile and H = W * DK; IEEE float32 dots."""
    pid_m, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims, cols_t = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_T)
    row_ok = rows < n1
    u = tl.load(U + pid_b * s_ub + rows[:, None] * s_un + cols_t[None, :] * s_ut,
                mask=row_ok[:, None] & (cols_t[None, :] < t), other=0.0)
    row_k = K + pid_b * s_kb + rows.to(tl.int64)[:, None] * s_kn
    row_dk = DK + pid_b * s_dkb + rows.to(tl.int64)[:, None] * s_dkn
    hz = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    wk = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, n2, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < n2
        ok = row_ok[:, None] & col_ok[None, :]
        k = tl.load(row_k + cols[None, :], mask=ok, other=0.0)
        dk = tl.load(row_dk + cols[None, :], mask=ok, other=0.0)
        v = tl.load(V + pid_b * s_vb + cols[:, None] * s_vn + cols_t[None, :] * s_vt,
                    mask=col_ok[:, None] & (cols_t[None, :] < t), other=0.0)
        b = tl.load(Z + pid_b * s_zb + cols[:, None] * s_zn + dims[None, :] * s_zd,
                    mask=col_ok[:, None] & (dims[None, :] < d), other=0.0)
        w = tl.dot(u, tl.trans(v), input_precision="ieee")
        b_ones = tl.where(dims[None, :] == d, 1.0, b)  # column d: the row sums of H
        hz = tl.dot(w * dk, b_ones, hz, input_precision="ieee")  # DK is 0 off the matrix
        wk += w * k
    out_b = pid_b * n1
    tl.store(HZ + (out_b + rows[:, None]) * BLOCK_D + dims[None, :], hz, mask=row_ok[:, None])
    tl.store(WK + out_b + rows, tl.sum(wk, axis=1), mask=row_ok)


STORED_GRAD_CONFIG = (64, 32, 4)  # BLOCK_M, BLOCK_N, num_warps (not tuned)
STORED_GRAD_MAX_T = 64            # columns of u, v per launch; wider runs as several launches


def stored_row_grad(k: torch.Tensor, dk: torch.Tensor, z: torch.Tensor, u: torch.Tensor,
                    v: torch.Tensor) -> tuple:
    """Row sums for the gradient of sum(W * K), W = u v^T, from a stored matrix.

    k, dk (B, n1, n2) float32 (K and dK/dr2 as stored by ``dense_profile``, any scale folded in),
    z (B, n2, D) the column points, u (B, n1, t), v (B, n2, t). Returns (rowsum_h (B, n1),
    hz (B, n1, D), wk (B, n1)) with H = W * dk: rowsum_h[a] = sum_b H_ab, hz[a] = sum_b H_ab z[b],
    wk[a] = sum_b W_ab K_ab. One pass over K and dK (no kernel evaluation)."""
    block_m, block_n, num_warps = STORED_GRAD_CONFIG
    (bsz, n1, n2), d = k.shape, z.shape[-1]
    if dk.shape != k.shape or z.shape[:2] != (bsz, n2) or u.shape[:2] != (bsz, n1) \
            or v.shape[:2] != (bsz, n2) or u.shape[2] != v.shape[2]:
        raise ValueError(f"v: expected k, dk (B, n1, n2), z (B, n2, D), u (B, n1, t), v (B, n2, t); got "
                         f"{tuple(k.shape)}, {tuple(dk.shape)}, {tuple(z.shape)}, {tuple(u.shape)}, "
                         f"{tuple(v.shape)}")
    k, dk = k.float().contiguous(), dk.float().contiguous()
    z, u, v = z.float().contiguous(), u.float(), v.float()
    dp = _padded(d + 1)  # one spare column of HZ carries the row sums of H
    hz = torch.zeros(bsz, n1, dp, device=k.device, dtype=torch.float32)
    wk = torch.zeros(bsz, n1, device=k.device, dtype=torch.float32)
    grid = (triton.cdiv(n1, block_m), bsz)
    for c in range(0, u.shape[2] if n1 and n2 else 0, STORED_GRAD_MAX_T):
        uc, vc = u[..., c:c + STORED_GRAD_MAX_T].contiguous(), v[..., c:c + STORED_GRAD_MAX_T].contiguous()
        outs = (hz, wk) if c == 0 else (torch.zeros_like(hz), torch.zeros_like(wk))
        _stored_row_grad_kernel[grid](
            k, dk, z, uc, vc, *outs, n1, n2, d, uc.shape[2], k.stride(0), k.stride(1), dk.stride(0),
            dk.stride(1), *z.stride(), *uc.stride(), *vc.stride(), BLOCK_M=block_m,
            BLOCK_N=block_n, BLOCK_D=dp, BLOCK_T=_padded(uc.shape[2]), num_warps=num_warps)
        if c:
            hz += outs[0]
            wk += outs[1]
    return hz[..., d], hz[..., :d], wk
