# The two libraries' runs of benchmarks/multitask_compare.py: flashgp's MultitaskGP and GPyTorch's
# multitask exact GP (grid) or Hadamard model (tasks observed apart), on the same data and start.
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mt_bench_data import Data, Stamps, predict_in_chunks, progress, scores, test_rows  # noqa: F401

def flashgp_model(ds: Data, args, device, dtype, solver, notes: list | None = None):
    """fg.MultitaskGP on the grid (x, Y) or on the heterotopic rows (x_rows, y_rows, task_index), on
    ``device``. Where building it from device tensors fails with a mixed-device error (flashgp at
    commit 05cc573: ``kernels.Multitask.set_task_covariance`` makes its fallback factor on the CPU),
    it is built from CPU tensors, moved with ``.to(device)`` and given its data again on the device with
    ``set_train_data`` (the constructor's forms; it refreshes the task index the model keeps beside
    its buffers): the same initial values, and a note in ``notes``."""
    import flashgp as fg

    def data(where):
        x = ds.x.to(device=where, dtype=dtype)
        if ds.rows is None:
            return (x, ds.y.to(device=where, dtype=dtype)), {}
        y = ds.y[ds.rows, ds.tasks].to(device=where, dtype=dtype)
        return (x[ds.rows.to(where)], y), {"task_index": ds.tasks.to(where)}

    def build(where):
        kernel = fg.kernels.Matern(nu=2.5, ard_dims=ds.x.shape[1])
        (x, y), extra = data(where)
        if ds.rows is None:
            return fg.MultitaskGP(x, y, kernel=kernel, rank=args.rank, solver=solver)
        return fg.MultitaskGP(x, y, kernel, num_tasks=ds.t, rank=args.rank, likelihood=fg.likelihoods.Gaussian(),
                              solver=solver, **extra)

    try:
        return build(device)
    except RuntimeError as err:
        if device.type == "cpu" or "same device" not in str(err):
            raise
        if notes is not None:
            notes.append(f"built on the CPU and moved to {device} (building on it failed: "
                         f"{' '.join(str(err).split())[:160]})")
    model = build(torch.device("cpu")).to(device)
    (x, y), extra = data(device)
    model.set_train_data(x, y, **extra)  # the constructor's forms; refreshes the task index kept beside the buffers
    return model


def flashgp_solver(name: str, args):
    import flashgp as fg

    if name == "cholesky":
        return fg.Cholesky()
    tol = args.variance_tol
    cg = fg.CG() if tol == "default" else fg.CG(variance_tol=None if tol.lower() == "none" else float(tol))
    return fg.Auto(cg=cg) if name == "auto" else cg


def initial_values(model) -> dict:
    """flashgp's initial values (those GPyTorch starts from with --init same), as CPU float64."""
    def value(v):
        return torch.as_tensor(v).detach().double().cpu()
    return {"lengthscale": value(model.kernel.base.lengthscale).reshape(-1),
            "task_factor": value(model.kernel.task_factor), "task_variance": value(model.kernel.task_variance),
            "noise": value(model.likelihood.noise), "constant": value(model.mean.base.constant)}


def run_flashgp(ds: Data, args, device, dtype, sync) -> dict:
    import flashgp as fg

    notes = []
    model = flashgp_model(ds, args, device, dtype, flashgp_solver(args.solver, args), notes)
    start_values = initial_values(model)
    progress("built", {"notes": notes})
    stamps = Stamps(sync, {"notes": notes})
    stamps.start()
    history = fg.fit(model, optimizer="adam", lr=args.lr, iters=args.iters, progress=False, seed=args.seed,
                     callback=lambda step, loss, m: stamps.step())
    out = stamps.summary()
    diag = [dict(d) for d in history.diagnostics]
    out.update({"losses": list(history.loss), "loss_end": history.loss[-1],
                "path": diag[-1].get("path"), "structure": diag[-1].get("structure"),
                "step_cg_iterations": [d.get("cg_iterations") for d in diag],
                "train_diagnostics": diag[-1], "initial": start_values,
                "warnings": [str(w) for w in history.warnings], "notes": notes})
    its = [i for i in out["step_cg_iterations"] if i is not None]
    out["cg_iterations_mean"] = statistics.fmean(its) if its else None
    out["cg_iterations_max"] = max(its) if its else None
    out["converged_steps"] = sum(bool(d.get("converged", True)) for d in diag)
    progress("trained; predicting", out)
    if args.n_test > 0:
        model.eval()
        t = ds.t

        def grid_chunk(x):
            post = model.predict(x)
            return post.mean, post.variance

        def row_chunk(x):  # one task per row: every test point for every task, task-major
            c = x.shape[0]
            tasks = torch.arange(t, device=x.device).repeat_interleave(c)
            post = model.predict(x.repeat(t, 1), task_index=tasks)
            return post.mean.reshape(t, c).T, post.variance.reshape(t, c).T

        sync()
        start = time.perf_counter()
        with torch.no_grad():
            mean, var = predict_in_chunks(grid_chunk if ds.rows is None else row_chunk, ds, args, device, dtype)
        sync()
        out["predict_seconds"] = time.perf_counter() - start
        out["predict_diagnostics"] = dict(model.diagnostics)
        out.update(scores(mean, var, ds.y_test))
    out["final"] = initial_values(model)
    return out


