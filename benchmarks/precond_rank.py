# Benchmark: CG iterations of one training mll against the pivoted-Cholesky rank, on a small
# problem whose conditioning mimics a large one (the noise scaled by n / n_target).
"""CG iterations of one training mll for each pivoted-Cholesky rank.

    python benchmarks/precond_rank.py --n 20000 --ranks 100 200 400
    python benchmarks/precond_rank.py --n 20000 --ranks 100 --grow-to 400   # max_rank at work
    python benchmarks/precond_rank.py --n 8000 --ranks 100 400 --lanczos-iters 10 20 --reference
    python benchmarks/precond_rank.py --n 8000 --ranks 100 400 --blocks 0 128 --reference
    python benchmarks/precond_rank.py --n 8000 --ranks 400 --vecchia 10 30 --reference
    python benchmarks/precond_rank.py --n 8000 --ranks 64 --rpcholesky 64 --nystrom 64 --reference

The data are those of examples/large_gpu_fit.py: uniform on [0, 1]^d, a sum of sines plus noise.
The kernel is Scale(Matern 5/2, ARD), with the hyperparameters given. The conditioning of
K + noise I is set by n lambda_i / noise, where lambda_i are the kernel operator's eigenvalues.
So the n points here, with noise * n / target_n, stand in for target_n points with ``noise``,
at a cost a CPU can pay. The defaults are the hyperparameters after 46 Adam steps of an n = 1M
fit; the final ones of the 50-step fit in benchmarks/million_fit_parameters.json are
``--lengthscale 0.1181 0.1075 0.1265 --outputscale 1.9793 --noise 0.008908``.

``--reference`` also computes the mll and its gradient (lengthscales, outputscale, noise) by a
float64 Cholesky, and reports the CG estimate's error against it, averaged over ``--repeats``
probe draws (the SLQ estimate is random; its spread is printed next to the error of its mean).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "examples", REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import flashgp as fg  # noqa: E402
from large_gpu_fit import synthetic  # noqa: E402
from results_file import write_results  # noqa: E402


def stand_in(x, y, precond, lengthscale, outputscale: float, noise: float, max_iters: int,
             backend: str, lanczos_iters: int = 20, tol: float = 1.0):
    """An ExactGP at the given hyperparameters with the CG settings of training
    (precond None: the float64 Cholesky solver instead)."""
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=x.shape[-1]))
    solver = fg.Cholesky() if precond is None else fg.CG(
        tol=tol, precond=precond, backend=backend, max_iters=max_iters, lanczos_iters=lanczos_iters)
    model = fg.ExactGP(x, y, kernel, solver=solver)
    with torch.no_grad():
        model.kernel.base.lengthscale = torch.tensor([lengthscale], dtype=x.dtype)
        model.kernel.outputscale = torch.tensor(outputscale, dtype=x.dtype)
        model.likelihood.noise = torch.tensor(noise, dtype=x.dtype)
    return model


def timed_mll(model) -> dict:
    """One mll (no backward); the solver's diagnostics of it and its seconds."""
    start = time.perf_counter()
    with torch.no_grad():
        model.mll()
    return {**model.diagnostics, "seconds": time.perf_counter() - start}


def mll_and_grad(model) -> tuple[float, torch.Tensor]:
    """The mll per point and its gradient with respect to the raw parameters, (P,) float64."""
    model.zero_grad()
    value = model.mll()
    value.backward()
    value = value.detach()
    grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    return float(value), torch.cat(grads).double()


