# Benchmark / diagnostic: the greedy pivoted Cholesky step by step on the large_gpu_fit data, to see
# where and why it stops (the largest remaining diagonal error against the stopping threshold).
"""Trace the greedy pivoted Cholesky of K(x, x) for the synthetic data of examples/large_gpu_fit.py.

    python benchmarks/greedy_pivots.py --n 1000000 --rank 100 --device cuda
    python benchmarks/greedy_pivots.py --n 1000000 --rank 100 --device cpu --dtype float32

Every ``--every`` steps it prints the largest remaining diagonal error, the stopping threshold
(tol * trace, tol = 1e-8), whether the error vector holds NaN or infinity, and the seconds so far.
Then it runs ``pivoted_cholesky_with_pivots`` itself and prints the rank it returns.
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
from flashgp.linalg.preconditioners import (_pivot_step, nystrom_factor,  # noqa: E402
                                             pivoted_cholesky_with_pivots)
from flashgp.operators import KernelOperator  # noqa: E402
from large_gpu_fit import synthetic  # noqa: E402
from results_file import write_results  # noqa: E402


def trace_steps(op, rank: int, every: int, tol: float = 1e-8, quiet: bool = False,
                rows: list | None = None, **labels) -> None:
    """The greedy loop of ``pivoted_cholesky_with_pivots``, printing its state every ``every`` steps
    (quiet: one line at the end, with the first step whose error vector held NaN or infinity);
    each printed line also goes to ``rows`` (if given) as a dict, with ``labels`` in it."""
    n = op.shape[-1]
    err = op.diagonal().clone().expand(*op.batch_shape, n).clone()
    trace = err.sum(-1)
    factor = torch.zeros(*op.batch_shape, n, rank, dtype=op.dtype, device=op.device)
    live = torch.ones(op.batch_shape, dtype=torch.bool, device=op.device)
    start, first_bad, first_dead = time.perf_counter(), None, None
    for m in range(rank):
        if quiet:
            if first_bad is None and not bool(torch.isfinite(err).all()):
                first_bad = m
            if first_dead is None and not bool(live.all()):
                first_dead = m
        elif m % every == 0 or m == rank - 1:
            row = dict(labels, kind="trace_step", step=m, max_error=float(err.amax()),
                       threshold=float(tol * trace), nonfinite_error=not bool(torch.isfinite(err).all()),
                       nonfinite_factor=not bool(torch.isfinite(factor[..., :m]).all()),
                       live=bool(live.all()), seconds=time.perf_counter() - start)
            print(f"    step {m}: max error {row['max_error']:.4g} (threshold {row['threshold']:.4g}), "
                  f"NaN/inf in error {row['nonfinite_error']}, NaN/inf in factor "
                  f"{row['nonfinite_factor']}, live {row['live']}, "
                  f"{row['seconds']:.2f} s", flush=True)
            if rows is not None:
                rows.append(row)
        live = live & (err.amax(-1) > tol * trace)
        live, pivot = _pivot_step(op, factor, err, m, live)
    print(f"    end: max error {float(err.amax()):.4g}, live {bool(live.all())}"
          + (f", first non-finite error at step {first_bad}, first dead step {first_dead}" if quiet else ""),
          flush=True)
    if rows is not None:
        rows.append(dict(labels, kind="trace_end", max_error=float(err.amax()), live=bool(live.all()),
                         seconds=time.perf_counter() - start,
                         **(dict(first_nonfinite_error_step=first_bad, first_dead_step=first_dead)
                            if quiet else {})))


def _timed(fn, device, repeats: int = 2) -> tuple[list[float], torch.Tensor]:
    """(seconds of each of ``repeats`` calls of fn, synchronized; fn's last result)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds, out


def time_solves(op, pivots, device) -> dict:
    """The parts of ``nystrom_factor`` for these pivots, timed one by one: the rows, the k x k
    Cholesky, the triangular solve with n right-hand sides, and the alternative of one matrix
    product with the inverse of the k x k factor (with the largest difference of the two); printed,
    and returned as a row."""
    k = pivots.shape[-1]
    row_seconds, rows = _timed(lambda: op.rows(pivots).to(torch.float64), device)
    inner = rows[..., pivots]
    inner = 0.5 * (inner + inner.transpose(-1, -2))
    inner = inner + torch.eye(k, dtype=inner.dtype, device=inner.device) * (
        k * torch.finfo(op.dtype).eps * float(inner.diagonal().max()))
    chol_seconds, chol = _timed(lambda: torch.linalg.cholesky(inner), device)
    solve_seconds, white = _timed(lambda: torch.linalg.solve_triangular(chol, rows, upper=False), device)
    eye = torch.eye(k, dtype=chol.dtype, device=chol.device)
    inverse_seconds, white_inv = _timed(
        lambda: torch.linalg.solve_triangular(chol, eye, upper=False) @ rows, device)
    diff = float((white - white_inv).abs().max() / white.abs().max())
    fmt = lambda s: ", ".join(f"{t:.4f}" for t in s)  # noqa: E731
    print(f"  k={k}: rows {fmt(row_seconds)} s; cholesky {fmt(chol_seconds)} s; solve_triangular "
          f"{fmt(solve_seconds)} s; inverse @ rows {fmt(inverse_seconds)} s (max relative "
          f"difference {diff:.2e})", flush=True)
    return dict(kind="solve_timing", k=k, rows_seconds=row_seconds, cholesky_seconds=chol_seconds,
                solve_triangular_seconds=solve_seconds, inverse_matmul_seconds=inverse_seconds,
                max_rel_difference=diff)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--rank", type=int, default=100)
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--backend", default="auto", choices=fg.backends.BACKENDS)
    parser.add_argument("--lengthscale", type=float, nargs="+", default=[0.1818, 0.1615, 0.1794])
    parser.add_argument("--outputscale", type=float, default=1.6409)
    parser.add_argument("--grid-lengthscales", type=float, nargs="*", default=[],
                        help="isotropic lengthscales to trace quietly, one run per (lengthscale, "
                             "--grid-outputscales entry), after the main trace")
    parser.add_argument("--grid-outputscales", type=float, nargs="*", default=[1.0])
    parser.add_argument("--nystrom-ks", type=int, nargs="*", default=[],
                        help="time nystrom_factor (the rebuild of a reused preconditioner) on the "
                             "first k pivots of the greedy run, for each k")
    parser.add_argument("--solve-ks", type=int, nargs="*", default=[],
                        help="time the float64 triangular solve of nystrom_factor (k x k factor, n "
                             "right-hand sides) against multiplying by the factor's inverse, per k")
    parser.add_argument("--profile", action="store_true",
                        help="a torch.profiler table of each --nystrom-ks rebuild")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, metavar="OUT",
                        help="also write the rows to OUT.json (default: stdout only)")
    args = parser.parse_args(argv)
    rows = []
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    x, _ = synthetic(args.n, len(args.lengthscale), 0.1, device, dtype, args.seed)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=x.shape[-1])).to(device=device, dtype=dtype)
    with torch.no_grad():
        kernel.base.lengthscale = torch.tensor([args.lengthscale], dtype=dtype, device=device)
        kernel.outputscale = torch.tensor(args.outputscale, dtype=dtype, device=device)
    op = KernelOperator(kernel, x, backend=args.backend)
    print(f"n={args.n}, {dtype}, {device}, backend {op.backend}, rank {args.rank}", flush=True)
    trace_steps(op, args.rank, args.every, rows=rows)
    start = time.perf_counter()
    factor, pivots, counts = pivoted_cholesky_with_pivots(op, args.rank)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    print(f"  pivoted_cholesky_with_pivots: rank {factor.shape[-1]}, counts {counts.tolist()}, "
          f"{seconds:.2f} s", flush=True)
    rows.append(dict(kind="pivoted_cholesky_with_pivots", rank=factor.shape[-1], counts=counts.tolist(),
                     seconds=seconds))
    for k in args.nystrom_ks:
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            rebuilt = nystrom_factor(op, pivots[..., :k])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
        print(f"  nystrom_factor on the first {k} pivots: {'failed' if rebuilt is None else 'ok'}, "
              f"seconds {', '.join(f'{t:.4f}' for t in seconds)}", flush=True)
        rows.append(dict(kind="nystrom_factor", k=k, ok=rebuilt is not None, seconds=seconds))
        if args.profile:
            activities = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with torch.profiler.profile(activities=activities) as prof:
                nystrom_factor(op, pivots[..., :k])
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
            print(prof.key_averages().table(sort_by=sort, row_limit=12), flush=True)
    for k in args.solve_ks:
        rows.append(time_solves(op, pivots[..., :k], device))
    for lengthscale in args.grid_lengthscales:
        for outputscale in args.grid_outputscales:
            with torch.no_grad():
                kernel.base.lengthscale = torch.full((1, x.shape[-1]), lengthscale, dtype=dtype, device=device)
                kernel.outputscale = torch.tensor(outputscale, dtype=dtype, device=device)
            rank = pivoted_cholesky_with_pivots(KernelOperator(kernel, x, backend=args.backend),
                                                args.rank)[0].shape[-1]
            print(f"  lengthscale {lengthscale}, outputscale {outputscale}: rank {rank}", flush=True)
            rows.append(dict(kind="grid", lengthscale=lengthscale, outputscale=outputscale, rank=rank))
            if rank < args.rank:
                trace_steps(KernelOperator(kernel, x, backend=args.backend), args.rank, args.every, quiet=True,
                            rows=rows, lengthscale=lengthscale, outputscale=outputscale)
    if args.out:
        write_results(args.out, rows, args, device=device, extra={"backend": op.backend})


if __name__ == "__main__":
    main()
