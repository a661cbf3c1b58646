# Benchmark: what the distributed path (flashgp.distributed.ShardedExactGP in a torch.distributed
# group) costs per training step against the single-process fg.ExactGP, and how closely the two agree.
"""Issue 35's overhead target and agreement checks, on the NCCL path on a GPU (gloo on a CPU).

    python benchmarks/distributed_overhead.py --out overhead_d3               # GPU: n = 1M, d = 3
    python benchmarks/distributed_overhead.py --parts step predict --d 8 --out overhead_d8
    python benchmarks/distributed_overhead.py --device cpu                  # a smoke run (gloo)
    torchrun --standalone --nproc-per-node=2 -- benchmarks/distributed_overhead.py --n 200000

The script joins a process group itself: world size 1 (rank 0, MASTER_ADDR 127.0.0.1, a free
MASTER_PORT), backend "nccl" on CUDA and "gloo" on the CPU, unless torchrun launched it, when it
takes the environment's rank and world size (one GPU per rank, ``LOCAL_RANK``); each rank then
holds its contiguous block of the rows and computes the single-process reference on all of them
(the ``--`` keeps torchrun from reading ``--n`` as an abbreviation of its own options). World
size 1 is the case the target speaks of: the same GPU, the same data, one model through the
sharded code (collectives, gathers, the sharded preconditioner) and one without.

Parts (``--parts``, default all three):

- ``agree``: float64, ``--agree-n`` points (default 3000), d = ``--agree-d``. The sharded mll
  and every parameter gradient against ``fg.ExactGP(...).mll()`` on the same data and probe seed,
  with ``fg.CG(reorthogonalize=True, tol=--agree-tol, precond=fg.PivotedCholesky(rank,
  refresh_every=1))`` on both sides (backend "auto": dense at this size; the fused Triton kernels
  compute in float32 and are not used for float64). Also the initial values (chosen from the data
  on both sides) and posterior means and variances at ``--agree-m`` test points (plain CG solves to
  eval_tol 1e-10 on both sides; a float64 Cholesky reference as well). Maximum relative
  differences, max |a - b| / max |b| per tensor.
- ``step``: float32, ``--n`` points (default 1,000,000 on CUDA, 4000 on the CPU) for each
  ``--d``, the settings of the 1M single-GPU step (``examples/large_gpu_fit.py``):
  Scale(Matern(nu=2.5, ard_dims=d, lengthscale=0.3)), ``fg.CG(backend=--backend ("triton" on
  CUDA), precision=--precision ("tf32x3"), precond=fg.PivotedCholesky(--precond-rank,
  refresh_every=--refresh-every (default 1: fresh pivots every step)))`` on both sides (both
  keep pivots alike across steps, so with a larger value they reuse them at the same steps).
  Per model ``--warmup`` untimed steps, then ``--repeats`` timed steps
  ``loss = -model.mll(generator); loss.backward()`` with the same probe seed each time, the two
  models interleaved (single, sharded, single, sharded, ...) so that drift hits both alike;
  ``torch.cuda.synchronize`` around the timings. Reported: seconds per step (all, median, and
  the mll and backward parts), CG iterations, losses, peak memory above what was allocated
  before the step, and ``overhead`` = median sharded / median single (target: at most 1.05),
  with the loss and gradient differences of the last timed steps.
- ``predict``: the posterior mean at ``--predict-m`` test points (default 10,000 on CUDA, 500 on
  the CPU) from each model of the step part, its seconds (the mean solve to eval_tol 1e-3
  included; an untimed posterior at slightly moved parameters first, so that compiling the
  one-column kernels is not timed) and the largest difference of the means. Their solver has ``variance_tol=None``,
  ``exact_var_max=0`` and ``root_rank=1``, so that the variances, unused here, cost at most a
  one-step Lanczos root (one more product with K_hat) rather than CG solves per test point.

Output: one JSON record on stdout (rank 0), progress lines on stderr; ``--out PATH`` also
writes it through ``benchmarks/results_file.py`` (``PATH.json``: command, versions, device).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import socket
import statistics
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "examples", REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from large_gpu_fit import synchronize, synthetic
from results_file import json_safe, versions, write_results
from uci import device_name

import flashgp as fg
from flashgp.distributed import ShardedExactGP, sharded_mll

NOISE = 0.1  # the synthetic data's noise standard deviation
PROBE_SEED_OFFSET = 1000  # the probes' generator seed is --seed + this
TEST_SEED_OFFSET = 7  # the test points' seed is --seed + this
TARGET = 1.05  # issue 35: the distributed path at most 5% slower per step on one GPU


class Group:
    """The process group this run works in: rank, world size, device, and the row blocks."""

    def __init__(self, device_type: str, timeout_min: float):
        self.owned = not dist.is_initialized()
        launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if launched else 0
        self.backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(self.local_rank)
        self.device = torch.device(device_type, self.local_rank) if device_type == "cuda" else torch.device("cpu")
        self.launched = launched
        if self.owned:
            if launched:
                rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            else:
                rank, world = 0, 1
                os.environ["MASTER_ADDR"] = "127.0.0.1"
                os.environ["MASTER_PORT"] = str(free_port())
            options = {"device_id": self.device} if device_type == "cuda" else {}
            dist.init_process_group(self.backend, init_method="env://", rank=rank, world_size=world,
                                    timeout=timedelta(minutes=timeout_min), **options)
        self.backend = dist.get_backend()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def block(self, n: int) -> slice:
        """This rank's contiguous block of n rows."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def log(self, message: str) -> None:
        if self.rank == 0:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (b the single-process reference)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def parameters(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def gradients(model) -> dict:
    return {name: (torch.zeros_like(p) if p.grad is None else p.grad.detach().clone())
            for name, p in model.named_parameters()}


def compare(sharded: dict, single: dict) -> dict:
    """Per name: the relative difference (sharded against single)."""
    return {name: relative(sharded[name], single[name]) for name in single}


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def recorded(caught) -> list[str]:
    """The distinct warning messages of a step, shortened."""
    out = []
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message)[:200]}"
        if text not in out:
            out.append(text)
    return out


