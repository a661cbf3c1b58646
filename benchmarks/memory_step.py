# One exact-GP training step with the CG solver at large n on the CPU, reporting peak memory.
# Usage: python benchmarks/memory_step.py --n 50000 --d 3 [--dtype float32]
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
import flashgp as fg  # noqa: E402
from results_file import write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, metavar="OUT",
                        help="also write the record to OUT.json (default: JSON on stdout only)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.n, args.d, generator=gen, dtype=dtype) * 4
    y = torch.sin(2 * x).sum(-1) + 0.1 * torch.randn(args.n, generator=gen, dtype=dtype)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=args.d))
    model = fg.ExactGP(x, y, kernel, solver=fg.CG(tol=1.0, probes=10, precond=fg.PivotedCholesky(100)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    loss = -model.mll()
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    record = {
        "n": args.n, "d": args.d, "dtype": args.dtype, "seconds": round(seconds, 2),
        "peak_rss_gib": round(peak / 2**20, 3), "rss_before_step_gib": round(before / 2**20, 3),
        "diagnostics": {k: v for k, v in model.diagnostics.items() if k != "seconds"},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(json.dumps(record, indent=1))
    if args.out:
        write_results(args.out, [dict(record, peak_rss_bytes=peak * 1024, rss_before_step_bytes=before * 1024)],
                      args, device="cpu")


if __name__ == "__main__":
    main()
