# Torch side of the fused CPU kernels: the same entry points as triton_kernels (kv_matmul,
# row_grad) on CPU tensors, plus kernel tiles, computed by the compiled library of cpu_native.
"""Fused CPU kernels for stationary profiles on lengthscale-scaled inputs.

The counterparts of ``triton_kernels.kv_matmul`` and ``row_grad`` (same arguments and results),
so that ``backends.fused`` serves both devices. Entries are computed in the inputs' dtype
(float32 or float64; ``precision`` is accepted and ignored): squared distances elementwise,
sum_k (a_k - b_k)^2, exact to rounding for centred inputs, with no float32 resolution check.
Each call splits the rows into chunks spread over ``torch.get_num_threads()`` threads; within a
chunk the columns are visited in tiles of a few hundred, so K lives only in the L1 cache.
"""
from __future__ import annotations

import ctypes

import torch

from . import cpu_native

PROFILES = {"rbf": 0, "matern12": 1, "matern32": 2, "matern52": 3, "rq": 4}
DTYPES = {torch.float32: "_f", torch.float64: "_d"}
# right-hand sides wider than this go through kernel tiles and torch's matrix product (BLAS),
# which beats the column-by-column sums of flashgp_kv once V has many columns
GEMM_MIN_T = 64
TILE_ENTRIES = 1 << 22  # entries of one kernel tile on that path (16 MB in float32)
# the symmetric kernels keep SYMMETRIC_SLOTS buffers of (t or D + 3) x n column sums, each filled by
# one thread at a time in a fixed order (so results do not depend on the thread count; at most
# that many threads work on them); beyond SYMMETRIC_SCRATCH_BYTES in all the rectangular
# kernels run instead
SYMMETRIC_SLOTS = 16
SYMMETRIC_SCRATCH_BYTES = 1 << 28
# calls whose temporaries reach this many bytes trim the heap afterwards (_trimmed)
TRIM_BYTES = 1 << 24


def available() -> bool:
    """Whether the compiled kernels load here (compiling them on the first call of a process)."""
    return cpu_native.library() is not None


def _ptr(x: torch.Tensor | None):
    return None if x is None else ctypes.c_void_p(x.data_ptr())


def _lib():
    lib = cpu_native.library()
    if lib is None:
        raise RuntimeError(f"the fused CPU kernels are unavailable: {cpu_native.unavailable_reason()}")
    return lib


def _call(name: str, dtype: torch.dtype, *args) -> None:
    """Run a library function, whose last argument is the thread count (torch's)."""
    if getattr(_lib(), name + DTYPES[dtype])(*args, torch.get_num_threads()):
        raise MemoryError(f"{name}: a worker thread could not allocate its scratch memory")


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _release(nbytes: int) -> None:
    """After a call whose temporaries, already freed, took ``nbytes``: past TRIM_BYTES return the
    heap's free pages to the system (``cpu_native.release_free_memory``: glibc would otherwise
    keep them resident, and resident memory would grow with CG iterations)."""
    if nbytes >= TRIM_BYTES:
        cpu_native.release_free_memory()