def memory_mark(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def memory_peak(device: torch.device, before: int) -> dict:
    if device.type != "cuda":
        return {}
    return {"allocated_before_gib": before / 2**30,
            "peak_above_before_gib": (torch.cuda.max_memory_allocated(device) - before) / 2**30}


def training_step(model, group: Group, seed: int) -> dict:
    """One timed ``loss = -model.mll(generator); loss.backward()`` (the gradients stay in .grad); its record."""
    device = group.device
    model.zero_grad(set_to_none=True)
    before = memory_mark(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        synchronize(device)
        start = time.perf_counter()
        loss = -model.mll(generator(device, seed))
        synchronize(device)
        middle = time.perf_counter()
        loss.backward()
        synchronize(device)
        stop = time.perf_counter()
    d = model.diagnostics
    out = {"seconds": stop - start, "mll_seconds": middle - start, "backward_seconds": stop - middle,
           "loss": float(loss.detach()), "cg_iterations": d.get("cg_iterations"), "residual": d.get("residual"),
           "precond_rank": d.get("precond_rank"), "backend": d.get("backend"), "warnings": recorded(caught)}
    if "precond_seconds" in d:
        out["precond_seconds"] = d["precond_seconds"]
    out.update(memory_peak(device, before))
    return out


def summary(steps: list[dict]) -> dict:
    seconds = [s["seconds"] for s in steps]
    return {"median_seconds": statistics.median(seconds), "seconds": seconds,
            "median_mll_seconds": statistics.median(s["mll_seconds"] for s in steps),
            "median_backward_seconds": statistics.median(s["backward_seconds"] for s in steps),
            "cg_iterations": [s["cg_iterations"] for s in steps], "losses": [s["loss"] for s in steps],
            "steps": steps}


# ----- part "agree" ---------------------------------------------------------------------------
def agree(args, group: Group) -> dict:
    """float64: the sharded mll, gradients, initial values and posterior against one process."""
    device, dtype = group.device, torch.float64
    n, m, d = args.agree_n, args.agree_m, args.agree_d
    x, y = synthetic(n + m, d, NOISE, device, dtype, args.seed)
    x_train, y_train, x_test = x[:n], y[:n], x[n:]
    solver = fg.CG(tol=args.agree_tol, eval_tol=1e-10, variance_tol=None, reorthogonalize=True, max_iters=5000,
                   precond=fg.PivotedCholesky(args.agree_rank, refresh_every=1), backend="auto")
    rows = group.block(n)
    single = fg.ExactGP(x_train, y_train, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d)), solver=solver)
    sharded = ShardedExactGP(x_train[rows], y_train[rows], fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d)),
                             solver=solver)
    init_single, init_sharded = parameters(single), parameters(sharded)
    out = {"n": n, "d": d, "m": m, "dtype": "float64", "tol": args.agree_tol, "precond_rank": args.agree_rank,
           "initial_values_rel_diff": compare(init_sharded, init_single),
           "initial_values_bitwise_equal": all(torch.equal(init_sharded[k], init_single[k]) for k in init_single)}
    steps = {}
    for name, model in (("single", single), ("sharded", sharded)):
        steps[name] = training_step(model, group, args.seed + PROBE_SEED_OFFSET)
        steps[name]["gradients"] = gradients(model)
    grads = compare(steps["sharded"]["gradients"], steps["single"]["gradients"])
    out.update(mll_single=-steps["single"]["loss"], mll_sharded=-steps["sharded"]["loss"],
               mll_rel_diff=relative(torch.tensor(steps["sharded"]["loss"]), torch.tensor(steps["single"]["loss"])),
               gradient_rel_diff=grads, max_gradient_rel_diff=max(grads.values()),
               gradients_bitwise_equal=all(torch.equal(steps["sharded"]["gradients"][k],
                                                       steps["single"]["gradients"][k]) for k in grads),
               cg_iterations={k: v["cg_iterations"] for k, v in steps.items()},
               backend={k: v["backend"] for k, v in steps.items()},
               warnings={k: v["warnings"] for k, v in steps.items()},
               seconds={k: v["seconds"] for k, v in steps.items()})
    with torch.no_grad():
        post_single, post_sharded = single.posterior(x_test), sharded.posterior(x_test)
        mean_single, var_single = post_single.mean, post_single.variance
        mean_sharded, var_sharded = post_sharded.mean, post_sharded.variance
        k_hat = single.kernel(x_train, x_train) + torch.diag(single.likelihood.noise_diag(n).expand(n))
        cross = single.kernel(x_train, x_test)
        chol = torch.linalg.cholesky(k_hat)
        mean_exact = single.mean(x_test) + cross.T @ torch.cholesky_solve((y_train - single.mean(x_train))[:, None],
                                                                          chol).squeeze(-1)
        var_exact = single.kernel.diag(x_test) - (cross * torch.cholesky_solve(cross, chol)).sum(0)
    out["posterior"] = {
        "mean_rel_diff": relative(mean_sharded, mean_single), "variance_rel_diff": relative(var_sharded, var_single),
        "sharded_vs_cholesky": {"mean": relative(mean_sharded, mean_exact),
                                "variance": relative(var_sharded, var_exact)},
        "single_vs_cholesky": {"mean": relative(mean_single, mean_exact), "variance": relative(var_single, var_exact)}}
    group.log(f"agree (n={n}, d={d}, float64, {group.backend}, world {group.world}): mll rel diff "
              f"{out['mll_rel_diff']:.3g}, max gradient rel diff {out['max_gradient_rel_diff']:.3g}, CG iterations "
              f"{out['cg_iterations']}, posterior mean {out['posterior']['mean_rel_diff']:.3g}, variance "
              f"{out['posterior']['variance_rel_diff']:.3g}")
    return out


