# Side-by-side benchmark of flashgp's SVGP and GPyTorch's SVGP (ApproximateGP + VariationalStrategy,
# whitened, Cholesky q(u), VariationalELBO): same data, batches, kernel, start, inducing points, Adam.
"""Benchmark fg.SVGP against GPyTorch 1.15's SVGP on UCI data sets and a large synthetic set.

Examples (from the repository root):

    python benchmarks/svgp_compare.py --device cuda --inducing 500 1000 --epochs 2 \\
        --out benchmarks/results/svgp/svgp_uci_h100
    python benchmarks/svgp_compare.py --device cuda --synthetic 10000000 --inducing 500 1000 \\
        --epochs 1 --max-steps 3000 --out benchmarks/results/svgp/svgp_10m_h100
    python benchmarks/svgp_compare.py --device cpu --quick      (a small CPU check)

Each (library, data set, m) runs in its own subprocess, so peak memory belongs to one run: CUDA's
max allocated bytes on a GPU (reset after the data are loaded), the resident-set increase on a CPU.

Model, the same in both libraries: constant mean (0), Scale(Matern nu = 5/2, ARD), Gaussian
likelihood; hyperparameters start at softplus(0) = ln 2 (GPyTorch's defaults; the noise at
1e-4 + ln 2 with a floor of 1e-4, as GPyTorch's GreaterThan(1e-4)); whitened q(u) with a full
Cholesky factor starting at N(0, I); M inducing inputs learned, starting at the same seeded random
subset of the training inputs; float32; Adam (lr 0.01) on all parameters; the ELBO per point
estimated on batches of 1,024. Both libraries take the same batches: those of
``flashgp.minibatches.Minibatches`` (a seeded permutation per epoch), which ``fg.fit(data=...,
batch_size=...)`` draws for flashgp and this script draws for GPyTorch. Training inputs are kept in
the device's memory for the UCI sets and in CPU memory for the synthetic set (``--data-on``):
every batch is then gathered on the CPU and copied to the device (by fg.fit's model for flashgp,
by ``.to(device)`` here for GPyTorch).

Data: UCI sets in ``--data`` (default ../shared/data/uci beside the repository; split
``--split`` of test_mask; x and y standardized with the training part's statistics), and with
``--synthetic N`` a synthetic set: x uniform on [0, 1]^d (d = ``--synthetic-d``, 8), y = sum_j
sin(2 pi x_j) / sqrt(d) + 0.1 N(0, 1), generated chunk-wise in CPU memory, standardized likewise,
with ``--synthetic-test`` test points (default min(N // 10, 100,000)).

Reported per run: steps, seconds per epoch (the mean synchronized step time after ``--warmup``
steps, times the steps of one epoch: extrapolated when ``--max-steps`` stops earlier), training
points per second over the same steps, peak memory, prediction seconds, and test RMSE and mean
NLL of the Gaussian predictive with the noise, in standardized units (y standardized on the
training part) and in data units (RMSE * std(y), NLL + log std(y)); the ratio of flashgp's
throughput to GPyTorch's (> 1: flashgp faster).
"""
from __future__ import annotations

import argparse
import math
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

from results_file import json_safe, versions
from subprocess_runs import record_run, run_in_subprocess, worker_options, write_report
from uci import device_name, make_sync, metrics, moments, version_of

UCI_DEFAULT = ("elevators", "protein", "keggdirected")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "uci"
CHUNK = 1_000_000  # rows per chunk when generating and standardizing in CPU memory
PREDICT_CHUNK = 50_000  # test points per prediction call (both libraries)
INIT = math.log(2.0)  # softplus(0): GPyTorch's default lengthscale, outputscale, noise (+ 1e-4)
NOISE_FLOOR = 1e-4  # GPyTorch's GaussianLikelihood: GreaterThan(1e-4)
QUICK = {"max_train": 10_000, "synthetic_max": 20_000, "epochs": 1, "inducing": [100], "warmup": 3}


# ----------------------------------------------------------------------------- data

class Data:
    """Standardized training and test tensors (CPU) and the target's training mean and std."""

    def __init__(self, name, x_train, y_train, x_test, y_test, y_mean, y_std):
        self.name, self.y_mean, self.y_std = name, y_mean, y_std
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test


