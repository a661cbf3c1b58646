# Tensor operations and wall time of one training step with fresh (greedy) preconditioner pivots
# and with reused ones (PivotedCholesky.refresh_every). Usage: python benchmarks/pivot_reuse_step.py
"""One Adam step (mll, backward, update) of Scale(Matern 5/2, ARD) on synthetic data with
fg.CG(tol=1, probes=10, PivotedCholesky(100)): aten operations counted by the torch profiler
(CPU), and the median wall time of a few unprofiled steps, for a step whose preconditioner uses
fresh greedy pivots (refresh_every=1) and one that reuses the pivots of an earlier step
(refresh_every=10). Also the preconditioner build alone (greedy pivoted Cholesky vs Nystrom rebuild)."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import flashgp as fg  # noqa: E402
from flashgp.linalg import nystrom_factor, pivoted_cholesky_with_pivots  # noqa: E402
from flashgp.operators import KernelOperator  # noqa: E402
from results_file import write_results  # noqa: E402


def aten_ops(fn) -> tuple[int, int]:
    """(all aten:: events, those not nested in another aten:: op) while fn() runs."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return len(events), len(top)


def wall(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after the caller's warm-up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--d", type=int, default=18)
    p.add_argument("--backend", default="dense")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", default=None, metavar="OUT",
                   help="also write the rows to OUT.json (default: stdout only)")
    args = p.parse_args(argv)
    rows = []
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, args.d, generator=g)
    y = torch.sin(3 * x[:, 0]) + x[:, 1:4].sum(-1) + 0.1 * torch.randn(args.n, generator=g)
    x, y = x.to(args.device), y.to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"n={args.n} d={args.d} backend={args.backend} device={args.device} threads={args.threads} "
          f"torch {torch.__version__}")
    steps, results = {}, {}
    for refresh_every in (1, 10):
        kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=args.d))
        solver = fg.CG(tol=1.0, probes=10, precond=fg.PivotedCholesky(100, refresh_every=refresh_every),
                       backend=args.backend)
        model = fg.ExactGP(x, y, kernel, solver=solver)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)

        def step(model=model, opt=opt):
            opt.zero_grad()
            (-model.mll()).backward()
            opt.step()
            sync()
            return model.diagnostics["precond_pivots"]

        step()  # warm-up (and, with refresh_every=10, the greedy step whose pivots the next 9 reuse)
        ops, top = aten_ops(step)
        steps[refresh_every] = step
        results[refresh_every] = {"ops": (ops, top), "profiled": model.diagnostics["precond_pivots"],
                                  "seconds": {"greedy": [], "reused": []}}
    for _ in range(args.repeats):  # alternate the two models: both see the same machine load
        for refresh_every, step in steps.items():
            start = time.perf_counter()
            kind = step()
            results[refresh_every]["seconds"][kind].append(time.perf_counter() - start)
    for refresh_every, result in results.items():
        ops, top = result["ops"]
        timing = ", ".join(f"{kind} {statistics.median(t):.3f} s (median of {len(t)}, min {min(t):.3f})"
                           for kind, t in result["seconds"].items() if t)
        print(f"refresh_every={refresh_every:2d}: {ops} aten ops ({top} outermost) in the profiled "
              f"step (the 2nd, {result['profiled']}); unprofiled steps: {timing}")
        rows.append(dict(kind="training_step", refresh_every=refresh_every, aten_ops=ops,
                         aten_ops_outermost=top, profiled_step_pivots=result["profiled"],
                         **{f"{kind}_step_seconds": t for kind, t in result["seconds"].items() if t},
                         **{f"{kind}_step_seconds_median": statistics.median(t)
                            for kind, t in result["seconds"].items() if t}))
    # the operator as mll builds it (grad enabled: the dense backend evaluates K once, and the
    # factorizations read its rows); only the factorizations are counted and timed
    op = KernelOperator(model.kernel, model.train_x, backend=args.backend)
    _, pivots, _ = pivoted_cholesky_with_pivots(op, 100)
    for name, fn in (("greedy pivoted Cholesky", lambda: pivoted_cholesky_with_pivots(op, 100)),
                     ("Nystrom rebuild", lambda: nystrom_factor(op, pivots))):
        fn()
        sync()
        ops, top = aten_ops(lambda: (fn(), sync()))
        seconds = wall(lambda: (fn(), sync()), 5)
        print(f"preconditioner factor only, {name}: {ops} aten ops ({top} outermost), "
              f"{seconds * 1e3:.1f} ms median of 5")
        rows.append(dict(kind="preconditioner_factor", factorization=name, aten_ops=ops,
                         aten_ops_outermost=top, seconds_median_of_5=seconds))
    if args.out:
        write_results(args.out, rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
