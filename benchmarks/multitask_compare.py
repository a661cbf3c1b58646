# Side-by-side benchmark of flashgp's multitask exact GP (fg.MultitaskGP, ICM) and GPyTorch 1.15's
# multitask exact GP (MultitaskKernel + MultitaskGaussianLikelihood; the Hadamard IndexKernel model
# for tasks observed apart): same synthetic correlated tasks, kernel, start, Adam steps.
"""Benchmark fg.MultitaskGP against GPyTorch 1.15's multitask exact GPs on synthetic correlated tasks.

Examples (from the repository root):

    python benchmarks/multitask_compare.py --device cpu --sizes 1000x4,2000x4 --iters 5 \\
        --out benchmarks/results/multitask/multitask_cpu.md
    python benchmarks/multitask_compare.py --device cuda --sizes 10000x4,20000x8,50000x4 --iters 10 \\
        --n-test 250 --heterotopic --largest 1000000x4 --out benchmarks/results/multitask/multitask_h100.md

Each (layout, size, library) runs in its own subprocess, so peak memory and warm-up belong to one
run (and its memory is freed with it) and an out-of-memory error or a crash becomes a table entry
("OOM", "failed: ...") instead of ending the benchmark. A run stopped at ``--timeout`` keeps what
it finished (a worker writes its record after every training step and before predicting): the
table then shows its training columns and the phase it was in. ``--budget`` bounds the whole
benchmark (each run's timeout is cut to what is left; later runs are listed as not run), for
machines that stop a command at a limit. OUT.md and OUT.json are rewritten after every run. Peak
memory: CUDA's max allocated bytes after the data are on the device; on a CPU the resident-set
increase of the run.

Data (fixed ``--seed``): x uniform on [0, 1]^d (``--d``, 4); Q = ``--latents`` (2) latent functions,
each a random Fourier-feature draw from an RBF GP (``--features`` 256 features, lengthscale
``--latent-lengthscale`` 0.3, unit variance); Y = latent @ A^T + noise with A a random (t, Q)
N(0, 1) mixing matrix (so the tasks are correlated, rank Q) and a per-task noise standard deviation
uniform in [0.1, 0.3]. ``--n-test`` (1,000) held-out points, every task observed there.

Layouts (``--layouts``; ``--heterotopic`` adds the second):
  grid: every point observed for every task (n t targets). flashgp: ``fg.MultitaskGP(x, Y,
      kernel=Matern(5/2, ARD), rank=r)``, one noise and one constant mean per task, solver
      ``--flashgp-solvers`` (cg: ``fg.CG()`` with the library's defaults, Kronecker products
      B ⊗ K_x in CG; cholesky: ``fg.Cholesky()``, the exact Kronecker eigendecomposition path).
      GPyTorch: ExactGP with MultitaskMean(ConstantMean), MultitaskKernel(MaternKernel(nu=2.5,
      ARD), num_tasks=t, rank=r), MultitaskGaussianLikelihood(num_tasks=t) and its default
      settings: for this likelihood linear_operator solves and takes log determinants through float64
      eigendecompositions of K_x (n x n) and B (t x t) (KroneckerProductAddedDiagLinearOperator) from
      max_cholesky_size (800) rows on, a Cholesky factorization below. What it ran is counted
      (torch.linalg.eigh / cholesky(_ex) calls and linear_operator's linear_cg calls, in training
      and in prediction; on the CG path the eigh calls are those of the small Lanczos tridiagonals).
  heterotopic: a random ``--drop`` (0.5) of the (point, task) entries left out; the rows kept, each
      with its task. flashgp: ``fg.MultitaskGP(x_rows, y_rows, kernel, num_tasks=t, rank=r,
      task_index=tasks, likelihood=fg.likelihoods.Gaussian())``; GPyTorch: the Hadamard model,
      MaternKernel(x) * IndexKernel(num_tasks=t, rank=r)(task), GaussianLikelihood (one noise for
      both, since GPyTorch's Hadamard model takes no per-task noise) and one constant mean per task
      in both (a small custom mean on the GPyTorch side); GPyTorch's defaults then pick Cholesky up
      to 800 rows and CG / Lanczos (its preconditioned mBCG) beyond.

On CUDA, ``fg.MultitaskGP`` built from device tensors failed at commit 05cc573 (``Expected all tensors
to be on the same device``: ``kernels.Multitask.set_task_covariance`` makes its fallback factor on
the CPU); the script then builds it from CPU tensors, moves it and gives it its data again
(``flashgp_model``), which keeps the library's initial values, and says so in the "ran" column.

Start (``--init``): "same" (default): GPyTorch starts from flashgp's data-based initial values
(the Matern lengthscales, the task factor W and variances v of B = W W^T + diag(v), each task's
noise and mean), so both optimize the same model from the same point; the grid GPyTorch
likelihood then has ``has_global_noise=False`` (the same per-task noise as flashgp, without the
redundant shared term). "default": each library's own defaults (GPyTorch: lengthscale ln 2,
random W and v, noise ln 2 + a shared noise, means 0).

Training: Adam (``--lr`` 0.1) on all parameters for ``--iters`` (10) steps on the negative mll per
target (flashgp: ``fg.fit``; GPyTorch: ExactMarginalLogLikelihood, also divided by n t). Every step
is timed after a device synchronization; "s / step" is the mean without the first step (reported
apart). Predictions: the predictive distribution (with each task's noise) at the test points, in
chunks of ``--predict-chunk`` test points, both libraries; per-task RMSE (its mean over tasks in
the table) and the Gaussian NLL averaged over every test entry, in data units.

``--largest NxT``: flashgp only (grid, CG) at sizes beyond GPyTorch (e.g. 1000000x4), ``--largest-iters``
steps, predictions only with ``--largest-test`` > 0: what fits one GPU (s / step, peak memory).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import json_safe, versions
from subprocess_runs import record_run, worker_options, write_report
from uci import device_name, make_sync, version_of, warm_up_optimizer

from mt_bench_data import PROGRESS, dataset  # noqa: E402
from mt_bench_libraries import (flashgp_model, flashgp_solver, initial_values, run_flashgp, run_gpytorch,  # noqa: E402
                                what_gpytorch_ran)

def worker(args) -> int:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = make_sync(device)
    warm_up_optimizer()
    ds = dataset(args)
    start_values = None
    if args.lib == "gpytorch" and args.init == "same":  # flashgp's data-based start, from a CPU model
        start_values = initial_values(flashgp_model(ds, args, torch.device("cpu"), dtype, flashgp_solver("cg", args)))
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
    result = {"lib": args.lib, "solver": args.solver if args.lib == "flashgp" else "default",
              "layout": args.layout, "largest": bool(args.largest_run), "n": ds.n, "t": ds.t, "d": ds.x.shape[1],
              "rank": args.rank, "rows": ds.n * ds.t if ds.rows is None else int(ds.rows.shape[0]),
              "n_test": ds.x_test.shape[0], "dtype": args.dtype, "init": args.init,
              "device": device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "gpytorch": version_of("gpytorch") if args.lib == "gpytorch" else None,
              "flashgp": version_of("flashgp"), "noise_std_true": ds.noise_std.tolist()}
    PROGRESS.update(path=args.result + ".partial", record=dict(result), cuda=device.type == "cuda")
    if args.lib == "flashgp":
        run = lambda: json_safe(run_flashgp(ds, args, device, dtype, sync))
    else:
        run = lambda: json_safe(run_gpytorch(ds, args, device, dtype, sync, start_values))
    record_run(result, run, device, args.result)
    return 0


def run_worker(options: list, timeout: float, failed: dict) -> dict:
    """``subprocess_runs.run_in_subprocess`` for this script, which on a timeout also keeps what the
    run had finished (its partial record: training steps, say) and says in which phase it stopped."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        partial = Path(str(result) + ".partial")
        cmd = [sys.executable, __file__, "--worker", *options, "--result", str(result)]
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True, check=False)
            if result.exists():
                row = json.loads(result.read_text())
            else:
                row = json.loads(partial.read_text()) if partial.exists() else dict(failed)
                row["error"] = (proc.stderr or proc.stdout)[-300:]
        except subprocess.TimeoutExpired:
            row = json.loads(partial.read_text()) if partial.exists() else dict(failed)
            row["error"] = f"timeout {timeout:.0f} s" + (f" ({row['phase']})" if row.get("phase") else "")
    row["wall_seconds"] = time.perf_counter() - start
    return row


