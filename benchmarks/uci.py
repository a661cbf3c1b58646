# Side-by-side benchmark of flashgp and GPyTorch exact GPs on UCI regression data sets.
# The parent spawns one worker subprocess per (library, data set) and writes OUT.md and OUT.json.
"""Benchmark flashgp against GPyTorch 1.15.2 on UCI data sets, same model and solver settings.

Example: python benchmarks/uci.py --data /path/to/uci --datasets elevators,bike --device cpu
--iters 50 --max-train 8000 --dtype float32 --out results/cpu   (writes results/cpu.{md,json})

Data set names "synth-N" (e.g. synth-100000) are synthetic instead: N training and N // 10 test
points in d = 3 (``synthetic``), for time-per-step curves beyond the UCI sizes.

Model: constant mean, Scale(Matern nu=2.5, ARD), Gaussian likelihood, Adam; both libraries start
from the same hyperparameters (INIT) and use the same CG settings (SOLVER); GPyTorch is forced onto
CG (max_cholesky_size 0) with LOVE variances (fast_pred_var). Metrics use the standardized target.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uci_report import markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

LIBS = ("flashgp", "gpytorch", "gpytorch-keops")  # the last: GPyTorch's KeOps kernels (pykeops)
INIT = {"lengthscale": math.log(2.0), "outputscale": math.log(2.0), "noise": math.log(2.0),
        "constant": 0.0}  # softplus(0) = ln 2: GPyTorch's defaults, set explicitly on both
SOLVER = {"cg_tol_train": 1.0, "cg_tol_eval": 0.01, "max_cg_iters": 1000, "probes": 10,
          "precond": "pivoted_cholesky", "precond_rank": 100,
          "root_rank": 100}  # Lanczos root for fast variances (GPyTorch's max_root_decomposition_size)
WARMUP_STEPS = 2


# ----------------------------------------------------------------------------- measuring

class PeakRSS:
    """Peak resident-set-size increase of this process over a ``with`` block (``.increase``, bytes).

    A background thread reads ``/proc/self/statm`` every ``interval`` seconds; without that file
    it falls back to ``resource.getrusage`` (the process-lifetime peak).
    """

    def __init__(self, interval: float = 0.002):
        self.interval, self.baseline, self.peak = interval, 0, 0
        self._stop, self._thread = threading.Event(), None
        self._statm = Path("/proc/self/statm")

    def _rss(self) -> int:
        if self._statm.exists():
            return int(self._statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
            1 if sys.platform == "darwin" else 1024)

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self.baseline = self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def increase(self) -> int:
        return self.peak - self.baseline


def make_sync(device: torch.device):
    """A function that waits for queued work on ``device`` (no-op on CPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def timed(fn, sync):
    """``(fn(), seconds)``, the clock stopped after ``sync()``."""
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def device_name(device: torch.device) -> str:
    """Human-readable name of the CUDA device or of the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    return platform.processor() or platform.machine()


def version_of(package: str) -> str | None:
    """Version of ``package`` as imported here (its metadata as a fallback; None if absent)."""
    with contextlib.suppress(Exception):
        return __import__(package).__version__
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version(package)
    return None


def set_init(targets: list) -> list[str]:
    """Set each ``(obj, attr)`` hyperparameter property to ``INIT[attr]`` in every entry (shape
    kept); returns notes on those that could not be set (their defaults stay)."""
    notes = []
    for obj, attr in targets:
        try:
            cur = getattr(obj, attr)
            value = INIT[attr]
            setattr(obj, attr, torch.full_like(cur.detach(), value) if torch.is_tensor(cur)
                    else value)
        except Exception as err:
            notes.append(f"could not set {type(obj).__name__}.{attr}: {err!r}")
    return notes


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace and cut to ``limit`` characters (for tables and lists)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class StepTimer:
    """An ``fg.fit`` callback that records the seconds between steps in ``seconds`` (call
    ``start()`` right before the fit)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.start()

    def start(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, step, loss, model) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now


def metrics(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> dict:
    """Test RMSE and mean Gaussian negative log predictive density; all inputs (m,)."""
    mean, var, y = (t.detach().double().cpu().reshape(-1) for t in (mean, var, y))
    err2 = (mean - y) ** 2
    nll = 0.5 * (torch.log(2 * math.pi * var) + err2 / var)
    return {"rmse": err2.mean().sqrt().item(), "nll": nll.mean().item(),
            "min_variance": var.min().item()}


def moments(pred) -> tuple:
    """(mean, variance) of a predictive distribution, both (m,)."""
    return pred.mean, pred.variance


# ----------------------------------------------------------------------------- data

def synthetic(name: str, dtype: torch.dtype, seed: int, d: int = 3):
    """Dataset "synth-N": x uniform on [0, 1]^d, y = sum_j sin(2 pi x_j) / sqrt(d) + 0.1 noise,
    N training and N // 10 test points (standardized by construction: y has unit-order scale)."""
    from flashgp.datasets import Dataset

    n = int(name.split("-", 1)[1])
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n + n // 10, d, generator=gen, dtype=torch.float64)
    y = torch.sin(2 * math.pi * x).sum(-1) / math.sqrt(d) + 0.1 * torch.randn(len(x), generator=gen,
                                                                                dtype=torch.float64)
    x, y = x.to(dtype), y.to(dtype)
    return Dataset(x[:n], y[:n], x[n:], y[n:], 0.0, 1.0, name)


def load(args):
    """The data set of a worker: a UCI split, or a synthetic one ("synth-N")."""
    from flashgp.datasets import load_uci

    dtype = getattr(torch, args.dtype)
    if args.dataset.startswith("synth-"):
        return synthetic(args.dataset, dtype, args.seed)
    return load_uci(args.dataset, root=args.data, split=args.split, dtype=dtype,
                    max_train=args.max_train, seed=args.seed)


# ----------------------------------------------------------------------------- the two libraries

def gpytorch_step(model, mll, optimizer, ds) -> float:
    """One GPyTorch Adam step on the negative mll (per point); returns the loss."""
    optimizer.zero_grad()
    loss = -mll(model(ds.x_train), ds.y_train)
    loss.backward()
    optimizer.step()
    return loss.item()


def run_gpytorch(ds, args, device, sync, keops: bool = False) -> dict:
    """Train and predict with GPyTorch's ExactGP forced onto CG; returns timings and predictions.
    ``keops``: its Matern kernel from ``gpytorch.kernels.keops`` (needs pykeops)."""
    import gpytorch
    from gpytorch import settings as gs
    matern = gpytorch.kernels.keops.MaternKernel if keops else gpytorch.kernels.MaternKernel

    class Model(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(matern(nu=2.5, ard_num_dims=x.shape[-1]))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                             self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = Model(ds.x_train, ds.y_train, likelihood).to(device=device, dtype=ds.x_train.dtype)
    notes = set_init([(model.covar_module.base_kernel, "lengthscale"),
                      (model.covar_module, "outputscale"), (likelihood, "noise"),
                      (model.mean_module, "constant")])
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    contexts = [gs.max_cholesky_size(0), gs.cg_tolerance(SOLVER["cg_tol_train"]),
                gs.eval_cg_tolerance(SOLVER["cg_tol_eval"]),
                gs.max_cg_iterations(SOLVER["max_cg_iters"]),
                gs.max_preconditioner_size(args.precond_rank),
                gs.min_preconditioning_size(0),  # precondition at every n (default: n >= 2000)
                gs.num_trace_samples(SOLVER["probes"])]
    steps, losses = [], []
    with contextlib.ExitStack() as stack:
        for ctx in contexts:
            stack.enter_context(ctx)
        model.train()
        sync()
        start = time.perf_counter()
        for _ in range(args.iters):
            loss, seconds = timed(lambda: gpytorch_step(model, mll, optimizer, ds), sync)
            steps.append(seconds)
            losses.append(loss)
        train_seconds = time.perf_counter() - start
        model.eval()  # also puts the likelihood in eval mode
        with torch.no_grad(), gs.fast_pred_var():
            (mean, var), predict_seconds = timed(
                lambda: moments(likelihood(model(ds.x_test))), sync)
            _, predict_again = timed(lambda: moments(likelihood(model(ds.x_test))), sync)  # caches
    return {"step_seconds": steps, "losses": losses, "train_seconds": train_seconds,
            "predict_seconds": predict_seconds, "predict_again_seconds": predict_again,
            "mean": mean, "variance": var, "notes": notes,
            "noise": likelihood.noise.detach().reshape(-1)[0].item()}


def run_flashgp(ds, args, device, sync) -> dict:
    """Train and predict with flashgp's ExactGP and CG solver; returns timings and predictions."""
    import flashgp as fg

    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=ds.x_train.shape[-1]))
    solver = fg.CG(tol=SOLVER["cg_tol_train"], eval_tol=SOLVER["cg_tol_eval"],
                   max_iters=SOLVER["max_cg_iters"], probes=SOLVER["probes"],
                   precond=fg.Vecchia(args.vecchia) if args.vecchia else fg.PivotedCholesky(
                       args.precond_rank, max_rank=args.max_precond_rank, block_size=args.precond_blocks),
                   root_rank=SOLVER["root_rank"], exact_var_max=0,  # LOVE variances, as GPyTorch,
                   local_neighbors=args.local_neighbors,  # unless --local-neighbors k > 0;
                   variance_tol=args.variance_tol,  # uncertified as GPyTorch's unless --variance-tol
                   backend=args.backend, precision=args.precision)
    model = fg.ExactGP(ds.x_train, ds.y_train, kernel, likelihood=fg.likelihoods.Gaussian(),
                       mean=fg.means.Constant(), solver=solver)
    if isinstance(model, torch.nn.Module):
        model = model.to(device=device, dtype=ds.x_train.dtype)
    notes = set_init([(model.kernel.base, "lengthscale"), (model.kernel, "outputscale"),
                      (model.likelihood, "noise"), (model.mean, "constant")])
    stamps, losses = [], []

    def callback(step, loss, model):
        sync()
        stamps.append(time.perf_counter())
        losses.append(float(loss))

    sync()
    start = time.perf_counter()
    history = fg.fit(model, optimizer="adam", lr=args.lr, iters=args.iters, progress=False,
                     callback=callback)
    sync()
    train_seconds = time.perf_counter() - start
    synced = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    recorded = list(getattr(history, "step_seconds", None) or [])
    # fit's own step times do not synchronize CUDA; there the synchronized timestamps are used
    steps = recorded if recorded and device.type != "cuda" else synced
    with torch.no_grad():
        (mean, var), predict_seconds = timed(lambda: moments(model.predict(ds.x_test)), sync)
        _, predict_again = timed(lambda: moments(model.predict(ds.x_test)), sync)  # cached solves
    out = {"step_seconds": steps, "step_seconds_callback": synced, "losses": losses,
           "train_seconds": train_seconds, "predict_seconds": predict_seconds,
           "predict_again_seconds": predict_again, "mean": mean,
           "variance": var, "notes": notes,
           "noise": torch.as_tensor(model.likelihood.noise).detach().reshape(-1)[0].item()}
    with contextlib.suppress(Exception):
        out["diagnostics"] = json.loads(json.dumps(model.diagnostics, default=str))
    # CG iterations of each training step: steps of two runs compare only at equal counts
    out["step_cg_iterations"] = [d.get("cg_iterations") for d in getattr(history, "diagnostics", [])]
    return out


RUNNERS = {"gpytorch": run_gpytorch, "flashgp": run_flashgp,
           "gpytorch-keops": lambda ds, args, device, sync: run_gpytorch(ds, args, device, sync, keops=True)}


# ----------------------------------------------------------------------------- worker

def summarize(run: dict, ds, mem_bytes: int) -> dict:
    """Turn a runner's raw output into the JSON record (timings, metrics, memory)."""
    steps = run["step_seconds"]
    kept = steps[WARMUP_STEPS:] if len(steps) > WARMUP_STEPS else steps
    record = {k: v for k, v in run.items() if k not in ("mean", "variance")}
    record.update({"n_train": ds.n_train, "n_test": ds.n_test, "d": ds.d,
                   "step_seconds_median": statistics.median(kept),
                   "step_seconds_mean": statistics.fmean(kept),
                   "final_loss": run["losses"][-1], "peak_memory_mb": mem_bytes / 2**20})
    record.update(metrics(run["mean"], run["variance"], ds.y_test))
    return record


def warm_up_optimizer() -> None:
    """Step a throwaway Adam: its first use imports torch._dynamo (seconds), which would otherwise
    land inside flashgp's fit() but outside GPyTorch's timed loop."""
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)
    (w ** 2).sum().backward()
    opt.step()


