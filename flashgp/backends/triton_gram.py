# Fused K(z1, z2) @ V with the squared distances from one tensor-core product per tile ("gram"
# geometry), around a local origin per row block. CUDA, or CPU with TRITON_INTERPRET=1.
"""K @ V with r2 from a tensor-core product around a local origin.

The direct geometry of ``triton_kernels`` spends about 8.5 of its 17.6 sm_90 instructions per
kernel entry (RBF, fp16x3) on coordinates and r2 = sum_k (a_k - b_k)^2. Here r2 comes from one
tf32 tensor-core product per tile instead. With c the centroid of the program's rows, a' = a - c
and b' = b - c,

    r2_ab = |a'|^2 + |b'|^2 - 2 a'.b'

and the terms are packed so that a single product with an inner dimension of 16 (up to 4
inputs: 3D + 4 <= 16) carries the 3xTF32 split of the cross term and both norms:

    A_a = [a'_hi, a'_lo, a'_hi, n_hi, n_lo, 1, 1, 0 ...]        n = |a'|^2
    B_b = [g_hi,  g_hi,  g_lo,  1,    1,    m_hi, m_lo, 0 ...]  g = -2 b', m = |b'|^2

(x_hi: x rounded to tf32, x_lo = x - x_hi; the dropped a'_lo g_lo is ~2^-22 |a'||g|). The
cancellation error of r2 is then about 2^-22 (|a'|^2 + |b'|^2): float32-level wherever the row
block is small against the distances that matter. Rows are therefore taken in a spatial order
(``spatial_order``: recursive halving along the widest coordinate, so that every block of
ORDER_LEAF consecutive rows fills a box of its own), and the launcher permutes rows in and
results out. Columns need no order: far columns have large r2, and their error is relative.

The per-entry work left is a clamp of r2 at 0, the profile and the K @ V product's own operand
split.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_entry import _RQ, _add_rows, _columns, _profile_prescaled, _tf32_split
from .triton_kernels import (KV_MAX_T, PRECISIONS, PROFILES, _check, _fp16_ranged, _operand,
                             _padded, _padded_t, _prepared)

GRAM_MAX_D = 6     # 5 D slots: an inner dimension of 16 up to D = 3, 32 up to 6
ORDER_LEAF = 32    # rows per box of spatial_order (any power-of-two BLOCK_M >= it gets a union of boxes)
# (BLOCK_M, BLOCK_N, num_warps, num_stages) by product
GRAM_CONFIGS = {"fp16x3": (128, 32, 4, 1), "tf32x3": (128, 32, 4, 1), "fp32": (64, 32, 4, 1),
                "tensor": (128, 32, 4, 1)}


@triton.jit
def _packed(Z, idx, ok, c, ROWS: tl.constexpr, D: tl.constexpr, WIDTH: tl.constexpr):
    """(len(idx), WIDTH) operand of points ``idx`` of Z around c (a (WIDTH,) vector holding c_k
    in slot s for k = s % D): slot s of group s // D, coordinate x = z_k - c_k, is

        group   0      1      2      3           4
        rows    x_hi   x_lo   x_hi   1           1          (ROWS)
        cols    g_hi   g_hi   g_lo   (x^2)_hi    (x^2)_lo   g = -2 x

    and 0 from slot 5 D on, so that rows . cols = -2 a'.b' + |b'|^2 (|a'|^2 is added to the
    product's result). Every slot is a function of its own element, so the operand is built
    elementwise in whatever layout the compiler picks (no joins, no reductions across slots)."""
    slots = tl.arange(0, WIDTH)
    group = slots // D
    x = tl.load(Z + idx[:, None] * D + (slots % D)[None, :],
                mask=ok[:, None] & (slots[None, :] < 5 * D), other=0.0) - c[None, :]
    if ROWS:
        y = x
    else:
        y = tl.where(group[None, :] < 3, -2.0 * x, x * x)
    hi, lo = _tf32_split(y)
    if ROWS:
        out = tl.where(group[None, :] == 1, lo, hi)
        out = tl.where(group[None, :] >= 3, 1.0, out)
    else:
        out = tl.where((group[None, :] == 2) | (group[None, :] == 4), lo, hi)
    return tl.where(slots[None, :] < 5 * D, out, 0.0)


@triton.jit
def _gram_kv_kernel(Z1, Z2, V, VL, OUT, ALPHA, n1, n2, t, s_z1b, s_z2b,
                    s_vb, s_vn, s_vt, s_ob, s_on, s_ot, s_ab, PROFILE: tl.constexpr,
                    PRODUCT: tl.constexpr, OPERAND: tl.constexpr, D: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
                    WIDTH: tl.constexpr):
    """OUT[b, rows] = sum over column tiles of k(r2) @ V[b, cols], r2 by the packed product.

    z1, z2 come prescaled (``_profile_prescaled``), rows in spatial order. BLOCK_T >= 16.
    """
    pid_m, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols_t = tl.arange(0, BLOCK_T)
    row_ok = rows < n1
    Z1, Z2, V, VL = Z1 + pid_b * s_z1b, Z2 + pid_b * s_z2b, V + pid_b * s_vb, VL + pid_b * s_vb
    a = _columns(Z1, rows, row_ok, D, 1, D)
    count = tl.sum(row_ok.to(tl.float32), axis=0)
    slots = tl.arange(0, WIDTH)
    c = tl.zeros((WIDTH,), tl.float32)
    norm = tl.zeros((BLOCK_M,), tl.float32)
    for j in tl.static_range(D):
        c_j = tl.sum(a[j], axis=0) / count   # padded rows load as 0 and add nothing
        c = tl.where(slots % D == j, c_j, c)
        norm += tl.where(row_ok, (a[j] - c_j) * (a[j] - c_j), 0.0)
    rows_op = _packed(Z1, rows, row_ok, c, True, D, WIDTH)
    alpha = 1.0
    if PROFILE == _RQ:
        alpha = tl.load(ALPHA + pid_b * s_ab)
    t_ok = cols_t < t
    acc = tl.zeros((BLOCK_M, BLOCK_T), dtype=tl.float32)
    for start in range(0, n2, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < n2
        cols_op = _packed(Z2, cols, col_ok, c, False, D, WIDTH)
        r2 = tl.dot(rows_op, tl.trans(cols_op), tl.zeros((BLOCK_M, BLOCK_N), tl.float32),
                    input_precision="tf32") + norm[:, None]
        entries = _profile_prescaled(tl.maximum(r2, 0.0), alpha, PROFILE)
        # padded columns load V as zero, so their (finite) entries add nothing
        if PRODUCT == "fp16x3":  # V's float16 parts come split (VL: V - VH) from the host
            v_at = cols[:, None] * s_vn + cols_t[None, :] * s_vt
            v_ok = col_ok[:, None] & t_ok[None, :]
            v_hi = tl.load(V + v_at, mask=v_ok, other=0.0)
            v_lo = tl.load(VL + v_at, mask=v_ok, other=0.0)
            k_hi = entries.to(tl.float16)
            k_lo = (entries - k_hi.to(tl.float32)).to(tl.float16)
            tile = tl.dot(k_lo, v_hi, tl.zeros((BLOCK_M, BLOCK_T), tl.float32), out_dtype=tl.float32)
            tile = tl.dot(k_hi, v_lo, tile, out_dtype=tl.float32)
            acc += tl.dot(k_hi, v_hi, tile, out_dtype=tl.float32)
        else:
            acc = _add_rows(acc, entries, V, cols, col_ok, cols_t, t_ok, s_vn, s_vt, PRODUCT, OPERAND)
    tl.store(OUT + pid_b * s_ob + rows[:, None] * s_on + cols_t[None, :] * s_ot, acc,
             mask=row_ok[:, None] & t_ok[None, :])


# ----- the spatial row order --------------------------------------------------------------------
def spatial_order(z: torch.Tensor, leaf: int = ORDER_LEAF) -> torch.Tensor:
    """A permutation (B, n) of the points z (B, n, D) such that every aligned run of ``leaf``
    (and so of any power-of-two multiple of it) consecutive points fills a box of its own.

    Built top down: each segment is sorted along its widest coordinate and cut in two at a
    multiple of ``leaf`` near its middle, until segments hold at most ``leaf`` points (one
    stable argsort of all points per level, about log2(n / leaf) of them).
    """
    bsz, n, d = z.shape
    order = torch.arange(n, device=z.device).expand(bsz, n).contiguous()
    segments = [(0, n)]
    batch_index = torch.arange(bsz, device=z.device)[:, None]
    while any(e - s > leaf for s, e in segments):
        starts = torch.tensor([s for s, _ in segments], device=z.device)
        seg_of = torch.searchsorted(starts, torch.arange(n, device=z.device), right=True) - 1
        pts = z[batch_index, order].float()                                  # (B, n, D)
        seg_idx = seg_of.expand(bsz, n)[..., None].expand(bsz, n, d)
        lo = torch.full((bsz, len(segments), d), float("inf"), device=z.device)
        hi = torch.full((bsz, len(segments), d), float("-inf"), device=z.device)
        lo = lo.scatter_reduce(1, seg_idx, pts, "amin")
        hi = hi.scatter_reduce(1, seg_idx, pts, "amax")
        widest = (hi - lo).argmax(-1)                                        # (B, segments)
        dim = widest.gather(1, seg_of.expand(bsz, n))                        # (B, n)
        coord = pts.gather(2, dim[..., None])[..., 0]
        low = lo.gather(2, widest[..., None])[..., 0].gather(1, seg_of.expand(bsz, n))
        span = (hi - lo).gather(2, widest[..., None])[..., 0].gather(1, seg_of.expand(bsz, n))
        within = ((coord - low) / span.clamp_min(1e-30)).clamp(0, 1).double() * 0.5
        key = seg_of.double() + within
        order = order.gather(1, torch.argsort(key, dim=1, stable=True))
        nxt = []
        for s, e in segments:
            if e - s > leaf:
                cut = s + max(1, round((e - s) / (2 * leaf))) * leaf
                nxt += [(s, cut), (cut, e)]
            else:
                nxt.append((s, e))
        segments = nxt
    return order


def _fp16_parts(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) float16 parts of float32 v (ranged by ``_fp16_ranged``): hi = fp16(v), lo =
    fp16(v - hi), as ``triton_entry._fp16_split`` makes them in a kernel."""
    hi = v.half()
    return hi, (v - hi.float()).half()