def is_oom(error: str) -> bool:
    return "OutOfMemoryError" in error or "out of memory" in error.lower() or "CUDA error: out of memory" in error


def table(rows: list) -> str:
    lines = [("| layout | n | t | rows | library (solver) | steps | first step s | s / step | median s / step | "
              "GPyTorch / flashgp s/step | peak MiB | RMSE (mean of tasks) | NLL | predict s | loss end | "
              "CG iters (mean, max) | ran |"),
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        lib = row["lib"] + (f" ({row['solver']})" if row["lib"] == "flashgp" else "")
        layout = row["layout"] + (" (largest)" if row.get("largest") else "")
        head = f"| {layout} | {row['n']} | {row['t']} | {row.get('rows', '')} | {lib} |"
        if "error" in row:
            text = ("OOM" if is_oom(row["error"]) else row["error"] if row["error"].startswith("not run")
                    else f"failed: {' '.join(row['error'].split())[:200]}")
            if "step_seconds_mean" not in row:
                lines.append(f"{head} {text} | | | | | | | | | | | |")
                continue
            row = {**row, "peak_bytes": row.get("peak_bytes", math.nan)}  # training finished (or some steps)
        peer = next((r for r in rows if r["lib"] == "gpytorch" and "error" not in r and r["layout"] == row["layout"]
                     and r["n"] == row["n"] and r["t"] == row["t"]), None)
        ratio = (f"{peer['step_seconds_mean'] / row['step_seconds_mean']:.2f}x"
                 if peer is not None and row["lib"] == "flashgp" else "")
        if row["lib"] == "flashgp":
            cg = (f"{row['cg_iterations_mean']:.1f}, {row['cg_iterations_max']}"
                  if row.get("cg_iterations_mean") is not None else "")
            ran = f"path {row.get('path')}" + (f", {row['structure']}" if row.get("structure") else "")
            if row.get("notes"):
                ran += ", built on the CPU and moved"
            if row.get("converged_steps") is not None and row["converged_steps"] < row["steps"]:
                ran += f", CG converged in {row['converged_steps']} of {row['steps']} steps"
        else:
            cg, ran = "", f"{row.get('train_operator', '')}; {what_gpytorch_ran(row)}"
        if "error" in row:
            ran += f"; {text}"
        has_test = "rmse" in row
        lines.append(f"{head} {row['steps']} | {row['first_step_seconds']:.3f} | {row['step_seconds_mean']:.3f} | "
                     f"{row.get('step_seconds_median', math.nan):.3f} | {ratio} | {row['peak_bytes'] / 2**20:.0f} | "
                     + (f"{row['rmse']:.4f} | {row['nll']:.4f} | {row['predict_seconds']:.2f} | " if has_test
                        else "| | | ")
                     + f"{row.get('loss_end', math.nan):.4f} | {cg} | {ran} |")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        if item.strip():
            n, t = item.lower().split("x")
            sizes.append((int(float(n)), int(t)))
    return sizes


def parent(args) -> int:
    command = "python benchmarks/multitask_compare.py " + shlex.join(sys.argv[1:])
    shared = ("device", "dtype", "iters", "lr", "rank", "d", "latents", "features", "latent_lengthscale",
              "drop", "n_test", "predict_chunk", "init", "variance_tol", "seed", "threads")
    runs = []
    for layout in args.layouts:
        for n, t in args.sizes:
            for lib in args.libs:
                for solver in (args.flashgp_solvers if lib == "flashgp" else ["default"]):
                    runs.append((layout, n, t, lib, solver, []))
    for n, t in args.largest:
        runs.append(("grid", n, t, "flashgp", "cg", ["--largest-run", f"--iters={args.largest_iters}",
                                                     f"--n-test={args.largest_test}"]))
    rows = []
    print(table([]), flush=True)
    begin = time.perf_counter()
    for layout, n, t, lib, solver, extra in runs:
        options = (["--lib", lib, "--solver", solver, "--layout", layout, "--n", str(n), "--t", str(t)]
                   + worker_options(args, shared) + extra)
        failed = {"lib": lib, "solver": solver, "layout": layout, "largest": bool(extra), "n": n, "t": t}
        left = math.inf if args.budget is None else args.budget - (time.perf_counter() - begin)
        if left < 15:
            row = {**failed, "error": f"not run: --budget {args.budget:g} s spent"}
        else:
            row = run_worker(options, min(args.timeout, left), failed)
        rows.append(row)
        print(table(rows).splitlines()[-1], flush=True)
        if args.out:  # after every run: an interrupted benchmark keeps the runs it finished
            report(args, command, rows, done=len(rows) == len(runs))
    print()
    print(report(args, command, rows, done=True, write=False))
    return 0


def report(args, command: str, rows: list, done: bool, write: bool = True) -> str:
    """The markdown report (header and table); with ``write`` also OUT.md and OUT.json."""
    device = torch.device(args.device)
    device_text = next((r["device"] for r in rows if r.get("device")), None) or device_name(device)
    threads = next((r["threads"] for r in rows if r.get("threads")), torch.get_num_threads())
    vers = versions()
    header = (f"Multitask exact GP side by side: flashgp {vers.get('flashgp')} ({vers.get('flashgp_commit')}) against "
              f"GPyTorch {vers.get('gpytorch')}, {device_text}"
              + (f", CPU threads: {threads}" if device.type == "cpu" else "")
              + f", torch {torch.__version__}, {args.dtype}, Matern 5/2 ARD (d = {args.d}) times a rank-{args.rank} "
              f"task covariance, Adam lr {args.lr}, {args.iters} steps"
              + (f" ({args.largest_iters} for the largest run)" if args.largest else "")
              + f", start: {args.init}, {time.strftime('%Y-%m-%d')}.\n\n"
              + ("" if done else "**Incomplete: the runs finished so far.**\n\n")
              + f"Command: `{command}`\n\n"
              f"Data: synthetic correlated tasks (Q = {args.latents} random-Fourier-feature latent functions, "
              f"lengthscale {args.latent_lengthscale}, mixed by a random t x Q matrix, per-task noise sd in "
              f"[0.1, 0.3]); {args.n_test} test points with every task; heterotopic: {args.drop:.0%} of the "
              "training entries left out at random. rows: training targets (n t on the grid). "
              "s / step: mean synchronized step time without the first step (reported apart; the median of the "
              "same steps beside it). "
              "GPyTorch / flashgp s/step > 1: flashgp faster. Peak memory: "
              + ("CUDA max allocated bytes of the run (training data included)." if device.type == "cuda"
                 else "the run's resident-set increase (data made before).")
              + " RMSE: per task, then averaged over tasks; NLL: Gaussian predictive (with noise) per test entry, "
              "averaged; both in data units. loss end: the last step's negative mll per target (flashgp's on the "
              "CG path is a stochastic estimate). ran: flashgp's solver path (and Kronecker structure) of the "
              "last step; GPyTorch's training covariance operator and the calls of torch.linalg.eigh, "
              "linear_operator's linear_cg and torch.linalg.cholesky(_ex) counted in training and prediction.\n\n")
    if write:
        payload = {"script": Path(__file__).name, "command": command, "argv": list(sys.argv), "args": vars(args),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": vers, "device": device_text,
                   "threads": threads, "complete": done, "rows": rows}
        out = Path(args.out)
        write_report(out.with_suffix("") if out.suffix == ".md" else out, header, table(rows), json_safe(payload))
    return header + table(rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="10000x4,20000x8,50000x4", type=parse_sizes,
                   help="comma-separated n x t (points x tasks; default 10000x4,20000x8,50000x4)")
    p.add_argument("--layouts", default="grid", type=lambda s: [v for v in s.split(",") if v],
                   help="grid, heterotopic or both, comma-separated (default grid)")
    p.add_argument("--heterotopic", action="store_true", help="add the heterotopic layout to --layouts")
    p.add_argument("--drop", type=float, default=0.5, help="fraction of training entries left out (heterotopic)")
    p.add_argument("--largest", default="", type=parse_sizes, metavar="NxT",
                   help="flashgp-only grid runs at these sizes (e.g. 1000000x4), after the others")
    p.add_argument("--largest-iters", type=int, default=3, help="Adam steps of a --largest run (default 3)")
    p.add_argument("--largest-test", type=int, default=0,
                   help="test points of a --largest run (default 0: no predictions)")
    p.add_argument("--libs", default="flashgp,gpytorch", type=lambda s: [v for v in s.split(",") if v])
    p.add_argument("--flashgp-solvers", default="cg", type=lambda s: [v for v in s.split(",") if v],
                   help="flashgp solvers, comma-separated: cg (default), cholesky (exact Kronecker "
                        "eigendecomposition on the grid), auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--iters", type=int, default=10, help="Adam steps (default 10)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--rank", type=int, default=1, help="rank of the task covariance's W (default 1)")
    p.add_argument("--d", type=int, default=4, help="input dimensions (default 4)")
    p.add_argument("--latents", type=int, default=2, help="latent functions Q (default 2)")
    p.add_argument("--features", type=int, default=256, help="random Fourier features per latent (default 256)")
    p.add_argument("--latent-lengthscale", type=float, default=0.3)
    p.add_argument("--n-test", type=int, default=1000, help="test points, every task (default 1000)")
    p.add_argument("--predict-chunk", type=int, default=1000, help="test points per prediction call (default 1000)")
    p.add_argument("--init", default="same", choices=("same", "default"),
                   help="same: GPyTorch starts from flashgp's initial values (default); default: each its own")
    p.add_argument("--variance-tol", default="default",
                   help="flashgp CG(variance_tol=...): default (the library's, 0.01), a number, or none "
                        "(uncertified LOVE variances)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run (default 3600)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole benchmark: each run's timeout is cut to what is left, and runs "
                        "once it is spent are listed as not run (for machines that stop a command at a limit)")
    p.add_argument("--out", default=None, help="OUT.md (and OUT.json beside it); default: print only")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--largest-run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--solver", help=argparse.SUPPRESS)
    p.add_argument("--layout", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--t", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.heterotopic and "heterotopic" not in args.layouts:
        args.layouts.append("heterotopic")
    for layout in args.layouts:
        if layout not in ("grid", "heterotopic"):
            p.error(f"--layouts: expected grid or heterotopic, got {layout!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return worker(args) if args.worker else parent(args)


if __name__ == "__main__":
    sys.exit(main())
