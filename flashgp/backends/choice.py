# Backend choice for kernel operators: dense while the matrix (and its autograd graph) fits
# the memory budget, beyond it fused Triton kernels on CUDA where they apply, else blocked.
from __future__ import annotations

import torch

BACKENDS = ("auto", "dense", "blocked", "triton")

# a dense kernel matrix with its autograd graph holds about this many n1 x n2 buffers
DENSE_BUFFERS = 6
DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # bytes


def choose_backend(backend: str, n1: int, n2: int, dtype: torch.dtype, batch: int = 1,
                   memory_budget: int | None = None, fused: bool = False,
                   device: torch.device | str | None = None) -> str:
    """Resolve ``backend`` ("auto", "dense", "blocked" or "triton") for an n1 x n2 kernel matrix.

    ``fused``: whether the fused Triton kernels can evaluate this kernel on ``device``
    (``backends.fused.fused_ready``). "triton" resolves to "blocked" where they cannot. "auto"
    takes "dense" while the matrix fits ``memory_budget``; beyond it "triton" for float32 (or
    narrower) data on CUDA when ``fused``, else "blocked" (float64 data stays on the exact path).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        return "triton" if fused else "blocked"
    if backend != "auto":
        return backend
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    itemsize = torch.finfo(dtype).bits // 8
    if batch * n1 * n2 * itemsize * DENSE_BUFFERS <= budget:
        return "dense"
    on_cuda = device is not None and torch.device(device).type == "cuda"
    return "triton" if fused and on_cuda and itemsize <= 4 else "blocked"