def _standardize(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor):
    """Standardize x and y in place (chunk-wise) with the training part's mean and std (float64
    sums; a constant column keeps scale 1); returns (y mean, y std)."""
    n = x.shape[0]
    sx = torch.zeros(x.shape[1], dtype=torch.float64)
    sxx, sy, syy = torch.zeros_like(sx), 0.0, 0.0
    for i in range(0, n, CHUNK):
        xc, yc = x[i:i + CHUNK].double(), y[i:i + CHUNK].double()
        sx += xc.sum(0)
        sxx += (xc * xc).sum(0)
        sy += float(yc.sum())
        syy += float((yc * yc).sum())
    x_mean = sx / n
    x_std = (sxx / n - x_mean ** 2).clamp_min(0).sqrt()
    x_std = torch.where(x_std > 1e-12 * x_mean.abs().clamp_min(1.0), x_std, torch.ones_like(x_std))
    y_mean = sy / n
    y_std = math.sqrt(max(syy / n - y_mean ** 2, 0.0)) or 1.0
    for t, u in ((x, y), (x_test, y_test)):
        for i in range(0, t.shape[0], CHUNK):
            t[i:i + CHUNK] = ((t[i:i + CHUNK].double() - x_mean) / x_std).to(t.dtype)
            u[i:i + CHUNK] = ((u[i:i + CHUNK].double() - y_mean) / y_std).to(u.dtype)
    return y_mean, y_std


