# The worker processes of tests/distributed/test_sharded_mll.py: each joins a gloo group through a
# file, computes the sharded mll of its rows and its gradients, and saves them for the parent.
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist

import flashgp as fg
from flashgp.distributed import sharded_mll
from flashgp.kernels import Matern, Scale
from flashgp.means import Constant

F64 = torch.float64
SETTINGS = dict(probes=8, tol=1e-6, max_iters=500, lanczos_iters=20, reorthogonalize=True)  # both sides' CG
PROBE_SEED = 7
TIMEOUT_S = 20  # the group's timeout (mode "stall": STALL_TIMEOUT_S)
STALL_TIMEOUT_S = 5


def data(n: int, seed: int = 3):
    """A seeded float64 problem: x (n, 2) in [-2, 2]^2, y (n,)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1]) + 0.1 * torch.randn(n, generator=g, dtype=F64)
    return x, y


def parts():
    """(kernel, mean, likelihood): Scale(Matern 5/2 ARD), a constant mean, Gaussian noise; float64,
    the same values in every process."""
    kernel = Scale(Matern(2.5, ard_dims=2)).to(F64)
    with torch.no_grad():
        kernel.base.lengthscale = torch.tensor([0.7, 1.3], dtype=F64)
        kernel.outputscale = torch.tensor(1.5, dtype=F64)
    mean = Constant(0.2).to(F64)
    likelihood = fg.likelihoods.Gaussian(noise=0.05).to(F64)
    return kernel, mean, likelihood


def gradients(*modules) -> dict:
    """Every parameter's gradient by qualified name (a zero tensor where none arrived)."""
    out = {}
    for prefix, module in zip(("kernel", "mean", "likelihood"), modules):
        for name, p in module.named_parameters():
            out[f"{prefix}.{name}"] = (torch.zeros_like(p) if p.grad is None else p.grad).detach().clone()
    return out


def worker(rank: int, world: int, init_file: str, counts: list, out_dir: str, mode: str = "ok",
           settings: dict | None = None) -> None:
    """Spawned once per rank. mode "ok": compute and save; "raise": rank 1 raises before the first
    collective; "leave": rank 1 joins the group and returns without taking part; "stall": rank 1
    joins the group and sleeps past the group's timeout (STALL_TIMEOUT_S) before returning.
    settings: the CG settings (default SETTINGS)."""
    torch.set_num_threads(1)
    if mode == "raise" and rank == 1:
        raise RuntimeError("rank 1 failed on purpose before the first collective")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=STALL_TIMEOUT_S if mode == "stall" else TIMEOUT_S))
    try:
        if mode == "leave" and rank == 1:
            return
        if mode == "stall" and rank == 1:
            time.sleep(4 * STALL_TIMEOUT_S)
            return
        x, y = data(sum(counts))
        start = sum(counts[:rank])
        stop = start + counts[rank]
        kernel, mean, likelihood = parts()
        generator = torch.Generator().manual_seed(PROBE_SEED)
        value, info = sharded_mll(kernel, mean, likelihood, x[start:stop], y[start:stop],
                                  generator=generator, **(settings or SETTINGS))
        value.backward()
        torch.save({"value": value.detach(), "grads": gradients(kernel, mean, likelihood), "info": info},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        if mode not in ("leave", "stall"):
            dist.destroy_process_group()


def precond_worker(rank: int, world: int, init_file: str, counts: list, out_dir: str, ranks: list,
                   settings: dict) -> None:
    """Spawned once per rank: for each preconditioner rank k in ``ranks``, the sharded pivoted
    Cholesky of this process's rows (pivots, factor rows, log det, solves of its rows of a seeded
    right-hand side block) and the sharded mll with fg.PivotedCholesky(rank=k) and its gradients;
    and the mll without a preconditioner (its iterations). Saved for the parent."""
    from flashgp.distributed import Shards, ShardedKernelOperator, sharded_preconditioner

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=TIMEOUT_S))
    try:
        n = sum(counts)
        x, y = data(n)
        start = sum(counts[:rank])
        stop = start + counts[rank]
        rhs = torch.randn(n, 3, generator=torch.Generator().manual_seed(11), dtype=F64)
        out = {}
        for k in ranks:
            kernel, mean, likelihood = parts()
            shards = Shards(counts[rank])
            op = ShardedKernelOperator(kernel, x[start:stop], shards, x)
            info = {}
            precond = sharded_preconditioner(fg.PivotedCholesky(rank=k), op,
                                             likelihood.noise_diag(n)[start:stop], info)
            samples = precond.sample(4, generator=torch.Generator().manual_seed(5))
            built = {"pivots": info["pivots"], "factor": precond.factor, "logdet": precond.logdet(),
                     "solve": precond.solve(rhs[start:stop]), "samples": samples}
            generator = torch.Generator().manual_seed(PROBE_SEED)
            value, mll_info = sharded_mll(kernel, mean, likelihood, x[start:stop], y[start:stop],
                                          generator=generator, precond=fg.PivotedCholesky(rank=k), **settings)
            value.backward()
            out[k] = {"built": built, "value": value.detach(), "info": mll_info,
                      "grads": gradients(kernel, mean, likelihood)}
        kernel, mean, likelihood = parts()
        _, plain = sharded_mll(kernel, mean, likelihood, x[start:stop], y[start:stop],
                               generator=torch.Generator().manual_seed(PROBE_SEED), **settings)
        out["plain_iterations"] = plain["iterations"]
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
