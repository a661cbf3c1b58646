# Preconditioners for the CG path: the protocol (base), the configurations fg.PivotedCholesky,
# fg.RPCholesky, fg.Nystrom and fg.Vecchia, their states, and the algorithms behind them.
"""Modules: ``base`` (Preconditioner, PreconditionerConfig, PreconditionerState), ``pivoted_cholesky``
(greedy pivots, Nystrom rebuilds), ``blocks`` (diagonal blocks), ``pivot_state`` (PivotCache),
``pivot_config`` (PivotedCholesky), ``rpcholesky`` (RPCholesky), ``nystrom`` (Nystrom),
``vecchia`` and ``vecchia_config`` (Vecchia, VecchiaState).

Only ``base`` is imported eagerly: the operators that implement ``Preconditioner`` import it, and
the other modules import those operators. The names below load their module on first use.
"""
import importlib

from .base import EmptyState, Preconditioner, PreconditionerConfig, PreconditionerInfo, PreconditionerState

_LAZY = {
    "PivotConfig": "pivot_config",
    "PivotedCholesky": "pivot_config",
    "RPCholesky": "rpcholesky",
    "randomly_pivoted_cholesky": "rpcholesky",
    "Nystrom": "nystrom",
    "randomized_nystrom": "nystrom",
    "Vecchia": "vecchia_config",
    "VecchiaState": "vecchia_config",
    "PivotCache": "pivot_state",
}

__all__ = ["EmptyState", "Preconditioner", "PreconditionerConfig", "PreconditionerInfo",
           "PreconditionerState", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