# ----- parts "step" and "predict" -------------------------------------------------------------
def load_raw(models, path: str) -> None:
    """Set every model's raw parameters from a JSON file ({name: value}, or a fit record holding
    such a map under "raw_parameters_after", as benchmarks/million_fit_parameters.json does)."""
    values = json.loads(Path(path).read_text())
    values = values.get("raw_parameters_after", values)
    with torch.no_grad():
        for model in models:
            params = dict(model.named_parameters())
            if set(values) != set(params):
                raise SystemExit(f"--raw-parameters: expected values for {sorted(params)}, got {sorted(values)}")
            for name, value in values.items():
                params[name].copy_(torch.as_tensor(value, dtype=params[name].dtype).reshape(params[name].shape))


def step_models(args, group: Group, d: int):
    """(single, sharded) float32 models on the same n synthetic points, the 1M step's settings."""
    device = group.device
    x, y = synthetic(args.n, d, NOISE, device, torch.float32, args.seed)
    solver = fg.CG(precond=fg.PivotedCholesky(args.precond_rank, refresh_every=args.refresh_every),
                   backend=args.backend,
                   precision=args.precision, variance_tol=None, root_rank=1, exact_var_max=0)
    rows = group.block(args.n)

    def kernel():
        return fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d, lengthscale=0.3))

    single = fg.ExactGP(x, y, kernel(), solver=solver)
    sharded = ShardedExactGP(x[rows], y[rows], kernel(), solver=solver)
    if args.raw_parameters:
        load_raw((single, sharded), args.raw_parameters)
    return single, sharded


