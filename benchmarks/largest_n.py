# Benchmark: peak memory and time per CG iteration of truncated exact-GP training steps at growing n,
# up to the first n that runs out of memory (the "largest n that fits one GPU" question).
"""Truncated training steps (a few CG iterations, then the gradient pass) at each n.

    python benchmarks/largest_n.py --n 1000000 2000000 4000000 8000000 --iters 2
    python benchmarks/largest_n.py --device cpu --n 2000 4000 --iters 2     # a smoke run

A full step at n = 1M takes 20 or more CG iterations (20-63 a step with pivoted Cholesky in the
1M fit of benchmarks/million_fit_parameters.json, its "steps"), so a full step at several million
points takes many minutes. This script runs ``--iters`` iterations
(``CG(lanczos_iters=iters, max_iters=iters)``: the solves are not converged, which is expected
and silenced here), then the backward pass. It reports per n the seconds of the mll and of the
backward, the seconds per CG iteration (mll seconds minus the preconditioner build, over the
iterations) and the peak memory (``torch.cuda.max_memory_allocated``). Peak memory does not
depend on the iteration count (CG keeps a fixed number of (n, t) tensors), so it is that of a
full step. An untimed step at ``--warmup-n`` points comes first (Triton compiles its kernels
there; on an H200 the first n, without it, took 2.1 s per iteration at 1M against 1.06 s after a
step at 200,000; a 20,000-point warm-up ran the dense backend and left 1.29 s). Each n runs in
the same process after ``torch.cuda.empty_cache()``; the first n that raises an out-of-memory
error is reported and ends the run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "examples"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import flashgp as fg  # noqa: E402
from large_gpu_fit import synchronize, synthetic  # noqa: E402


def truncated_step(n: int, args, device) -> dict:
    """One mll + backward at n points with ``args.iters`` CG iterations; timings and peak memory."""
    dtype = torch.float32 if device.type == "cuda" else torch.float64
    x, y = synthetic(n, args.d, 0.1, device, dtype, args.seed)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=args.d, lengthscale=0.3))
    solver = fg.CG(tol=1.0, lanczos_iters=args.iters, max_iters=args.iters, backend=args.backend,
                   precision=args.precision, precond=fg.PivotedCholesky(args.precond_rank))
    model = fg.ExactGP(x, y, kernel, solver=solver)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fg.NumericalWarning)  # unconverged by design
        loss = -model.mll()
        synchronize(device)
        forward = time.perf_counter() - start
        loss.backward()
    synchronize(device)
    d = model.diagnostics
    out = {"n": n, "d": args.d, "precision": d.get("precision"), "backend": d.get("backend"),
           "cg_iterations": d["cg_iterations"], "precond_rank": d["precond_rank"],
           "precond_seconds": round(d["precond_seconds"], 3), "mll_seconds": round(forward, 3),
           "backward_seconds": round(time.perf_counter() - start - forward, 3),
           "seconds_per_cg_iteration": round((forward - d["precond_seconds"]) / d["cg_iterations"], 4)}
    if device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", required=True, help="training sizes, ascending")
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--iters", type=int, default=2, help="CG iterations per step (default 2)")
    parser.add_argument("--precond-rank", type=int, default=100)
    parser.add_argument("--backend", default="auto", choices=fg.backends.BACKENDS)
    parser.add_argument("--precision", default="tf32x3", choices=fg.backends.PRECISIONS)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-n", type=int, default=200000,
                        help="an untimed step at this n first, so that the first timed n does not "
                             "carry the kernels' compilation (0: none; it must be large enough for "
                             "the backend of the timed runs: at 20,000 'auto' picks dense)")
    parser.add_argument("--out", default=None, help="write the results as JSON here too")
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error("--iters: expected at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    results = []
    if args.warmup_n > 0:
        truncated_step(args.warmup_n, args, device)
    for n in args.n:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            result = truncated_step(n, args, device)
        except torch.OutOfMemoryError as err:
            result = {"n": n, "error": f"out of memory: {str(err).splitlines()[0][:300]}"}
        results.append(result)
        print(json.dumps(result), flush=True)
        if "error" in result:
            break
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=1))


if __name__ == "__main__":
    main()
