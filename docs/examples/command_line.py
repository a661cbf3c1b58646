"""The ``flashgp`` command line on a CSV file: fit, save, predict.

Writes a small CSV file (three inputs, one target), then runs, as a user would in a shell:

    flashgp fit train.csv --target y --test-size 0.2 --iters 20 --out gp.fgp
    flashgp predict gp.fgp new.csv --out predictions.csv

(``python -m flashgp`` is the same program as ``flashgp``.) Run it in an empty folder:

    python docs/examples/command_line.py
"""
from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np


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
    """Run ``python -m flashgp ARGS`` and show what it printed."""
    print(f"$ flashgp {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "flashgp", *args], capture_output=True, text=True)
    print(proc.stdout.rstrip())
    if proc.returncode != 0:
        print(proc.stderr)
        raise SystemExit(proc.returncode)
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