def compare(x, y, precond_for, settings, lanczos_iters, tol, repeats: int, exact) -> dict:
    """CG mll / gradient against the Cholesky ones, over ``repeats`` probe draws (printed, and
    returned as a row)."""
    values, grads = [], []
    for _ in range(repeats):
        model = stand_in(x, y, precond_for(), *settings, lanczos_iters=lanczos_iters, tol=tol)
        start = time.perf_counter()
        value, grad = mll_and_grad(model)
        values.append(value)
        grads.append(grad)
    values, grads = torch.tensor(values, dtype=torch.float64), torch.stack(grads)
    exact_value, exact_grad = exact
    scale = exact_grad.norm()
    mean_err = (grads.mean(0) - exact_grad).norm() / scale
    draw_err = (grads - exact_grad).norm(dim=-1) / scale
    d = model.diagnostics
    seconds = time.perf_counter() - start
    cosine = float(torch.nn.functional.cosine_similarity(grads.mean(0), exact_grad, 0))
    print(f"    lanczos_iters {lanczos_iters}, tol {tol:g}: {d['cg_iterations']} CG iterations "
          f"(last draw, {seconds:.1f} s, y residual {d['residual']:.3g}, mean "
          f"{d['mean_residual']:.3g}); mll error of the mean "
          f"{float(values.mean() - exact_value):+.2e} (draws' std {float(values.std()):.1e}); "
          f"gradient relative error: mean of draws {float(mean_err):.3f}, each draw "
          f"{float(draw_err.min()):.3f}-{float(draw_err.max()):.3f}; cosine of the mean {cosine:.4f}",
          flush=True)
    print(f"      gradient, mean of draws: {[round(g, 4) for g in grads.mean(0).tolist()]}", flush=True)
    return dict(lanczos_iters=lanczos_iters, tol=tol, repeats=repeats,
                cg_iterations_last_draw=d["cg_iterations"],
                seconds_last_draw=seconds, y_residual_last_draw=d["residual"],
                mean_residual_last_draw=d["mean_residual"],
                mll_error_of_mean=float(values.mean() - exact_value), mll_std_of_draws=float(values.std()),
                gradient_rel_error_of_mean=float(mean_err), gradient_rel_error_min=float(draw_err.min()),
                gradient_rel_error_max=float(draw_err.max()),
                gradient_cosine_of_mean=cosine, gradient_mean_of_draws=grads.mean(0).tolist())


