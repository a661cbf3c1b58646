# Example: an exact GP whose training rows are split over the processes torchrun starts (one per
# GPU with NCCL, or CPU processes with gloo), trained with fg.fit, checkpointed, saved and evaluated.
"""Exact GP (Scale(Matern-5/2, ARD), CG with a pivoted-Cholesky preconditioner) trained across
processes with ``flashgp.distributed.ShardedExactGP``. Every process holds one contiguous block
of the training rows; ``fg.fit`` runs on all of them with the same seed, so the hyperparameters
stay identical everywhere.

One machine with G GPUs (one process per GPU, NCCL; LOCAL_RANK picks the GPU):

    torchrun --standalone --nproc-per-node=G examples/distributed_fit.py --n-train 200000 --iters 30

Several machines (M of them, G GPUs each): the same command on every machine, pointing at one
host and a free port that all machines reach (c10d rendezvous; the node ranks are assigned):

    torchrun --nnodes=M --nproc-per-node=G --rdzv-id=gpfit --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:PORT examples/distributed_fit.py --n-train 1000000 --iters 30 \\
        --checkpoint /shared/fit.ckpt --save /shared/model.fgp

    (or a static rendezvous: ``--nnodes=M --node-rank=i --master-addr=HOST --master-port=PORT``
    with i = 0 .. M-1 on machine i.)

CPU processes (gloo; one thread each is usually best):

    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node=4 examples/distributed_fit.py --n-train 4000

Without torchrun (``python examples/distributed_fit.py ...``) it runs as a group of one process.

Data: synthetic by default (``--n-train`` rows in ``--dims`` dimensions, made from ``--seed`` alike on
every process, which keeps its block: rows n*r//G to n*(r+1)//G), or a UCI-format data set with
``--data NAME_OR_FOLDER`` (``flashgp.datasets.load_uci``: every process reads the file,
standardizes it with the training split's statistics, the same everywhere, and keeps its block
of the training rows). The options have no abbreviations shared with torchrun's: torchrun
reads every option after the script's name too, so a short ``--n`` would be taken for its own
``--nnodes`` / ``--nproc-per-node`` and refused as ambiguous.

Checkpoints: ``--checkpoint PATH`` (the same path on every process, on storage that all of them
see; rank 0 writes it) every ``--checkpoint-every`` steps; ``--resume`` goes on from it, also
with another number of processes. ``--iters`` counts the steps of the whole run, so a resumed
run with a larger ``--iters`` continues. ``--save PATH``: rank 0 writes the fitted model, an
ordinary ``fg.ExactGP`` file holding all the rows (``fg.load(PATH)`` on one process).

``--load PATH`` starts from such a file instead (``flashgp.distributed.load``: every process
reads it and keeps its block of rows), to go on training or, with ``--iters 0``, to predict.

Rank 0 prints the test RMSE and the mean negative log predictive density (with the likelihood's
noise), the learned hyperparameters and the seconds per step.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
from datetime import timedelta

import torch
import torch.distributed as dist

import flashgp as fg
from flashgp.backends import BACKENDS
from flashgp.datasets import load_uci
from flashgp.distributed import ShardedExactGP
from flashgp.distributed import load as load_sharded


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None,
                      help="a UCI-format data set: a name under flashgp/data (e.g. concrete) or a folder "
                           "holding data.csv.gz and test_mask.csv.gz; default: synthetic data")
    data.add_argument("--split", type=int, default=0, help="--data: which test mask column (default 0)")
    data.add_argument("--max-train", type=int, default=None, help="--data: keep a random subset of training rows")
    data.add_argument("--n-train", type=int, default=20_000, help="synthetic training points (default 20000)")
    data.add_argument("--dims", type=int, default=3, help="synthetic input dimensions (default 3)")
    data.add_argument("--n-test", type=int, default=1000, help="synthetic test points (default 1000)")
    data.add_argument("--noise", type=float, default=0.1, help="synthetic noise standard deviation (default 0.1)")

    run = parser.add_argument_group("processes and devices")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto: the GPU LOCAL_RANK names when CUDA is available, else the CPU")
    run.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto",
                     help="torch.distributed backend (auto: nccl on GPUs, gloo on the CPU)")
    run.add_argument("--timeout", type=float, default=600.0,
                     help="seconds a process waits for the others in a collective before failing (default 600)")
    run.add_argument("--dtype", choices=("auto", "float32", "float64"), default="auto",
                     help="auto: float32 on GPUs, float64 on the CPU (--load: the file's dtype)")

    solver = parser.add_argument_group("solver")
    solver.add_argument("--precond-rank", type=int, default=100, help="pivoted Cholesky rank (default 100)")
    solver.add_argument("--kernel-backend", choices=BACKENDS, default="auto", help="kernel product backend")
    solver.add_argument("--precision", choices=fg.backends.PRECISIONS, default=fg.CG.precision,
                        help=f"arithmetic of the fused GPU kernels (default {fg.CG.precision})")
    solver.add_argument("--cg-tol", type=float, default=1.0, help="CG tolerance in training (default 1.0)")
    solver.add_argument("--eval-tol", type=float, default=1e-3, help="CG tolerance of the predictions (default 1e-3)")
    solver.add_argument("--probes", type=int, default=10, help="probe vectors per step (default 10)")
    solver.add_argument("--reorthogonalize", action="store_true",
                        help="CG with full re-orthogonalization (round-off level agreement across process counts)")

    fit = parser.add_argument_group("fit")
    fit.add_argument("--iters", type=int, default=30, help="Adam steps of the whole run (default 30)")
    fit.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the probes (default 0)")
    fit.add_argument("--checkpoint", default=None, help="checkpoint file (the same path on every process)")
    fit.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints (default 10)")
    fit.add_argument("--resume", action="store_true", help="go on from --checkpoint when the file exists")
    fit.add_argument("--save", default=None, help="write the fitted model here (rank 0; an fg.ExactGP file)")
    fit.add_argument("--load", default=None,
                     help="start from this model file (fg.save's, of one process or several) instead of "
                          "the data's training rows: every process reads it and keeps its block of rows; "
                          "the test points still come from the data options (--iters 0: predict only)")
    args = parser.parse_args(argv)
    if args.resume and not args.checkpoint:
        parser.error("--resume needs --checkpoint")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def setup(args) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...),
    or one of this process alone when it was started without torchrun; returns (rank, world size,
    this process's device)."""
    launched = "RANK" in os.environ  # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cpu")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} GPUs; "
                             "start at most that many processes per machine (--nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = args.backend if args.backend != "auto" else ("nccl" if use_cuda else "gloo")
    options = {"device_id": device} if backend == "nccl" else {}
    if not launched:  # started by plain python: a group of this one process, met through a file
        options.update(init_method="file://" + os.path.join(tempfile.mkdtemp(), "rendezvous"), rank=0, world_size=1)
    dist.init_process_group(backend, timeout=timedelta(seconds=args.timeout), **options)
    return dist.get_rank(), dist.get_world_size(), device


