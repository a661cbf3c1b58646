# Example: deep kernel learning (fg.kernels.Warped: an RBF kernel on the outputs of an MLP) beside
# the plain ARD kernel on a UCI regression set: test RMSE and NLL, seconds per step, a saved model.
"""A deep kernel, Scale(RBF) on MLP features, against Scale(RBF, ARD) on the inputs.

    python examples/deep_kernel.py                          # .uci/keggdirected (d = 20), 1,000 rows
    python examples/deep_kernel.py --data concrete --max-train 300 --iters 30   # packaged data

Both exact GPs (Cholesky) are trained by Adam with the same steps and learning rate, the network
with the hyperparameters through the mll's gradient; metrics are in the data's units. The UCI
folder ``.uci/`` (repository root) is not part of the package: without it the default falls
back to the packaged concrete set (d = 8), and says so.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import flashgp as fg
from flashgp.datasets import load_uci

K = fg.kernels
UCI = Path(__file__).resolve().parents[1] / ".uci"


def metrics(model, data) -> tuple[float, float]:
    pred = model.predict(data.x_test)
    mean, std = data.to_original_units(pred.mean), pred.stddev * data.y_std
    y = data.to_original_units(data.y_test)
    rmse = float((mean - y).pow(2).mean().sqrt())
    nll = float((0.5 * torch.log(2 * math.pi * std**2) + 0.5 * ((y - mean) / std) ** 2).mean())
    return rmse, nll


def train(name, model, data, args) -> None:
    start = time.perf_counter()
    history = fg.fit(model, lr=args.lr, iters=args.iters, progress=False, seed=0)
    per_step = (time.perf_counter() - start) / args.iters
    rmse, nll = metrics(model, data)
    print(f"  {name:<22} loss {history.loss[0]:+.3f} -> {history.loss[-1]:+.3f}   {per_step * 1e3:6.1f} ms/step   "
          f"test RMSE {rmse:.4f}   NLL {nll:+.4f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="a UCI-format folder or a packaged name (default: .uci/keggdirected, else concrete)")
    parser.add_argument("--max-train", type=int, default=1000, help="subsample the training rows (default 1000)")
    parser.add_argument("--max-test", type=int, default=1000, help="subsample the test rows (default 1000)")
    parser.add_argument("--iters", type=int, default=50, help="Adam steps (default 50)")
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--hidden", type=int, nargs="*", default=[32, 16], help="hidden widths (default 32 16)")
    parser.add_argument("--features", type=int, default=2, help="features D the RBF sees (default 2)")
    args = parser.parse_args(argv)

    source = args.data
    if source is None:
        source = UCI / "keggdirected"
        if not (source / "data.csv.gz").exists():
            print(f"{source} not found (the .uci folder is not packaged): using the packaged concrete set")
            source = "concrete"
    data = load_uci(source, max_train=args.max_train)
    if data.n_test > args.max_test:  # a fixed subset of the test rows
        keep = torch.randperm(data.n_test, generator=torch.Generator().manual_seed(0))[: args.max_test]
        data.x_test, data.y_test = data.x_test[keep], data.y_test[keep]
    print(f"{data.name}: n_train={data.n_train}, n_test={data.x_test.shape[0]}, d={data.d}; "
          f"{args.iters} Adam steps, lr {args.lr}")

    plain = fg.ExactGP(data.x_train, data.y_train, K.Scale(K.RBF(ard_dims=data.d)), solver=fg.Cholesky())
    train("Scale(RBF, ARD)", plain, data, args)

    torch.manual_seed(0)  # the network's initial weights
    net = K.MLP(data.d, hidden=args.hidden, out_dims=args.features, activation="relu")
    deep = fg.ExactGP(data.x_train, data.y_train, K.Warped(K.Scale(K.RBF(ard_dims=args.features)), net),
                      solver=fg.Cholesky())
    train(f"deep kernel MLP{tuple(args.hidden)}->{args.features}", deep, data, args)

    with tempfile.TemporaryDirectory() as folder:  # the MLP is written into the model file's config
        path = Path(folder) / "deep.fgp"
        fg.save(deep, path)
        loaded = fg.load(path)
        same = torch.equal(loaded.predict(data.x_test[:50]).mean, deep.predict(data.x_test[:50]).mean)
    print(f"  saved and loaded the deep kernel model: same predictions {same}")


if __name__ == "__main__":
    main()
