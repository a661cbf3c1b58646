# The command line's multi-output regression: `flashgp fit --target A,B,C [--multitask
# independent|icm|lmc] [--task-rank R]` (an exact MultitaskGP over the standardized target columns,
# empty cells not observed) and `flashgp predict` with such a model (mean_<A>, std_<A>, lower_<A>,
# upper_<A> per target). The single-target flow stays in flashgp.cli, which calls in here.
from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import torch

from .cli import _check_fit_paths, _fit_with_checkpoint, _save, _split, choose_device, make_kernel, run_lines
from .cli_parser import EXIT_USAGE, CLIError
from .estimator_methods import build_multitask, check_multitask, total_objective
from .plot_multitask import task_correlations
from .tables import (PREDICT_CHUNK, InputError, check_columns, heldout_metrics,
                     numeric_columns, read_table, scaled_inputs, select_features, spread, to_model_dtype,
                     write_predictions)


# ----- options and columns -------------------------------------------------------------------
def target_names(args) -> list[str]:
    """The --target columns: the text as one name (as before) when it has no comma, else its
    comma-separated names (2 or more, distinct). Refuses --multitask / --task-rank with one."""
    text = args.target
    names = [text] if "," not in text else [name.strip() for name in text.split(",")]
    if not all(names):
        raise CLIError(f"--target: expected comma-separated column names, got {text!r}", EXIT_USAGE)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CLIError(f"--target: column(s) {', '.join(map(repr, twice))} named twice in {text!r}", EXIT_USAGE)
    if len(names) == 1:
        for flag, value in (("--multitask", args.multitask), ("--task-rank", args.task_rank)):
            if value is not None:
                raise CLIError(f"{flag}: only several targets take it (--target A,B,...); got the one "
                               f"target {text!r}", EXIT_USAGE)
    return names


def check_options(args, t: int) -> tuple[str, int]:
    """(multitask mode, task rank) of a fit of ``t`` targets; CLIError (exit 2, naming the flag)
    for the options that do not go with it."""
    if args.task != "regression":
        raise CLIError("--task: several targets (--target A,B,...) are fit by regression only", EXIT_USAGE)
    try:
        mode, rank = check_multitask(args.multitask, 1 if args.task_rank is None else args.task_rank,
                                     args.method, t)
    except ValueError as err:
        text = str(err)
        if text.startswith("y:"):
            raise CLIError(f"--method: several targets ({t} columns) need --method exact (a multitask GP); "
                           f"got {args.method}", EXIT_USAGE) from None
        flag, _, rest = text.partition(":")
        raise CLIError(f"--{flag.replace('_', '-')}:{rest}", EXIT_USAGE) from None
    if mode == "independent" and args.task_rank is not None:
        raise CLIError("--task-rank: --multitask independent learns no task covariance; use icm or lmc",
                       EXIT_USAGE)
    for flag, value in (("--inducing", args.inducing), ("--batch-size", args.batch_size)):
        if value is not None:
            raise CLIError(f"{flag}: several targets fit an exact multitask GP, which takes no {flag}", EXIT_USAGE)
    return mode, rank


def select_inputs(header: list[str], targets: list[str], features: str | None, path: str) -> list[str]:
    """The feature names (``--features``, else every column but the targets), none a target."""
    check_columns(header, targets, "--target", path)
    chosen = select_features(header, targets[0], features, path)
    if features is None:
        chosen = [name for name in chosen if name not in targets]
        if not chosen:
            raise InputError(f"DATA: {path} has no columns besides the targets")
    for name in targets[1:]:
        if name in chosen:
            raise InputError(f"--features: the target column {name!r} cannot also be a feature")
    return chosen


def read_targets(header: list[str], rows: list[list[str]], targets: list[str], arg: str) -> np.ndarray:
    """The target columns as float64 (n, t), NaN where a cell is empty or NaN (not observed);
    InputError naming ``arg``, the column and the line for text or an infinite value."""
    out = np.full((len(rows), len(targets)), np.nan)
    for j, name in enumerate(targets):
        col = header.index(name)
        for i, row in enumerate(rows):
            text = row[col].strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = math.inf
            if math.isinf(value):
                raise InputError(f"{arg}: non-numeric value in target column {name!r} (line {i + 2}: "
                                 f"{row[col]!r}); several targets hold numbers, or nothing where not observed")
            out[i, j] = value
    return out