def uci(name: str, root, split: int, max_train, seed: int) -> Data:
    """A UCI set (raw, float64 read), split by column ``split`` of its test mask, optionally
    subsampled to ``max_train`` training rows, standardized on the training part, float32."""
    from flashgp.datasets import load_uci

    ds = load_uci(name, root=root, split=split, standardize=False, dtype=torch.float64,
                  max_train=max_train, seed=seed)
    x, y, xt, yt = (t.clone() for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    y_mean, y_std = _standardize(x, y, xt, yt)
    return Data(ds.name, *(t.float().contiguous() for t in (x, y, xt, yt)), y_mean, y_std)


def synthetic(n: int, d: int, n_test: int, seed: int) -> Data:
    """``n`` training and ``n_test`` test points, generated chunk-wise into float32 CPU tensors:
    x uniform on [0, 1]^d, y = sum_j sin(2 pi x_j) / sqrt(d) + 0.1 N(0, 1); then standardized."""
    gen = torch.Generator().manual_seed(seed)
    total = n + n_test
    x = torch.empty(total, d, dtype=torch.float32)
    y = torch.empty(total, dtype=torch.float32)
    for i in range(0, total, CHUNK):
        rows = min(CHUNK, total - i)
        xc = torch.rand(rows, d, generator=gen, dtype=torch.float32)
        noise = torch.randn(rows, generator=gen, dtype=torch.float32)
        x[i:i + rows] = xc
        y[i:i + rows] = torch.sin(2 * math.pi * xc).sum(-1) / math.sqrt(d) + 0.1 * noise
    x_train, y_train, x_test, y_test = x[:n], y[:n], x[n:], y[n:]
    y_mean, y_std = _standardize(x_train, y_train, x_test, y_test)
    return Data(f"synth-{n}", x_train, y_train, x_test, y_test, y_mean, y_std)


def dataset(args) -> Data:
    """The data set of a worker."""
    if args.dataset.startswith("synth-"):
        n = int(args.dataset.split("-", 1)[1])
        n_test = args.synthetic_test if args.synthetic_test is not None else min(n // 10, 100_000)
        return synthetic(n, args.synthetic_d, n_test, args.seed)
    return uci(args.dataset, args.data, args.split, args.max_train, args.seed)


def initial_inducing(x: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """A seeded random subset of ``m`` training inputs (the same for both libraries)."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(x.shape[0], generator=gen)[:min(m, x.shape[0])]
    return x[index].clone()


# ----------------------------------------------------------------------------- the two libraries

class Clock:
    """Synchronized time stamps after each step, its loss, and the points it used."""

    def __init__(self, sync, batches):
        self.sync, self.batches = sync, batches
        self.stamps, self.losses = [], []

    def start(self):
        self.sync()
        self.t0 = time.perf_counter()

    def step(self, step: int, loss: float):
        self.sync()
        self.stamps.append(time.perf_counter())
        self.losses.append(loss)

    def points(self, step: int) -> int:
        position = step % self.batches.batches_per_epoch
        return min(self.batches.batch_size, self.batches.num_data - position * self.batches.batch_size)

    def summary(self, warmup: int) -> dict:
        times = [b - a for a, b in zip([self.t0] + self.stamps[:-1], self.stamps)]
        steps = len(times)
        warmup = min(warmup, max(steps - 1, 0))
        timed = times[warmup:]
        seconds = sum(timed)
        points = sum(self.points(s) for s in range(warmup, steps))
        every = max(1, steps // 200)
        return {"steps": steps, "warmup_steps": warmup, "step_times": timed,
                "step_seconds_mean": seconds / len(timed),
                "epoch_seconds": seconds / len(timed) * self.batches.batches_per_epoch,
                "points_per_second": points / seconds, "train_seconds": self.stamps[-1] - self.t0,
                "warmup_seconds": sum(times[:warmup]), "loss_end": self.losses[-1],
                "loss_last_50_mean": statistics.fmean(self.losses[-50:]),
                "loss_every": every, "losses": self.losses[::every]}


def predict_chunks(fn, x: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) of ``fn`` (a function of a test chunk on the device) over x, chunk-wise."""
    means, variances = [], []
    for i in range(0, x.shape[0], PREDICT_CHUNK):
        mean, var = fn(x[i:i + PREDICT_CHUNK].to(device))
        means.append(mean.detach().reshape(-1).cpu())
        variances.append(var.detach().reshape(-1).cpu())
    return torch.cat(means), torch.cat(variances)


def run_flashgp(ds, data, z, batches, steps, args, device, sync) -> dict:
    import flashgp as fg

    d = z.shape[-1]
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d, lengthscale=INIT), outputscale=INIT)
    model = fg.SVGP(kernel, z.to(device), likelihood=fg.likelihoods.Gaussian(noise=INIT + NOISE_FLOOR,
                                                                             noise_floor=NOISE_FLOOR),
                    mean=fg.means.Constant(0.0), whiten=True, variational="cholesky", learn_inducing=True)
    model = model.to(device=device, dtype=torch.float32)
    clock = Clock(sync, batches)
    clock.start()
    fg.fit(model, optimizer="adam", lr=args.lr, iters=steps, progress=False, seed=args.seed,
           data=data, batch_size=args.batch_size, callback=lambda step, loss, m: clock.step(step, loss))
    out = clock.summary(args.warmup)
    model.eval()
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        mean, var = predict_chunks(lambda x: moments(model.predict(x)), ds.x_test, device)
    sync()
    out["predict_seconds"] = time.perf_counter() - start
    out["noise"] = float(model.likelihood.noise.detach().reshape(-1)[0])
    out["outputscale"] = float(model.kernel.outputscale.detach().reshape(-1)[0])
    return {**out, **scores(mean, var, ds)}


def run_gpytorch(ds, data, z, batches, steps, args, device, sync) -> dict:
    import gpytorch

    class Peer(gpytorch.models.ApproximateGP):
        def __init__(self, z):
            q = gpytorch.variational.CholeskyVariationalDistribution(z.shape[-2])
            strategy = gpytorch.variational.VariationalStrategy(self, z, q, learn_inducing_locations=True)
            super().__init__(strategy)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=z.shape[-1]))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = Peer(z.clone()).to(device=device, dtype=torch.float32)
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(device=device, dtype=torch.float32)
    mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=batches.num_data)
    opt = torch.optim.Adam([{"params": model.parameters()}, {"params": likelihood.parameters()}], lr=args.lr)
    model.train()
    likelihood.train()
    clock = Clock(sync, batches)
    clock.start()
    for step in range(steps):
        xb, yb = batches.batch(step)
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        opt.zero_grad()
        loss = -mll(model(xb), yb)
        loss.backward()
        opt.step()
        clock.step(step, float(loss.detach()))
    out = clock.summary(args.warmup)
    model.eval()
    likelihood.eval()
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        mean, var = predict_chunks(lambda x: moments(likelihood(model(x))), ds.x_test, device)
    sync()
    out["predict_seconds"] = time.perf_counter() - start
    out["noise"] = float(likelihood.noise.detach().reshape(-1)[0])
    out["outputscale"] = float(model.covar_module.outputscale.detach().reshape(-1)[0])
    return {**out, **scores(mean, var, ds)}


