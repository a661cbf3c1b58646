# Example: an exact GP on a large synthetic data set with BBMM (CG + pivoted-Cholesky
# preconditioner); runs on CUDA when present (float32), else on the CPU with a smaller n.
"""Exact GP on n synthetic points in d dimensions, trained with BBMM.

    python examples/large_gpu_fit.py                     # n = 200,000 on a GPU, 3,000 on a CPU
    python examples/large_gpu_fit.py --n 1000000 --iters 20 --backend triton
    python examples/large_gpu_fit.py --n 1000000 --iters 50 --checkpoint fit.ckpt   # rerun to resume

The data go to the GPU by creating them there (``device="cuda"``); the model takes the device
and dtype of its training inputs. Kernel products are computed without ever storing the n x n
matrix once it outgrows a memory budget (``backend="auto"``: fused Triton kernels on CUDA for
supported kernels, row blocks otherwise).
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

import flashgp as fg
from flashgp.backends import BACKENDS


def synthetic(n: int, d: int, noise: float, device, dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x (n, d) uniform on [0, 1]^d and y (n,) = sum_j sin(2 pi x_j) / sqrt(d) + noise."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(n, d, generator=g, device=device, dtype=dtype)
    f = torch.sin(2 * math.pi * x).sum(-1) / math.sqrt(d)
    return x, f + noise * torch.randn(n, generator=g, device=device, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_raw_parameters(model, path: str) -> None:
    """Set the model's raw parameters from a JSON file: {name: number or nested list}, or a dict
    holding such a map under "raw_parameters_after", as benchmarks/million_fit_parameters.json does
    (``--raw-parameters benchmarks/million_fit_parameters.json``: the final state of a 1M fit)."""
    with open(path) as f:
        values = json.load(f)
    values = values.get("raw_parameters_after", values) if isinstance(values, dict) else values
    params = dict(model.named_parameters())
    if not isinstance(values, dict) or set(values) != set(params):
        raise SystemExit(f"--raw-parameters: expected values for exactly {sorted(params)}, got "
                         f"{sorted(values) if isinstance(values, dict) else type(values).__name__}")
    with torch.no_grad():
        for name, value in values.items():
            value = torch.as_tensor(value, dtype=params[name].dtype, device=params[name].device)
            if value.shape != params[name].shape:
                raise SystemExit(f"--raw-parameters: {name} has shape {tuple(value.shape)}, the "
                                 f"model's is {tuple(params[name].shape)}")
            params[name].copy_(value)
        print(f"  raw parameters from {path}: lengthscale "
              f"{[round(v, 4) for v in model.kernel.base.lengthscale.flatten().tolist()]}, outputscale "
              f"{float(model.kernel.outputscale):.4f}, noise {float(model.likelihood.noise):.4g}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None,
                        help="training points (default 200000 on CUDA, 3000 on CPU)")
    parser.add_argument("--d", type=int, default=3, help="input dimensions (default 3)")
    parser.add_argument("--iters", type=int, default=10, help="Adam steps (default 10)")
    parser.add_argument("--test", type=int, default=1000, help="test points (default 1000)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="kernel product backend")
    parser.add_argument("--precond-rank", type=int, default=100, help="pivoted Cholesky rank (default 100)")
    parser.add_argument("--max-precond-rank", type=int, default=None,
                        help="let training double the rank up to this when CG needs many iterations "
                             "(fg.PivotedCholesky(max_rank=...); default: a fixed rank)")
    parser.add_argument("--eval-precond-rank", type=int, default=None,
                        help="preconditioner rank of the prediction solve (fg.PivotedCholesky("
                             "eval_rank=...); default: the training's rank)")
    parser.add_argument("--precond-blocks", type=int, default=0,
                        help="add the preconditioner's diagonal blocks of this many near points "
                             "(fg.PivotedCholesky(block_size=...); default 0: none)")
    parser.add_argument("--vecchia", type=int, default=0,
                        help="use the Vecchia preconditioner with this many neighbours per point "
                             "(fg.Vecchia(neighbors=...)) instead of the pivoted Cholesky (default 0: not)")
    parser.add_argument("--eval-tol", type=float, default=1e-3,
                        help="relative residual of the prediction solves (default 1e-3)")
    parser.add_argument("--root-rank", type=int, default=200,
                        help="Lanczos iterations of the cached root for fast variances (default 200)")
    parser.add_argument("--variance-tol", type=float, default=None,
                        help="certify the variances to this relative error by CG solves with every "
                             "test point (fg.CG(variance_tol=...); each costs products with the n x n "
                             "kernel matrix); default None: the root's or local ones, uncertified")
    parser.add_argument("--local-neighbors", type=int, default=0,
                        help="variances from this many nearest training points per test point "
                             "(fg.CG(local_neighbors=...)) instead of the Lanczos root (default 0: LOVE)")
    parser.add_argument("--precision", choices=fg.backends.PRECISIONS, default="fp16x3",
                        help="arithmetic of the fused GPU kernels (default fp16x3)")
    parser.add_argument("--exact-var", action="store_true",
                        help="variances by CG solves against every test point (slow at large n) "
                             "instead of the cached Lanczos root (LOVE, rank 200)")
    parser.add_argument("--lanczos-iters", type=int, default=20,
                        help="minimum CG iterations of a training step, for the log det (fg.CG("
                             "lanczos_iters=...); default 20, GPyTorch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw-parameters", default=None,
                        help="JSON file of raw parameter values to start from (a name -> value map, "
                             "or a fit history's 'raw_parameters_after'); with --iters 0 the run "
                             "goes straight to the predictions at those hyperparameters")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint file of the fit: written every --checkpoint-every steps; "
                             "a rerun of the same command resumes from it (long fits over several runs)")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="steps between checkpoints (default 5)")
    args = parser.parse_args(argv)

    name = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(name)
    dtype = torch.float32 if device.type == "cuda" else torch.float64
    n = args.n or (200_000 if device.type == "cuda" else 3_000)
    x, y = synthetic(n + args.test, args.d, 0.1, device, dtype, args.seed)
    x_train, y_train, x_test, y_test = x[:n], y[:n], x[n:], y[n:]

    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=args.d, lengthscale=0.3))
    precond = fg.Vecchia(args.vecchia) if args.vecchia else fg.PivotedCholesky(
        args.precond_rank, max_rank=args.max_precond_rank, eval_rank=args.eval_precond_rank,
        block_size=args.precond_blocks)
    solver = fg.CG(tol=1.0, precond=precond, backend=args.backend,
                   exact_var_max=args.test if args.exact_var else 0, precision=args.precision,
                   root_rank=args.root_rank, eval_tol=args.eval_tol,
                   local_neighbors=args.local_neighbors, lanczos_iters=args.lanczos_iters,
                   variance_tol=args.variance_tol)
    model = fg.ExactGP(x_train, y_train, kernel, solver=solver)
    if args.raw_parameters:
        load_raw_parameters(model, args.raw_parameters)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    print(f"n={n}, d={args.d}, {dtype}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    synchronize(device)
    start = time.perf_counter()
    ckpt = dict(checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, resume=True) \
        if args.checkpoint else {}
    last_time = [start]

    def report(step, loss, model):  # one line per step as it ends, so a run cut short still reports
        synchronize(device)
        now = time.perf_counter()
        d = model.diagnostics
        remaining = d.get("precond_remaining_error")  # greedy builds: how far L L^T is from K
        kind = (f"Vecchia, {d.get('precond_neighbors')} neighbours" if d.get("precond_neighbors")
                else f"rank {d.get('precond_rank')}")
        print(f"  step {step}: loss {float(loss):.5f}, {now - last_time[0]:.2f} s, "
              f"{d.get('cg_iterations')} CG iterations (residual of y {d.get('residual', float('nan')):.3g}, "
              f"mean {d.get('mean_residual', float('nan')):.3g}, log-det tail change "
              f"{d.get('logdet_tail_change', float('nan')):.3g}), preconditioner {kind} "
              f"({d.get('precond_pivots')}, {d.get('precond_seconds', float('nan')):.2f} s"
              + ("" if remaining is None else f", remaining diagonal error {remaining:.3g}, "
                 f"early-stop threshold {d['precond_stop_threshold']:.3g}") + ")", flush=True)
        last_time[0] = now

    history = fg.fit(model, optimizer="adam", lr=0.1, iters=args.iters, progress=False, seed=args.seed,
                     callback=report, **ckpt)
    synchronize(device)
    train = time.perf_counter() - start
    last = history.diagnostics[-1] if history.diagnostics else {}
    if history.start_step:
        print(f"  resumed at step {history.start_step} from {args.checkpoint}; seconds per step "
              f"below include the earlier runs' steps, the training time only this run's; total "
              f"of all steps {sum(history.step_seconds):.1f} s")
    steps = len(history) - history.start_step  # the steps of this run
    print(f"  training: {steps} steps in {train:.2f} s ({train / max(1, steps):.3f} s/step, "
          f"the first includes warm-up); last step: backend {last.get('backend')}, "
          f"{last.get('cg_iterations')} CG iterations, residual {last.get('residual', float('nan')):.3g}")
    print("  seconds per step: " + ", ".join(f"{s:.2f}" for s in history.step_seconds)
          + "; CG iterations per step: "
          + ", ".join(str(d.get("cg_iterations")) for d in history.diagnostics))

    synchronize(device)
    start = time.perf_counter()
    pred = model.predict(x_test)
    mean, std = pred.mean, pred.stddev  # (test,) each
    synchronize(device)
    seconds = time.perf_counter() - start
    rmse = float((mean - y_test).pow(2).mean().sqrt())
    coverage = float(((y_test - mean).abs() <= 1.96 * std).float().mean())
    nll = float((0.5 * ((y_test - mean) / std).square() + std.log()).mean() + 0.5 * math.log(2 * math.pi))
    with torch.no_grad():
        noise = float(model.likelihood.noise)
    d = model.diagnostics
    print(f"  prediction solve: {d.get('cg_iterations')} CG iterations, residual "
          f"{d.get('residual', float('nan')):.3g}, preconditioner rank {d.get('precond_rank')}, "
          f"neighbours {d.get('precond_neighbors')}; "
          f"seconds: preconditioner {d.get('precond_seconds', float('nan')):.2f}, mean solve "
          f"{d.get('mean_solve_seconds', float('nan')):.2f}, Lanczos root "
          f"{d.get('root_seconds', float('nan')):.2f}")
    print(f"  prediction of {args.test} points ({model.diagnostics.get('variance_method')} variances): "
          f"{seconds:.2f} s; test RMSE {rmse:.4f} (noise std 0.1, "
          f"learned {math.sqrt(noise):.3f}); 95% coverage {coverage:.3f}, predictive std "
          f"{float(std.min()):.3g} / {float(std.median()):.3g} / {float(std.max()):.3g} (min / "
          f"median / max), NLL {nll:.4f}"
          + (f", root change {d['variance_root_change']:.3g}" if "variance_root_change" in d else "")
          + (f", local change {d['variance_local_change']:.3g} ({d['local_seconds']:.2f} s for the "
             f"local variances)" if "variance_local_change" in d else ""))
    synchronize(device)
    start = time.perf_counter()
    pred = model.predict(x_test)  # the solve and the Lanczos root are cached now
    mean, std = pred.mean, pred.stddev
    synchronize(device)
    print(f"  prediction again, with the caches: {time.perf_counter() - start:.3f} s")
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
