# Seeded checkpointed fits for tests/reliability/test_checkpoint_signals.py to stop with SIGTERM or
# SIGKILL. Run as a script: one fit per run named on the command line ("<kind>" or "<kind>@<tag>"),
# one after the other; after every step it writes "<run> <completed steps>" to a progress file and
# pauses. A FitInterrupted ends that fit (its step and whether SIGTERM's handler was put back are
# written to <run>.json) and the next one starts.
import json
import os
import signal
import sys
import time

import torch

import flashgp as fg
from flashgp.errors import FitInterrupted
from flashgp.kernels import RBF, Scale

FIT = dict(optimizer="adam", lr=0.05, seed=3)  # the fit settings the tests repeat when resuming
PRECONDITIONERS = {  # small ranks and refresh intervals: resumes cross reused and fresh states
    "pivoted_cholesky": lambda: fg.PivotedCholesky(8, refresh_every=3),
    "vecchia": lambda: fg.Vecchia(5, refresh_every=3),
    "rpcholesky": lambda: fg.RPCholesky(8, refresh_every=3),
    "nystrom": lambda: fg.Nystrom(8),
}


def build_model(kind: str, n: int = 60) -> fg.ExactGP:
    """A small float64 problem on the CG path with the preconditioner ``kind``."""
    g = torch.Generator().manual_seed(11)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    solver = fg.CG(tol=0.01, probes=5, precond=PRECONDITIONERS[kind]())
    return fg.ExactGP(x, y, Scale(RBF(ard_dims=2)), solver=solver)


def write_progress(path: str, text: str) -> None:
    """Atomically replace ``path`` with ``text``."""
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


def main(folder: str, progress: str, iters: str, every: str, pause: str, kinds: str) -> None:
    torch.set_num_threads(1)
    for run in kinds.split(","):  # "vecchia@kill": another run of "vecchia", to its own files
        def callback(step, loss, model, run=run):
            write_progress(progress, f"{run} {step + 1}")
            time.sleep(float(pause))

        result = {"interrupted": False}
        try:
            fg.fit(build_model(run.partition("@")[0]), iters=int(iters), progress=False, callback=callback,
                   checkpoint=os.path.join(folder, f"{run}.ckpt"), checkpoint_every=int(every), **FIT)
        except FitInterrupted as stop:
            result = {"interrupted": True, "step": stop.step, "cause": type(stop.__cause__).__name__,
                      "message": str(stop.__cause__)}
        result["handler_restored"] = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        write_progress(os.path.join(folder, f"{run}.json"), json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
