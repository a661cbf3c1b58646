# The engine's side of the preconditioner protocol (``flashgp.preconditioners.base``): build one for
# a CG system from its configuration and the model's state, describe the build, and tell the state
# how the training solve went. No preconditioner kind is named here.
from __future__ import annotations

from .records import PreconditionerBuild


def state_for(config, state):
    """``state`` if it serves ``config`` (a PreconditionerConfig or None: nothing to serve, the
    state is kept as it is), else a fresh ``config.new_state()``."""
    if config is None or (state is not None and state.serves(config)):
        return state
    return config.new_state()


def build_preconditioner(config, kernel_op, noise, state, purpose: str):
    """(preconditioner or None, PreconditionerBuild without seconds) for ``config`` (None: no
    preconditioner), kernel_op ``(*batch, n, n)``, noise ``(*batch, n)``; ``state`` serves ``config``."""
    if config is None:
        return None, PreconditionerBuild()
    precond = config.build(kernel_op, noise, state, purpose)
    info = precond.info()
    remaining = state.remaining_error or (None, None)
    return precond, PreconditionerBuild(rank=info.rank, block_size=info.block_size, neighbors=info.neighbors,
                                        block_repairs=info.block_repairs, source=state.source,
                                        remaining_error=remaining[0], stop_threshold=remaining[1])


def record_iterations(config, state, iterations: int, floor: int) -> None:
    """Tell the model's preconditioner state the CG iterations of a training solve."""
    if config is not None:
        config.record_iterations(state, iterations, floor)
