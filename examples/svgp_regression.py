# Example: a stochastic variational GP (fg.SVGP) on a synthetic regression set kept in CPU memory,
# trained on minibatches with natural-gradient steps for q(u), stopped after part of an epoch,
# resumed from its checkpoint, then evaluated, saved and loaded.
"""SVGP regression on minibatches, with a checkpoint and a resume.

    python examples/svgp_regression.py                                  # 20,000 points, CPU
    python examples/svgp_regression.py --n 2000000 --inducing 1000 --batch-size 4096 \\
        --iters 5000 --device cuda --dtype float32                      # the data stay on the CPU

The data (x in [-2, 2]^d, a smooth function plus Gaussian noise of std 0.2) are generated and
kept on the CPU; each step's batch is gathered there and moved to the model's device. The first
fit is stopped at --stop-at (mid-epoch by default), as if the job had been killed; a second fit
of a freshly built model with resume=True goes on from the checkpoint to --iters, drawing the
batches an uninterrupted fit would (the batch order is a function of the seed and the step), and
ends where an uninterrupted fit does (--compare runs one to show it).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import flashgp as fg


def truth(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1 % x.shape[1]]) + 0.3 * x[:, -1]


def make_data(n: int, d: int, seed: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64) * 4 - 2
    y = truth(x) + 0.2 * torch.randn(n, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def build(x: torch.Tensor, y: torch.Tensor, args, device) -> fg.SVGP:
    """The model, its inducing inputs and initial hyperparameters chosen from a subsample (the
    model keeps no data: x and y are read at construction only)."""
    sub = slice(0, min(len(x), 5000))
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=x.shape[1]))
    return fg.SVGP(kernel, args.inducing, x=x[sub].to(device), y=y[sub].to(device),
                   variational="natural", seed=args.seed)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="training points (default 20,000)")
    parser.add_argument("--d", type=int, default=2, help="input dimensions (default 2)")
    parser.add_argument("--test", type=int, default=2_000, help="test points (default 2,000)")
    parser.add_argument("--inducing", type=int, default=200, help="inducing points M (default 200)")
    parser.add_argument("--batch-size", type=int, default=500, help="points per minibatch (default 500)")
    parser.add_argument("--iters", type=int, default=400, help="optimizer steps, one batch each (default 400)")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="the step the first fit stops at (default: mid-epoch, near iters / 2)")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam's lr: hyperparameters and Z (default 0.05)")
    parser.add_argument("--natural-lr", type=float, default=0.1, help="natural-gradient step for q(u) (default 0.1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--out", default=None, help="folder for the checkpoint and the model file (default: a temp dir)")
    parser.add_argument("--compare", action="store_true", help="also run an uninterrupted fit and compare")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    x, y = make_data(args.n, args.d, args.seed, dtype)                   # CPU memory
    x_test, y_test = make_data(args.test, args.d, args.seed + 1, dtype)
    out = Path(args.out or tempfile.mkdtemp(prefix="flashgp-svgp-"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "svgp.ckpt"
    ckpt.unlink(missing_ok=True)
    per_epoch = math.ceil(args.n / min(args.batch_size, args.n))
    stop = args.stop_at if args.stop_at is not None else min(args.iters, args.iters // 2 + per_epoch // 3)
    print(f"SVGP: n={args.n:,}, d={args.d}, M={args.inducing}, batch {args.batch_size}, {per_epoch} steps "
          f"an epoch, {args.iters} steps; data on the cpu, model on the {device.type} ({args.dtype})")

    fit_args = dict(data=(x, y), batch_size=args.batch_size, lr=args.lr, natural_lr=args.natural_lr,
                    seed=args.seed, progress=False, checkpoint=ckpt, checkpoint_every=25)
    model = build(x, y, args, device)
    start = time.perf_counter()
    first = fg.fit(model, iters=stop, **fit_args)
    print(f"  first fit: steps 0-{stop - 1} in {time.perf_counter() - start:.1f} s, stopped in epoch "
          f"{stop // per_epoch} at batch {stop % per_epoch} of {per_epoch}; -ELBO per point "
          f"{first.loss[-1]:.4f}")

    model = build(x, y, args, device)                                  # as after a restart
    start = time.perf_counter()
    history = fg.fit(model, iters=args.iters, resume=True, **fit_args)
    seconds = time.perf_counter() - start
    print(f"  resumed at step {history.start_step} from {ckpt.name}: {args.iters - history.start_step} "
          f"more steps in {seconds:.1f} s ({1e3 * seconds / max(1, args.iters - history.start_step):.1f} "
          f"ms a step); -ELBO per point {history.loss[-1]:.4f}")
    if args.compare:
        straight = build(x, y, args, device)
        other = fg.fit(straight, iters=args.iters, **{**fit_args, "checkpoint": None, "checkpoint_every": None})
        gap = max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(),
                                                            straight.state_dict().values()))
        print(f"  an uninterrupted fit ends at -ELBO {other.loss[-1]:.4f}; largest parameter difference {gap:.1e}")

    model.eval()
    with torch.no_grad():  # the ELBO on all n points, in chunks (each chunk's mean, weighted)
        elbo = sum(float(model.elbo(x[i:i + 8192].to(device), y[i:i + 8192].to(device))) * len(x[i:i + 8192])
                   for i in range(0, args.n, 8192)) / args.n
    start = time.perf_counter()
    pred = model.predict(x_test.to(device))                            # a Posterior, noise included
    predict_ms = 1e3 * (time.perf_counter() - start)
    mean, var, target = pred.mean.cpu().double(), pred.variance.cpu().double(), y_test.double()
    rmse = float((mean - target).pow(2).mean().sqrt())
    nll = float((0.5 * torch.log(2 * math.pi * var) + 0.5 * (target - mean).pow(2) / var).mean())
    inside = float(((target - mean).abs() <= 1.96 * var.sqrt()).double().mean())
    noise = float(model.likelihood.noise.detach())
    print(f"  ELBO per point on all {args.n:,} points {elbo:+.4f}; learned noise std {math.sqrt(noise):.3f} (true 0.2)")
    print(f"  test RMSE {rmse:.4f}   NLL {nll:.4f}   95% coverage {inside:.3f}   predict {predict_ms:.0f} ms "
          f"for {args.test:,} points")

    path = out / "svgp.fgp"
    fg.save(model, path)
    loaded = fg.load(path, device=device)
    same = torch.equal(loaded.predict(x_test.to(device)).mean, pred.mean)
    print(f"  saved {path.name} ({path.stat().st_size / 1e3:.0f} kB, no data inside); "
          f"loaded predictions identical: {same}")


if __name__ == "__main__":
    main()