# ----------------------------------------------------------------------------- GPyTorch

class Calls:
    """Counts, while active, calls of torch.linalg.eigh, torch.linalg.cholesky(_ex) and
    linear_operator.utils.linear_cg (what GPyTorch's defaults chose), by phase."""

    NAMES = (("torch.linalg", "eigh"), ("torch.linalg", "cholesky"), ("torch.linalg", "cholesky_ex"),
             ("linear_operator.utils", "linear_cg"))

    def __init__(self):
        import importlib
        self.counts, self.phase, self._saved = {}, "setup", []
        for module, name in self.NAMES:
            mod = importlib.import_module(module)
            original = getattr(mod, name)
            self._saved.append((mod, name, original))
            setattr(mod, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(*a, **k):
            key = f"{self.phase}:{name}"
            self.counts[key] = self.counts.get(key, 0) + 1
            return original(*a, **k)
        return counted

    def restore(self):
        for mod, name, original in self._saved:
            setattr(mod, name, original)


def gpytorch_models(ds: Data, args, device, dtype):
    """(model, likelihood, train inputs, train targets, predictive function) of the GPyTorch side."""
    import gpytorch

    d, t, r = ds.x.shape[1], ds.t, args.rank
    x = ds.x.to(device=device, dtype=dtype)
    if ds.rows is None:
        class Grid(gpytorch.models.ExactGP):
            def __init__(self, x, y, likelihood):
                super().__init__(x, y, likelihood)
                self.mean_module = gpytorch.means.MultitaskMean(gpytorch.means.ConstantMean(), num_tasks=t)
                self.covar_module = gpytorch.kernels.MultitaskKernel(
                    gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d), num_tasks=t, rank=r)

            def forward(self, x):
                return gpytorch.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

        likelihood = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=t,
                                                                      has_global_noise=args.init != "same")
        y = ds.y.to(device=device, dtype=dtype)
        model = Grid(x, y, likelihood)

        def predict(xc):
            pred = likelihood(model(xc))
            return pred.mean, pred.variance

        return model, likelihood, (x,), y, predict

    class TaskConstant(gpytorch.means.Mean):
        """One constant per task, of the task index input (n, 1)."""

        def __init__(self):
            super().__init__()
            self.register_parameter("constants", torch.nn.Parameter(torch.zeros(t)))

        def forward(self, i):
            return self.constants[i.reshape(-1)]

    class Hadamard(gpytorch.models.ExactGP):
        def __init__(self, inputs, y, likelihood):
            super().__init__(inputs, y, likelihood)
            self.mean_module = TaskConstant()
            self.covar_module = gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d)
            self.task_covar_module = gpytorch.kernels.IndexKernel(num_tasks=t, rank=r)

        def forward(self, x, i):
            covar = self.covar_module(x).mul(self.task_covar_module(i))
            return gpytorch.distributions.MultivariateNormal(self.mean_module(i), covar)

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    rows, tasks = ds.rows.to(device), ds.tasks.to(device)
    inputs = (x[rows], tasks.unsqueeze(-1))
    y = ds.y[ds.rows, ds.tasks].to(device=device, dtype=dtype)
    model = Hadamard(inputs, y, likelihood)

    def predict(xc):
        c = xc.shape[0]
        i = torch.arange(t, device=xc.device).repeat_interleave(c).unsqueeze(-1)
        pred = likelihood(model(xc.repeat(t, 1), i))
        return pred.mean.reshape(t, c).T, pred.variance.reshape(t, c).T

    return model, likelihood, inputs, y, predict


