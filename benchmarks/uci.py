# Side-by-side benchmark of flashgp and GPyTorch exact GPs on UCI regression data sets.
# The parent spawns one worker subprocess per (library, data set) and writes OUT.md and OUT.json.
"""Benchmark flashgp against GPyTorch 1.15.2 on UCI data sets, same model and solver settings.

Example::

    python benchmarks/uci.py --data /path/to/uci --datasets elevators,bike --device cpu \\
        --iters 50 --max-train 8000 --dtype float32 --out results/cpu

Model: constant mean, Scale(Matern nu=2.5, ARD), Gaussian likelihood, Adam lr 0.1, all
hyperparameters starting at the same values (softplus(0) = ln 2, mean 0). Solver: CG tolerance 1.0 in
training and 0.01 at test, at most 1000 CG iterations, 10 probe vectors, pivoted-Cholesky
preconditioner of rank 100; GPyTorch is forced onto CG (max_cholesky_size 0) with LOVE predictive
variances (fast_pred_var). Metrics are on the standardized target; NLL includes the noise.
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

LIBS = ("flashgp", "gpytorch")
INIT = {"lengthscale": math.log(2.0), "outputscale": math.log(2.0), "noise": math.log(2.0),
        "constant": 0.0}
SOLVER = {"cg_tol_train": 1.0, "cg_tol_eval": 0.01, "max_cg_iters": 1000, "probes": 10,
          "precond": "pivoted_cholesky", "precond_rank": 100}
WARMUP_STEPS = 2


# ----------------------------------------------------------------------------- measuring

class PeakRSS:
    """Peak resident-set-size increase of this process over a ``with`` block (bytes).

    A background thread reads ``/proc/self/statm`` every ``interval`` seconds; where that file does
    not exist, falls back to ``resource.getrusage`` (process-lifetime peak, so less precise).
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread = None
        self._statm = Path("/proc/self/statm")
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        if self._statm.exists():
            return int(self._statm.read_text().split()[1]) * self._page
        import resource
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

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
        """Peak RSS minus the RSS at entry, in bytes."""
        return self.peak - self.baseline


def make_sync(device: torch.device):
    """A function that waits for queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


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
    """Installed version of ``package`` (None when not installed)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        with contextlib.suppress(Exception):
            return getattr(__import__(package), "__version__", None)
        return None


def set_like(obj, attr: str, value: float, notes: list) -> None:
    """Set hyperparameter property ``obj.attr`` to ``value`` in every entry (shape kept)."""
    try:
        current = getattr(obj, attr)
        new = torch.full_like(current.detach(), value) if torch.is_tensor(current) else value
        setattr(obj, attr, new)
    except Exception as err:  # keep benchmarking with the library's default instead
        notes.append(f"could not set {type(obj).__name__}.{attr}: {err!r}")


def metrics(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> dict:
    """Test RMSE and mean Gaussian negative log predictive density; shapes (m,)."""
    mean, var, y = (t.detach().double().cpu().reshape(-1) for t in (mean, var, y))
    err2 = (mean - y) ** 2
    nll = 0.5 * (torch.log(2 * math.pi * var) + err2 / var)
    return {"rmse": err2.mean().sqrt().item(), "nll": nll.mean().item(),
            "min_variance": var.min().item()}


# ----------------------------------------------------------------------------- the two libraries

def run_gpytorch(ds, args, device, sync) -> dict:
    """Train and predict with GPyTorch's ExactGP forced onto CG; returns timings and predictions."""
    import gpytorch
    from gpytorch import settings as gs

    class Model(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=x.shape[-1]))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                             self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = Model(ds.x_train, ds.y_train, likelihood).to(device=device, dtype=ds.x_train.dtype)
    notes = []
    set_like(model.covar_module.base_kernel, "lengthscale", INIT["lengthscale"], notes)
    set_like(model.covar_module, "outputscale", INIT["outputscale"], notes)
    set_like(likelihood, "noise", INIT["noise"], notes)
    set_like(model.mean_module, "constant", INIT["constant"], notes)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    contexts = [gs.max_cholesky_size(0), gs.cg_tolerance(SOLVER["cg_tol_train"]),
                gs.eval_cg_tolerance(SOLVER["cg_tol_eval"]),
                gs.max_cg_iterations(SOLVER["max_cg_iters"]),
                gs.max_preconditioner_size(SOLVER["precond_rank"]),
                gs.min_preconditioning_size(0),  # precondition at every n, as flashgp does
                gs.num_trace_samples(SOLVER["probes"])]
    steps, losses = [], []
    with contextlib.ExitStack() as stack:
        for ctx in contexts:
            stack.enter_context(ctx)
        model.train()
        likelihood.train()
        sync()
        start = time.perf_counter()
        for _ in range(args.iters):
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss = -mll(model(ds.x_train), ds.y_train)
            loss.backward()
            optimizer.step()
            sync()
            steps.append(time.perf_counter() - t0)
            losses.append(loss.item())
        train_seconds = time.perf_counter() - start
        model.eval()
        likelihood.eval()
        t0 = time.perf_counter()
        with torch.no_grad(), gs.fast_pred_var():
            pred = likelihood(model(ds.x_test))
            mean, var = pred.mean, pred.variance
            sync()
        predict_seconds = time.perf_counter() - t0
    return {"step_seconds": steps, "losses": losses, "train_seconds": train_seconds,
            "predict_seconds": predict_seconds, "mean": mean, "variance": var,
            "noise": likelihood.noise.detach().reshape(-1)[0].item(), "notes": notes}


