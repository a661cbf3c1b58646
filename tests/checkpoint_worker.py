# A seeded fit for tests/test_checkpoint.py to kill: run as a script, it checkpoints, writes the
# number of completed steps to a progress file after every step, and pauses so it can be stopped.
import os
import sys
import time

import torch

import flashgp as fg
from flashgp.kernels import RBF, Scale

FIT = dict(optimizer="adam", lr=0.05, seed=3)  # the fit settings the test repeats when resuming


def build_model(n: int = 100) -> fg.ExactGP:
    """A small float64 problem on the CG path (seeded probes, pivoted Cholesky preconditioner)."""
    g = torch.Generator().manual_seed(11)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    solver = fg.CG(tol=0.01, probes=5, precond=fg.PivotedCholesky(10))
    return fg.ExactGP(x, y, Scale(RBF(ard_dims=2)), solver=solver)


def write_progress(path: str, steps: int) -> None:
    """Atomically replace ``path`` with the number of completed steps."""
    with open(path + ".tmp", "w") as handle:
        handle.write(str(steps))
    os.replace(path + ".tmp", path)


def main(checkpoint: str, progress: str, iters: str, every: str, pause: str) -> None:
    torch.set_num_threads(1)

    def callback(step, loss, model):
        write_progress(progress, step + 1)
        time.sleep(float(pause))

    fg.fit(build_model(), iters=int(iters), progress=False, callback=callback, checkpoint=checkpoint,
           checkpoint_every=int(every), **FIT)


if __name__ == "__main__":
    main(*sys.argv[1:])
