# Benchmark: time of local (nearest-neighbour) predictive variances, split into the neighbour
# search and the k x k factorizations, on the synthetic data of examples/large_gpu_fit.py.
"""Seconds of ``models.local_variance`` for m test points against n training points.

    python benchmarks/local_variance_speed.py --n 1000000 --test 100000 --neighbors 64 128 256
    python benchmarks/local_variance_speed.py --device cpu --n 20000 --test 2000 --neighbors 64

For each k: the neighbour search alone (``nearest_neighbors``, which takes the grid search for
d = 3 from 20,000 points on, and, unless --no-blocked, the blocked search over all points beside
it), then the whole ``local_variances`` (search included), each timed twice after one warm-up
call at the smallest k; and the median relative change of the variances from the previous k (nested neighbour sets:
the variances only fall with k). Kernel: Matern 5/2 with the 1M fit's final hyperparameters.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "examples", REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import flashgp as fg  # noqa: E402
from flashgp.models import local_variance as lv  # noqa: E402
from flashgp.linalg import neighbors as nb  # noqa: E402
from large_gpu_fit import synthetic  # noqa: E402
from results_file import write_results  # noqa: E402


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--test", type=int, default=100_000)
    parser.add_argument("--neighbors", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-blocked", action="store_true", help="skip timing the blocked search")
    parser.add_argument("--out", default=None, metavar="OUT",
                        help="also write the rows to OUT.json (default: stdout only)")
    args = parser.parse_args(argv)
    rows = []
    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cuda" else torch.float64
    x, _ = synthetic(args.n + args.test, 3, 0.1, device, dtype, args.seed)
    x_train, x_test = x[:args.n], x[args.n:]
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=3)).to(device=device, dtype=dtype)
    with torch.no_grad():
        kernel.base.lengthscale = torch.tensor([[0.1181, 0.1075, 0.1265]], device=device, dtype=dtype)
        kernel.outputscale = torch.tensor(1.9793, device=device, dtype=dtype)
    noise = torch.full((args.n,), 0.008908, device=device, dtype=dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"n={args.n}, test {args.test}, {dtype}, {name}", flush=True)
    lv.local_variances(kernel, x_train, noise, x_test[:1000], min(args.neighbors))  # warm-up
    previous = None
    for k in args.neighbors:
        z_train, z_test = lv.search_inputs(kernel, x_train), lv.search_inputs(kernel, x_test)
        search = [timed(lambda: nb.nearest_neighbors(z_train, z_test, k), device)[1] for _ in range(2)]
        blocked = [] if args.no_blocked else \
            [timed(lambda: nb.blocked_neighbors(z_train, z_test, k), device)[1] for _ in range(2)]
        runs = [timed(lambda: lv.local_variances(kernel, x_train, noise, x_test, k), device) for _ in range(2)]
        (var, info), _ = runs[-1]
        median_change = None if previous is None else float(((previous - var) / (var + 0.008908)).median())
        change = "" if previous is None else f", median change from the previous k {median_change:.3g}"
        print(f"  k={k}: search {search[0]:.3f} / {search[1]:.3f} s"
              + (f" (blocked over all points {blocked[0]:.3f} / {blocked[1]:.3f} s)" if blocked else "")
              + ", local_variances "
              f"{runs[0][1]:.3f} / {runs[1][1]:.3f} s, variance_local_change "
              f"{info.change:.3g}{change}", flush=True)
        rows.append(dict(neighbors=k, search_seconds=search, blocked_search_seconds=blocked or None,
                         local_variances_seconds=[r[1] for r in runs],
                         variance_local_change=info.change, local_jitter_points=info.jitter_points,
                         median_change_from_previous_k=median_change))
        previous = var
    extra = {"dtype": str(dtype).removeprefix("torch.")}
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
        extra["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    if args.out:
        write_results(args.out, rows, args, device=device, extra=extra)


if __name__ == "__main__":
    main()