def run_flashgp(ds, args, device, sync) -> dict:
    """Train and predict with flashgp's ExactGP and CG solver; returns timings and predictions."""
    import flashgp as fg

    d = ds.x_train.shape[-1]
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d))
    solver = fg.CG(tol=SOLVER["cg_tol_train"], eval_tol=SOLVER["cg_tol_eval"],
                   max_iters=SOLVER["max_cg_iters"], probes=SOLVER["probes"],
                   precond=fg.PivotedCholesky(SOLVER["precond_rank"]))
    model = fg.ExactGP(ds.x_train, ds.y_train, kernel, likelihood=fg.likelihoods.Gaussian(),
                       mean=fg.means.Constant(), solver=solver)
    if isinstance(model, torch.nn.Module):
        model = model.to(device=device, dtype=ds.x_train.dtype)
    notes = []
    set_like(model.kernel.base, "lengthscale", INIT["lengthscale"], notes)
    set_like(model.kernel, "outputscale", INIT["outputscale"], notes)
    set_like(model.likelihood, "noise", INIT["noise"], notes)
    set_like(model.mean, "constant", INIT["constant"], notes)
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
    steps = list(getattr(history, "step_seconds", None) or [])
    if not steps:  # fall back to the callback's timestamps
        steps = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    t0 = time.perf_counter()
    with torch.no_grad():
        pred = model.predict(ds.x_test)
        mean, var = pred.mean, pred.variance
        sync()
    predict_seconds = time.perf_counter() - t0
    out = {"step_seconds": steps, "losses": losses, "train_seconds": train_seconds,
           "predict_seconds": predict_seconds, "mean": mean, "variance": var,
           "noise": torch.as_tensor(model.likelihood.noise).reshape(-1)[0].item(), "notes": notes}
    with contextlib.suppress(Exception):
        out["diagnostics"] = json.loads(json.dumps(model.diagnostics, default=str))
    return out


RUNNERS = {"gpytorch": run_gpytorch, "flashgp": run_flashgp}


# ----------------------------------------------------------------------------- worker

def summarize(run: dict, ds, mem_bytes: int) -> dict:
    """Turn a runner's raw output into the JSON record (timings, metrics, memory)."""
    steps = run["step_seconds"]
    timed = steps[WARMUP_STEPS:] if len(steps) > WARMUP_STEPS else steps
    record = {k: v for k, v in run.items() if k not in ("mean", "variance")}
    record.update({
        "n_train": ds.n_train, "n_test": ds.n_test, "d": ds.d,
        "step_seconds_median": statistics.median(timed) if timed else None,
        "step_seconds_mean": statistics.fmean(timed) if timed else None,
        "final_loss": run["losses"][-1] if run["losses"] else None,
        "peak_memory_mb": mem_bytes / 2**20,
    })
    record.update(metrics(run["mean"], run["variance"], ds.y_test))
    return record


