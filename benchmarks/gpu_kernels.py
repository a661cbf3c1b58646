# Throughput of the fused Triton kernels (K @ V, bilinear gradient) against the blocked torch backend
# in kernel entries per second. Usage: python benchmarks/gpu_kernels.py [--quick] [--n 100000 1000000]
"""Benchmark of flashgp's fused GPU kernels.

For each n, d, t and precision it times, on one GPU:
  matmul  fused K @ V (``fused_matmul``), V of shape (n, t); entries/s = n * n / seconds;
  grad    the fused bilinear gradient (``fused_bilinear_grad``) of sum_i u_i^T K v_i with respect
          to the kernel hyperparameters, u, v of shape (n, t); entries/s = n * n / seconds (one
          pass over the n x n entries with 2t columns, since K(x, x) is symmetric);
and the blocked torch backend (``KernelOperator(backend="blocked")``) for both, unless
--skip-blocked or n > --blocked-max-n. Timings: CUDA events after warmup (which includes Triton's
compilation), the median of --repeats runs (3 when one run takes over a second). At n = 1M the
full sweep takes many minutes: split it (--d, --t, --precisions, --ops) where commands are time
limited. Relative errors
are max|x - ref| / max|ref| against the blocked result, or against fused fp32 without one (for
grad: over all hyperparameter gradients together). Peak MiB: torch.cuda.max_memory_allocated.
Writes <out>.json (with device name and versions) and <out>.md. Needs no network.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from flashgp.backends.fused import PRECISIONS, fused_bilinear_grad, fused_matmul, fused_parts  # noqa: E402
from flashgp.kernels import RBF, RQ, Matern, Scale  # noqa: E402
from flashgp.operators import KernelOperator  # noqa: E402

KERNELS = {
    "rbf": lambda d: Scale(RBF(ard_dims=d)),
    "matern12": lambda d: Scale(Matern(nu=0.5, ard_dims=d)),
    "matern32": lambda d: Scale(Matern(nu=1.5, ard_dims=d)),
    "matern52": lambda d: Scale(Matern(nu=2.5, ard_dims=d)),
    "rq": lambda d: Scale(RQ(ard_dims=d)),
}


def timed(fn, device: torch.device, warmup: int, repeats: int) -> tuple[float, object]:
    """(median seconds of ``repeats`` calls after ``warmup`` calls, the last result)."""
    out, last = None, 0.0
    for _ in range(warmup):  # the first call compiles; the last one tells the cost of a run
        start = time.perf_counter()
        out = fn()
        sync(device)
        last = time.perf_counter() - start
    if last > 1.0:
        repeats = min(repeats, 3)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            out = fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            begin_s = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - begin_s)
    return statistics.median(times), out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(value, ref) -> float | None:
    if ref is None:
        return None
    value = torch.cat([v.reshape(-1) for v in value]) if isinstance(value, (tuple, list)) else value
    ref = torch.cat([r.reshape(-1) for r in ref]) if isinstance(ref, (tuple, list)) else ref
    return float((value.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30))


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def bench_case(kernel, x, t, args, device, blocked: bool) -> list[dict]:
    """Rows for one (n, d, t): blocked, then fused at each precision, for matmul and grad."""
    n = x.shape[0]
    gen = torch.Generator(device=device).manual_seed(1)
    v = torch.randn(n, t, device=device, generator=gen)
    u = torch.randn(n, t, device=device, generator=gen)
    params = [p for p in kernel.parameters() if p.requires_grad]
    parts = fused_parts(kernel)
    rows, refs = [], {}
    candidates = [("blocked", None)] if blocked else []
    candidates += [("triton", p) for p in args.precisions]
    for backend, precision in candidates:
        for op_name in args.ops:
            if backend == "blocked":
                op = KernelOperator(kernel, x, backend="blocked")
                fn = (lambda: op.matmul(v)) if op_name == "matmul" else (lambda: op.bilinear_grad(u, v))
            elif op_name == "matmul":
                fn = lambda: fused_matmul(kernel, x, None, v, precision)  # noqa: E731
            else:
                fn = lambda: fused_bilinear_grad(parts, x, None, u, v, params, precision)  # noqa: E731
            reset_peak(device)
            seconds, out = timed(fn, device, args.warmup, args.repeats)
            key = (op_name, "blocked" if backend == "blocked" else precision)
            ref = refs.get((op_name, "blocked"), refs.get((op_name, "fp32")))
            refs[key] = out
            rows.append(dict(n=n, d=x.shape[1], t=t, op=op_name, backend=backend,
                             precision=precision or "fp32 (torch)", seconds=seconds,
                             entries_per_s=n * n / seconds, rel_err=rel_err(out, ref),
                             peak_mib=peak_mib(device)))
            print(format_row(rows[-1]), flush=True)
    for row in rows:  # speedup over blocked at equal op
        base = next((r for r in rows if r["op"] == row["op"] and r["backend"] == "blocked"), None)
        row["speedup_vs_blocked"] = None if base is None else base["seconds"] / row["seconds"]
    return rows


def format_row(row: dict) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)
    return (f"| {row['n']} | {row['d']} | {row['t']} | {row['op']} | {row['backend']} "
            f"| {row['precision']} | {row['seconds']:.4g} | {row['entries_per_s']:.3g} "
            f"| {fmt(row.get('speedup_vs_blocked'), '.1f')} | {fmt(row['rel_err'], '.1e')} "
            f"| {fmt(row['peak_mib'], '.0f')} |")


HEADER = ("| n | d | t | op | backend | precision | seconds | entries/s | speedup vs blocked | rel err "
          "| peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|")


def environment(device: torch.device) -> dict:
    import triton
    info = dict(torch=torch.__version__, triton=triton.__version__, python=platform.python_version(),
                cuda=torch.version.cuda, device_type=device.type)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device=props.name, sm_count=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    capability=list(torch.cuda.get_device_capability(device)))
    else:
        info.update(device=platform.processor() or "cpu (Triton interpreter)")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--d", type=int, nargs="+", default=[3, 8, 20])
    parser.add_argument("--t", type=int, nargs="+", default=[1, 11, 33])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32x3", "tf32"],
                        choices=list(PRECISIONS))
    parser.add_argument("--kernel", default="matern52", choices=sorted(KERNELS))
    parser.add_argument("--skip-blocked", action="store_true", help="do not time the blocked backend")
    parser.add_argument("--blocked-max-n", type=int, default=100_000,
                        help="time the blocked backend only up to this n (default 100000)")
    parser.add_argument("--ops", nargs="+", default=["matmul", "grad"], choices=["matmul", "grad"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: n=20000, d=3, t=11, 1 warmup, 3 repeats")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu with TRITON_INTERPRET=1")
    parser.add_argument("--out", default="results/gpu_kernels",
                        help="output path prefix: writes PREFIX.json and PREFIX.md (default results/gpu_kernels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.n, args.d, args.t, args.warmup, args.repeats = [20_000], [3], [11], 1, 3
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device "
                     "(use --device cpu with TRITON_INTERPRET=1 for a smoke run)")
    env = environment(device)
    print(json.dumps(env), flush=True)
    print(HEADER, flush=True)
    rows = []
    for n in args.n:
        for d in args.d:
            gen = torch.Generator(device=device).manual_seed(args.seed)
            x = torch.rand(n, d, device=device, generator=gen) * 4
            kernel = KERNELS[args.kernel](d).to(device)
            for t in args.t:
                blocked = not args.skip_blocked and n <= args.blocked_max_n
                rows += bench_case(kernel, x, t, args, device, blocked)
    table = "\n".join([HEADER] + [format_row(r) for r in rows])
    title = f"fused kernels, {args.kernel}, {env['device']}, torch {env['torch']}, triton {env['triton']}"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text(f"# {title}\n\n{table}\n")
    Path(args.out + ".json").write_text(json.dumps(dict(environment=env, kernel=args.kernel, args=vars(args),
                                                        rows=rows), indent=1))
    print(f"\n{table}\n\nwrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
