# The gram geometry of the fused K @ V (triton_gram) against the direct one (triton_kernels):
# accuracy against float64, launch-setting sweep, and speed at large n, in one process.
# Usage: python benchmarks/gram_geometry.py --n-accuracy 20000 --n-sweep 100000 --n-large 1000000
"""Direct against gram geometry for K(z, z) @ V, d = 3 by default.

Data: z = x / lengthscale with x uniform in the unit cube (the synthetic set of
examples/large_gpu_fit.py) and, for accuracy, also z ~ N(0, 1) * 2. V (n, t) ~ N(0, 1).
Accuracy: ||KV - ref||_F / ||ref||_F and max |KV - ref| / max |ref| against K formed in float64
from the same float32 inputs; the gram rows are taken in ``spatial_order`` and, to show why, in
the given order. Speed: median of --repeats products after one warm-up (CUDA events), and the
time of ``spatial_order`` itself. Prints JSON lines; --out writes them to a file too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from benchmarks.product_accuracy import reference_terms  # noqa: E402
from flashgp.backends import triton_gram as tg  # noqa: E402
from flashgp.backends import triton_kernels as tk  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after one warm-up call (CUDA events; wall
    clock on the CPU, for a smoke test under TRITON_INTERPRET=1)."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
    return sorted(times)[len(times) // 2]


def points(kind: str, n: int, d: int, lengthscale: float, device, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "cube":
        x = torch.rand(1, n, d, generator=gen) / lengthscale
    else:
        x = torch.randn(1, n, d, generator=gen) * 2.0
    return x.to(device)


def reference(profile: str, z: torch.Tensor, v: torch.Tensor, block: int = 2048) -> torch.Tensor:
    z64, v64 = z[0].double(), v[0].double()
    out = torch.zeros(z.shape[1], v.shape[2], dtype=torch.float64, device=z.device)
    for s in range(0, z.shape[1], block):
        out[s:s + block] = reference_terms(profile, torch.cdist(z64[s:s + block], z64).pow(2))[0] @ v64
    return out


def errors(value: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = value[0].double() - ref
    return dict(fro=float(diff.norm() / ref.norm()), max=float(diff.abs().max() / ref.abs().max()))


def emit(row: dict, sink: list) -> None:
    print(json.dumps(row), flush=True)
    sink.append(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--t", type=int, default=11)
    parser.add_argument("--lengthscale", type=float, default=0.12)
    parser.add_argument("--profiles", nargs="+", default=["rbf", "matern52"])
    parser.add_argument("--precision", default="fp16x3")
    parser.add_argument("--n-accuracy", type=int, default=20_000)
    parser.add_argument("--n-sweep", type=int, default=100_000)
    parser.add_argument("--n-large", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--configs", nargs="+", default=["128,32,4,1", "256,32,8,1", "128,64,4,1",
                                                         "256,64,8,1", "256,32,8,2", "256,128,8,1"])
    parser.add_argument("--large-configs", type=int, default=2, help="best sweep configs timed at large n")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows: list[dict] = []
    d, t = args.d, args.t

    for kind in ("cube", "normal"):
        z = points(kind, args.n_accuracy, d, args.lengthscale, device, 0)
        v = torch.randn(1, z.shape[1], t, device=device)
        identity = torch.arange(z.shape[1], device=device)[None]
        for profile in args.profiles:
            ref = reference(profile, z, v)
            direct = tk.kv_matmul(z, z, v, profile, precision=args.precision)
            emit(dict(test="accuracy", data=kind, profile=profile, geometry="direct", **errors(direct, ref)), rows)
            gram = tg.gram_kv_matmul(z, z, v, profile, precision=args.precision)
            emit(dict(test="accuracy", data=kind, profile=profile, geometry="gram", **errors(gram, ref)), rows)
            unsorted = tg.gram_kv_matmul(z, z, v, profile, precision=args.precision, order=identity)
            emit(dict(test="accuracy", data=kind, profile=profile, geometry="gram, given order",
                      **errors(unsorted, ref)), rows)

    def speed(n: int, profile: str, configs: list) -> list:
        z = points("cube", n, d, args.lengthscale, device, 1)
        v = torch.randn(1, n, t, device=device)
        order = tg.spatial_order(z)
        emit(dict(test="order", n=n, seconds=timed(lambda: tg.spatial_order(z), 3)), rows)
        direct = timed(lambda: tk.kv_matmul(z, z, v, profile, precision=args.precision), args.repeats)
        emit(dict(test="speed", n=n, profile=profile, geometry="direct", seconds=direct,
                  entries_per_s=n * n / direct), rows)
        out = []
        for config in configs:
            bm, bn, nw, ns = (int(c) for c in config.split(","))
            try:
                sec = timed(lambda: tg.gram_kv_matmul(z, z, v, profile, precision=args.precision,
                                                      order=order, block_m=bm, block_n=bn,
                                                      num_warps=nw, num_stages=ns), args.repeats)
            except Exception as err:  # a launch setting the compiler rejects: record and go on
                emit(dict(test="speed", n=n, profile=profile, config=config, error=repr(err)[:300]), rows)
                continue
            emit(dict(test="speed", n=n, profile=profile, geometry="gram", config=config, seconds=sec,
                      entries_per_s=n * n / sec, vs_direct=direct / sec), rows)
            out.append((sec, config))
        return sorted(out)

    for profile in args.profiles:
        best = speed(args.n_sweep, profile, args.configs)
        for n in args.n_large:
            speed(n, profile, [c for _, c in best[:args.large_configs]])
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