def worker(args) -> int:
    """Run one library on one data set and write the JSON record to ``args.result``."""
    from flashgp.datasets import load_uci

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    ds = load_uci(args.dataset, root=args.data, split=args.split, dtype=dtype,
                  max_train=args.max_train, seed=args.seed).to(device=device)
    __import__(args.lib)  # import before measuring memory
    sync = make_sync(device)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with warnings.catch_warnings(record=True) as caught, PeakRSS() as rss:
        warnings.simplefilter("always")
        run = RUNNERS[args.lib](ds, args, device, sync)
    mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.increase
    record = summarize(run, ds, mem)
    record.update({"library": args.lib, "dataset": args.dataset, "ok": True,
                   "memory_kind": "cuda max_memory_allocated" if device.type == "cuda"
                   else "peak RSS increase (/proc/self/statm sampler)",
                   "device_name": device_name(device), "threads": torch.get_num_threads(),
                   "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught})[:20]})
    Path(args.result).write_text(json.dumps(record, indent=1))
    return 0


# ----------------------------------------------------------------------------- parent

def worker_command(args, lib: str, dataset: str, result: str) -> list[str]:
    """The command line of the worker subprocess for one (library, data set)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--lib", lib,
           "--dataset", dataset, "--result", result, "--device", args.device,
           "--iters", str(args.iters), "--split", str(args.split), "--dtype", args.dtype,
           "--seed", str(args.seed), "--lr", str(args.lr), "--threads", str(args.threads)]
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    if args.max_train is not None:
        cmd += ["--max-train", str(args.max_train)]
    return cmd


def run_worker(args, lib: str, dataset: str) -> dict:
    """Spawn the worker for (lib, dataset), wait, and return its record (or an error record)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        cmd = worker_command(args, lib, dataset, result)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"library": lib, "dataset": dataset, "ok": False,
                    "error": f"timed out after {args.timeout} s"}
        sys.stderr.write(proc.stderr)
        if proc.returncode == 0 and os.path.exists(result):
            return json.loads(Path(result).read_text())
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"library": lib, "dataset": dataset, "ok": False,
                "error": f"worker exited with {proc.returncode}: {tail}",
                "stderr_tail": proc.stderr[-4000:]}


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown(meta: dict, records: list[dict]) -> str:
    """The results as a markdown document: settings, then one table row per run."""
    lines = ["# UCI benchmark: flashgp vs GPyTorch", "",
             f"- command: `{meta['command']}`",
             f"- device: {meta['device']} ({meta['device_name']}), threads: {meta['threads']}",
             f"- versions: torch {meta['torch']}, gpytorch {meta['gpytorch']}, "
             f"flashgp {meta['flashgp']}, python {meta['python']}",
             f"- data: split {meta['split']}, max_train {meta['max_train']}, dtype {meta['dtype']},"
             f" seed {meta['seed']}; metrics on the standardized target, NLL includes the noise",
             f"- training: Adam lr {meta['lr']}, {meta['iters']} steps; s/step over steps after "
             f"the first {WARMUP_STEPS}; predict = mean and variance, first call (builds caches)",
             f"- solver: CG tol {SOLVER['cg_tol_train']} (train) / {SOLVER['cg_tol_eval']} (test), "
             f"max {SOLVER['max_cg_iters']} iterations, {SOLVER['probes']} probes, pivoted "
             f"Cholesky rank {SOLVER['precond_rank']}; GPyTorch: max_cholesky_size 0, "
             f"fast_pred_var",
             f"- memory: {meta['memory_kind']}", "",
             "| dataset | library | n_train | n_test | d | s/step (median) | s/step (mean) "
             "| train s | predict s | RMSE | NLL | noise | peak MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        if not r.get("ok"):
            lines.append(f"| {r['dataset']} | {r['library']} | failed: "
                         f"{r.get('error', '?').replace('|', '/')} |" + " |" * 10)
            continue
        lines.append(
            f"| {r['dataset']} | {r['library']} | {r['n_train']} | {r['n_test']} | {r['d']} "
            f"| {fmt(r['step_seconds_median'], '.4f')} | {fmt(r['step_seconds_mean'], '.4f')} "
            f"| {r['train_seconds']:.2f} | {r['predict_seconds']:.3f} | {r['rmse']:.4f} "
            f"| {r['nll']:.4f} | {r['noise']:.4g} | {r['peak_memory_mb']:.0f} |")
    notes = [f"- {r['library']}/{r['dataset']}: {n}" for r in records
             for n in r.get("notes", []) + r.get("warnings", [])]
    if notes:
        lines += ["", "Notes and warnings:", ""] + notes
    return "\n".join(lines) + "\n"


def parent(args) -> int:
    """Run every (data set, library) pair in its own subprocess; write OUT.json and OUT.md."""
    from flashgp.datasets import available_datasets

    names = available_datasets(args.data)
    unknown = [n for n in args.datasets if n not in names]
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
            "torch": torch.__version__, "gpytorch": version_of("gpytorch"),
            "flashgp": version_of("flashgp"), "python": platform.python_version(),
            "split": args.split, "max_train": args.max_train, "dtype": args.dtype,
            "seed": args.seed, "lr": args.lr, "iters": args.iters, "solver": SOLVER,
            "init": INIT, "libs": args.libs, "datasets": args.datasets}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(json.dumps({"meta": meta, "results": records},
                                                            indent=1))
    out.with_name(out.name + ".md").write_text(markdown(meta, records))
    print(f"wrote {out}.md and {out}.json")
    return 0 if len(ok) == len(records) else 1


def csv_list(allowed=None):
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if allowed is not None and s not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {allowed}")
        return items
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options of the parent and (hidden) of the worker."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None,
                   help="folder of UCI data sets (default: the packaged flashgp/data)")
    p.add_argument("--datasets", type=csv_list(), default=["concrete"],
                   help="comma-separated data set names (default: concrete)")
    p.add_argument("--libs", type=csv_list(LIBS), default=list(LIBS),
                   help="comma-separated libraries to run (default: flashgp,gpytorch)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--iters", type=int, default=50, help="Adam steps (default 50)")
    p.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    p.add_argument("--split", type=int, default=0, help="train/test split index (default 0)")
    p.add_argument("--max-train", type=int, default=None,
                   help="random subsample of the training split (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of subsampling and probes")
    p.add_argument("--threads", type=int, default=cores,
                   help=f"torch threads (default: the {cores} available cores)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per worker")
    p.add_argument("--out", default="results/uci",
                   help="output prefix: writes OUT.md and OUT.json (default results/uci)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lib", choices=LIBS, help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.iters < 1:
        p.error("--iters must be at least 1")
    if args.worker and not (args.lib and args.dataset and args.result):
        p.error("--worker needs --lib, --dataset and --result")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return worker(args) if args.worker else parent(args)


if __name__ == "__main__":
    sys.exit(main())
