"""Checkpoints, resuming, and model files.

A seeded fit of 12 steps is run twice: once straight through, and once stopped after 5 steps (as
if the machine went down) and run again with ``resume=True``, which goes on from the checkpoint.
Both end with the same parameters. The fitted model is then written with ``fg.save``, read back
with ``fg.load``, and predicts the same numbers.

    python docs/examples/checkpoints.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import flashgp as fg


def new_model(x, y):
    kernel = fg.kernels.Scale(fg.kernels.RBF(ard_dims=2))
    return fg.ExactGP(x, y, kernel, solver=fg.CG(precond=fg.PivotedCholesky(20)))


def main() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 2, generator=g, dtype=torch.float64)
    y = torch.sin(5 * x[:, 0]) * torch.cos(3 * x[:, 1]) + 0.1 * torch.randn(400, generator=g, dtype=torch.float64)
    with tempfile.TemporaryDirectory() as name:
        run(x, y, g, Path(name))


def run(x, y, g, folder: Path) -> None:
    settings = dict(optimizer="adam", lr=0.1, seed=0, progress=False)

    straight = new_model(x, y)
    fg.fit(straight, iters=12, **settings)

    ckpt = folder / "run.ckpt"
    first = new_model(x, y)
    fg.fit(first, iters=5, checkpoint=ckpt, checkpoint_every=2, resume=True, **settings)  # "crashes" here
    print(f"first run stopped after step 5; checkpoint {ckpt.name}: {ckpt.stat().st_size:,} bytes")

    second = new_model(x, y)  # a new process would build the model the same way
    history = fg.fit(second, iters=12, checkpoint=ckpt, resume=True, **settings)
    print(f"second run resumed at step {history.start_step} and ran to step {len(history)}; "
          f"final loss {history.loss[-1]:.6f}")

    same = all(torch.equal(a, b) for a, b in zip(straight.parameters(), second.parameters()))
    print(f"parameters equal to the uninterrupted run's: {same}")

    path = folder / "model.fgp"
    fg.save(second, path)
    loaded = fg.load(path)
    x_test = torch.rand(5, 2, generator=g, dtype=torch.float64)
    before, after = second.predict(x_test), loaded.predict(x_test)
    print(f"model file {path.name}: {path.stat().st_size:,} bytes; loaded: {type(loaded).__name__}, "
          f"solver {type(loaded.solver).__name__}, preconditioner {loaded.solver.precond}")
    print(f"largest difference of the predictive means {float((before.mean - after.mean).abs().max()):.3g}, "
          f"of the variances {float((before.variance - after.variance).abs().max()):.3g}")
    with torch.no_grad():
        print(f"lengthscales {[round(v, 4) for v in loaded.kernel.base.lengthscale.flatten().tolist()]}, "
              f"noise {float(loaded.likelihood.noise):.4g}")
    resumed_model = fg.checkpoint.load_checkpoint_model(ckpt)
    print(f"the checkpoint also holds a model: {type(resumed_model).__name__} with "
          f"{resumed_model.train_x.shape[0]} training points")


if __name__ == "__main__":
    main()
