# Block-size sweep for the fused Triton kernels on one GPU: which (BLOCK_M, BLOCK_N, num_warps,
# num_stages) is fastest per (op, d, t, precision). Usage: python benchmarks/tune_kernels.py --out DIR
"""Sweep of launch configurations for ``triton_kernels.kv_matmul`` and ``row_grad``.

Ops: matmul (kv_matmul), grad (row_grad on t columns), grad_xx (row_grad on [u v], [v u]: the
K(x, x) gradient pass that does not use symmetry), sym_matmul and sym_grad (the symmetric
kernels of ``triton_symmetric``; their entries per second count all n^2 entries served),
dense_matmul (``triton_dense.stored_kv_matmul`` on a stored K(z, z), which the dense backend
runs on GPUs with TMA, timed beside cuBLAS's (v^T K)^T on the same matrix, which it runs
elsewhere; the matrix, its rows padded to a multiple of 16 floats, takes about 4 n^2 bytes).

For every op, d, t and precision given, times each configuration of the grid below with
``triton.testing.do_bench`` (median, after warm-up; compilation is excluded) on fresh random
inputs z1 = z2 (n, d) ~ N(0, 1) / sqrt(d) and v (n, t) ~ N(0, 1), and checks each result
against the default configuration's (max relative difference), so a configuration that computes
something else is flagged instead of timed as a winner. Configurations that fail to compile or
run (e.g. out of shared memory) are recorded with their error. Writes DIR/tune.json and prints
the best configuration per case and its kernel entries per second (n^2 / seconds).

--baseline FILE times another copy of triton_kernels.py (e.g. ``git show
HEAD~3:flashgp/backends/triton_kernels.py > old.py``) with its own default configurations on the
same inputs, in the same process, and prints it beside the default of the current one; for the
sym ops, FILE is a copy of triton_symmetric.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from flashgp.backends import triton_kernels as tk  # noqa: E402
from flashgp.backends import triton_symmetric as ts  # noqa: E402

GRID = dict(block_m=(64, 128, 256), block_n=(32, 64, 128), num_warps=(4, 8), num_stages=(1, 2, 3))


def load_module(path: str):
    """A copy of triton_kernels.py loaded from ``path`` as a module of its own, inside the
    flashgp.backends package (so its relative imports, e.g. of triton_entry, find this checkout's
    modules)."""
    spec = importlib.util.spec_from_file_location("flashgp.backends._baseline_triton_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_case(op, n, d, t, precision, grid, seed=0, baseline=None, profile="rbf"):
    import triton.testing

    gen = torch.Generator(device="cuda").manual_seed(seed)
    z = torch.randn(1, n, d, device="cuda", generator=gen) / d ** 0.5
    v = torch.randn(1, n, t, device="cuda", generator=gen)
    u = torch.randn(1, n, t, device="cuda", generator=gen)
    alpha = torch.full((1,), 1.5, device="cuda") if profile == "rq" else None
    if op == "dense_matmul":  # a stored K(z, z) (4 n^2 bytes), and cuBLAS on it as the reference
        from flashgp.backends import triton_dense
        kd = triton_dense.dense_profile(z, z, profile, alpha=alpha, derivative=False)[0]  # padded rows

    def call(module=tk, **cfg):
        if op == "dense_matmul":  # module "cublas": what the dense backend runs, (v^T K)^T
            if module == "cublas":
                return (v.transpose(-1, -2) @ kd).transpose(-1, -2)
            return triton_dense.stored_kv_matmul(kd, v, precision=precision, **cfg)
        if op == "matmul":
            return module.kv_matmul(z, z, v, profile, alpha, precision=precision, **cfg)
        sym = module if hasattr(module, "sym_kv_matmul") else ts  # a triton_symmetric.py baseline
        if op == "sym_matmul":
            return sym.sym_kv_matmul(z, v, profile, alpha, precision=precision, **cfg)
        if op == "grad_xx":  # the K(x, x) gradient pass without symmetry: W + W^T = [u v] [v u]^T
            return module.row_grad(z, z, torch.cat([u, v], -1), torch.cat([v, u], -1), profile, alpha,
                                   precision=precision, **cfg)[1]
        if op == "sym_grad":
            return sym.sym_param_grad(z, u, v, profile, alpha, precision=precision, **cfg)[0]
        return module.row_grad(z, z, u, v, profile, alpha, precision=precision, **cfg)[1]

    def timed_row(row, module=tk, **cfg):
        try:
            out = call(module, **cfg)
            torch.cuda.synchronize()
            row["rel_diff"] = float((out - reference).abs().max() / reference.abs().max())
            ms = triton.testing.do_bench(lambda: call(module, **cfg), warmup=25, rep=100,
                                         return_mode="median")
            row["seconds"] = ms / 1e3
            row["entries_per_s"] = n * n / row["seconds"]
        except Exception as err:  # noqa: BLE001 - a configuration that cannot run is a result too
            row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        return row

    reference = call()
    case = dict(op=op, n=n, d=d, t=t, precision=precision, profile=profile)
    rows = [timed_row(dict(case, version="current", default=True))]
    if baseline is not None:
        rows.append(timed_row(dict(case, version="baseline", default=True), baseline))
    if op == "dense_matmul":
        rows.append(timed_row(dict(case, version="cublas", default=True), "cublas"))
    for values in itertools.product(*grid.values()):
        cfg = dict(zip(grid.keys(), values))
        rows.append(timed_row(dict(case, version="current", **cfg), **cfg))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, nargs="+", default=[3])
    parser.add_argument("--t", type=int, nargs="+", default=[11])
    parser.add_argument("--ops", nargs="+", default=["matmul", "grad"],
                        choices=["matmul", "grad", "grad_xx", "sym_matmul", "sym_grad", "dense_matmul"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32x3", "tf32"])
    parser.add_argument("--block-m", type=int, nargs="+", default=list(GRID["block_m"]))
    parser.add_argument("--block-n", type=int, nargs="+", default=list(GRID["block_n"]))
    parser.add_argument("--num-warps", type=int, nargs="+", default=list(GRID["num_warps"]))
    parser.add_argument("--num-stages", type=int, nargs="+", default=list(GRID["num_stages"]))
    parser.add_argument("--profile", default="rbf", choices=list(tk.PROFILES),
                        help="stationary profile of the kernel (default rbf; rq with alpha = 1.5)")
    parser.add_argument("--baseline", help="another triton_kernels.py (sym ops: triton_symmetric.py) "
                                           "to time beside this one")
    parser.add_argument("--out", default="tune_out")
    args = parser.parse_args(argv)
    baseline = load_module(args.baseline) if args.baseline else None
    grid = dict(block_m=args.block_m, block_n=args.block_n, num_warps=args.num_warps,
                num_stages=args.num_stages)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    start = time.perf_counter()
    for op, d, t, precision in itertools.product(args.ops, args.d, args.t, args.precisions):
        rows = run_case(op, args.n, d, t, precision, grid, baseline=baseline, profile=args.profile)
        results.extend(rows)
        for row in [r for r in rows if r.get("default")]:
            print(f"{op:6s} n={args.n} d={d:3d} t={t:3d} {precision:6s} default of "
                  f"{row['version']:8s} " + (f"{row['seconds'] * 1e3:8.3f} ms "
                  f"{row['entries_per_s']:.3e}/s" if "seconds" in row else row["error"]), flush=True)
        ok = [r for r in rows if "seconds" in r and r["rel_diff"] < 1e-2 and "default" not in r]
        best = min(ok, key=lambda r: r["seconds"]) if ok else None
        bad = sum("error" in r for r in rows)
        if best:
            print(f"{op:6s} n={args.n} d={d:3d} t={t:3d} {precision:6s} best "
                  f"m={best['block_m']} n={best['block_n']} w={best['num_warps']} s={best['num_stages']}"
                  f" {best['seconds'] * 1e3:8.3f} ms {best['entries_per_s']:.3e}/s ({bad} failed)",
                  flush=True)
        else:
            print(f"{op} d={d} t={t} {precision}: no configuration ran", flush=True)
        (out / "tune.json").write_text(json.dumps(dict(
            device=torch.cuda.get_device_name(), torch=torch.__version__,
            triton=__import__("triton").__version__, command=" ".join(sys.argv),
            seconds=time.perf_counter() - start, rows=results), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