def synthetic(n: int, d: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, d) uniform on [0, 1]^d and y (n,) = sum_j sin(2 pi x_j) / sqrt(d) + noise, made on the
    CPU in float64 from ``seed``: bitwise the same on every process, whatever its device."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    f = torch.sin(2 * math.pi * x).sum(-1) / math.sqrt(d)
    return x, f + noise * torch.randn(n, generator=g, dtype=torch.float64)


def load_data(args):
    """(x_train, y_train, x_test, y_test, y_std, name): all rows, the same on every process;
    y_std turns standardized errors back into the data's units (1 for synthetic data)."""
    if args.data is None:
        x, y = synthetic(args.n_train + args.n_test, args.dims, args.noise, args.seed)
        n = args.n_train
        return x[:n], y[:n], x[n:], y[n:], 1.0, f"synthetic (noise std {args.noise})"
    data = load_uci(args.data, split=args.split, max_train=args.max_train)  # standardized
    return data.x_train, data.y_train, data.x_test, data.y_test, data.y_std, data.name


def hyperparameters(model) -> str:
    with torch.no_grad():
        lengthscale = model.kernel.base.lengthscale.flatten().tolist()
        return (f"lengthscale [{', '.join(f'{v:.4f}' for v in lengthscale)}], outputscale "
                f"{float(model.kernel.outputscale):.4f}, noise {float(model.likelihood.noise):.5g}, "
                f"mean {float(model.mean.constant):.4f}")


