"""The ``flashgp`` command line on a CSV file: fit, save, predict.

Writes a small CSV file (three inputs, one target), then runs, as a user would in a shell:

    flashgp fit train.csv --target y --test-size 0.2 --iters 20 --out gp.fgp
    flashgp predict gp.fgp new.csv --out predictions.csv

(``python -m flashgp`` is the same program as ``flashgp``.) Run it in an empty folder:

    python docs/examples/command_line.py
"""
from __future__ import annotations

import contextlib
import csv
import io

import numpy as np

from flashgp.cli import main as flashgp_main


def write_csv(path: str, n: int, seed: int, target: bool = True) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 3))
    y = np.sin(4 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * x[:, 2] + 0.05 * rng.standard_normal(n)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "b", "c"] + (["y"] if target else []))
        for row, value in zip(x, y):
            out.writerow([f"{v:.6f}" for v in row] + ([f"{value:.6f}"] if target else []))


def flashgp(*args: str) -> None:
    """Run the ``flashgp`` command with ``args`` (in this process: ``flashgp.cli.main`` is what
    the command calls) and stop on a failure."""
    print(f"$ flashgp {' '.join(args)}", flush=True)
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):  # keep messages and warnings, drop the progress bar
        status = flashgp_main(list(args))
    for line in errors.getvalue().replace("\r", "\n").splitlines():
        if line.strip() and not line.startswith("fit ("):
            print(line)
    if status:
        raise SystemExit(status)
    print(flush=True)


def main() -> None:
    write_csv("train.csv", 500, seed=0)
    write_csv("new.csv", 5, seed=1, target=False)
    flashgp("fit", "train.csv", "--target", "y", "--test-size", "0.2", "--iters", "20", "--seed", "0",
            "--out", "gp.fgp")
    flashgp("predict", "gp.fgp", "new.csv", "--out", "predictions.csv")
    print("predictions.csv:")
    with open("predictions.csv") as f:
        print(f.read().rstrip())


if __name__ == "__main__":
    main()
