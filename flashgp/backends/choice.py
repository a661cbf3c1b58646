# Backend choice for kernel operators: dense while the matrix (and what it keeps alive) fits
# the memory budget, beyond it fused kernels where they apply (Triton on CUDA, compiled C on the
# CPU), else blocked.
from __future__ import annotations

import torch

BACKENDS = ("auto", "dense", "blocked", "triton", "cpu")

# n1 x n2 buffers a dense kernel matrix keeps alive: with its autograd graph (any kernel) about 6;
# a Scale(stationary) kernel keeps K and dk/dr2 (no graph) plus one block of temporaries. On
# float32 data where the fused kernels run it keeps K alone (its gradient comes from the fused
# pass) but is budgeted as 3 all the same: at n = 40,000 dense was still faster per step than
# the fused kernels (d = 3 and 8; ``python benchmarks/uci.py --device cuda --iters 20 --datasets
# synth-40000 --libs flashgp --backend dense``, and ``--backend triton``); larger n are untimed.
DENSE_BUFFERS = 6
DENSE_BUFFERS_STATIONARY = 3
# off CUDA, where the fused CPU kernels build K in one pass and give its gradient, K alone is kept
# (plus per-thread tiles): stored products then beat the fused ones at every size that fits (at
# n = 10,000, d = 3, t = 11: 3.2e9 against 2.4e9 entries per second, ``python
# benchmarks/cpu_engine.py --parts throughput``), and their one-column products (Lanczos, the
# mean solve) are bandwidth-bound
DENSE_BUFFERS_CPU_FUSED = 1
DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # bytes, off CUDA
CUDA_MEMORY_FRACTION = 0.25  # on CUDA: this share of the device's total memory


def default_memory_budget(device: torch.device | str | None = None) -> int:
    """Bytes a dense kernel matrix may use by default: a quarter of a CUDA device's memory (on a
    GPU a stored matrix turns each CG product into one bandwidth-bound GEMM, much faster than
    recomputing the kernel), else ``DEFAULT_MEMORY_BUDGET``."""
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory * CUDA_MEMORY_FRACTION)
    return DEFAULT_MEMORY_BUDGET


def choose_backend(backend: str, n1: int, n2: int, dtype: torch.dtype, batch: int = 1,
                   memory_budget: int | None = None, fused: bool = False,
                   device: torch.device | str | None = None, buffers: int = DENSE_BUFFERS,
                   native: bool = False) -> str:
    """Resolve ``backend`` ("auto", "dense", "blocked", "triton" or "cpu") for an n1 x n2 kernel
    matrix.

    ``fused``: whether the fused Triton kernels can evaluate this kernel on ``device``
    (``backends.fused.fused_ready``); ``native``: whether the fused CPU kernels can
    (``backends.fused.cpu_ready``). "triton" and "cpu" resolve to "blocked" where their kernels
    cannot run.
    "auto" takes "dense" while ``buffers`` matrices of the data's itemsize fit ``memory_budget``
    (default ``default_memory_budget(device)``); beyond it "triton" for float32 (or narrower)
    data on CUDA when ``fused``, "cpu" off CUDA when ``native`` (float32 or float64: the CPU
    kernels compute in the data's dtype), else "blocked".
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        return "triton" if fused else "blocked"
    if backend == "cpu":
        return "cpu" if native else "blocked"
    if backend != "auto":
        return backend
    budget = default_memory_budget(device) if memory_budget is None else memory_budget
    itemsize = torch.finfo(dtype).bits // 8
    if batch * n1 * n2 * itemsize * buffers <= budget:
        return "dense"
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if on_cuda:
        return "triton" if fused and itemsize <= 4 else "blocked"
    return "cpu" if native else "blocked"