def check_observed(y: np.ndarray, targets: list[str], where: str) -> None:
    """InputError when a target column of y (n, t) has no observed (non-NaN) value."""
    empty = [name for name, seen in zip(targets, (~np.isnan(y)).any(axis=0)) if not seen]
    if empty:
        raise InputError(f"{where}: target column(s) {', '.join(map(repr, empty))} have no observed value "
                         "(every cell empty or NaN)")


def _split_rows(x, y, args, features: list[str], targets: list[str]):
    """(x_train, y_train, x_test, y_test) from --test-size (``cli._split``) or --test (rows whose
    targets are all missing left out); the test parts may be None."""
    if args.test is None:
        return _split(x, y, SimpleNamespace(test=None, test_size=args.test_size, seed=args.seed), features)
    header, rows = read_table(args.test, "--test")
    check_columns(header, features + targets, "--test", args.test)
    x_test = numeric_columns(header, rows, features, "--test")
    y_test = read_targets(header, rows, targets, "--test")
    keep = ~np.isnan(y_test).all(axis=1)
    if not keep.any():
        raise CLIError(f"--test: {args.test} has no row with an observed target")
    return x, y, x_test[keep], y_test[keep]


# ----- the model ---------------------------------------------------------------------------------
def hyperparameters(model, features: list[str], targets: list[str]) -> dict:
    """Fitted hyperparameters in standardized units: per kernel term its lengthscales (by feature)
    and task covariance B (t, t); the total B; each target's noise variance and mean."""
    terms = []
    for term in model.kernel.terms:
        entry = {"lengthscale": dict(zip(features, term.base.lengthscale.detach().flatten().tolist())),
                 "task_covariance": term.task_covariance.detach().double().cpu().tolist()}
        if hasattr(term.base, "alpha"):
            entry["alpha"] = float(term.base.alpha.detach())
        terms.append(entry)
    t = len(targets)
    noise = model.likelihood.noise.detach().expand(t).tolist()
    mean = model.mean.base.constant.detach().expand(t).tolist()
    return {"terms": terms, "task_covariance": model.task_covariance.detach().double().cpu().tolist(),
            "noise": dict(zip(targets, noise)), "noise_floor": model.likelihood.noise_floor,
            "mean": dict(zip(targets, mean))}


