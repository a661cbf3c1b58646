# The engine's side of the preconditioner interface: build one for a CG system from its
# configuration and the model's state, and tell the state how the solve went.
from __future__ import annotations

import torch

from ..linalg import pivoted_cholesky_preconditioner
from ..solvers import Vecchia
from .records import PreconditionerBuild


def build_preconditioner(config, kernel_op, noise, state, purpose: str):
    """(preconditioner or None, PreconditionerBuild without seconds) for ``config`` (a
    preconditioner configuration or None), kernel_op (*batch, n, n), noise (*batch, n)."""
    if config is None:
        return None, PreconditionerBuild()
    with torch.no_grad():
        if isinstance(config, Vecchia):
            precond = state.vecchia(kernel_op, noise, config)
        elif purpose == "predict":
            rank = state.rank(config) if config.eval_rank is None else config.eval_rank
            precond = pivoted_cholesky_preconditioner(kernel_op, noise.detach(), rank, config.block_size)
        else:
            precond = state.preconditioner(kernel_op, noise, config)
    remaining = state.remaining_error or (None, None)
    info = getattr(precond, "build_info", None)
    repairs = None if info is None else {"jittered_blocks": info.get("jittered_blocks", 0),
                                         "max_jitter": info.get("max_jitter", 0.0),
                                         "diagonal_blocks": info.get("diagonal_blocks", 0)}
    return precond, PreconditionerBuild(
        rank=precond.rank, block_size=getattr(precond, "block_size", 0),
        neighbors=(info or {}).get("neighbors", 0), block_repairs=repairs,
        source=state.source, remaining_error=remaining[0], stop_threshold=remaining[1])


def record_iterations(config, precond, state, iterations: int, floor: int) -> None:
    """Tell the model's preconditioner state the CG iterations of a training solve."""
    if precond is not None and not isinstance(config, Vecchia):
        state.record_iterations(iterations, floor=floor, max_rank=config.max_rank)