def evaluate(model, x_test, y_test, y_std) -> tuple[float, float]:
    """Test RMSE and mean negative log predictive density in the data's units. The posterior is a
    collective (every process passes the same points); its exact variances are computed for
    at most ``solver.exact_var_max`` points at a time, so the test set goes in chunks."""
    chunk = max(1, model.solver.exact_var_max)
    means, variances = [], []
    for start in range(0, len(x_test), chunk):
        pred = model.predict(x_test[start:start + chunk])  # the latent posterior plus the noise
        means.append(pred.mean.detach())
        variances.append(pred.variance.detach())
    mean, var = torch.cat(means).double(), torch.cat(variances).double()
    err = (mean - y_test.double()) * y_std
    var = var * y_std**2
    rmse = float(err.square().mean().sqrt())
    nll = float((0.5 * torch.log(2 * math.pi * var) + 0.5 * err.square() / var).mean())
    return rmse, nll


def main(argv=None) -> None:
    args = parse(argv)
    rank, world, device = setup(args)
    try:
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(
            args.dtype, torch.float32 if device.type == "cuda" else torch.float64)
        x, y, x_test, y_test, y_std, name = load_data(args)
        solver = fg.CG(tol=args.cg_tol, eval_tol=args.eval_tol, probes=args.probes,
                       precond=fg.PivotedCholesky(rank=args.precond_rank), backend=args.kernel_backend,
                       precision=args.precision, reorthogonalize=args.reorthogonalize)
        if args.load:  # the file's rows and parameters, split evenly; the solver of the options above
            model = load_sharded(args.load, device=device, solver=solver)  # a collective
            name = f"{args.load} (test points: {name})"
        else:
            n = len(x)
            if n < world:
                raise SystemExit(f"{n} training rows cannot be split over {world} processes")
            lo, hi = n * rank // world, n * (rank + 1) // world  # this process's contiguous block
            x_local = x[lo:hi].to(device=device, dtype=dtype)
            y_local = y[lo:hi].to(device=device, dtype=dtype)
            kernel = fg.kernels.Scale(fg.kernels.Matern(2.5, ard_dims=x.shape[1]))
            model = ShardedExactGP(x_local, y_local, kernel, solver=solver)  # a collective
        del x, y
        x_test, y_test = x_test.to(device=device, dtype=model.train_x.dtype), y_test.to(device)
        if rank == 0:
            where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
            print(f"{name}: n={model.num_train}, d={model.train_x.shape[-1]}, test {len(x_test)}; {world} "
                  f"process{'es' if world > 1 else ''} ({dist.get_backend()}, {where}, {model.train_x.dtype}), "
                  f"{model.shards.n_local} rows on rank 0", flush=True)

        history = fg.fit(model, iters=args.iters, lr=args.lr, seed=args.seed, progress=(rank == 0),
                         checkpoint=args.checkpoint,
                         checkpoint_every=args.checkpoint_every if args.checkpoint else None, resume=args.resume)
        if rank == 0:
            steps = history.step_seconds[history.start_step:]  # this run's steps
            if history.start_step:
                print(f"resumed at step {history.start_step} from {args.checkpoint}", flush=True)
            if steps:
                last = history.diagnostics[-1]
                print(f"fit: {len(steps)} steps, {statistics.median(steps):.3f} s per step (median; first "
                      f"{steps[0]:.3f} s), final loss {history.loss[-1]:.6f}, {last.get('cg_iterations')} CG "
                      f"iterations in the last step", flush=True)
            print("hyperparameters: " + hyperparameters(model), flush=True)

        rmse, nll = evaluate(model, x_test, y_test, y_std)  # a collective
        if rank == 0:
            print(f"test: RMSE {rmse:.4f}, NLL {nll:.4f} (data units; predictive variance includes "
                  f"the noise)", flush=True)
            if args.save:
                fg.save(model, args.save)  # an fg.ExactGP file holding all n rows
                print(f"saved the model to {args.save}", flush=True)
        dist.barrier()  # leave the group together (not while rank 0 still writes)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