def step(args, group: Group, single, sharded, d: int) -> dict:
    """Warm-up, then interleaved timed steps of both models; their times and agreement."""
    models = {"single": single, "sharded": sharded}
    init = compare(parameters(sharded), parameters(single))
    seed = args.seed + PROBE_SEED_OFFSET
    warm = {name: [] for name in models}
    for i in range(args.warmup):
        for name, model in models.items():
            warm[name].append(training_step(model, group, seed))
            group.log(f"  d={d} warm-up {i} {name}: {warm[name][-1]['seconds']:.2f} s, "
                      f"{warm[name][-1]['cg_iterations']} CG iterations")
    timed, grads = {name: [] for name in models}, {}
    for i in range(args.repeats):
        for name, model in models.items():
            record = training_step(model, group, seed)
            timed[name].append(record)
            grads[name] = gradients(model)
            group.log(f"  d={d} repeat {i} {name}: {record['seconds']:.2f} s (mll {record['mll_seconds']:.2f}, "
                      f"backward {record['backward_seconds']:.2f}), {record['cg_iterations']} CG iterations, "
                      f"loss {record['loss']:.6f}")
    out = {"d": d, "n": args.n, "dtype": "float32", "backend": args.backend, "precision": args.precision,
           "precond_rank": args.precond_rank, "warmup": args.warmup, "repeats": args.repeats,
           "initial_values_rel_diff": init, "warmup_seconds": {k: [s["seconds"] for s in v] for k, v in warm.items()},
           "single": summary(timed["single"]), "sharded": summary(timed["sharded"])}
    if args.repeats:
        ratio = out["sharded"]["median_seconds"] / out["single"]["median_seconds"]
        pairs = [b["seconds"] / a["seconds"] for a, b in zip(timed["single"], timed["sharded"])]
        last = compare(grads["sharded"], grads["single"])
        out.update(overhead=ratio, overhead_per_pair=pairs, meets_target=ratio <= TARGET,
                   overhead_mll=out["sharded"]["median_mll_seconds"] / out["single"]["median_mll_seconds"],
                   overhead_backward=(out["sharded"]["median_backward_seconds"]
                                      / out["single"]["median_backward_seconds"]),
                   loss_rel_diff=relative(torch.tensor(timed["sharded"][-1]["loss"]),
                                          torch.tensor(timed["single"][-1]["loss"])),
                   gradient_rel_diff=last, max_gradient_rel_diff=max(last.values()))
        group.log(f"step d={d} n={args.n}: single {out['single']['median_seconds']:.3f} s, sharded "
                  f"{out['sharded']['median_seconds']:.3f} s (median of {args.repeats}); overhead {ratio:.4f} "
                  f"(mll {out['overhead_mll']:.4f}, backward {out['overhead_backward']:.4f}); loss rel diff "
                  f"{out['loss_rel_diff']:.3g}, max gradient rel diff {out['max_gradient_rel_diff']:.3g}")
    return out


def warm_up_prediction(model, x: torch.Tensor) -> None:
    """An untimed posterior at slightly moved parameters (the kernels of the one-column products
    compile here), then the parameters put back: the timed posterior then solves afresh, as its
    cache was made at the moved values. A collective on a sharded model."""
    saved = parameters(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3)
        model.posterior(x).mean.sum().item()
        for name, p in model.named_parameters():
            p.copy_(saved[name])