def set_gpytorch_start(model, likelihood, values: dict, grid: bool) -> None:
    """GPyTorch's hyperparameters set to flashgp's initial values (--init same)."""
    p = next(model.parameters())
    v = {k: t.to(device=p.device, dtype=p.dtype) for k, t in values.items()}
    with torch.no_grad():
        if grid:
            base, task = model.covar_module.data_covar_module, model.covar_module.task_covar_module
            likelihood.task_noises = v["noise"].expand(task.covar_factor.shape[0]).clone()
            for j, mean in enumerate(model.mean_module.base_means):
                mean.constant = v["constant"][j]
        else:
            base, task = model.covar_module, model.task_covar_module
            likelihood.noise = v["noise"].reshape(-1)[:1]
            model.mean_module.constants.copy_(v["constant"])
        base.lengthscale = v["lengthscale"].reshape(base.lengthscale.shape)
        task.covar_factor.copy_(v["task_factor"])
        task.var = v["task_variance"]


def gpytorch_values(model, likelihood, grid: bool) -> dict:
    """The GPyTorch hyperparameters in flashgp's terms (for the JSON record)."""
    base, task = ((model.covar_module.data_covar_module, model.covar_module.task_covar_module) if grid
                  else (model.covar_module, model.task_covar_module))
    noise = likelihood.task_noises if grid else likelihood.noise
    if grid and likelihood.has_global_noise:
        noise = noise + likelihood.noise
    constant = (torch.stack([m.constant.reshape(()) for m in model.mean_module.base_means]) if grid
                else model.mean_module.constants)
    return {k: torch.as_tensor(t).detach().double().cpu().reshape(-1) if k != "task_factor" else t.detach().double().cpu()
            for k, t in (("lengthscale", base.lengthscale), ("task_factor", task.covar_factor),
                         ("task_variance", task.var), ("noise", noise), ("constant", constant))}


def run_gpytorch(ds: Data, args, device, dtype, sync, start_values) -> dict:
    import gpytorch

    grid = ds.rows is None
    torch.manual_seed(args.seed)  # GPyTorch's random IndexKernel start (--init default)
    model, likelihood, inputs, y, predict = gpytorch_models(ds, args, device, dtype)
    model = model.to(device=device, dtype=dtype)
    if start_values is not None:
        set_gpytorch_start(model, likelihood, start_values, grid)
    out = {"initial": gpytorch_values(model, likelihood, grid)}
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    model.train()
    likelihood.train()
    with torch.no_grad():
        out["train_operator"] = type(likelihood(model(*inputs)).lazy_covariance_matrix).__name__
    out["max_cholesky_size"] = gpytorch.settings.max_cholesky_size.value()
    calls = Calls()
    try:
        calls.phase = "train"
        stamps = Stamps(sync)
        losses = []
        stamps.start()
        for _ in range(args.iters):
            opt.zero_grad()
            loss = -mll(model(*inputs), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            stamps.step()
        out.update(stamps.summary())
        out.update({"losses": losses, "loss_end": losses[-1]})
        progress("trained; predicting", {**out, "calls": dict(calls.counts)})
        if args.n_test > 0:
            calls.phase = "predict"
            model.eval()
            likelihood.eval()
            sync()
            start = time.perf_counter()
            with torch.no_grad():
                mean, var = predict_in_chunks(predict, ds, args, device, dtype)
            sync()
            out["predict_seconds"] = time.perf_counter() - start
            out.update(scores(mean, var, ds.y_test))
    finally:
        calls.restore()
    out["calls"] = dict(calls.counts)
    out["final"] = gpytorch_values(model, likelihood, grid)
    return out


def what_gpytorch_ran(row: dict) -> str:
    calls = row.get("calls") or {}
    parts = []
    for phase in ("train", "predict"):
        c = {k.split(":", 1)[1]: v for k, v in calls.items() if k.startswith(phase + ":")}
        chol = c.get("cholesky", 0) + c.get("cholesky_ex", 0)
        kinds = [f"{name} {c[key]}" for name, key in (("eigh", "eigh"), ("CG", "linear_cg")) if c.get(key)]
        kinds += [f"Cholesky {chol}"] if chol else []
        parts.append(f"{phase}: {', '.join(kinds) or 'none counted'}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- worker and parent

