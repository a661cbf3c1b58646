# Benchmark: the preconditioners (greedy and randomly pivoted Cholesky, randomized Nystrom, Vecchia)
# at equal memory on subsamples of UCI sets, against a float64 Cholesky on the CPU.
"""Preconditioners at equal memory on UCI data: CG iterations, mll and gradient error, build time.

    python benchmarks/precond_uci.py --datasets elevators kin40k protein bike --n 4000 \\
        --memory 16 64 128 --repeats 3 --out benchmarks/results/preconditioners/precond_uci_cpu.json

Per data set: a random subsample of ``--n`` points (x and y standardized), hyperparameters of
Scale(Matern 5/2, ARD) from ``--fit-steps`` Adam steps of a float64 Cholesky fit on its first
``--fit-n`` points, then at those hyperparameters on all n points:

* the float64 Cholesky mll per point and its gradient (raw parameters): the reference;
* per memory level k (numbers per point): PivotedCholesky(k), RPCholesky(k), Nystrom(k) (n k
  factor entries) and Vecchia(k - 1) (n k weights; its n k indices are not counted), and once
  no preconditioner. For each: the seconds of one fresh build; the CG iterations of the solve
  K_hat^{-1} (y - m) to relative residual 1e-3 (the posterior mean solve, a clean measure of
  the preconditioner); and ``--repeats`` training mlls with the CG training defaults (10 probes,
  tol 1, 20 Lanczos iterations), each with its gradient, reporting their CG iterations, the
  mean absolute mll error per point, the mean norm of the gradient's error against Cholesky's
  (the Cholesky gradient's norm is printed per data set: near the fitted optimum it is small,
  so relative errors mean little), and how many of them warned that SLQ had not settled.

The CG terms are computed here as the CG engine computes them (``config.build`` then
``linalg.inv_quad_logdet`` on K_hat with the dense backend), so the comparison does not depend
on the model code; the reference is ``ExactGP(solver=fg.Cholesky()).mll()``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import flashgp as fg  # noqa: E402
from flashgp.linalg import cg_solve, inv_quad_logdet  # noqa: E402
from flashgp.operators import AddedDiag, KernelOperator  # noqa: E402

F64 = torch.float64


def load(root: Path, name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random subsample of n rows of ROOT/NAME/data.csv.gz (last column the target), standardized."""
    with gzip.open(root / name / "data.csv.gz", "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    rows = np.random.default_rng(seed).permutation(len(data))[:n]
    data = torch.tensor(data[rows], dtype=F64)
    x, y = data[:, :-1], data[:, -1]
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
    return x, (y - y.mean()) / y.std()


def make_model(x, y, solver):
    return fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=x.shape[-1])), solver=solver)


def fitted_state(x, y, steps: int) -> dict:
    """The parameters after ``steps`` Adam steps (lr 0.1) of a float64 Cholesky fit."""
    model = make_model(x, y, fg.Cholesky())
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        (-model.mll()).backward()
        opt.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def gradient(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=F64)
                      for p in model.parameters()])


def cg_mll(model, config, generator) -> tuple[float, torch.Tensor, int, int]:
    """(mll per point, gradient, CG iterations, NumericalWarnings) as the CG engine computes them
    in training."""
    model.zero_grad()
    x, n = model.train_x, model.num_train
    kernel_op = KernelOperator(model.kernel, x, backend="dense")
    noise = model.likelihood.noise_diag(n)
    precond = None if config is None else config.build(kernel_op, noise)
    resid = model.train_y - model.mean(x)
    info = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fg.NumericalWarning)
        inv_quad, logdet = inv_quad_logdet(AddedDiag(kernel_op, noise), resid, precond, probes=10, tol=1.0,
                                           max_iters=2000, lanczos_iters=20, generator=generator, info=info)
    mll = -0.5 * (inv_quad + logdet + n * math.log(2 * math.pi)) / n
    mll.backward()
    return float(mll.detach()), gradient(model), info["iterations"], len(caught)


def mean_solve(model, config) -> tuple[float, int]:
    """(build seconds, CG iterations of K_hat^{-1} (y - m) to relative residual 1e-3)."""
    with torch.no_grad():
        x, n = model.train_x, model.num_train
        kernel_op = KernelOperator(model.kernel, x, backend="dense")
        kernel_op.matmul(torch.zeros(n, 1, dtype=F64))  # the dense K is stored before the timing
        noise = model.likelihood.noise_diag(n)
        start = time.perf_counter()
        precond = None if config is None else config.build(kernel_op, noise)
        seconds = time.perf_counter() - start
        info = {}
        cg_solve(AddedDiag(kernel_op, noise), (model.train_y - model.mean(x)).unsqueeze(-1), precond,
                 tol=1e-3, max_iters=5000, info=info)
    return seconds, info["iterations"]