def scores(mean, var, ds: Data) -> dict:
    """Test RMSE and mean NLL (Gaussian predictive with the noise): standardized and data units."""
    s = metrics(mean, var, ds.y_test)
    return {"rmse": s["rmse"], "nll": s["nll"], "min_variance": s["min_variance"],
            "rmse_data_units": s["rmse"] * ds.y_std, "nll_data_units": s["nll"] + math.log(ds.y_std)}


# ----------------------------------------------------------------------------- worker and parent

def worker(args) -> int:
    from flashgp.minibatches import Minibatches

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = make_sync(device)
    ds = dataset(args)
    on_cpu = args.data_on == "cpu" or (args.data_on == "auto" and ds.name.startswith("synth-"))
    x, y = (ds.x_train, ds.y_train) if on_cpu else (ds.x_train.to(device), ds.y_train.to(device))
    z = initial_inducing(ds.x_train, args.m, args.seed)
    batches = Minibatches((x, y), args.batch_size, args.seed)  # GPyTorch's; fg.fit draws the same
    steps = args.epochs * batches.batches_per_epoch
    if args.max_steps is not None:
        steps = min(steps, args.max_steps)
    torch.manual_seed(args.seed)  # GPyTorch's q(u) starts with a little random noise (mean_init_std)
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
    run = run_flashgp if args.lib == "flashgp" else run_gpytorch
    result = {"lib": args.lib, "dataset": ds.name, "m": args.m, "n": ds.x_train.shape[0], "d": ds.x_train.shape[1],
              "n_test": ds.x_test.shape[0], "y_std": ds.y_std, "batch_size": batches.batch_size,
              "batches_per_epoch": batches.batches_per_epoch, "data_on": "cpu" if on_cpu else "device",
              "device": device_name(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "gpytorch": version_of("gpytorch") if args.lib == "gpytorch" else None,
              "flashgp": version_of("flashgp")}
    record_run(result, lambda: run(ds, (x, y), z, batches, steps, args, device, sync), device, args.result)
    return 0


def table(rows: list) -> str:
    lines = [("| data set | n | d | m | library | steps | s / epoch | points / s | peak MiB | predict s | "
              "RMSE | NLL | RMSE (data) | NLL (data) | throughput flashgp / GPyTorch |"),
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        head = f"| {row['dataset']} | {row['n']} | {row['d']} | {row['m']} | {row['lib']} |"
        if "error" in row:
            lines.append(f"{head} failed: {row['error'][:160]} | | | | | | | | | |")
            continue
        peer = next((r for r in rows if r["dataset"] == row["dataset"] and r["m"] == row["m"]
                     and r["lib"] == "gpytorch" and "error" not in r), None)
        ratio = (f"{row['points_per_second'] / peer['points_per_second']:.2f}x"
                 if peer is not None and row["lib"] == "flashgp" else "")
        lines.append(f"{head} {row['steps']} | {row['epoch_seconds']:.2f} | {row['points_per_second']:,.0f} | "
                     f"{row['peak_bytes'] / 2**20:.0f} | {row['predict_seconds']:.2f} | {row['rmse']:.4f} | "
                     f"{row['nll']:.4f} | {row['rmse_data_units']:.4g} | {row['nll_data_units']:.4f} | {ratio} |")
    return "\n".join(lines)


def resolve(args) -> None:
    """Fill the defaults that depend on --quick and --synthetic."""
    if args.datasets is None:
        args.datasets = [] if args.synthetic else (["elevators"] if args.quick else list(UCI_DEFAULT))
    args.datasets = [name for item in args.datasets for name in item.split(",") if name]
    if args.synthetic:
        n = min(args.synthetic, QUICK["synthetic_max"]) if args.quick else args.synthetic
        args.datasets.append(f"synth-{n}")
    if args.inducing is None:
        args.inducing = QUICK["inducing"] if args.quick else [500, 1000]
    args.inducing = [int(v) for item in args.inducing for v in str(item).split(",") if v]
    for name, default in (("epochs", 2), ("warmup", 10)):
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick else default)
    if args.quick and args.max_train is None:
        args.max_train = QUICK["max_train"]
    if args.data is None and DEFAULT_DATA.is_dir():
        args.data = str(DEFAULT_DATA)


def parent(args) -> int:
    resolve(args)
    command = "python benchmarks/svgp_compare.py " + shlex.join(sys.argv[1:])
    rows = []
    print(table([]), flush=True)
    for name in args.datasets:
        for m in args.inducing:
            for lib in args.libs:
                options = ["--lib", lib, "--dataset", name, "--m", str(m)] + worker_options(
                    args, ("data", "device", "epochs", "max_steps", "warmup", "batch_size", "lr", "split", "seed",
                           "threads", "max_train", "synthetic_d", "synthetic_test", "data_on"))
                row = run_in_subprocess(__file__, options, args.timeout,
                                        {"lib": lib, "dataset": name, "m": m, "n": 0, "d": 0})
                rows.append(row)
                print(table(rows).splitlines()[-1], flush=True)
    device = torch.device(args.device)
    device_text = next((r["device"] for r in rows if r.get("device")), None) or (
        device_name(device) if device.type == "cpu" else args.device)
    threads = next((r["threads"] for r in rows if r.get("threads")), torch.get_num_threads())
    vers = versions()
    header = (f"SVGP side by side: flashgp {vers.get('flashgp')} ({vers.get('flashgp_commit')}) against GPyTorch "
              f"{vers.get('gpytorch')}, {device_text}" + (f", CPU threads: {threads}" if device.type == "cpu" else "")
              + f", torch {torch.__version__}, float32, batch {args.batch_size}, Adam lr {args.lr}, "
              f"{args.epochs} epoch(s)" + (f" or at most {args.max_steps} steps" if args.max_steps else "")
              + f", first {args.warmup} steps not timed, {time.strftime('%Y-%m-%d')}.\n\n"
              f"Command: `{command}`\n\n"
              "s / epoch: mean synchronized step time after the warm-up times the steps of one epoch "
              "(batch gather, copy to the device, forward, backward, Adam step, loss read back). "
              "RMSE and NLL (mean negative log predictive density, Gaussian with the noise) on the test "
              "split: standardized units (y standardized with the training part's mean and std), and "
              "data units (RMSE * std(y), NLL + log std(y)). Peak memory: "
              + ("CUDA max allocated bytes of the run (training data held on the device included, held on the CPU not)."
                 if device.type == "cuda" else "the run's resident-set increase (data loaded before).")
              + " Throughput ratio > 1: flashgp faster.\n\n")
    if args.out:
        payload = {"script": Path(__file__).name, "command": command, "argv": list(sys.argv), "args": vars(args),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": vers, "device": device_text,
                   "threads": threads, "rows": rows}
        write_report(args.out, header, table(rows), json_safe(payload))
        print(f"wrote {args.out}.md and .json", file=sys.stderr)
    print()
    print(header + table(rows))
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", default=None, help=f"folder of UCI data sets (default {DEFAULT_DATA} if it exists, "
                   "else the packaged flashgp/data)")
    p.add_argument("--datasets", nargs="*", default=None,
                   help="UCI names, space- or comma-separated (default elevators protein keggdirected; none "
                        "with --synthetic, which then runs alone unless --datasets is given)")
    p.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="add the synthetic set of N training points (e.g. 10000000), kept in CPU memory")
    p.add_argument("--synthetic-d", type=int, default=8, help="input dimensions of the synthetic set (default 8)")
    p.add_argument("--synthetic-test", type=int, default=None,
                   help="test points of the synthetic set (default min(N // 10, 100000))")
    p.add_argument("--inducing", nargs="+", default=None,
                   help="numbers of inducing points, space- or comma-separated (default 500 1000)")
    p.add_argument("--libs", default="flashgp,gpytorch", type=lambda s: s.split(","))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 2; 1 with --quick)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (e.g. for the 10M set)")
    p.add_argument("--warmup", type=int, default=None, help="first steps not timed (default 10; 3 with --quick)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--data-on", default="auto", choices=("auto", "cpu", "device"),
                   help="where the training data live: auto = CPU memory for the synthetic set, the device for UCI")
    p.add_argument("--max-train", type=int, default=None, help="random subsample of a UCI training split "
                   f"(default none; {QUICK['max_train']} with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"a small check: elevators with at most {QUICK['max_train']} training points (the synthetic "
                        f"set at most {QUICK['synthetic_max']}), 1 epoch, m = {QUICK['inducing'][0]}, unless given")
    p.add_argument("--split", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    p.add_argument("--out", default=None, help="output stem: OUT.md and OUT.json (default: print only)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--m", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return worker(args) if args.worker else parent(args)


if __name__ == "__main__":
    sys.exit(main())
