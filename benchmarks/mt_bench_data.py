# The synthetic multitask data of benchmarks/multitask_compare.py (correlated tasks from random
# Fourier features), its scores, and the progress records its workers leave.
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import json_safe

CHUNK = 100_000  # rows per chunk when drawing the latent functions
PROGRESS: dict = {}  # in a worker: "path" of its partial record and the "record" it starts from


def progress(phase: str, out: dict) -> None:
    """Write the run's record so far (``out``) and its phase beside the result file, so that a run
    the parent stops at its timeout still reports what it finished (training steps, say)."""
    if not PROGRESS.get("path"):
        return
    record = {**PROGRESS["record"], **out, "phase": phase}
    if torch.cuda.is_available() and PROGRESS.get("cuda"):
        record["peak_bytes"] = torch.cuda.max_memory_allocated()
    Path(PROGRESS["path"]).write_text(json.dumps(json_safe(record)))


# ----------------------------------------------------------------------------- data

class Data:
    """Training and test tensors (CPU, float64) of one size: x (n, d), Y (n, t), x_test (m, d),
    Y_test (m, t); for the heterotopic layout also the rows kept: rows (N,) point index, tasks (N,)."""

    def __init__(self, x, y, x_test, y_test, noise_std, mixing):
        self.x, self.y, self.x_test, self.y_test = x, y, x_test, y_test
        self.noise_std, self.mixing = noise_std, mixing
        self.rows = self.tasks = None

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def t(self) -> int:
        return self.y.shape[1]


def latent_functions(x: torch.Tensor, params: list) -> torch.Tensor:
    """(n, Q): the random Fourier-feature functions ``params`` [(w (d, F), b (F,), a (F,)), ...] at x."""
    out = torch.empty(x.shape[0], len(params), dtype=torch.float64)
    for j, (w, b, a) in enumerate(params):
        for i in range(0, x.shape[0], CHUNK):
            out[i:i + CHUNK, j] = torch.cos(x[i:i + CHUNK] @ w + b) @ a
    return out


def make_data(n: int, t: int, args) -> Data:
    """The synthetic correlated tasks of the module docstring. The latent functions come from
    ``--seed`` alone, the mixing matrix and noise levels from (seed, t), the test inputs from their
    own stream: every size with t tasks shares the functions and the test set."""
    gen = torch.Generator().manual_seed(args.seed)
    d, f = args.d, args.features
    params = [(torch.randn(d, f, generator=gen, dtype=torch.float64) / args.latent_lengthscale,
               2 * math.pi * torch.rand(f, generator=gen, dtype=torch.float64),
               torch.randn(f, generator=gen, dtype=torch.float64) * math.sqrt(2.0 / f)) for _ in range(args.latents)]
    task_gen = torch.Generator().manual_seed(args.seed * 1000 + t)
    mixing = torch.randn(t, args.latents, generator=task_gen, dtype=torch.float64)
    noise_std = 0.1 + 0.2 * torch.rand(t, generator=task_gen, dtype=torch.float64)

    def draw(count: int, stream: int):
        g = torch.Generator().manual_seed(args.seed * 1000 + 100 + stream)
        x = torch.rand(count, d, generator=g, dtype=torch.float64)
        y = latent_functions(x, params) @ mixing.T + noise_std * torch.randn(count, t, generator=g, dtype=torch.float64)
        return x, y

    x, y = draw(n, 0)
    x_test, y_test = draw(args.n_test, 1)
    return Data(x, y, x_test, y_test, noise_std, mixing)


def drop_entries(ds: Data, fraction: float, seed: int) -> Data:
    """Leave out a random ``fraction`` of the (point, task) training entries (each task keeps at least
    one); the rows kept, task-major, go to ``ds.rows`` (point index) and ``ds.tasks``."""
    gen = torch.Generator().manual_seed(seed + 1)
    keep = torch.rand(ds.n, ds.t, generator=gen, dtype=torch.float64) >= fraction
    keep[0] |= ~keep.any(0)  # a task with nothing kept keeps the first point
    tasks, rows = keep.T.nonzero(as_tuple=True)
    ds.rows, ds.tasks = rows, tasks
    return ds


def dataset(args) -> Data:
    ds = make_data(args.n, args.t, args)
    return drop_entries(ds, args.drop, args.seed) if args.layout == "heterotopic" else ds


# ----------------------------------------------------------------------------- scores

def scores(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> dict:
    """Per-task RMSE and NLL (Gaussian predictive with the noise) on (m, t) tensors; their means."""
    mean, var, y = (v.detach().double().cpu() for v in (mean, var, y))
    err2 = (mean - y) ** 2
    nll = 0.5 * (torch.log(2 * math.pi * var) + err2 / var)
    rmse = err2.mean(0).sqrt()
    return {"rmse": float(rmse.mean()), "nll": float(nll.mean()), "rmse_per_task": rmse.tolist(),
            "nll_per_task": nll.mean(0).tolist(), "min_variance": float(var.min()),
            "rmse_of_mean_predictor": float((y - y.mean(0)).pow(2).mean(0).sqrt().mean())}


def test_rows(ds: Data, device, dtype):
    """Every test point for every task, task-major: (x rows (m t, d), tasks (m t,)); reshaped back with
    ``.reshape(t, m).T``."""
    m, t = ds.x_test.shape[0], ds.t
    x = ds.x_test.to(device=device, dtype=dtype).repeat(t, 1)
    tasks = torch.arange(t, device=device).repeat_interleave(m)
    return x, tasks


def predict_in_chunks(fn, ds: Data, args, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) (m, t) from ``fn(x_chunk, chunk_index)`` -> (mean, variance) (c, t), over the
    test points in chunks of ``args.predict_chunk``."""
    means, variances = [], []
    x = ds.x_test.to(device=device, dtype=dtype)
    for i in range(0, x.shape[0], args.predict_chunk):
        mean, var = fn(x[i:i + args.predict_chunk])
        means.append(mean.detach().cpu())
        variances.append(var.detach().cpu())
    return torch.cat(means), torch.cat(variances)


class Stamps:
    """Synchronized time stamps after every step, from a start."""

    def __init__(self, sync, extra: dict | None = None):
        self.sync, self.stamps, self.extra = sync, [], extra if extra is not None else {}

    def start(self):
        self.sync()
        self.t0 = time.perf_counter()

    def step(self):
        self.sync()
        self.stamps.append(time.perf_counter())
        progress(f"training (step {len(self.stamps)} done)", {**self.extra, **self.summary()})

    def summary(self) -> dict:
        times = [b - a for a, b in zip([self.t0] + self.stamps[:-1], self.stamps)]
        later = times[1:] or times
        return {"steps": len(times), "step_times": times, "first_step_seconds": times[0],
                "step_seconds_mean": statistics.fmean(later), "step_seconds_median": statistics.median(later),
                "train_seconds": self.stamps[-1] - self.t0}


# ----------------------------------------------------------------------------- flashgp