def predict_units(model, x: np.ndarray, stats: dict, arg: str) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and std (m, t) (noise included) at raw inputs x (m, d), in each target's units."""
    step = max(1, PREDICT_CHUNK // model.num_tasks)
    means, stds = [], []
    for start in range(0, x.shape[0], step):
        pred = model.predict(scaled_inputs(x[start:start + step], stats, model.dtype, model.device, arg))
        means.append(pred.mean.detach().double().cpu().numpy())
        stds.append(pred.variance.detach().double().cpu().numpy().clip(min=0) ** 0.5)
    y_mean, y_std = np.asarray(stats["y_mean"], dtype=np.float64), np.asarray(stats["y_std"], dtype=np.float64)
    return np.concatenate(means) * y_std + y_mean, np.concatenate(stds) * y_std


def target_metrics(mean: np.ndarray, std: np.ndarray, y: np.ndarray, targets: list[str]) -> dict | None:
    """``heldout_metrics`` per target over its observed cells of y (m, t) (None: no cell), and the
    mean of RMSE, NLL and coverage over the targets scored ("n": their cells); None if none is."""
    per = {}
    for j, name in enumerate(targets):
        seen = ~np.isnan(y[:, j])
        per[name] = heldout_metrics(mean[seen, j], std[seen, j], y[seen, j]) if seen.any() else None
    scored = [m for m in per.values() if m is not None]
    if not scored:
        return None
    average = {key: float(np.mean([m[key] for m in scored])) for key in ("rmse", "nll", "coverage95")}
    return {"per_target": per, "mean": {"n": sum(m["n"] for m in scored), **average}}


# ----- fit ---------------------------------------------------------------------------------------
def cmd_fit_multitask(args, targets: list[str], say) -> dict:
    """`flashgp fit --target A,B,...`: read, standardize each column, fit a MultitaskGP, evaluate,
    save; returns the JSON-able result."""
    mode, rank = check_options(args, len(targets))
    _check_fit_paths(args)
    header, rows = read_table(args.data, "DATA")
    features = select_inputs(header, targets, args.features, args.data)
    hint = "; choose numeric columns with --features" if args.features is None else ""
    x = numeric_columns(header, rows, features, "DATA", hint)
    y = read_targets(header, rows, targets, "--target")
    check_observed(y, targets, f"--target: in {args.data}")
    keep = ~np.isnan(y).all(axis=1)  # a row with no target observed tells nothing
    x, y = x[keep], y[keep]
    if len(y) < 3:
        raise CLIError(f"DATA: {args.data} has {len(y)} data row(s) with an observed target; a fit needs at least 3")
    x_train, y_train, x_test, y_test = _split_rows(x, y, args, features, targets)
    check_observed(y_train, targets, "--test-size: the training rows")
    device = choose_device(args.device)
    columns = [y_train[~np.isnan(y_train[:, j]), j] for j in range(len(targets))]
    stats = {"x_mean": x_train.mean(axis=0).tolist(), "x_std": spread(x_train).tolist(),
             "y_mean": [float(c.mean()) for c in columns], "y_std": [float(spread(c[:, None])[0]) for c in columns]}
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    torch.manual_seed(args.seed)
    train_x = scaled_inputs(x_train, stats, dtype, device, "DATA")
    train_y = to_model_dtype((y_train - stats["y_mean"]) / stats["y_std"], dtype, "--target", device)
    model = build_multitask(mode, train_x, train_y, make_kernel(args.kernel, train_x.shape[-1]).base, None, rank)
    if args.noise_floor is not None:  # the same start above the floor as a single target's fit
        likelihood = model.likelihood
        likelihood.noise = likelihood.noise.detach() + (args.noise_floor - likelihood.noise_floor)
        likelihood.noise_floor = args.noise_floor
    start = time.perf_counter()
    history = _fit_with_checkpoint(model, args, {})
    seconds = time.perf_counter() - start
    lml = total_objective(model, model.train_x, model.train_y, torch.Generator(device=device).manual_seed(args.seed))
    observed = [len(c) for c in columns]
    result = {"command": "fit", "task": "regression", "data": args.data, "target": targets, "features": features,
              "multitask": mode, "task_rank": None if mode == "independent" else rank, "kernel": args.kernel,
              "method": "exact", "n_train": len(y_train), "n_observed": dict(zip(targets, observed)),
              "dropped_rows": int((~keep).sum()), "iters": len(history), "lr": args.lr, "device": str(device),
              "solver_path": model.diagnostics.get("path"), "train_seconds": seconds,
              "final_loss": history.loss[-1] if history.loss else None, "stopped_early": history.stopped_early,
              "checkpoint": args.checkpoint, "resumed_from_step": history.start_step or None,
              "hyperparameters": hyperparameters(model, features, targets),
              "task_correlation": task_correlations(model).tolist(), "log_marginal_likelihood": lml,
              "log_marginal_likelihood_target_units": lml - sum(
                  k * math.log(s) for k, s in zip(observed, stats["y_std"])),
              "test": None, "model": args.out, "scaling": stats}
    if x_test is not None:
        mean, std = predict_units(model, x_test, stats, "--test")
        result["test"] = target_metrics(mean, std, y_test, targets)
    if args.out is not None:
        _save(model, args.out, stats, targets, features, args.kernel)
    say(_fit_report(result))
    return result


def _metric_line(label: str, t: dict) -> str:
    return (f"  {label}: RMSE {t['rmse']:.4g}  NLL {t['nll']:.4f}  95% coverage {t['coverage95']:.3f} "
            f"({t['n']} cells)")


def _fit_report(r: dict) -> str:
    """The human-readable summary of a multi-output fit result ``r`` (see cmd_fit_multitask)."""
    hp, targets = r["hyperparameters"], r["target"]
    structure = {"independent": "independent outputs", "icm": f"ICM, task rank {r['task_rank']}",
                 "lmc": f"LMC of {len(hp['terms'])} terms, task rank {r['task_rank']}"}[r["multitask"]]
    width = max(len(name) for name in targets)
    lines = [f"flashgp fit: {r['n_train']} rows x {len(r['features'])} features -> {len(targets)} targets "
             f"{', '.join(map(repr, targets))}; multitask exact GP ({structure}) over {r['kernel']} ARD; "
             f"Adam lr={r['lr']}, {r['iters']} steps in {r['train_seconds']:.2f} s on {r['device']} "
             f"(solver path: {r['solver_path']})",
             "  observed cells: " + "  ".join(f"{k} {v}" for k, v in r["n_observed"].items())
             + (f" ({r['dropped_rows']} row{'s' * (r['dropped_rows'] != 1)} without any target left out)"
                if r["dropped_rows"] else ""),
             f"  hyperparameters (standardized units; noise floor {hp['noise_floor']:.3g}): "
             + "  ".join(f"{k}: noise {hp['noise'][k]:.4g} mean {hp['mean'][k]:.4g}" for k in targets)]
    for q, term in enumerate(hp["terms"]):
        label = "lengthscales" if len(hp["terms"]) == 1 else f"lengthscales (term {q + 1})"
        lines.append(f"  {label}: " + "  ".join(f"{k} {v:.4g}" for k, v in term["lengthscale"].items())
                     + (f"  alpha {term['alpha']:.4g}" if "alpha" in term else ""))
    lines.append("  task correlation: " + " " * width + " ".join(f"{name[:8]:>8}" for name in targets))
    lines += [f"    {name:>{width}}" + " " * 16 + " ".join(f"{v:8.3f}" for v in row)
              for name, row in zip(targets, r["task_correlation"])]
    lines.append(f"  log marginal likelihood {r['log_marginal_likelihood']:.4f} (standardized targets; "
                 f"{r['log_marginal_likelihood_target_units']:.4f} in target units)")
    lines += run_lines(r)
    if r["test"] is not None:
        lines += [_metric_line(f"held-out {k!r} (target units)", m) for k, m in r["test"]["per_target"].items()
                  if m is not None]
        lines.append(_metric_line("held-out, mean over the targets", r["test"]["mean"]))
    if r["model"] is not None:
        lines.append(f"  saved {r['model']} (the model with its column names and standardization)")
    return "\n".join(lines)


# ----- predict -----------------------------------------------------------------------------------
def predict_multitask(args, model, meta: dict, header: list[str], rows: list[list[str]], x: np.ndarray,
                      notes: list[str], say) -> dict:
    """`flashgp predict` with a multi-output model: the rows of DATA plus each target's mean, std
    and 95% interval; each target column present in DATA (numbers, empty cells) is scored."""
    targets = meta["target"]
    start = time.perf_counter()
    mean, std = predict_units(model, x, meta, "DATA")
    seconds = time.perf_counter() - start
    names = write_predictions(args.out, header, rows, mean, std, targets)
    result = {"command": "predict", "task": "regression", "target": targets, "model": args.model,
              "data": args.data, "out": args.out, "rows": len(rows), "columns": names,
              "predict_seconds": seconds, "metrics": None, "warnings": notes}
    y = np.full(mean.shape, np.nan)
    for j, name in enumerate(targets):
        if name in header:
            try:
                y[:, j] = read_targets(header, rows, [name], "DATA")[:, 0]
            except InputError:
                pass  # a target column that is not numeric is passed through, not scored
    result["metrics"] = target_metrics(mean, std, y, targets)
    text = (f"flashgp predict: {len(rows)} rows -> {args.out} (mean, std, lower, upper of "
            f"{', '.join(map(repr, targets))}; 95% predictive)")
    if result["metrics"]:
        text += "\n" + "\n".join(_metric_line(f"against column {k!r}", m)
                                 for k, m in result["metrics"]["per_target"].items() if m is not None)
    say(text)
    return result
