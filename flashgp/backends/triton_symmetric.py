# Fused Triton kernels for K(z, z) on one point set that use its symmetry: every kernel entry
# of an off-diagonal tile is computed once and serves both halves. CUDA, or CPU with TRITON_INTERPRET=1.
"""Symmetric fused products and hyperparameter gradients (training solves are all K(X, X)).

Rows are cut into blocks of BLOCK_M = R * BLOCK_N points. Row block i owns the R column tiles
of its own square (the "diagonal square") and the tiles to the right of it; the tiles to the
left belong to lower row blocks. Each entry K_ab with a, b in different squares is computed once:

    products   (K V)_a += K_ab V_b   (row accumulator, in registers)
               (K V)_b += K_ab V_a   (the transposed tile product, added atomically into OUT)
    gradients  both ordered pairs at once: W_ab + W_ba = (P Q^T)_ab with P = [U V], Q = [V U]

Programs form a grid (row block, chunk, batch): chunk 0 is the diagonal square, chunk c >= 1
the c-th run of CHUNK tiles right of it (programs past the last tile do nothing). The per-entry
math is shared with ``triton_kernels`` (``triton_entry``); inputs are prepared the same way.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_entry import _RQ, _add_rows, _dot, _product, _row_side, _tile_terms
from .triton_kernels import (GRAD_CONFIGS, GRAD_MAX_T, KV_MAX_T, PRECISIONS, PROFILES,
                             UNRANGED_PRECISION, _check, _config, _direct, _fp16_ranged, _operand,
                             _padded, _padded_t, _prepared)

CHUNK = 32  # column tiles per program right of the diagonal square (load balance vs atomics)
# Launch configurations of the symmetric product, keyed like triton_kernels.KV_CONFIGS; BLOCK_M
# must be a multiple of BLOCK_N. The direct t1 and tf32x3 entries are the fastest of a sweep on
# one H200 (``python benchmarks/tune_kernels.py --n 100000 --d 3 --t 11 --ops sym_matmul sym_grad
# --precisions tf32x3 --block-m 64 128 --block-n 32 64 --num-warps 4 8 --num-stages 1 3``, and
# --t 1; direct fp32 and tensor were timed at this configuration only); the dot ones come from
# ptxas register reports (sm_90: the 128-row tiles of kv_matmul spill here, as the transposed
# product keeps V's rows split into tf32 halves) and were not timed. The library (``fused``)
# calls sym_kv_matmul for one column only: with more, it was slower than kv_matmul.
SYM_KV_CONFIGS = {
    ("direct", "t1"): (64, 32, 4, 1),
    ("direct", "fp32"): (64, 32, 4, 1),
    ("direct", "tf32x3"): (64, 64, 4, 1),
    ("direct", "fp16x3"): (64, 64, 4, 1),
    ("direct", "tensor"): (64, 32, 4, 1),
    ("dot", "narrow"): (64, 32, 4, 2),
    ("dot", "wide"): (64, 32, 8, 2),
}
# The symmetric gradient pass: triton_kernels.GRAD_CONFIGS. Its dot "narrow" entry (64, 32, 4, 1)
# was 3.4x (d = 9, n = 41,157) and 3.8x (d = 20, n = 43,945) faster than a two-stage (64, 32, 4, 2)
# (Matern 5/2, tf32x3, t = 11, one H200: ``python benchmarks/tune_kernels.py --ops sym_grad
# --precisions tf32x3 --profile matern52 --block-m 64 128 --block-n 32 --num-warps 4
# --num-stages 1 2 --t 11 --n 41157 --d 9``, and --n 43945 --d 20).
SYM_GRAD_CONFIGS = GRAD_CONFIGS


@triton.jit
def _tile_range(pid_m, pid_c, n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
    """Column tiles [first, last) of program (pid_m, pid_c), see the module docstring."""
    R: tl.constexpr = BLOCK_M // BLOCK_N
    n_tiles = tl.cdiv(n, BLOCK_N)
    own_end = tl.minimum((pid_m + 1) * R, n_tiles)
    first = own_end + (pid_c - 1) * CHUNK
    last = tl.minimum(first + CHUNK, n_tiles)
    if pid_c == 0:
        first = pid_m * R
        last = own_end
    return first, last


# ----- K @ V ------------------------------------------------------------------------------------
@triton.jit
def _sym_kv_kernel(Z, NSQ, V, OUT, ALPHA, n, d, t, s_zb, s_zn, s_zd, s_nb, s_vb, s_vn, s_vt,
                   s_ob, s_on, s_ot, s_ab, PROFILE: tl.constexpr, GEOMETRY: tl.constexpr,
                   PRODUCT: tl.constexpr, OPERAND: tl.constexpr, D_DIRECT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_T: tl.constexpr, CHUNK: tl.constexpr):
    """OUT[b] += this program's share of K(z, z) @ V[b] (OUT starts at zero).

    Unlike kv_matmul, k comes from ``_profile`` on unscaled z, not from prescaled inputs: with
    one column the prescaled form ran slower on an H200, although its loops had fewer sm_90
    instructions. This form compiles to the SASS of the faster one.

    BLOCK_T == 1: a single column of V, summed elementwise (no dot).
    """
    pid_m, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    first, last = _tile_range(pid_m, pid_c, n, BLOCK_M, BLOCK_N, CHUNK)
    if first < last:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        dims, cols_t = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_T)
        row_ok = rows < n
        Z, NSQ, V, OUT = Z + pid_b * s_zb, NSQ + pid_b * s_nb, V + pid_b * s_vb, OUT + pid_b * s_ob
        side = _row_side(Z, NSQ, rows, row_ok, dims, d, s_zn, s_zd, D_DIRECT)
        alpha = 1.0
        if PROFILE == _RQ:
            alpha = tl.load(ALPHA + pid_b * s_ab)
        t_ok = cols_t < t
        if BLOCK_T == 1:  # per-entry sums, reduced over the columns once at the end
            v_rows = tl.load(V + rows * s_vn, mask=row_ok, other=0.0).to(tl.float32)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        else:
            v_rows = tl.load(V + rows[:, None] * s_vn + cols_t[None, :] * s_vt,
                             mask=row_ok[:, None] & t_ok[None, :], other=0.0)
            acc = tl.zeros((BLOCK_M, BLOCK_T), dtype=tl.float32)
        # the diagonal square (chunk 0) holds every ordered pair of its points: row sums only
        own = tl.where(pid_c == 0, last, first)
        for tile in range(first, own):
            cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            k, _, _ = _tile_terms(side, Z, NSQ, cols, cols < n, dims, d, s_zn, s_zd, alpha, PROFILE,
                                  GEOMETRY, D_DIRECT)
            acc = _add_rows(acc, k, V, cols, cols < n, cols_t, t_ok, s_vn, s_vt, PRODUCT, OPERAND)
        for tile in range(own, last):  # right of the square: K_ab serves (a, b) and (b, a)
            cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = cols < n
            k, _, _ = _tile_terms(side, Z, NSQ, cols, col_ok, dims, d, s_zn, s_zd, alpha, PROFILE,
                                  GEOMETRY, D_DIRECT)
            if BLOCK_T == 1:  # the row sums first: after the atomic, V's load became a branch
                acc = _add_rows(acc, k, V, cols, col_ok, cols_t, t_ok, s_vn, s_vt, PRODUCT, OPERAND)
                tl.atomic_add(OUT + cols * s_on, tl.sum(k * v_rows[:, None], axis=0),
                              mask=col_ok, sem="relaxed")
            else:
                part = _product(tl.trans(k), v_rows, tl.zeros((BLOCK_N, BLOCK_T), dtype=tl.float32),
                                PRODUCT, OPERAND)
                tl.atomic_add(OUT + cols[:, None] * s_on + cols_t[None, :] * s_ot, part,
                              mask=col_ok[:, None] & t_ok[None, :], sem="relaxed")
                acc = _add_rows(acc, k, V, cols, col_ok, cols_t, t_ok, s_vn, s_vt, PRODUCT, OPERAND)
        if BLOCK_T == 1:
            tl.atomic_add(OUT + rows * s_on, tl.sum(acc, axis=1), mask=row_ok, sem="relaxed")
        else:
            tl.atomic_add(OUT + rows[:, None] * s_on + cols_t[None, :] * s_ot, acc,
                          mask=row_ok[:, None] & t_ok[None, :], sem="relaxed")


# ----- hyperparameter gradient sums -------------------------------------------------------------
@triton.jit
def _extended(Z, idx, ok, slots, d, s_zn, s_zd):
    """(len(idx), BLOCK_E) rows [z_0 .. z_{d-1}, z_0^2 .. z_{d-1}^2, 1, 0 ...] of points ``idx``."""
    src = tl.where(slots < d, slots, slots - d)
    x = tl.load(Z + idx[:, None] * s_zn + src[None, :] * s_zd,
                mask=ok[:, None] & (slots[None, :] < 2 * d), other=0.0)
    x = tl.where(slots[None, :] >= d, x * x, x)
    return tl.where(slots[None, :] == 2 * d, 1.0, x)


@triton.jit
def _sym_param_grad_kernel(Z, NSQ, P, Q, ALPHA, SUMS, n, d, t, s_zb, s_zn, s_zd, s_nb,
                           s_pb, s_pn, s_pt, s_qb, s_qn, s_qt, s_ab, s_sb, s_sm,
                           PROFILE: tl.constexpr, GEOMETRY: tl.constexpr, PRODUCT: tl.constexpr,
                           OPERAND: tl.constexpr, D_DIRECT: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
                           BLOCK_T: tl.constexpr, CHUNK: tl.constexpr):
    """SUMS[b, pid_m, :] += this program's share of the pair sums of the gradient.

    W = P Q^T gives both orderings of every pair (halved in the diagonal square, where the tile
    holds both), H = W dk/dr2 and E = [z, z^2, 1] per point (``_extended``). With G = H E the
    slots hold, summed over the program's rows a:

        slot k (< d)      -2 a_k G_ak
        slot d + k        a_k^2 G_a,2d + G_a,d+k      so S_k = sum_ab H_ab (a_k - b_k)^2
        slot 2d + 1       sum_b W_ab K_ab                      = slot k + slot d + k
        slot 2d + 2       sum_b W_ab dK_ab/dalpha (RQ)
    """
    pid_m, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    first, last = _tile_range(pid_m, pid_c, n, BLOCK_M, BLOCK_N, CHUNK)
    if first < last:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        dims, cols_t, slots = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_T), tl.arange(0, BLOCK_E)
        row_ok = rows < n
        Z, NSQ, P, Q = Z + pid_b * s_zb, NSQ + pid_b * s_nb, P + pid_b * s_pb, Q + pid_b * s_qb
        side = _row_side(Z, NSQ, rows, row_ok, dims, d, s_zn, s_zd, D_DIRECT)
        p = tl.load(P + rows[:, None] * s_pn + cols_t[None, :] * s_pt,
                    mask=row_ok[:, None] & (cols_t[None, :] < t), other=0.0)
        alpha = 1.0
        if PROFILE == _RQ:
            alpha = tl.load(ALPHA + pid_b * s_ab)
        g = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)
        wk = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        wda = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for tile in range(first, last):
            cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = cols < n
            k, dk, dka = _tile_terms(side, Z, NSQ, cols, col_ok, dims, d, s_zn, s_zd, alpha,
                                     PROFILE, GEOMETRY, D_DIRECT)
            # padded rows of Q are zero, so W (and H) vanish on padded columns
            q = tl.load(Q + cols[:, None] * s_qn + cols_t[None, :] * s_qt,
                        mask=col_ok[:, None] & (cols_t[None, :] < t), other=0.0)
            w = _product(p, tl.trans(q), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), PRODUCT, OPERAND)
            g = _dot(w * dk, _extended(Z, cols, col_ok, slots, d, s_zn, s_zd), g, GEOMETRY)
            wk += w * k
            if PROFILE == _RQ:
                wda += w * dka
        a_ext = _extended(Z, rows, row_ok, slots, d, s_zn, s_zd)
        h_sum = tl.sum(tl.where(slots[None, :] == 2 * d, g, 0.0), axis=1)
        lin = tl.where(slots[None, :] < d, -2.0 * a_ext * g, 0.0)
        sq = tl.where((slots[None, :] >= d) & (slots[None, :] < 2 * d), a_ext * h_sum[:, None] + g, 0.0)
        out = tl.sum(lin + sq, axis=0)
        out += tl.where(slots == 2 * d + 1, tl.sum(tl.sum(wk, axis=1), axis=0), 0.0)
        if PROFILE == _RQ:
            out += tl.where(slots == 2 * d + 2, tl.sum(tl.sum(wda, axis=1), axis=0), 0.0)
        if pid_c == 0:
            out = out * 0.5
        tl.atomic_add(SUMS + pid_b * s_sb + pid_m * s_sm + slots, out, sem="relaxed")


# ----- launchers (torch side) -----------------------------------------------------------------
def _sym_config(op: str, d: int, t: int, precision: str, given: tuple, chunk: int) -> tuple:
    """``triton_kernels._config`` (SYM_KV_CONFIGS for the product, SYM_GRAD_CONFIGS for the
    gradient) with BLOCK_M a multiple of BLOCK_N (the diagonal square)."""
    block_m, block_n, num_warps, num_stages = _config(
        op, d, t, precision, given, SYM_KV_CONFIGS if op == "matmul" else SYM_GRAD_CONFIGS)
    if block_m % block_n:
        raise ValueError(f"block_m: the symmetric kernels need a multiple of block_n = {block_n}, "
                         f"got {block_m}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk: expected an int >= 1, got {chunk!r}")
    return block_m, block_n, num_warps, num_stages


def _grid(n: int, bsz: int, block_m: int, block_n: int, chunk: int) -> tuple:
    """(row blocks, 1 + chunks right of row block 0's square, batch)."""
    right = max(triton.cdiv(n, block_n) - block_m // block_n, 0)
    return triton.cdiv(n, block_m), 1 + triton.cdiv(right, chunk), bsz


def sym_kv_matmul(z: torch.Tensor, v: torch.Tensor, profile: str, alpha: torch.Tensor | None = None,
                  precision: str = "tf32x3", block_m: int | None = None, block_n: int | None = None,
                  num_warps: int | None = None, num_stages: int | None = None,
                  chunk: int = CHUNK) -> torch.Tensor:
    """K(z, z) @ v for the unit-scale ``profile``, each off-diagonal entry computed once.

    z (B, n, D), v (B, n, t), alpha (B,) for "rq". Returns (B, n, t) float32, the same product
    as ``triton_kernels.kv_matmul(z, z, v, ...)`` (summed in another order). Launch settings
    default to SYM_KV_CONFIGS; ``chunk`` is the number of column tiles per program. Partial
    sums are added atomically, so on a GPU their order, and the last bits of the result, can
    differ from run to run.
    """
    block_m, block_n, num_warps, num_stages = _sym_config(
        "matmul", z.shape[-1], v.shape[-1], precision, (block_m, block_n, num_warps, num_stages), chunk)
    _check(z, z, profile, alpha, precision, block_m, block_n, num_warps)
    if v.dim() != 3 or v.shape[:2] != z.shape[:2]:
        raise ValueError(f"v: expected (B, n, t) = ({z.shape[0]}, {z.shape[1]}, t), got {tuple(v.shape)}")
    (bsz, n, d), t = z.shape, v.shape[2]
    geometry, product, operand = PRECISIONS[precision]
    z, _, nsq, _, alpha = _prepared(z, z[:, :0], alpha, precision)
    v = _operand(v, operand)
    out = torch.zeros(bsz, n, t, device=z.device, dtype=torch.float32)
    if n == 0 or t == 0:
        return out
    v, unscale = _fp16_ranged(v, product)
    grid = _grid(n, bsz, block_m, block_n, chunk)
    for c in range(0, t, KV_MAX_T):
        vc, oc = v[..., c:c + KV_MAX_T].contiguous(), out[..., c:c + KV_MAX_T]
        _sym_kv_kernel[grid](
            z, nsq, vc, oc, alpha, n, d, vc.shape[2], *z.stride(), nsq.stride(0), *vc.stride(),
            *oc.stride(), alpha.stride(0), PROFILE=PROFILES[profile], GEOMETRY=geometry,
            PRODUCT=product, OPERAND=operand, D_DIRECT=_direct(d), BLOCK_M=block_m,
            BLOCK_N=block_n, BLOCK_D=_padded(d), BLOCK_T=_padded_t(vc.shape[2]), CHUNK=chunk,
            num_warps=num_warps, num_stages=num_stages)
    return out if unscale is None else out * unscale


def sym_param_grad(z: torch.Tensor, u: torch.Tensor, v: torch.Tensor, profile: str,
                   alpha: torch.Tensor | None = None, precision: str = "tf32x3",
                   block_m: int | None = None, block_n: int | None = None,
                   num_warps: int | None = None, num_stages: int | None = None,
                   chunk: int = CHUNK) -> tuple:
    """Pair sums for the hyperparameter gradient of sum(W * K(z, z)), W = u v^T.

    z (B, n, D), u and v (B, n, t), alpha (B,) for "rq". Returns (s (B, D), wk (B,), wda (B,) or
    None): s_k = sum_ab H_ab (z_ak - z_bk)^2 with H = W * dk/dr2, wk = sum_ab W_ab K_ab and wda =
    sum_ab W_ab dK_ab/dalpha ("rq"), K the unit-scale profile. The gradient of sum(W * o K) with
    respect to log z_k (a log-lengthscale with the sign flipped) is 2 o s_k. Each launch takes up
    to GRAD_MAX_T / 2 columns of u and v (P = [u v] and Q = [v u] have twice as many).
    """
    precision = UNRANGED_PRECISION.get(precision, precision)
    block_m, block_n, num_warps, num_stages = _sym_config(
        "grad", z.shape[-1], 2 * u.shape[-1], precision, (block_m, block_n, num_warps, num_stages), chunk)
    _check(z, z, profile, alpha, precision, block_m, block_n, num_warps)
    if u.dim() != 3 or u.shape[:2] != z.shape[:2] or v.shape != u.shape:
        raise ValueError(f"v: expected u and v (B, n, t) matching z ({z.shape[0]}, {z.shape[1]}, D), "
                         f"got {tuple(u.shape)} and {tuple(v.shape)}")
    (bsz, n, d), t = z.shape, u.shape[2]
    geometry, product, operand = PRECISIONS[precision]
    z, _, nsq, _, alpha = _prepared(z, z[:, :0], alpha, precision)
    u, v = _operand(u, operand), _operand(v, operand)
    grid = _grid(n, bsz, block_m, block_n, chunk)
    width = _padded(2 * d + 3)
    sums = torch.zeros(bsz, grid[0], width, device=z.device, dtype=torch.float32)
    step = GRAD_MAX_T // 2
    for c in range(0, t if n else 0, step):
        uc, vc = u[..., c:c + step], v[..., c:c + step]
        p, q = torch.cat([uc, vc], -1).contiguous(), torch.cat([vc, uc], -1).contiguous()
        _sym_param_grad_kernel[grid](
            z, nsq, p, q, alpha, sums, n, d, p.shape[2], *z.stride(), nsq.stride(0), *p.stride(),
            *q.stride(), alpha.stride(0), sums.stride(0), sums.stride(1), PROFILE=PROFILES[profile],
            GEOMETRY=geometry, PRODUCT=product, OPERAND=operand, D_DIRECT=_direct(d),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=_padded(d), BLOCK_E=width,
            BLOCK_T=_padded(p.shape[2]), CHUNK=chunk, num_warps=num_warps, num_stages=num_stages)
    total = sums.sum(1)
    s = total[:, :d] + total[:, d:2 * d]
    return s, total[:, 2 * d + 1], total[:, 2 * d + 2] if profile == "rq" else None