def worker(args) -> int:
    """Run one library on one data set and write the JSON record to ``args.result``."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ds = load(args).to(device=device)
    for package in {"gpytorch-keops": ("gpytorch", "pykeops")}.get(args.lib, (args.lib,)):
        __import__(package)  # imports and lazy initialization before measuring memory and time
    warm_up_optimizer()
    sync = make_sync(device)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with warnings.catch_warnings(record=True) as caught, PeakRSS() as rss:
        warnings.simplefilter("always")
        run = RUNNERS[args.lib](ds, args, device, sync)
    cuda = device.type == "cuda"
    record = summarize(run, ds, torch.cuda.max_memory_allocated(device) if cuda else rss.increase)
    record.update({"library": args.lib, "dataset": args.dataset, "ok": True,
                   "memory_kind": "torch.cuda.max_memory_allocated" if cuda
                   else "peak RSS increase (/proc/self/statm sampled every 2 ms)",
                   "device_name": device_name(device), "threads": torch.get_num_threads(),
                   "warnings": sorted({one_line(f"{w.category.__name__}: {w.message}")
                                       for w in caught})[:20]})
    Path(args.result).write_text(json.dumps(record, indent=1))
    return 0


# ----------------------------------------------------------------------------- parent

def worker_command(args, lib: str, dataset: str, result: str) -> list[str]:
    """The command line of the worker subprocess for one (library, data set)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--lib", lib,
           "--dataset", dataset, "--result", result]
    for name in ("data", "device", "dtype", "iters", "lr", "split", "max_train", "seed", "threads",
                 "backend", "precision", "local_neighbors", "precond_rank", "max_precond_rank",
                 "precond_blocks", "vecchia"):
        if getattr(args, name) is not None:
            cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    return cmd


