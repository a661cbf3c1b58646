# Which layout makes the dense backend's skinny product K @ V (K n x n stored, V n x t) fastest on a
# GPU: the bandwidth each variant reaches. Usage: python benchmarks/dense_matmul.py [--n 15000 36000]
"""Times K @ V for a stored symmetric float32 K in several layouts: K @ V, (V^T K)^T (K is
symmetric), V padded to 16 columns, with TF32 allowed, cuBLAS's SSYMM (which reads one triangle
of K; not exposed by torch, called through ctypes on torch's cuBLAS handle; on an H200 it ran at
a seventh of GEMM's speed, 20.5 against 2.7 ms at n = 41,157) and flashgp's Triton
stored-matrix product (``triton_dense.stored_kv_matmul``, K read by TMA; what the dense backend
runs on such GPUs); prints ms per product and the effective bandwidth (bytes of the whole K over
the time)."""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flashgp.backends.layout import padded_rows  # noqa: E402
from results_file import write_results  # noqa: E402

CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER = 1, 0
_CUBLAS = []


def cublas() -> ctypes.CDLL:
    """The cuBLAS library torch has loaded (opening it by soname returns the loaded copy)."""
    if not _CUBLAS:
        for name in ("libcublas.so.13", "libcublas.so.12", "libcublas.so"):
            try:
                _CUBLAS.append(ctypes.CDLL(name))
                break
            except OSError:
                continue
        else:
            raise OSError("libcublas not found")
    return _CUBLAS[0]


def ssymm(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """k @ v by cublasSsymm for a symmetric float32 k (n, n) (row stride k.stride(0)) and a
    contiguous v (n, t). In cuBLAS's column-major view v and the result are t x n, so it computes
    out^T = v^T k (side right); the row-major upper triangle of k is its lower one, the only
    triangle SSYMM reads."""
    n, t = v.shape
    out = torch.empty(n, t, device=v.device, dtype=torch.float32)
    alpha, beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
    status = cublas().cublasSsymm_v2(
        ctypes.c_void_p(torch.cuda.current_blas_handle()), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER,
        t, n, ctypes.byref(alpha), ctypes.c_void_p(k.data_ptr()), k.stride(0),
        ctypes.c_void_p(v.data_ptr()), t, ctypes.byref(beta), ctypes.c_void_p(out.data_ptr()), t)
    if status != 0:
        raise RuntimeError(f"cublasSsymm_v2 returned status {status}")
    return out


def stored_product(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """k @ v by the dense backend's Triton product (tf32x3), as KernelOperator calls it."""
    from flashgp.backends.triton_dense import stored_kv_matmul
    return stored_kv_matmul(k[None], v[None])[0]


def timed(fn, reps: int = 20) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` CUDA-event timed runs (after 3 warm-ups)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[15000, 36000, 44000])
    p.add_argument("--t", type=int, default=11)
    p.add_argument("--out", default=None, metavar="OUT",
                   help="also write the rows to OUT.json (default: stdout only)")
    args = p.parse_args(argv)
    rows = []
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, t = {args.t}")
    for n in args.n:
        x = torch.randn(n, 4, device="cuda")
        k = padded_rows((n, n), "cuda")  # the dense backend's layout (torch is indifferent to it)
        k.copy_(torch.exp(-torch.cdist(x, x).square()))
        v = torch.randn(n, args.t, device="cuda")
        vt = v.t().contiguous()
        v16 = torch.nn.functional.pad(v, (0, 16 - args.t)) if args.t < 16 else v
        ref = (k.double() @ v.double())
        upper = torch.triu(k)
        upper += torch.tril(torch.full_like(k, float("nan")), -1)  # SSYMM must not read below
        variants = {
            "K @ V": lambda: k @ v,
            "SSYMM": lambda: ssymm(upper, v),
            "(V^T K)^T": lambda: (vt @ k).t(),
            "K @ V16": lambda: k @ v16,
            "Triton stored": lambda: stored_product(k, v),
            "mv per column": lambda: torch.stack([k @ v[:, j] for j in range(args.t)], 1),
        }
        for name, fn in variants.items():
            try:
                ms = timed(fn)
                err = float(((fn()[:, : args.t].double() - ref).abs().max() / ref.abs().max()))
            except (OSError, RuntimeError, AttributeError, ValueError) as exc:  # no library, symbol, TMA
                print(f"n={n:6d} {name:14s} failed: {type(exc).__name__}: {exc}")
                rows.append(dict(n=n, t=args.t, variant=name, error=f"{type(exc).__name__}: {exc}"))
                continue
            print(f"n={n:6d} {name:14s} {ms:8.3f} ms  {k.numel() * 4 / ms / 1e9:7.2f} TB/s  rel err {err:.1e}")
            rows.append(dict(n=n, t=args.t, variant=name, milliseconds=ms,
                             bandwidth_tb_per_s=k.numel() * 4 / ms / 1e9, max_rel_error=err))
        torch.backends.cuda.matmul.allow_tf32 = True
        ms = timed(lambda: k @ v)
        err = float(((k @ v).double() - ref).abs().max() / ref.abs().max())
        print(f"n={n:6d} {'K @ V tf32':14s} {ms:8.3f} ms  {k.numel() * 4 / ms / 1e9:7.2f} TB/s  rel err {err:.1e}")
        rows.append(dict(n=n, t=args.t, variant="K @ V tf32", milliseconds=ms,
                         bandwidth_tb_per_s=k.numel() * 4 / ms / 1e9, max_rel_error=err))
        torch.backends.cuda.matmul.allow_tf32 = False
        del k, upper
        torch.cuda.empty_cache()
    if args.out:
        write_results(args.out, rows, args, device="cuda",
                      extra={"bandwidth": "bytes of the whole stored K (4 n^2) over the time"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