# ----- launcher -----------------------------------------------------------------------------------
def gram_kv_matmul(z1: torch.Tensor, z2: torch.Tensor, v: torch.Tensor, profile: str,
                   alpha: torch.Tensor | None = None, precision: str = "fp16x3",
                   order: torch.Tensor | None = None, block_m: int | None = None,
                   block_n: int | None = None, num_warps: int | None = None,
                   num_stages: int | None = None) -> torch.Tensor:
    """K(z1, z2) @ v for the unit-scale ``profile`` with the gram geometry (module docstring).

    z1 (B, n1, D <= GRAM_MAX_D), z2 (B, n2, D), v (B, n2, t >= 2), alpha (B,) for "rq";
    ``order`` (B, n1): z1's rows in ``spatial_order`` (computed here when None). Returns (B, n1,
    t) float32, the same product as ``triton_kernels.kv_matmul``.
    """
    _, product, operand = PRECISIONS[precision]
    key = product if product in GRAM_CONFIGS else "tensor"
    config = [g if g is not None else dflt for g, dflt in
              zip((block_m, block_n, num_warps, num_stages), GRAM_CONFIGS[key])]
    block_m, block_n, num_warps, num_stages = config
    _check(z1, z2, profile, alpha, precision, block_m, block_n, num_warps)
    (bsz, n1, d), n2 = z1.shape, z2.shape[1]
    if d > GRAM_MAX_D:
        raise ValueError(f"z1: the gram geometry takes at most {GRAM_MAX_D} columns, got {d}")
    if v.dim() != 3 or v.shape[:2] != z2.shape[:2] or v.shape[2] < 2:
        raise ValueError(f"v: expected (B, n2, t >= 2) = ({bsz}, {n2}, t), got {tuple(v.shape)}")
    t = v.shape[2]
    out = torch.zeros(bsz, n1, t, device=v.device, dtype=torch.float32)
    if n1 == 0 or n2 == 0:
        return out
    if order is None:
        order = spatial_order(z1)
    batch_index = torch.arange(bsz, device=z1.device)[:, None]
    z1s, z2, _, _, alpha = _prepared(z1[batch_index, order], z2, alpha, "fp32", prescale=profile)
    v, unscale = _fp16_ranged(_operand(v, operand), product)
    for c in range(0, t, KV_MAX_T):
        vc = v[..., c:c + KV_MAX_T].contiguous()
        vl = vc
        if product == "fp16x3":
            vc, vl = _fp16_parts(vc)
        oc = torch.empty(bsz, n1, vc.shape[2], device=v.device, dtype=torch.float32)
        _gram_kv_kernel[(triton.cdiv(n1, block_m), bsz)](
            z1s, z2, vc, vl, oc, alpha, n1, n2, vc.shape[2], z1s.stride(0), z2.stride(0), *vc.stride(),
            *oc.stride(), alpha.stride(0), PROFILE=PROFILES[profile], PRODUCT=product,
            OPERAND=operand, D=d, BLOCK_M=block_m, BLOCK_N=block_n, WIDTH=_padded(5 * d),
            BLOCK_T=max(16, _padded_t(vc.shape[2])), num_warps=num_warps, num_stages=num_stages)
        out[batch_index, order, c:c + KV_MAX_T] = oc
    return out if unscale is None else out * unscale