def predict(args, group: Group, single, sharded, d: int) -> dict:
    """The posterior mean at --predict-m test points from both models: seconds, difference."""
    device = group.device
    x_test = synthetic(args.predict_m, d, NOISE, device, torch.float32, args.seed + TEST_SEED_OFFSET)[0]
    out = {"d": d, "n": args.n, "m": args.predict_m}
    means = {}
    for name, model in (("single", single), ("sharded", sharded)):
        warm_up_prediction(model, x_test[:64])
        before = memory_mark(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                means[name] = model.posterior(x_test).mean.detach().clone()
            synchronize(device)
            seconds = time.perf_counter() - start
        diag = model.diagnostics
        out[name] = {"seconds": seconds, "mean_solve_cg_iterations": diag.get("cg_iterations"),
                     "residual": diag.get("residual"), "warnings": recorded(caught), **memory_peak(device, before)}
        for key in ("mean_solve_seconds", "root_seconds", "variance_method"):
            if key in diag:
                out[name][key] = diag[key]
    scale = float(means["single"].abs().max())
    out.update(mean_max_abs_diff=float((means["sharded"] - means["single"]).abs().max()),
               mean_rel_diff=relative(means["sharded"], means["single"]), mean_scale=scale,
               overhead=out["sharded"]["seconds"] / out["single"]["seconds"])
    group.log(f"predict d={d} m={args.predict_m}: single {out['single']['seconds']:.3f} s "
              f"({out['single']['mean_solve_cg_iterations']} CG iterations), sharded {out['sharded']['seconds']:.3f} s "
              f"({out['sharded']['mean_solve_cg_iterations']}); max |mean diff| {out['mean_max_abs_diff']:.3g}")
    return out


# ----- the command line -----------------------------------------------------------------------
def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("agree", "step", "predict"),
                        default=["agree", "step", "predict"])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--n", type=int, default=None, help="step/predict training points "
                        "(default 1,000,000 on CUDA, 4000 on the CPU)")
    parser.add_argument("--d", type=int, nargs="+", default=[3], help="input dimensions of the step part (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first (default 1)")
    parser.add_argument("--precond-rank", type=int, default=100, help="pivoted Cholesky rank of the step (default 100)")
    parser.add_argument("--refresh-every", type=int, default=1,
                        help="PivotedCholesky.refresh_every of the step (default 1: fresh pivots every step)")
    parser.add_argument("--backend", choices=fg.backends.BACKENDS, default=None,
                        help="kernel products of the step (default triton on CUDA, auto on the CPU)")
    parser.add_argument("--precision", choices=fg.backends.PRECISIONS, default="tf32x3")
    parser.add_argument("--raw-parameters", default=None,
                        help="JSON of raw parameter values for the step's models (e.g. "
                             "benchmarks/million_fit_parameters.json, d = 3: a fitted state); default: "
                             "lengthscale 0.3 and the rest from the data")
    parser.add_argument("--predict-m", type=int, default=None,
                        help="test points of the predict part (default 10,000 on CUDA, 500 on the CPU)")
    parser.add_argument("--agree-n", type=int, default=3000)
    parser.add_argument("--agree-d", type=int, default=3)
    parser.add_argument("--agree-m", type=int, default=50, help="test points of the agreement part (default 50)")
    parser.add_argument("--agree-rank", type=int, default=20, help="its pivoted Cholesky rank (default 20)")
    parser.add_argument("--agree-tol", type=float, default=1e-8, help="its CG tolerance (default 1e-8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-min", type=float, default=30.0, help="the process group's timeout")
    parser.add_argument("--out", default=None, help="also write the record as JSON here (PATH.json)")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    cuda = args.device == "cuda"
    args.n = args.n or (1_000_000 if cuda else 4000)
    args.predict_m = args.predict_m or (10_000 if cuda else 500)
    args.backend = args.backend or ("triton" if cuda else "auto")
    if args.repeats < 0 or args.warmup < 0:
        parser.error("--repeats, --warmup: expected non-negative counts")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    group = Group(args.device, args.timeout_min)
    try:
        group.log(f"{device_name(group.device)}: world size {group.world}, backend {group.backend}, "
                  f"parts {args.parts}")
        # without it (flashgp before the sharded path took precision) the sharded model's products
        # would run at KernelOperator's default precision, not --precision
        takes_precision = "precision" in inspect.signature(sharded_mll).parameters
        if not takes_precision:
            group.log("warning: sharded_mll takes no precision here: the sharded step is not at --precision")
        record = {"world_size": group.world, "dist_backend": group.backend, "torchrun": group.launched,
                  "target_overhead": TARGET, "device_name": device_name(group.device),
                  "sharded_mll_takes_precision": takes_precision}
        if "agree" in args.parts:
            record["agree"] = agree(args, group)
        steps, predictions = [], []
        if "step" in args.parts or "predict" in args.parts:
            for d in args.d:
                single, sharded = step_models(args, group, d)
                if "step" in args.parts:
                    steps.append(step(args, group, single, sharded, d))
                if "predict" in args.parts:
                    predictions.append(predict(args, group, single, sharded, d))
                del single, sharded
                if group.device.type == "cuda":
                    torch.cuda.empty_cache()
        record.update(step=steps, predict=predictions)
        if group.rank == 0:
            full = {"command": "python " + " ".join(sys.argv), "argv": sys.argv[1:], "args": vars(args),
                    "versions": versions(), **record}
            print(json.dumps(json_safe(full), indent=1), flush=True)
            if args.out:
                write_results(args.out, steps, args, extra=record, device=group.device)
        return record
    finally:
        group.close()


if __name__ == "__main__":
    main()