def run_worker(args, lib: str, dataset: str) -> dict:
    """Spawn the worker for (lib, dataset), wait, and return its record (or an error record)."""
    failed = {"library": lib, "dataset": dataset, "ok": False}
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        try:
            proc = subprocess.run(worker_command(args, lib, dataset, result), text=True,
                                  capture_output=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {**failed, "error": f"timed out after {args.timeout} s"}
        sys.stderr.write(proc.stderr)
        if proc.returncode == 0 and os.path.exists(result):
            return json.loads(Path(result).read_text())
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {**failed, "error": f"worker exited with {proc.returncode}: {one_line(tail)}",
            "stderr_tail": proc.stderr[-4000:]}


def parent(args) -> int:
    """Run every (data set, library) pair in its own subprocess; write OUT.json and OUT.md."""
    from flashgp.datasets import available_datasets

    names = available_datasets(args.data)
    unknown = [n for n in args.datasets if n not in names and not n.startswith("synth-")]
    if unknown:
        raise SystemExit(f"--datasets: unknown {unknown}; available under "
                         f"{args.data or 'the packaged data'}: {names}")
    records = []
    for dataset in args.datasets:
        for lib in args.libs:
            print(f"[{lib} / {dataset}] running ...", flush=True)
            r = run_worker(args, lib, dataset)
            records.append(r)
            print(f"[{lib} / {dataset}] " + (
                f"{r['step_seconds_median']:.4f} s/step, train {r['train_seconds']:.2f} s, "
                f"predict {r['predict_seconds']:.3f} s, rmse {r['rmse']:.4f}, nll {r['nll']:.4f}"
                if r.get("ok") else r["error"]), flush=True)
    ok = [r for r in records if r.get("ok")]
    meta = {"command": "python " + shlex.join(sys.argv), "argv": sys.argv,
            "device": args.device, "device_name": ok[0]["device_name"] if ok else None,
            "threads": args.threads, "memory_kind": ok[0]["memory_kind"] if ok else None,
            "torch": torch.__version__, "gpytorch": version_of("gpytorch"), "pykeops": version_of("pykeops"),
            "flashgp": version_of("flashgp"), "python": platform.python_version(),
            "split": args.split, "max_train": args.max_train, "dtype": args.dtype,
            "seed": args.seed, "lr": args.lr, "iters": args.iters, "solver": SOLVER,
            "warmup_steps": WARMUP_STEPS,
            "flashgp_backend": args.backend, "flashgp_precision": args.precision,
            "flashgp_local_neighbors": args.local_neighbors,
            "precond_rank": args.precond_rank,
            "flashgp_max_precond_rank": args.max_precond_rank,
            "flashgp_precond_blocks": args.precond_blocks, "flashgp_vecchia": args.vecchia,
            "init": INIT, "libs": args.libs, "datasets": args.datasets}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = json.dumps({"meta": meta, "results": records}, indent=1)
    out.with_name(out.name + ".json").write_text(report)
    out.with_name(out.name + ".md").write_text(markdown(meta, records))
    print(f"wrote {out}.md and {out}.json")
    return 0 if len(ok) == len(records) else 1


def csv_list(allowed=None):
    """argparse type: a comma-separated list (of names from ``allowed``, if given)."""
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items or (allowed is not None and any(s not in allowed for s in items)):
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {allowed}")
        return items
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options of the parent and (hidden) of the worker."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="folder of UCI data sets (default: packaged flashgp/data)")
    p.add_argument("--datasets", type=csv_list(), default=["concrete"],
                   help="comma-separated data set names (default: concrete)")
    p.add_argument("--libs", type=csv_list(LIBS), default=list(LIBS[:2]),
                   help="comma-separated libraries (default: flashgp,gpytorch)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--iters", type=int, default=50, help="Adam steps (default 50)")
    p.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    p.add_argument("--split", type=int, default=0, help="train/test split index (default 0)")
    p.add_argument("--max-train", type=int, help="random subsample of the training split")
    p.add_argument("--seed", type=int, default=0, help="seed of subsampling and probes")
    p.add_argument("--threads", type=int, default=cores, help=f"torch threads (default {cores})")
    p.add_argument("--timeout", type=float, help="seconds allowed per worker (default: none)")
    p.add_argument("--backend", default="auto", help="flashgp kernel backend (default auto)")
    p.add_argument("--precision", default="fp16x3",
                   help="flashgp fused-kernel precision: fp16x3, tf32x3, fp32 or tf32 (default fp16x3)")
    p.add_argument("--variance-tol", type=float, default=None, help="certify flashgp's variances to this "
                   "relative error (fg.CG(variance_tol=...)); default None: uncertified LOVE, as GPyTorch")
    p.add_argument("--local-neighbors", type=int, default=0,
                   help="flashgp variances from this many nearest training points "
                        "(fg.CG(local_neighbors=...)) instead of LOVE (default 0: LOVE, as GPyTorch)")
    p.add_argument("--precond-rank", type=int, default=SOLVER["precond_rank"],
                   help="pivoted-Cholesky preconditioner rank of both libraries (default %(default)s)")
    p.add_argument("--max-precond-rank", type=int, default=None,
                   help="flashgp only: let training double the pivoted-Cholesky rank up to this "
                        "when CG needs clearly more than its minimum (fg.PivotedCholesky(rank, "
                        "max_rank=...)); default: no growth, as GPyTorch")
    p.add_argument("--precond-blocks", type=int, default=0,
                   help="flashgp only: add the preconditioner's diagonal blocks of this many near "
                        "points (fg.PivotedCholesky(block_size=...)); default 0: none, as GPyTorch")
    p.add_argument("--vecchia", type=int, default=0,
                   help="flashgp only: the Vecchia preconditioner with this many neighbours "
                        "(fg.Vecchia(neighbors)) instead of the pivoted Cholesky; default 0: not")
    p.add_argument("--out", default="results/uci",
                   help="output prefix: writes OUT.md and OUT.json (default results/uci)")
    for hidden in ("--lib", "--dataset", "--result"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.iters < 1:
        p.error("--iters must be at least 1")
    if args.worker and not (args.lib in LIBS and args.dataset and args.result):
        p.error("--worker needs --lib (flashgp or gpytorch), --dataset and --result")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return worker(args) if args.worker else parent(args)


if __name__ == "__main__":
    sys.exit(main())