def report(d: dict, label: str) -> dict:
    """Print one mll's diagnostics; return them as a row."""
    print(f"  {label}: preconditioner rank {d['precond_rank']}, neighbours {d['precond_neighbors']} "
          f"({d['precond_pivots']}), "
          f"{d['cg_iterations']} CG iterations, residual {d['residual']:.3g}, {d['seconds']:.1f} s",
          flush=True)
    return {"label": label, **d}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="points used (default 20000)")
    parser.add_argument("--target-n", type=int, default=1_000_000,
                        help="the problem size to mimic (default 1000000)")
    parser.add_argument("--ranks", type=int, nargs="*", default=[100, 200, 400],
                        help="pivoted-Cholesky ranks (none: only --vecchia, --rpcholesky, --nystrom)")
    parser.add_argument("--lengthscale", type=float, nargs="+", default=[0.1818, 0.1615, 0.1794],
                        help="one per dimension (their number sets d)")
    parser.add_argument("--outputscale", type=float, default=1.6409)
    parser.add_argument("--noise", type=float, default=0.008608, help="noise variance at target-n")
    parser.add_argument("--max-iters", type=int, default=400)
    parser.add_argument("--backend", default="blocked", choices=fg.backends.BACKENDS)
    parser.add_argument("--grow-to", type=int, default=None,
                        help="one model with PivotedCholesky(first rank, max_rank=this): mll calls "
                             "until its rank stops growing")
    parser.add_argument("--lanczos-iters", type=int, nargs="+", default=[20],
                        help="CG's minimum iterations for the log det (CG(lanczos_iters=...))")
    parser.add_argument("--tols", type=float, nargs="+", default=[1.0],
                        help="CG stopping tolerances of training (--reference; default 1.0)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[0],
                        help="preconditioner block sizes (PivotedCholesky(block_size=...); 0: none)")
    parser.add_argument("--vecchia", type=int, nargs="*", default=[],
                        help="also fg.Vecchia(neighbors) with each of these neighbour counts")
    parser.add_argument("--rpcholesky", type=int, nargs="*", default=[],
                        help="also fg.RPCholesky(rank) with each of these ranks")
    parser.add_argument("--nystrom", type=int, nargs="*", default=[],
                        help="also fg.Nystrom(rank) with each of these ranks")
    parser.add_argument("--reference", action="store_true",
                        help="compare the mll and its gradient with a float64 Cholesky's")
    parser.add_argument("--repeats", type=int, default=4, help="probe draws per setting (--reference)")
    parser.add_argument("--scale-data-noise", action="store_true",
                        help="the data's noise std 0.1 scaled by sqrt(n / target_n) like the noise "
                             "variance (default: 0.1, as in large_gpu_fit; then y holds far more "
                             "noise than the model assumes, unlike the fit it stands in for)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, metavar="OUT",
                        help="also write the rows to OUT.json (default: stdout only)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.target_n < args.n:
        parser.error("--n: expected 1 <= n <= --target-n")
    noise = args.noise * args.n / args.target_n
    torch.manual_seed(args.seed)  # the probe vectors
    data_noise = 0.1 * (args.n / args.target_n) ** 0.5 if args.scale_data_noise else 0.1
    x, y = synthetic(args.n, len(args.lengthscale), data_noise, torch.device("cpu"), torch.float64,
                     args.seed)
    print(f"n={args.n} standing in for {args.target_n}: noise {noise:.3g} (data's std {data_noise:.3g}), lengthscale "
          f"{args.lengthscale}, outputscale {args.outputscale}, float64, backend {args.backend}")
    settings = (args.lengthscale, args.outputscale, noise, args.max_iters, args.backend)
    rows = []
    extra = {"noise_at_n": noise, "data_noise_std": data_noise}
    if args.reference:
        start = time.perf_counter()
        exact = mll_and_grad(stand_in(x, y, None, *settings))
        seconds = time.perf_counter() - start
        print(f"  Cholesky: mll {exact[0]:.6f}, gradient {[round(g, 4) for g in exact[1].tolist()]} "
              f"({seconds:.1f} s)", flush=True)
        extra["cholesky"] = {"mll": exact[0], "gradient": exact[1].tolist(), "seconds": seconds}
        for rank in args.ranks:
            for block in args.blocks:
                print(f"  rank {rank}, blocks of {block}:")
                for iters in args.lanczos_iters:
                    for tol in args.tols:
                        row = compare(x, y, lambda: fg.PivotedCholesky(rank, block_size=block),
                                      settings, iters, tol, args.repeats, exact)
                        rows.append({"precond": "PivotedCholesky", "rank": rank, "block_size": block,
                                     **row})
        for label, make in other_preconditioners(args):
            print(f"  {label}:")
            for iters in args.lanczos_iters:
                for tol in args.tols:
                    row = compare(x, y, make, settings, iters, tol, args.repeats, exact)
                    rows.append({"precond": label, **row})
    elif args.grow_to is not None:
        precond = fg.PivotedCholesky(args.ranks[0], max_rank=args.grow_to)
        model, rank = stand_in(x, y, precond, *settings), None
        for call in range(8):
            d = timed_mll(model)
            rows.append({"mll_call": call, **report(d, f"mll {call}")})
            if d["precond_rank"] == rank:
                break
            rank = d["precond_rank"]
    else:
        for rank in args.ranks:
            for block in args.blocks:
                for iters in args.lanczos_iters:
                    precond = fg.PivotedCholesky(rank, block_size=block)
                    d = report(timed_mll(stand_in(x, y, precond, *settings, lanczos_iters=iters)),
                               f"rank {rank}, blocks of {block}, lanczos_iters {iters}")
                    rows.append({"precond": "PivotedCholesky", "rank": rank, "block_size": block,
                                 "lanczos_iters": iters, **d})
        for label, make in other_preconditioners(args):
            for iters in args.lanczos_iters:
                d = report(timed_mll(stand_in(x, y, make(), *settings, lanczos_iters=iters)),
                           f"{label}, lanczos_iters {iters}")
                rows.append({"precond": label, "lanczos_iters": iters, **d})
    if args.out:
        write_results(args.out, rows, args, device="cpu", extra=extra)


def other_preconditioners(args) -> list:
    """(label, a function giving a fresh configuration) for --vecchia, --rpcholesky and --nystrom."""
    out = [(f"Vecchia, {m} neighbours", lambda m=m: fg.Vecchia(m)) for m in args.vecchia]
    out += [(f"RPCholesky, rank {k}", lambda k=k: fg.RPCholesky(k)) for k in args.rpcholesky]
    out += [(f"Nystrom, rank {k}", lambda k=k: fg.Nystrom(k)) for k in args.nystrom]
    return out


if __name__ == "__main__":
    main()