def _prepared(z1, z2, alpha, dtype):
    if z1.device.type != "cpu" or z2.device.type != "cpu":
        raise ValueError(f"z1, z2: the fused CPU kernels need CPU tensors, got {z1.device} and {z2.device}")
    if dtype not in DTYPES:
        raise ValueError(f"z1: expected float32 or float64, got {dtype}")
    if z1.dim() != 3 or z2.dim() != 3 or z1.shape[0] != z2.shape[0] or z1.shape[2] != z2.shape[2]:
        raise ValueError(f"z1, z2: expected (B, n1, D) and (B, n2, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z1c = z1.to(dtype).contiguous()
    z2t = z2.to(dtype).transpose(1, 2).contiguous()
    a = None if alpha is None else alpha.to(dtype).expand(z1.shape[0]).contiguous()
    return z1c, z2t, a


def _profile(profile: str, alpha) -> int:
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {tuple(PROFILES)}, got {profile!r}")
    if profile == "rq" and alpha is None:
        raise ValueError("alpha: the rq profile needs alpha (B,)")
    return PROFILES[profile]


def kernel_tile(z1: torch.Tensor, z2: torch.Tensor, profile: str, alpha: torch.Tensor | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """k(|z1_a - z2_b|^2) for the unit-scale ``profile``: z1 (B, n1, D), z2 (B, n2, D) -> (B, n1, n2)
    in z1's dtype, written into ``out`` when given: a (B, n1, n2) tensor of z1's dtype whose rows
    are unit-stride and evenly spaced (contiguous, or a column slice of wider rows, such as
    ``layout.padded_rows``)."""
    code = _profile(profile, alpha)
    z1c, z2t, a = _prepared(z1, z2, alpha, z1.dtype)
    (bsz, n1, d), n2 = z1c.shape, z2t.shape[2]
    if out is None:
        out = torch.empty(bsz, n1, n2, dtype=z1c.dtype)
    if out.shape != (bsz, n1, n2) or out.dtype != z1c.dtype:
        raise ValueError(f"out: expected a {(bsz, n1, n2)} {z1c.dtype} tensor, got {tuple(out.shape)} {out.dtype}")
    ld = out.stride(1) if n1 > 1 else (out.stride(0) if bsz > 1 else n2)  # elements from row to row
    if n2 > 1 and out.stride(2) != 1 or ld < n2 or (bsz > 1 and out.stride(0) != n1 * ld):
        raise ValueError(f"out: expected a {(bsz, n1, n2)} {z1c.dtype} tensor of unit-stride, evenly "
                         f"spaced rows, got {tuple(out.shape)} {out.dtype} with strides {out.stride()}")
    _call("flashgp_tile", z1c.dtype, _ptr(z1c), _ptr(z2t), _ptr(a), _ptr(out), bsz, n1, n2, d,
          max(ld, 1), code)
    return out


def kv_matmul(z1: torch.Tensor, z2: torch.Tensor, v: torch.Tensor, profile: str,
              alpha: torch.Tensor | None = None, precision: str | None = None,
              block_m: int | None = None, block_n: int | None = None) -> torch.Tensor:
    """K(z1, z2) @ v for the unit-scale ``profile``: z1 (B, n1, D), z2 (B, n2, D), v (B, n2, t),
    alpha (B,) for "rq" -> (B, n1, t) in z1's dtype. ``precision``, ``block_m``, ``block_n`` are the
    Triton kernels' and are ignored here."""
    code = _profile(profile, alpha)
    dtype = z1.dtype
    z1c, z2t, a = _prepared(z1, z2, alpha, dtype)
    if v.dim() != 3 or v.shape[:2] != z2.shape[:2]:
        raise ValueError(f"v: expected (B, n2, t) = ({z2.shape[0]}, {z2.shape[1]}, t), got {tuple(v.shape)}")
    (bsz, n1, d), n2, t = z1c.shape, z2t.shape[2], v.shape[2]
    if t > GEMM_MIN_T:
        return _kv_by_tiles(z1c, z2, v.to(dtype), profile, alpha)
    vt = v.to(dtype).transpose(1, 2).contiguous()
    out = torch.empty(bsz, n1, t, dtype=dtype)
    if n1 and n2 and t:
        _call("flashgp_kv", dtype, _ptr(z1c), _ptr(z2t), _ptr(vt), _ptr(a), _ptr(out), bsz, n1, n2,
              d, t, code)
    elif n1:
        out.zero_()
    nbytes = _nbytes(vt, out)
    del vt
    _release(nbytes)
    return out


def _kv_by_tiles(z1, z2, v, profile, alpha):
    """K @ v one block of rows at a time: the block's kernel tile, then one BLAS product."""
    bsz, n1, n2 = z1.shape[0], z1.shape[1], z2.shape[1]
    rows = max(1, min(n1, TILE_ENTRIES // max(1, n2)))
    out = torch.empty(bsz, n1, v.shape[2], dtype=v.dtype)
    tile = torch.empty(bsz, rows, n2, dtype=z1.dtype)
    for start in range(0, n1, rows):
        stop = min(n1, start + rows)
        block = tile[:, : stop - start] if stop - start == rows else torch.empty(bsz, stop - start, n2, dtype=z1.dtype)
        kernel_tile(z1[:, start:stop], z2, profile, alpha, out=block)
        torch.matmul(block, v, out=out[:, start:stop])
    return out


def row_grad(z1: torch.Tensor, z2: torch.Tensor, u: torch.Tensor, v: torch.Tensor, profile: str,
             alpha: torch.Tensor | None = None, precision: str | None = None, need_wk: bool = True,
             block_m: int | None = None, block_n: int | None = None) -> tuple:
    """Row sums for the gradient of sum(W * K), W = u v^T, from the unit-scale ``profile``.

    z1 (B, n1, D), z2 (B, n2, D), u (B, n1, t), v (B, n2, t), alpha (B,) for "rq". Returns
    (rowsum_h (B, n1), hz (B, n1, D), wk (B, n1) or None, wdk_alpha (B, n1) or None) with
    H = W * dk/dr2: rowsum_h[a] = sum_b H_ab, hz[a] = sum_b H_ab z2[b], wk[a] = sum_b W_ab K_ab,
    wdk_alpha[a] = sum_b W_ab dK_ab/dalpha ("rq" only); wk and wdk_alpha need ``need_wk``.
    Matern-1/2 takes dk/dr2 = 0 where r2 = 0, as the Triton kernels do.
    """
    code = _profile(profile, alpha)
    dtype = z1.dtype
    z1c, z2t, a = _prepared(z1, z2, alpha, dtype)
    if u.dim() != 3 or v.dim() != 3 or u.shape[:2] != z1.shape[:2] or v.shape[:2] != z2.shape[:2] \
            or u.shape[2] != v.shape[2]:
        raise ValueError(f"v: expected u (B, n1, t) and v (B, n2, t) matching z1 and z2, got "
                         f"{tuple(u.shape)} and {tuple(v.shape)}")
    (bsz, n1, d), n2, t = z1c.shape, z2t.shape[2], u.shape[2]
    uc = u.to(dtype).contiguous()
    vt = v.to(dtype).transpose(1, 2).contiguous()
    h, wk, wda = (torch.zeros(bsz, n1, dtype=dtype) for _ in range(3))
    hz = torch.zeros(bsz, n1, d, dtype=dtype)
    wk = wk if need_wk else None
    wda = wda if need_wk and profile == "rq" else None
    if n1 and n2:
        _call("flashgp_grad", dtype, _ptr(z1c), _ptr(z2t), _ptr(uc), _ptr(vt), _ptr(a), _ptr(h),
              _ptr(hz), _ptr(wk), _ptr(wda), bsz, n1, n2, d, t, code)
    nbytes = _nbytes(uc, vt)
    del uc, vt
    _release(nbytes)
    return h, hz, wk, wda


def _symmetric_scratch(shape, dtype):
    """Zeroed column sums (SYMMETRIC_SLOTS, *shape), or None when they would exceed
    SYMMETRIC_SCRATCH_BYTES."""
    size = SYMMETRIC_SLOTS * torch.Size(shape).numel() * (torch.finfo(dtype).bits // 8)
    return torch.zeros(SYMMETRIC_SLOTS, *shape, dtype=dtype) if size <= SYMMETRIC_SCRATCH_BYTES else None


def sym_kv_matmul(z: torch.Tensor, v: torch.Tensor, profile: str, alpha: torch.Tensor | None = None,
                  precision: str | None = None) -> torch.Tensor:
    """K(z, z) @ v with each pair of points evaluated once: z (B, n, D), v (B, n, t) -> (B, n, t),
    the result of ``kv_matmul(z, z, v, ...)`` to rounding, for about half its kernel evaluations.
    Falls back to ``kv_matmul`` where the column sums would be too large, and for t
    above GEMM_MIN_T."""
    code = _profile(profile, alpha)
    dtype = z.dtype
    zc, zt, a = _prepared(z, z, alpha, dtype)
    if v.dim() != 3 or v.shape[:2] != z.shape[:2]:
        raise ValueError(f"v: expected (B, n, t) = ({z.shape[0]}, {z.shape[1]}, t), got {tuple(v.shape)}")
    (bsz, n, d), t = zc.shape, v.shape[2]
    cols = _symmetric_scratch((bsz, t, n), dtype) if t <= GEMM_MIN_T else None
    if cols is None or not n or not t:
        return kv_matmul(z, z, v, profile, alpha)
    vc = v.to(dtype).contiguous()
    vt = vc.transpose(1, 2).contiguous()
    out = torch.empty(bsz, n, t, dtype=dtype)
    _call("flashgp_sym_kv", dtype, _ptr(zc), _ptr(zt), _ptr(vt), _ptr(vc), _ptr(a), _ptr(out), _ptr(cols),
          SYMMETRIC_SLOTS, bsz, n, d, t, code)
    out.add_(cols.sum(0).transpose(1, 2))
    nbytes = _nbytes(cols, out, out)  # cols, vt and the sum of cols were freed
    del cols, vt, vc
    _release(nbytes)
    return out


def sym_row_grad(z: torch.Tensor, u: torch.Tensor, v: torch.Tensor, profile: str,
                 alpha: torch.Tensor | None = None, precision: str | None = None,
                 need_wk: bool = True) -> tuple:
    """``row_grad(z, z, u, v, ...)`` for a symmetric W = u v^T (such as [p q] [q p]^T = p q^T + q p^T),
    each pair of points evaluated once. z (B, n, D), u and v (B, n, t). Falls back to ``row_grad``
    where the column sums would be too large. With W not symmetric the result is wrong:
    the pair (a, b) is evaluated with W_ab alone."""
    code = _profile(profile, alpha)
    dtype = z.dtype
    zc, zt, a = _prepared(z, z, alpha, dtype)
    if u.dim() != 3 or u.shape != v.shape or u.shape[:2] != z.shape[:2]:
        raise ValueError(f"u, v: expected (B, n, t) matching z, got {tuple(u.shape)} and {tuple(v.shape)}")
    (bsz, n, d), t = zc.shape, u.shape[2]
    cols = _symmetric_scratch((bsz, d + 3, n), dtype)
    if cols is None or not n:
        return row_grad(z, z, u, v, profile, alpha, need_wk=need_wk)
    uc = u.to(dtype).contiguous()
    vt = v.to(dtype).transpose(1, 2).contiguous()
    h, wk, wda = (torch.zeros(bsz, n, dtype=dtype) for _ in range(3))
    hz = torch.zeros(bsz, n, d, dtype=dtype)
    wda = wda if need_wk and profile == "rq" else None
    _call("flashgp_sym_grad", dtype, _ptr(zc), _ptr(zt), _ptr(uc), _ptr(vt), _ptr(a), _ptr(h), _ptr(hz),
          _ptr(wk), _ptr(wda), _ptr(cols), SYMMETRIC_SLOTS, bsz, n, d, t, code)
    total = cols.sum(0)  # (B, D + 3, n): h, wk, wda, hz by columns
    h += total[:, 0]
    wk += total[:, 1]
    hz += total[:, 3:].transpose(1, 2)
    if wda is not None:
        wda += total[:, 2]
    nbytes = _nbytes(uc, vt, cols, total)
    del uc, vt, cols, total
    _release(nbytes)
    return h, hz, wk if need_wk else None, wda

