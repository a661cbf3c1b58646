# Example: mixed continuous and categorical inputs. An exact GP with the kernel Matern x Categorical,
# the same kernel through the Hilbert-space basis (fg.BasisGP, linear in n), and the basis model on
# many more points; test RMSE and NLL, seconds per training step, a saved and reloaded model.
"""Mixed inputs: two continuous columns and a machine type (5 levels).

    python examples/mixed_inputs.py                        # n = 2,000 for the exact GP, 200,000 for BasisGP
    python examples/mixed_inputs.py --n 500 --large 20000  # quicker

The data: y = a smooth function of (x1, x2) whose amplitude and offset depend on the machine type,
plus noise 0.1. The kernel Scale(Matern 5/2 (ARD) on x1, x2  *  Categorical(5) on the type) lets the
types share the smooth shape through the learned level correlation. The same kernel with
HilbertSpace(Matern, m) in place of the Matern gives a BasisGP whose training steps cost the same
whatever n (its data statistics are computed once); it is trained here on n and on --large points.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import flashgp as fg

K = fg.kernels
LEVELS = 5


def make_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    cont = torch.rand(n, 2, generator=g, dtype=torch.float64) * 4 - 2
    machine = torch.randint(0, LEVELS, (n,), generator=g)
    amplitude = torch.tensor([1.0, 1.2, 0.8, 1.0, 0.5], dtype=torch.float64)[machine]
    offset = torch.tensor([0.0, 0.5, -0.5, 1.0, 0.2], dtype=torch.float64)[machine]
    f = amplitude * torch.sin(2 * cont[:, 0]) * torch.cos(1.5 * cont[:, 1]) + offset
    y = f + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.cat([cont, machine.unsqueeze(-1).to(torch.float64)], -1), y


def kernel(basis: int | None):
    """Scale(Matern(x1, x2) * Categorical(type)); with ``basis``, the Matern through HilbertSpace."""
    matern = K.Matern(nu=2.5, ard_dims=2, active_dims=[0, 1])
    continuous = matern if basis is None else K.HilbertSpace(matern, num_basis=basis)
    return K.Scale(continuous * K.Categorical(LEVELS, active_dims=[2]))


def train_and_score(name: str, model, x_test, y_test, iters: int) -> None:
    start = time.perf_counter()
    history = fg.fit(model, optimizer="lbfgs", iters=iters, progress=False)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        pred = model.predict(x_test)
    rmse = float((pred.mean - y_test).square().mean().sqrt())
    nll = float((0.5 * torch.log(2 * math.pi * pred.variance) + 0.5 * (y_test - pred.mean) ** 2 / pred.variance).mean())
    print(f"{name:<44} n={model.num_train:>7,}: test RMSE {rmse:.4f}  NLL {nll:+.3f}  "
          f"{seconds / max(len(history.loss), 1):.3f} s/step ({len(history.loss)} steps)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="training points of the exact GP and the first BasisGP")
    parser.add_argument("--large", type=int, default=200_000, help="training points of the second BasisGP")
    parser.add_argument("--basis", type=int, default=12, help="basis functions per continuous column")
    parser.add_argument("--iters", type=int, default=50, help="L-BFGS steps")
    parser.add_argument("--test", type=int, default=2000)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x, y = make_data(args.n, seed=0)
    x_test, y_test = make_data(args.test, seed=1)
    x_test[:, :2] *= 0.95  # inside the training inputs' range

    exact = fg.ExactGP(x, y, kernel(None), solver=fg.Cholesky())
    train_and_score("exact GP, Matern x Categorical", exact, x_test, y_test, args.iters)
    basis = fg.BasisGP(x, y, kernel(args.basis))
    train_and_score(f"BasisGP, HilbertSpace(Matern, {args.basis}) x Categorical", basis, x_test, y_test, args.iters)
    print(f"  {basis.num_features} features, likelihood from {basis.diagnostics['basis_terms']}")

    x_big, y_big = make_data(args.large, seed=2)
    big = fg.BasisGP(x_big, y_big, kernel(args.basis))
    train_and_score(f"BasisGP, HilbertSpace(Matern, {args.basis}) x Categorical", big, x_test, y_test, args.iters)
    correlation = big.kernel.base.kernels[1].covariance()[0, 1].item()
    print(f"  learned correlation between two machine types: {correlation:.3f}")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mixed.fgp"
        fg.save(big, path)
        loaded = fg.load(path)
        with torch.no_grad():
            same = torch.equal(loaded.predict(x_test[:100]).mean, big.predict(x_test[:100]).mean)
        print(f"saved and loaded: same predictions {same}")


if __name__ == "__main__":
    main()
