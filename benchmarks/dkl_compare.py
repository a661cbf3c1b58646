# Deep kernel learning on UCI regression sets: flashgp's Warped(Scale(RBF), MLP) against the plain
# Scale(RBF, ARD) kernel and against GPyTorch's DKL (the same network in front of ScaleKernel(RBFKernel)).
"""Benchmark deep kernels (``fg.kernels.Warped``) on UCI data sets with many input columns.

Example (the committed CPU results):
    python benchmarks/dkl_compare.py --datasets keggdirected,protein --max-train 4000 --iters 40 \
        --out benchmarks/results/dkl/cpu

Per data set (one split, training rows subsampled to --max-train, test rows to --max-test,
standardized), three models, each trained by Adam with the same steps and learning rate:

* ``flashgp plain``: ExactGP with Scale(RBF(ard_dims=d)) on the inputs;
* ``flashgp deep``: ExactGP with Warped(Scale(RBF(ard_dims=D)), MLP(d, hidden, D));
* ``gpytorch dkl``: a GPyTorch ExactGP whose forward applies the same MLP (a copy of flashgp's
  initial network, the same class of plain torch layers) before ScaleKernel(RBFKernel(ard_num_dims=D)),
  started from flashgp's initial hyperparameters (lengthscales, output scale, noise, constant mean).

Both libraries use their default inference at this n unless --solver says otherwise: flashgp
``fg.CG()`` (BBMM: mBCG, 10 probes, pivoted-Cholesky preconditioner) with --solver cg (default),
``fg.Cholesky()`` with --solver cholesky; GPyTorch its defaults (CG / Lanczos beyond
max_cholesky_size = 800 points; with --solver cholesky it is forced to Cholesky too).
Reported: test RMSE and NLL (Gaussian predictive density including the noise, standardized target),
the training loss (-mll per point) at the first and last step, and the median seconds per step.
Writes ``<out>.md`` and ``<out>.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import versions, write_results  # noqa: E402
from uci import StepTimer, device_name, metrics  # noqa: E402


def load(args, name: str):
    from flashgp.datasets import load_uci
    ds = load_uci(name, root=args.data, max_train=args.max_train, seed=args.seed,
                  dtype=getattr(torch, args.dtype))
    if ds.n_test > args.max_test:
        keep = torch.randperm(ds.n_test, generator=torch.Generator().manual_seed(args.seed))[: args.max_test]
        ds.x_test, ds.y_test = ds.x_test[keep], ds.y_test[keep]
    return ds


def solver(args):
    import flashgp as fg
    return fg.Cholesky() if args.solver == "cholesky" else fg.CG()


def fit_flashgp(model, ds, args) -> dict:
    import flashgp as fg
    timer = StepTimer()
    history = fg.fit(model, lr=args.lr, iters=args.iters, progress=False, seed=args.seed, callback=timer)
    steps = timer.seconds
    pred = model.predict(ds.x_test)
    return {"losses": [float(v) for v in history.loss], "step_seconds": steps,
            **metrics(pred.mean, pred.variance, ds.y_test)}


def run_gpytorch(ds, net, init: dict, args) -> dict:
    import gpytorch
    from gpytorch import settings as gs

    class DKL(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.feature_extractor = net
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.RBFKernel(ard_num_dims=args.features))

        def forward(self, x):
            f = self.feature_extractor(x)
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(f))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = DKL(ds.x_train, ds.y_train, likelihood).to(dtype=ds.x_train.dtype)
    model.covar_module.base_kernel.lengthscale = init["lengthscale"].reshape(1, -1)
    model.covar_module.outputscale = init["outputscale"]
    likelihood.noise = init["noise"]
    model.mean_module.constant = init["constant"]
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    contexts = [gs.max_cholesky_size(10**9)] if args.solver == "cholesky" else []
    steps, losses = [], []
    with contextlib.ExitStack() as stack:
        for ctx in contexts:
            stack.enter_context(ctx)
        model.train()
        torch.manual_seed(args.seed)
        for _ in range(args.iters):
            start = time.perf_counter()
            optimizer.zero_grad()
            loss = -mll(model(ds.x_train), ds.y_train)
            loss.backward()
            optimizer.step()
            steps.append(time.perf_counter() - start)
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            pred = likelihood(model(ds.x_test))
            mean, var = pred.mean, pred.variance
    return {"losses": losses, "step_seconds": steps, **metrics(mean, var, ds.y_test)}


def run_dataset(args, name: str) -> list[dict]:
    import flashgp as fg
    K = fg.kernels
    ds = load(args, name)
    n, d = ds.x_train.shape
    print(f"{ds.name}: n_train={n}, n_test={ds.x_test.shape[0]}, d={d}", flush=True)
    rows = []

    def record(library, model_name, result):
        row = {"dataset": ds.name, "n_train": n, "n_test": ds.x_test.shape[0], "d": d, "library": library,
               "model": model_name, "rmse": result["rmse"], "nll": result["nll"],
               "loss_first": result["losses"][0], "loss_last": result["losses"][-1],
               "seconds_per_step": statistics.median(result["step_seconds"][1:] or result["step_seconds"]),
               "step_seconds": result["step_seconds"]}
        rows.append(row)
        print(f"  {library:<8} {model_name:<34} RMSE {row['rmse']:.4f}  NLL {row['nll']:+.4f}  "
              f"loss {row['loss_first']:+.3f} -> {row['loss_last']:+.3f}  {row['seconds_per_step']:.3f} s/step",
              flush=True)

    plain = fg.ExactGP(ds.x_train, ds.y_train, K.Scale(K.RBF(ard_dims=d)), solver=solver(args))
    record("flashgp", f"Scale(RBF, ARD {d})", fit_flashgp(plain, ds, args))

    torch.manual_seed(args.seed)  # the network's initial weights, shared with GPyTorch's model
    net = K.MLP(d, hidden=args.hidden, out_dims=args.features, activation=args.activation).to(ds.x_train.dtype)
    start_net = copy.deepcopy(net)
    deep = fg.ExactGP(ds.x_train, ds.y_train, K.Warped(K.Scale(K.RBF(ard_dims=args.features)), net),
                      solver=solver(args))
    init = {"lengthscale": deep.kernel.base.base.lengthscale.detach().clone(),
            "outputscale": deep.kernel.base.outputscale.detach().clone(),
            "noise": deep.likelihood.noise.detach().clone(), "constant": deep.mean.constant.detach().clone()}
    arch = f"MLP{tuple(args.hidden)}->{args.features}"
    record("flashgp", f"Warped(Scale(RBF), {arch})", fit_flashgp(deep, ds, args))
    if not args.no_gpytorch:
        record("gpytorch", f"DKL ScaleKernel(RBFKernel), {arch}", run_gpytorch(ds, start_net, init, args))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| data set | n | d | library | model | test RMSE | test NLL | loss first -> last | s / step |",
             "|---|---:|---:|---|---|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['n_train']} | {r['d']} | {r['library']} | {r['model']} | "
                     f"{r['rmse']:.4f} | {r['nll']:+.4f} | {r['loss_first']:+.3f} -> {r['loss_last']:+.3f} | "
                     f"{r['seconds_per_step']:.3f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO / ".uci"), help="folder of UCI-format data sets (default .uci)")
    parser.add_argument("--datasets", default="keggdirected,protein")
    parser.add_argument("--max-train", type=int, default=4000)
    parser.add_argument("--max-test", type=int, default=2000)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",") if v], default=[32, 16],
                        help="hidden widths, comma-separated (default 32,16)")
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--activation", default="relu", choices=("relu", "tanh", "silu"))
    parser.add_argument("--solver", default="cg", choices=("cg", "cholesky"))
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gpytorch", action="store_true")
    parser.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    rows = []
    for name in args.datasets.split(","):
        rows.extend(run_dataset(args, name))
    total = time.perf_counter() - start
    print(table(rows))
    print(f"total {total:.0f} s")
    if args.out:
        info = versions()
        command = "python " + shlex.join(["benchmarks/dkl_compare.py", *(sys.argv[1:] if argv is None else argv)])
        header = (f"# Deep kernel learning: flashgp Warped vs the plain kernel vs GPyTorch DKL\n\n"
                  f"Command: `{command}`\n\n"
                  f"Device: {device_name(torch.device('cpu'))}, {torch.get_num_threads()} threads; a shared CPU: "
                  f"other agents' jobs ran on the same cores, so seconds per step are noisy and only comparable "
                  f"within one row group.\n\n"
                  f"Versions: {', '.join(f'{k} {v}' for k, v in info.items())}. Total {total:.0f} s.\n\n"
                  f"Solver: {args.solver} (flashgp {'fg.Cholesky()' if args.solver == 'cholesky' else 'fg.CG()'}, "
                  f"GPyTorch {'forced Cholesky' if args.solver == 'cholesky' else 'defaults'}); {args.iters} Adam "
                  f"steps at lr {args.lr}; {args.dtype}; MLP hidden {args.hidden}, {args.features} features, "
                  f"{args.activation}; s / step is the median over the steps after the first.\n\n")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_name(out.name + ".md").write_text(header + table(rows) + "\n")
        write_results(out, rows, args, extra={"total_seconds": total})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
