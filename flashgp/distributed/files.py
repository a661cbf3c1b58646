# Model files on several processes: an ExactGP file (all n rows) read by every process of a group,
# each keeping its contiguous block of rows as a ShardedExactGP.
from __future__ import annotations

import torch
import torch.distributed as dist

from ..io import check_device, load as load_file
from ..models.exact_gp import ExactGP
from .model import ShardedExactGP


def even_rows(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous block ``(start, stop)`` of n rows that process ``rank`` of ``world_size``
    holds in an even split (``n * r // world_size`` boundaries; sizes differ by at most one)."""
    if n < world_size:
        raise ValueError(f"n: {n} rows cannot give each of {world_size} processes at least one")
    return n * rank // world_size, n * (rank + 1) // world_size


def load(path, group=None, device=None, solver=None) -> ShardedExactGP:
    """A ``ShardedExactGP`` from an ``fg.ExactGP`` model file (``fg.save`` of an ExactGP or of a
    ShardedExactGP, or a checkpoint's model), its n rows split evenly over the processes of
    ``group``. A collective: every process calls it with the same path (one they all see).

    Args:
        path: the model file; it must hold an ``ExactGP`` (other models: ValueError naming it).
        group: the process group (None: the default one, which must be initialised).
        device: where this process's model goes (default: CPU; with NCCL, this process's GPU).
        solver: the solver of the sharded model (None: the file's, which must then be
            ``fg.CG`` with ``precond=None`` or ``fg.PivotedCholesky``: a file written on one
            process with ``fg.Auto()`` or ``fg.Cholesky()`` needs ``solver=fg.CG(...)``).

    Every process reads the whole file (x and y of all n rows: what each holds anyway) and
    keeps rows ``even_rows(n, rank, world_size)``. The parameters, their frozen flags and
    priors are the file's; ``ShardedExactGP``'s constructor keeps them (it only chooses values
    a part was not given). Errors of the file are ``fg.load``'s (``ModelFileError`` naming it).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("flashgp.distributed.load: torch.distributed is not initialised; call "
                           "torch.distributed.init_process_group(...) first (torchrun sets its environment)")
    device = check_device(device)
    model = load_file(path)
    if not isinstance(model, ExactGP) or model.train_x.dim() != 2:
        raise ValueError(f"path: {path} holds a {type(model).__name__} with data of shape "
                         f"{tuple(model.train_x.shape)}; flashgp.distributed.load reads ExactGP files "
                         "without batch dimensions")
    start, stop = even_rows(model.num_train, dist.get_rank(group), dist.get_world_size(group))
    if device is not None:
        model = model.to(device)
    with torch.no_grad():
        x_local = model.train_x[start:stop].clone()
        y_local = model.train_y[start:stop].clone()
    return ShardedExactGP(x_local, y_local, model.kernel, model.likelihood, model.mean,
                          model.solver if solver is None else solver, group=group)
