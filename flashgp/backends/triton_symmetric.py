# K @ V for a stored symmetric kernel matrix that reads only the tiles on and above the diagonal:
# each off-diagonal tile serves K_ij V_j and K_ij^T V_i, so a product moves half the bytes.
"""Symmetric stored-matrix products for the dense backend on a GPU.

The dense backend keeps K (B, n, n) in memory and each CG iteration is one skinny product K @ V,
bound by reading K (about 2.2-2.5 TB/s through cuBLAS on an H200, benchmarks/dense_matmul.py).
Since K = K^T, program (i, j) with i <= j loads tile K_ij once and adds K_ij V_j to rows i and,
for i < j, K_ij^T V_i to rows j (float32 atomic adds into a zeroed output). The tiles are
numbered along the upper triangle, so no program is launched for the lower one.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_entry import _dot

SYM_CONFIG = (128, 8)    # rows and columns of K per tile, num_warps
SYM_MAX_T = 64           # columns of V per launch; wider V runs as several launches
ROW_ALIGN = 16           # row strides that are multiples of this let tiles load as vectors
SYM_PRECISIONS = {"tf32x3": "tf32x3", "fp32": "ieee", "tf32": "tf32"}  # precision -> _dot mode


@triton.jit
def _upper_tile(pid):
    """(i, j) with i <= j of the pid-th tile of the upper triangle, numbered column by column:
    pid = j (j + 1) / 2 + i. The float square root is corrected by one step either way."""
    j = ((tl.sqrt(8.0 * pid + 1.0) - 1.0) * 0.5).to(tl.int32)
    j = tl.where((j + 1) * (j + 2) // 2 <= pid, j + 1, j)
    j = tl.where(j * (j + 1) // 2 > pid, j - 1, j)
    return pid - j * (j + 1) // 2, j


@triton.jit
def _sym_matmul_kernel(K, V, OUT, n, t, s_kb, s_kn, s_vb, s_vn, s_vt, s_ob, s_on, s_ot,
                       PRECISION: tl.constexpr, BLOCK: tl.constexpr, BLOCK_T: tl.constexpr):
    """OUT[b] += K_ij V_j on rows i and, for i < j, K_ij^T V_i on rows j, for tile (i, j)."""
    bi, bj = _upper_tile(tl.program_id(0))
    pid_b = tl.program_id(1).to(tl.int64)
    rows, cols = bi * BLOCK + tl.arange(0, BLOCK), bj * BLOCK + tl.arange(0, BLOCK)
    cols_t = tl.arange(0, BLOCK_T)
    row_ok, col_ok, t_ok = rows < n, cols < n, cols_t < t
    k_ptrs = K + pid_b * s_kb + rows.to(tl.int64)[:, None] * s_kn + cols[None, :]
    if (bj + 1) * BLOCK <= n:  # no column mask: rows load as 16-byte vectors (s_kn % 4 == 0)
        k = tl.load(k_ptrs, mask=row_ok[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    V, OUT = V + pid_b * s_vb, OUT + pid_b * s_ob
    v_j = tl.load(V + cols[:, None] * s_vn + cols_t[None, :] * s_vt,
                  mask=col_ok[:, None] & t_ok[None, :], other=0.0)
    out_i = _dot(k, v_j, tl.zeros((BLOCK, BLOCK_T), tl.float32), PRECISION)
    tl.atomic_add(OUT + rows[:, None] * s_on + cols_t[None, :] * s_ot, out_i,
                  mask=row_ok[:, None] & t_ok[None, :], sem="relaxed")
    if bi != bj:
        v_i = tl.load(V + rows[:, None] * s_vn + cols_t[None, :] * s_vt,
                      mask=row_ok[:, None] & t_ok[None, :], other=0.0)
        out_j = _dot(tl.trans(k), v_i, tl.zeros((BLOCK, BLOCK_T), tl.float32), PRECISION)
        tl.atomic_add(OUT + cols[:, None] * s_on + cols_t[None, :] * s_ot, out_j,
                      mask=col_ok[:, None] & t_ok[None, :], sem="relaxed")


def padded_square(batch: int, n: int, device) -> torch.Tensor:
    """An uninitialized float32 (batch, n, n) view whose row stride is n rounded up to
    ROW_ALIGN, the layout in which ``symmetric_matmul`` loads tiles as 16-byte vectors (cuBLAS
    and torch take the padded rows as they are)."""
    stride = -(-n // ROW_ALIGN) * ROW_ALIGN
    return torch.empty(batch, n, stride, device=device, dtype=torch.float32)[..., :n]


def symmetric_supported(k: torch.Tensor) -> bool:
    """Whether ``symmetric_matmul`` takes this stored matrix: float32, (n, n) or (B, n, n) with
    unit column stride and rows that are not shared (no expanded row dimension)."""
    return (k.dtype == torch.float32 and k.dim() in (2, 3) and k.shape[-1] == k.shape[-2]
            and k.stride(-1) == 1 and k.stride(-2) >= k.shape[-1])


def symmetric_matmul(k: torch.Tensor, v: torch.Tensor, precision: str = "tf32x3",
                     block: int | None = None, num_warps: int | None = None) -> torch.Tensor:
    """K @ v for a symmetric stored K, reading only its upper triangle of tiles.

    k (n, n) or (B, n, n) float32 (``symmetric_supported``; symmetry is assumed, not checked;
    fastest with a row stride that is a multiple of ROW_ALIGN, see ``padded_square``), v (..., n,
    t) with the same batch. Returns float32 (..., n, t). ``precision``: "tf32x3" (3xTF32
    tensor-core products, float32-level error), "fp32" (IEEE on the CUDA cores) or "tf32".
    ``block``, ``num_warps``: launch settings (default SYM_CONFIG).
    """
    block, num_warps = (given or default for given, default in zip((block, num_warps), SYM_CONFIG))
    if precision not in SYM_PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(SYM_PRECISIONS)}, got {precision!r}")
    if not symmetric_supported(k):
        raise ValueError(f"k: expected a float32 (n, n) or (B, n, n) matrix with unit column stride, "
                         f"got {tuple(k.shape)} {k.dtype} with strides {k.stride()}")
    kb = k if k.dim() == 3 else k.unsqueeze(0)
    n = kb.shape[-1]
    if v.shape[-2] != n or v.shape[:-2] not in ((), kb.shape[:1] if k.dim() == 3 else ()):
        raise ValueError(f"v: expected (..., {n}, t) matching k {tuple(k.shape)}, got {tuple(v.shape)}")
    vb = v.float().reshape(kb.shape[0], n, v.shape[-1])
    t = vb.shape[-1]
    out = torch.zeros(kb.shape[0], n, t, device=k.device, dtype=torch.float32)
    blocks = triton.cdiv(n, block)
    grid = (blocks * (blocks + 1) // 2, kb.shape[0])
    for c in range(0, t if n else 0, SYM_MAX_T):
        vc, oc = vb[..., c:c + SYM_MAX_T], out[..., c:c + SYM_MAX_T]
        _sym_matmul_kernel[grid](
            kb, vc, oc, n, vc.shape[-1], kb.stride(0), kb.stride(1), *vc.stride(), *oc.stride(),
            PRECISION=SYM_PRECISIONS[precision], BLOCK=block,
            BLOCK_T=max(16, triton.next_power_of_2(vc.shape[-1])), num_warps=num_warps,
            num_stages=1)
    return out.reshape(v.shape[:-1] + (t,))
