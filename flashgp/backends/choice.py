# Backend choice for kernel operators: dense while the matrix (and its autograd graph) fits
# the memory budget, blocked beyond. The choice is recorded by the operator.
from __future__ import annotations

import torch

BACKENDS = ("auto", "dense", "blocked")

# a dense kernel matrix with its autograd graph holds about this many n1 x n2 buffers
DENSE_BUFFERS = 6
DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # bytes


def choose_backend(backend: str, n1: int, n2: int, dtype: torch.dtype, batch: int = 1,
                   memory_budget: int | None = None) -> str:
    """Resolve ``backend`` ("auto", "dense" or "blocked") for an n1 x n2 kernel matrix."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    itemsize = torch.finfo(dtype).bits // 8
    return "dense" if batch * n1 * n2 * itemsize * DENSE_BUFFERS <= budget else "blocked"
