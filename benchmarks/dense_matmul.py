# Which layout makes the dense backend's skinny product K @ V (K n x n stored, V n x t) fastest on a
# GPU: the bandwidth each variant reaches. Usage: python benchmarks/dense_matmul.py [--n 15000 36000]
"""Times K @ V for a stored symmetric float32 K in several layouts: K @ V, (V^T K)^T (K is
symmetric), V padded to 16 columns, and with TF32 allowed; prints ms per product and the
effective bandwidth (bytes of K read per second)."""
from __future__ import annotations

import argparse

import torch


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
    args = p.parse_args(argv)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, t = {args.t}")
    for n in args.n:
        x = torch.randn(n, 4, device="cuda")
        k = torch.exp(-torch.cdist(x, x).square())
        v = torch.randn(n, args.t, device="cuda")
        vt = v.t().contiguous()
        v16 = torch.nn.functional.pad(v, (0, 16 - args.t)) if args.t < 16 else v
        ref = (k.double() @ v.double())
        variants = {
            "K @ V": lambda: k @ v,
            "(V^T K)^T": lambda: (vt @ k).t(),
            "K @ V16": lambda: k @ v16,
            "mv per column": lambda: torch.stack([k @ v[:, j] for j in range(args.t)], 1),
        }
        for name, fn in variants.items():
            ms = timed(fn)
            err = float(((fn()[:, : args.t].double() - ref).abs().max() / ref.abs().max()))
            print(f"n={n:6d} {name:14s} {ms:8.3f} ms  {k.numel() * 4 / ms / 1e9:7.2f} TB/s  rel err {err:.1e}")
        torch.backends.cuda.matmul.allow_tf32 = True
        ms = timed(lambda: k @ v)
        err = float(((k @ v).double() - ref).abs().max() / ref.abs().max())
        print(f"n={n:6d} {'K @ V tf32':14s} {ms:8.3f} ms  {k.numel() * 4 / ms / 1e9:7.2f} TB/s  rel err {err:.1e}")
        torch.backends.cuda.matmul.allow_tf32 = False
        del k
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
