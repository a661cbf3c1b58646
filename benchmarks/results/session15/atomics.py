# Time floor of the symmetric product's atomics: each program (row block i, chunk c) adds a
# (BLOCK_N, 16) tile (t columns live) into OUT for every column tile right of its square.
import sys, torch, triton
import triton.language as tl

@triton.jit
def _atomics_only(OUT, n, t, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, VEC: tl.constexpr):
    pid_m, pid_c = tl.program_id(0), tl.program_id(1)
    R: tl.constexpr = BLOCK_M // BLOCK_N
    n_tiles = tl.cdiv(n, BLOCK_N)
    first = tl.minimum((pid_m + 1) * R, n_tiles) + pid_c * CHUNK
    last = tl.minimum(first + CHUNK, n_tiles)
    cols_t = tl.arange(0, 16)
    val = tl.zeros((BLOCK_N, 16), tl.float32) + 1.0
    for tile in range(first, last):
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        tl.atomic_add(OUT + cols[:, None] * 16 + cols_t[None, :], val, mask=(cols[:, None] < n) & (cols_t[None, :] < t), sem="relaxed")

def run(n, bm, bn, t, chunk=32):
    out = torch.zeros(n, 16, device="cuda")
    right = triton.cdiv(n, bn)
    grid = (triton.cdiv(n, bm), triton.cdiv(right, chunk))
    f = lambda: _atomics_only[grid](out, n, t, BLOCK_M=bm, BLOCK_N=bn, CHUNK=chunk, VEC=1, num_warps=4)
    f(); torch.cuda.synchronize()
    s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
    s.record(); f(); e.record(); torch.cuda.synchronize()
    sec = s.elapsed_time(e) / 1000
    tiles = (n / bn) * (n / bn) / 2 / (bm / bn)   # approx tiles right of squares per row block... 
    n_atomic = (n / bm) * (n / bn) / 2 * bn * t
    print(f"atomics n={n} BLOCK_M={bm} BLOCK_N={bn} t={t}: {sec:.4f} s, {n_atomic:.3e} scalar atomics, {n_atomic / sec:.3e}/s", flush=True)

if __name__ == "__main__":
    for bm, bn in ((128, 32), (128, 64), (256, 64)):
        run(1_000_000, bm, bn, 11)
