# Host-side cost of one mBCG iteration: how many kernel-launching torch operations it issues and
# how long the host takes for them. Usage: python benchmarks/cg_overhead.py [--device cuda]
"""Counts the torch operations of a CG iteration that launch work (views and dtype queries left
out) with the torch profiler, as the difference between 40- and 20-iteration runs (CG forced on by
min_iters), with a rank-k ``LowRankPlusDiag`` preconditioner (the pivoted-Cholesky one's type)
and a dense SPD operator; then the host time per iteration with a tiny operator, where the
arithmetic is negligible. On a GPU at moderate n (elevators, n = 15,000) each such operation is a
kernel launch, and the launches, not the arithmetic, set the pace of CG."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from flashgp.linalg.mbcg import mbcg  # noqa: E402
from flashgp.operators.low_rank import LowRankPlusDiag  # noqa: E402
from results_file import write_results  # noqa: E402

NOT_LAUNCHING = {  # views, allocations and dispatch wrappers whose work is counted in their children
    "aten::as_strided", "aten::resolve_conj", "aten::resolve_neg", "aten::empty_strided", "aten::empty",
    "aten::unsqueeze", "aten::alias", "aten::slice", "aten::transpose", "aten::t", "aten::select",
    "aten::detach", "aten::view", "aten::expand", "aten::reshape", "aten::_reshape_alias",
    "aten::squeeze", "aten::lift_fresh", "aten::result_type", "aten::to", "aten::matmul",
    "aten::__and__", "aten::__or__", "aten::__xor__", "aten::scalar_tensor", "aten::item",
    "aten::_local_scalar_dense", "aten::is_nonzero", "aten::empty_like", "aten::zeros_like",
    "aten::ones_like", "aten::stack", "aten::_to_copy"}


def count_ops(fn) -> int:
    with torch.profiler.profile() as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::") and e.key not in NOT_LAUNCHING)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rank", type=int, default=100)
    p.add_argument("--t", type=int, default=11)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, metavar="OUT",
                   help="also write the row to OUT.json (default: stdout only)")
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    n, dev = args.n, args.device
    a = torch.randn(n, n, generator=gen) / n ** 0.5
    a = (a @ a.T + 0.01 * torch.eye(n)).to(dev)
    precond = LowRankPlusDiag((0.1 * torch.randn(n, args.rank, generator=gen)).to(dev),
                              torch.full((n,), 0.5, device=dev))
    rhs = torch.randn(n, args.t, generator=gen).to(dev)

    def run(iters, op=lambda v: a @ v, b=rhs, pre=precond):
        return mbcg(op, b, precond=pre, tol=0.0, max_iters=iters, min_iters=iters,
                    n_tridiag=b.shape[-1] - 1, warn=False)

    run(20)
    ops = (count_ops(lambda: run(40)) - count_ops(lambda: run(20))) / 20
    tiny = LowRankPlusDiag(torch.randn(16, 8, generator=gen).to(dev), torch.ones(16, device=dev))
    small = rhs[:16]
    run(20, lambda v: 2.0 * v, small, tiny)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        run(20, lambda v: 2.0 * v, small, tiny)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    host_us = (time.perf_counter() - start) / 400 * 1e6
    print(f"device {dev}: {ops:.1f} kernel-launching torch operations per CG iteration (n = {n}, "
          f"rank-{args.rank} preconditioner, t = {args.t}); {host_us:.0f} us per iteration with a "
          f"16 x 16 operator and a rank-8 preconditioner")
    if args.out:
        write_results(args.out, [dict(n=n, rank=args.rank, t=args.t, launching_ops_per_iteration=ops,
                                      host_us_per_iteration_tiny=host_us)], args,
                      extra={"tiny": "16 x 16 operator, rank-8 preconditioner (host_us_per_iteration_tiny)"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