def configs(k: int) -> list:
    return [("PivotedCholesky", fg.PivotedCholesky(k)), ("RPCholesky", fg.RPCholesky(k)),
            ("Nystrom", fg.Nystrom(k)), ("Vecchia", fg.Vecchia(k - 1))]


def run_dataset(args, name: str) -> dict:
    x, y = load(args.data, name, args.n, args.seed)
    start = time.perf_counter()
    state = fitted_state(x[:args.fit_n], y[:args.fit_n], args.fit_steps)
    fit_seconds = time.perf_counter() - start
    exact_model = make_model(x, y, fg.Cholesky())
    exact_model.load_state_dict(state, strict=False)
    start = time.perf_counter()
    exact_model.zero_grad()
    value = exact_model.mll()
    value.backward()
    exact, exact_grad = float(value.detach()), gradient(exact_model)
    noise = float(exact_model.likelihood.noise.detach())
    grad_norm = float(exact_grad.norm())
    print(f"{name}: n {args.n}, d {x.shape[-1]}, noise {noise:.3g}, outputscale "
          f"{float(exact_model.kernel.outputscale.detach()):.3g}, lengthscales "
          f"{[round(v, 2) for v in exact_model.kernel.base.lengthscale.flatten().tolist()]}; "
          f"fit {fit_seconds:.1f} s; Cholesky mll {exact:.5f}, gradient norm {grad_norm:.3g} "
          f"({time.perf_counter() - start:.1f} s)", flush=True)
    rows = []
    levels = [(0, [("none", None)])] + [(k, configs(k)) for k in args.memory]
    for k, entries in levels:
        for label, config in entries:
            model = make_model(x, y, None)
            model.load_state_dict(state, strict=False)
            build, solve_iters = mean_solve(model, config)
            errors, grad_errors, iters, warned = [], [], [], 0
            for rep in range(args.repeats):
                value, grad, it, caught = cg_mll(model, config, torch.Generator().manual_seed(rep))
                errors.append(abs(value - exact))
                grad_errors.append(float((grad - exact_grad).norm()))
                iters.append(it)
                warned += caught > 0
            row = dict(dataset=name, memory=k, preconditioner=label, build_seconds=build,
                       mean_solve_iterations=solve_iters, train_iterations=iters,
                       mll_error=float(np.mean(errors)), grad_error=float(np.mean(grad_errors)),
                       slq_warnings=warned)
            rows.append(row)
            print(f"  k={k:4d} {label:16s} build {build:7.3f} s, mean solve {solve_iters:5d} it, train "
                  f"{iters} it, |mll err| {row['mll_error']:.2e}, |grad err| {row['grad_error']:.2e}, "
                  f"SLQ warnings {warned}", flush=True)
    return dict(dataset=name, n=args.n, d=x.shape[-1], noise=noise, cholesky_mll=exact,
                cholesky_grad_norm=grad_norm, fit_seconds=fit_seconds, rows=rows)


def markdown(results: list) -> str:
    """One table per data set from ``run_dataset``'s results."""
    lines = []
    for result in results:
        lines += ["", f"**{result['dataset']}** (n = {result['n']}, d = {result['d']}, noise "
                      f"{result['noise']:.3g}, Cholesky mll {result['cholesky_mll']:.4f} per point, "
                      f"gradient norm {result['cholesky_grad_norm']:.3g})", "",
                  "| numbers per point | preconditioner | build s | mean solve CG it. | training CG it. "
                  "| mll error | gradient error | SLQ warnings |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in result["rows"]:
            label = row["preconditioner"]
            label = f"{label}({row['memory'] - 1})" if label == "Vecchia" else (
                label if label == "none" else f"{label}({row['memory']})")
            its = row["train_iterations"]
            its = str(its[0]) if len(set(its)) == 1 else f"{min(its)}-{max(its)}"
            lines.append(f"| {row['memory']} | {label} | {row['build_seconds']:.3f} | "
                         f"{row['mean_solve_iterations']} | {its} | {row['mll_error']:.1e} | "
                         f"{row['grad_error']:.1e} | {row['slq_warnings']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/uci"))
    parser.add_argument("--datasets", nargs="+", default=["elevators", "kin40k", "protein", "bike"])
    parser.add_argument("--n", type=int, default=4000, help="points per data set (random subsample)")
    parser.add_argument("--memory", type=int, nargs="+", default=[16, 64, 128],
                        help="numbers per point: rank k, or Vecchia with k - 1 neighbours")
    parser.add_argument("--fit-n", type=int, default=1000, help="points of the hyperparameter fit")
    parser.add_argument("--fit-steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="probe draws of the training mll")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--table", type=Path, default=None,
                        help="only print the markdown tables of this JSON file (from --out)")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(markdown(json.loads(args.table.read_text())["results"]))
        return
    if min(args.memory) < 2:
        parser.error("--memory: expected numbers >= 2 (Vecchia needs a neighbour)")
    torch.set_num_threads(args.threads)
    results = [run_dataset(args, name) for name in args.datasets]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
