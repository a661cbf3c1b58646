# The CPU engine: kernel-product throughput against the plain torch loop and the machine's limits,
# the implementations weighed for the fused CPU kernels, and memory per phase of a training step.
"""Benchmark the fused CPU backend (``backend="cpu"``) on this machine's CPU.

Parts (``--parts``, comma-separated):

* ``limits``: the CPU's float32 exp rate (torch's vectorized exp over an L2-resident buffer) and
  FMA rate (a 2048 x 2048 float32 matrix product: n^3 FMAs), per second with all threads.
* ``throughput``: K @ V (t columns) and the bilinear gradient (all hyperparameters) of
  Scale(RBF, ARD) at each ``--sizes`` n, d = ``--d``: the fused CPU backend, the blocked torch
  backend (``--blocked-max``), the dense backend's product with K stored (``--dense-max``; its
  build timed apart), and the plain torch loop of 2,048-row blocks (cdist, exp, matmul).
* ``choice``: the same K @ V by the implementations weighed for the fused kernels: torch.compile'd
  tiles (first call and steady state) and numba (where it is installed).
* ``phases``: one training step of an exact GP (Matern 5/2 ARD, CG tol 1, 10 probes, pivoted
  Cholesky of ``--rank``) at each ``--phase-sizes`` n, then predictions for 1,000 points: seconds and
  peak resident memory of each phase (preconditioner build, forward (mBCG + SLQ), backward,
  prediction cache (the mean solve), predictive mean and variance).

Example: python benchmarks/cpu_engine.py --parts limits,throughput,choice --sizes 10000,20000
--out benchmarks/results/cpu/throughput
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
import flashgp as fg  # noqa: E402
from flashgp.operators import KernelOperator  # noqa: E402
from results_file import write_results  # noqa: E402
from uci import PeakRSS  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, object]:
    """(fastest seconds over ``repeats`` calls after one warm-up call, the last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def limits(args) -> list[dict]:
    buf = torch.rand(1 << 16) * -10
    out = torch.empty_like(buf)
    reps = 2000

    def exps():
        for _ in range(reps):
            torch.exp(buf, out=out)
    sec, _ = best_of(exps, 3)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    sec_mm, _ = best_of(lambda: a @ b, 5)
    return [{"part": "limits", "what": "exp float32 (torch, vectorized)", "per_second": reps * buf.numel() / sec},
            {"part": "limits", "what": "FMA float32 (2048^3 matrix product)", "per_second": 2048 ** 3 / sec_mm}]


def plain_loop(x, v, lengthscale, block=2048):
    """The obvious torch code: K @ V in 2,048-row blocks by cdist, exp and matmul."""
    z = x / lengthscale
    return torch.cat([torch.cdist(z[s:s + block], z).square_().mul_(-0.5).exp_() @ v
                      for s in range(0, z.shape[0], block)])


def problem(n, d, t, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=dtype) * 4
    v = torch.randn(n, t, generator=g, dtype=dtype)
    kernel = fg.kernels.Scale(fg.kernels.RBF(ard_dims=d)).to(dtype)
    return x, v, kernel


def throughput(args) -> list[dict]:
    rows = []
    for n in args.sizes:
        x, v, kernel = problem(n, args.d, args.t)
        u = torch.randn_like(v)
        entries = n * n

        def record(impl, op, sec, **extra):
            rows.append({"part": "throughput", "n": n, "d": args.d, "t": args.t, "impl": impl, "op": op,
                         "seconds": sec, "entries_per_second": entries / sec, **extra})
            print(json.dumps(rows[-1]), flush=True)
        for backend in ("cpu", "blocked", "dense"):
            limit = {"cpu": math.inf, "blocked": args.blocked_max, "dense": args.dense_max}[backend]
            if n > limit:
                continue
            start = time.perf_counter()
            op = KernelOperator(kernel, x, backend=backend)
            if backend == "dense":
                op._dense_matrix()
            built = time.perf_counter() - start
            sec, _ = best_of(lambda: op.matmul(v), args.repeats)
            record(backend, "K @ V", sec, **({"build_seconds": built} if backend == "dense" else {}))
            sec, _ = best_of(lambda: op.bilinear_grad(u, v), args.repeats)
            record(backend, "bilinear gradient", sec)
        ls = kernel.base.lengthscale.detach()
        sec, _ = best_of(lambda: plain_loop(x, v, ls), args.repeats)
        record("plain torch loop", "K @ V", sec)
    return rows


def choice(args) -> list[dict]:
    """K @ V (RBF, unit lengthscale) by the implementations weighed for the fused kernels."""
    rows = []
    for n in args.sizes:
        x, v, kernel = problem(n, args.d, args.t)

        def record(impl, sec, first=None):
            rows.append({"part": "choice", "n": n, "impl": impl, "seconds": sec,
                         "entries_per_second": n * n / sec, "first_call_seconds": first})
            print(json.dumps(rows[-1]), flush=True)
        from flashgp.backends import cpu_fused
        sec, _ = best_of(lambda: cpu_fused.kv_matmul(x[None], x[None], v[None], "rbf"), args.repeats)
        record("compiled C (cpu_fused.kv_matmul)", sec)

        def tile(a, b, w):
            return torch.exp(-0.5 * (a[:, None, :] - b[None, :, :]).square().sum(-1)) @ w
        compiled = torch.compile(tile, dynamic=False)

        def by_tiles(rows_per_tile=256):
            return torch.cat([compiled(x[s:s + rows_per_tile], x, v) for s in range(0, n, rows_per_tile)])
        start = time.perf_counter()
        by_tiles()
        first = time.perf_counter() - start
        sec, _ = best_of(by_tiles, args.repeats)
        record(f"torch.compile tiles of 256 rows (torch {torch.__version__})", sec, first)
        if importlib.util.find_spec("numba") is None:
            rows.append({"part": "choice", "n": n, "impl": "numba", "error": "not installed"})
            continue
        sec, first = numba_kv(x.numpy(), v.numpy(), args.repeats)
        import numba
        record(f"numba {numba.__version__} (prange rows, math.exp)", sec, first)
    return rows


def numba_kv(z, v, repeats):
    import numba
    import numpy as np

    @numba.njit(parallel=True, fastmath=True)
    def kv(z1, z2t, vt, out):
        n1, dims = z1.shape
        t, n2 = vt.shape
        for i in numba.prange(n1):
            kb = np.empty(256, np.float32)
            acc = np.zeros(t, np.float32)
            for j0 in range(0, n2, 256):
                m = min(256, n2 - j0)
                for j in range(m):
                    s = np.float32(0)
                    for k in range(dims):
                        diff = z1[i, k] - z2t[k, j0 + j]
                        s += diff * diff
                    kb[j] = math.exp(np.float32(-0.5) * s)
                for c in range(t):
                    s = np.float32(0)
                    for j in range(m):
                        s += kb[j] * vt[c, j0 + j]
                    acc[c] += s
            out[i, :] = acc
    numba.set_num_threads(torch.get_num_threads())
    zt, vt, out = np.ascontiguousarray(z.T), np.ascontiguousarray(v.T), np.empty((z.shape[0], v.shape[1]), np.float32)
    start = time.perf_counter()
    kv(z, zt, vt, out)
    first = time.perf_counter() - start
    sec, _ = best_of(lambda: kv(z, zt, vt, out), repeats)
    return sec, first


def phases(args) -> list[dict]:
    rows = []
    for n in args.phase_sizes:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, args.d, generator=g) * 4
        y = torch.sin(2 * x).sum(-1) + 0.1 * torch.randn(n, generator=g)
        x_test = torch.rand(1000, args.d, generator=g) * 4
        kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=args.d))
        solver = fg.CG(tol=1.0, probes=10, precond=fg.PivotedCholesky(args.rank), eval_tol=0.01,
                       exact_var_max=0, root_rank=100, variance_tol=None)  # LOVE, uncertified
        model = fg.ExactGP(x, y, kernel, solver=solver)
        out = {}

        def phase(name, fn):
            with PeakRSS() as peak:
                start = time.perf_counter()
                result = fn()
                seconds = time.perf_counter() - start
            rows.append({"part": "phases", "n": n, "d": args.d, "phase": name, "seconds": seconds,
                         "rss_before_gib": peak.baseline / 2**30, "peak_rss_gib": peak.peak / 2**30,
                         "peak_increase_gib": peak.increase / 2**30})
            print(json.dumps(rows[-1]), flush=True)
            return result

        engine = solver.engine()
        with torch.no_grad():
            noise = model.likelihood.noise_diag(n)
        system = phase("preconditioner build", lambda: engine.operator(model.kernel, x, noise))
        del system
        out["loss"] = phase("forward (mBCG + SLQ)", lambda: model.loss())
        phase("backward", lambda: out["loss"].backward())
        rows[-1]["diagnostics"] = {k: v for k, v in model.diagnostics.items() if k != "seconds"}
        if n > args.predict_max:
            continue
        model.eval()
        phase("prediction cache (mean solve)", lambda: model.posterior(x_test[:1]).mean)
        phase("predictive mean and variance, 1,000 points",
              lambda: model.predict(x_test).variance)
    return rows


PARTS = {"limits": limits, "throughput": throughput, "choice": choice, "phases": phases}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="limits,throughput", help=f"comma-separated, of {tuple(PARTS)}")
    p.add_argument("--sizes", default="10000,20000", help="n for throughput and choice")
    p.add_argument("--phase-sizes", default="50000", help="n for phases")
    p.add_argument("--d", type=int, default=3)
    p.add_argument("--t", type=int, default=11, help="columns of V (default 11: 10 probes + y)")
    p.add_argument("--rank", type=int, default=50, help="pivoted-Cholesky rank in phases")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--predict-max", type=int, default=10**9, help="largest n whose phases include predictions")
    p.add_argument("--blocked-max", type=int, default=20000, help="largest n for the blocked backend")
    p.add_argument("--dense-max", type=int, default=10000, help="largest n for the dense backend")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, metavar="OUT", help="write OUT.json")
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.phase_sizes = [int(s) for s in args.phase_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for part in args.parts.split(","):
        rows += PARTS[part](args)
    if args.out:
        write_results(args.out, rows, args, device="cpu")


if __name__ == "__main__":
    main()
