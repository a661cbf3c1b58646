# Resident memory of one exact-GP forward pass (mBCG + SLQ) on the CPU at a fixed number of CG
# iterations: whether memory grows with iterations (it should not), and what the allocator adds.
"""Usage: python benchmarks/forward_memory.py N ITERS

Prints n, iterations, seconds, the resident memory before (GiB) and the peak increase over the
pass (GiB, /proc/self/statm sampled every 2 ms) for Scale(Matern 5/2, ARD) on n uniform points in
d = 3, CG(tol=1e-9, probes=10, max_iters=ITERS, precond=PivotedCholesky(50)): the tolerance is
never met, so every pass runs ITERS iterations. Run it with MALLOC_MMAP_THRESHOLD_=131072 in the
environment to see glibc's heap without its adaptive mmap threshold.
"""
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
import flashgp as fg  # noqa: E402
from uci import PeakRSS  # noqa: E402


def main() -> None:
    n, iters, d = int(sys.argv[1]), int(sys.argv[2]), 3
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, d, generator=g) * 4
    y = torch.sin(2 * x).sum(-1) + 0.1 * torch.randn(n, generator=g)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d))
    solver = fg.CG(tol=1e-9, probes=10, max_iters=iters, precond=fg.PivotedCholesky(50))
    model = fg.ExactGP(x, y, kernel, solver=solver)
    warnings.simplefilter("ignore")  # CG does not converge, by design
    with PeakRSS() as peak:
        start = time.perf_counter()
        model.loss()
        seconds = time.perf_counter() - start
    print(n, iters, f"{seconds:.1f}s", "before GiB", round(peak.baseline / 2**30, 3),
          "peak increase GiB", round(peak.increase / 2**30, 3), model.diagnostics.get("cg_iterations"))


if __name__ == "__main__":
    main()
