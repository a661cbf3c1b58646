# Where one flashgp training step spends its time: torch profiler table of one Adam step on a UCI
# set (or synthetic data). Usage: python benchmarks/profile_step.py --data .uci --dataset elevators
"""Profile one training step of the benchmark model (constant mean, Scale(Matern 5/2, ARD), CG and
starting hyperparameters as in benchmarks/uci.py) after a few warm-up steps. Prints the step's
wall time, the number of CUDA kernel launches and the top operators by self device time (CUDA)
and by self CPU time."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flashgp as fg  # noqa: E402
from results_file import write_results  # noqa: E402
from uci import SOLVER, load, set_init  # noqa: E402


def op_rows(events, sort_by: str, limit: int) -> list[dict]:
    """The first ``limit`` operators of the profiler's averages by ``sort_by`` (an attribute of
    theirs), as the table prints them: name, calls and times in microseconds."""
    def get(e, *names):  # the first attribute of these that it has (torch renamed cuda to device)
        return next((getattr(e, name) for name in names if hasattr(e, name)), 0.0)

    top = sorted(events, key=lambda e: get(e, sort_by), reverse=True)[:limit]
    return [dict(kind=f"op_by_{sort_by}", name=e.key, calls=e.count,
                 self_cpu_us=get(e, "self_cpu_time_total"), cpu_total_us=get(e, "cpu_time_total"),
                 self_device_us=get(e, "self_device_time_total", "self_cuda_time_total"),
                 device_total_us=get(e, "device_time_total", "cuda_time_total"))
            for e in top]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--dataset", default="elevators")
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default="tf32x3")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--out", default=None, metavar="OUT",
                   help="also write the step and the operator rows to OUT.json (default: stdout only)")
    args = p.parse_args(argv)
    ns = argparse.Namespace(dataset=args.dataset, data=args.data, split=0, dtype="float32",
                            max_train=None, seed=0)
    ds = load(ns).to(device=args.device)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=ds.x_train.shape[-1]))
    solver = fg.CG(tol=SOLVER["cg_tol_train"], probes=SOLVER["probes"],
                   precond=fg.PivotedCholesky(SOLVER["precond_rank"]), backend=args.backend,
                   precision=args.precision)
    model = fg.ExactGP(ds.x_train, ds.y_train, kernel, mean=fg.means.Constant(), solver=solver)
    # the harness's starting hyperparameters, so the profiled step is one of benchmarks/uci.py's
    set_init([(model.kernel.base, "lengthscale"), (model.kernel, "outputscale"),
              (model.likelihood, "noise"), (model.mean, "constant")])
    opt = torch.optim.Adam(model.parameters(), lr=0.1)

    on_cuda = torch.device(args.device).type == "cuda"

    def sync():
        if on_cuda:
            torch.cuda.synchronize()

    def step():
        opt.zero_grad()
        loss = -model.mll()
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    step()
    sync()
    wall = time.perf_counter() - start
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        sync()
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"{args.dataset}: n={ds.x_train.shape[0]} d={ds.x_train.shape[1]} step {wall:.4f} s "
          f"(unprofiled), diagnostics {dict(model.diagnostics)}; {launches} device kernels")
    if on_cuda:
        print(events.table(sort_by="self_cuda_time_total", row_limit=args.rows))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if args.out:
        rows = [dict(kind="step", dataset=args.dataset, n=ds.x_train.shape[0], d=ds.x_train.shape[1],
                     step_seconds_unprofiled=wall, device_kernels=launches,
                     diagnostics=dict(model.diagnostics))]
        if on_cuda:
            rows += op_rows(events, "self_device_time_total", args.rows)
        rows += op_rows(events, "self_cpu_time_total", args.rows)
        write_results(args.out, rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
