"""SVGP training steps on CUDA with and without CUDA-graph replay (``fg.fit(..., cuda_graph=)``):
milliseconds per step and the final loss of each, on synthetic data kept on the GPU, float32,
batch 1,024, Adam lr 0.01, 200 timed steps after 15 untimed ones.

    python benchmarks/svgp_graph_step.py [--n 20000] [--cases 18:500,18:1000,9:500]

Each case is d:m (input dimensions : inducing points). Needs a CUDA device.
"""
from __future__ import annotations

import argparse
import time

import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale


def data(n: int, d: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x.cuda(), (torch.sin(x[:, 0]) + 0.1 * torch.randn(n, generator=g)).cuda()


def timed_fit(x, y, m: int, cuda_graph: bool, steps: int) -> tuple[float, float, int]:
    """(ms per step, final loss, steps replayed from the graph) of ``steps`` steps after 15 untimed ones."""
    model = fg.SVGP(Scale(Matern(nu=2.5, ard_dims=x.shape[1])), x[:m].clone(), x=x[:2000], y=y[:2000])
    settings = dict(data=(x, y), batch_size=1024, lr=0.01, progress=False, seed=1, cuda_graph=cuda_graph)
    fg.fit(model, iters=15, **settings)
    torch.cuda.synchronize()
    start = time.perf_counter()
    history = fg.fit(model, iters=steps, **settings)
    torch.cuda.synchronize()
    replayed = sum(1 for d in history.diagnostics if d.get("graph"))
    return (time.perf_counter() - start) / steps * 1e3, history.loss[-1], replayed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--cases", default="18:500,18:1000,9:500", help="d:m pairs, comma-separated")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, n = {args.n}, float32, batch 1,024")
    for case in args.cases.split(","):
        d, m = (int(v) for v in case.split(":"))
        x, y = data(args.n, d)
        for graph in (False, True):
            ms, loss, replayed = timed_fit(x, y, m, graph, args.steps)
            print(f"d={d} m={m} cuda_graph={graph}: {ms:.2f} ms/step, final loss {loss:.4f}, "
                  f"{replayed} of {args.steps} steps replayed")


if __name__ == "__main__":
    main()
