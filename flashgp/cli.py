# The `flashgp` command line: fit and predict with an exact GP on CSV files, the packaged demo,
# and environment info. `main(argv)` returns the exit status; errors are one line on stderr.
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, kernels, likelihoods, means
from .backends.choice import default_memory_budget
from . import cli_categorical
from .cli_files import CLIFileError, load_cli_model, save_cli_model, sidecar_of
from .cli_parser import (EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, KERNELS, SUBCOMMANDS,  # noqa: F401
                         CLIError, build_parser)
from .errors import FitInterrupted, NotPSDError
from .fit import fit
from .estimator_methods import (ITERGP_BUDGET, ITERGP_POLICY, basis_wrapper, build_model, check_inducing,
                                fit_arguments, fitted_kernel, total_objective)
from .outputs import OutputPathError, atomic_output, check_outputs
from .tables import (InputError, check_columns, heldout_metrics, numeric_columns,
                     predict_original_units, read_table, scaled_inputs, select_features, to_model_dtype,
                     standardization, write_predictions)

OPTIONAL_PACKAGES = (("triton", "triton"), ("matplotlib", "matplotlib"), ("sklearn", "scikit-learn"),
                     ("gpytorch", "gpytorch"))


def make_kernel(name: str, d: int, wrap=None):
    """Scale(base) with one lengthscale per input column (ARD); ``name`` one of KERNELS; ``wrap``
    (--method basis) turns base into its Hilbert-space approximation."""
    nus = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}
    base = kernels.Matern(nu=nus[name], ard_dims=d) if name in nus else (
        kernels.RBF(ard_dims=d) if name == "rbf" else kernels.RQ(ard_dims=d))
    return kernels.Scale(base if wrap is None else wrap(base))


def choose_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; CUDA must be available if asked for."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device: cuda requested but no CUDA device is available "
                       f"(torch {torch.__version__})")
    return torch.device(name)


# ----- models -----------------------------------------------------------------------------
def hyperparameters(model, features: list[str]) -> dict:
    """Fitted hyperparameters in standardized units, lengthscales keyed by feature name."""
    kernel = fitted_kernel(model)
    base = kernel.base.base if isinstance(kernel.base, kernels.HilbertSpace) else kernel.base  # --method basis
    out = {"outputscale": float(kernel.outputscale.detach()),
           "lengthscale": dict(zip(features, base.lengthscale.detach().flatten().tolist())),
           "noise": float(model.likelihood.noise.detach()), "noise_floor": model.likelihood.noise_floor,
           "mean": float(model.mean.constant.detach())}
    if hasattr(base, "alpha"):
        out["alpha"] = float(base.alpha.detach())
    return out


# ----- fit --------------------------------------------------------------------------------
def _split(x, y, args, features: list[str], read_target=None, categorical=None):
    """(x_train, y_train, x_test, y_test) from --test-size / --test; the test parts may be None.
    ``read_target(header, rows)``: the --test file's targets (default: the numeric column);
    ``categorical``: the --categorical columns and their levels (``flashgp.cli_categorical``)."""
    if args.test is not None:
        header, rows = read_table(args.test, "--test")
        check_columns(header, features + [args.target], "--test", args.test)
        x_test = cli_categorical.read_inputs(header, rows, features, categorical, "--test")
        y_test = (numeric_columns(header, rows, [args.target], "--test")[:, 0] if read_target is None
                  else read_target(header, rows))
        if not rows:
            raise CLIError(f"--test: {args.test} has no data rows")
        return x, y, x_test, y_test
    if args.test_size is None:
        return x, y, None, None
    n_test = int(round(args.test_size * len(y)))
    if n_test < 1 or len(y) - n_test < 3:
        raise CLIError(f"--test-size: {args.test_size} of {len(y)} rows leaves {len(y) - n_test} "
                       f"training and {n_test} test rows (need >= 3 and >= 1)", EXIT_USAGE)
    order = np.random.default_rng(args.seed).permutation(len(y))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return x[train], y[train], x[test], y[test]


def _save(model, path: str, stats: dict, target: str, features: list[str], kernel: str, classes=None,
          categorical=None) -> None:
    """Save the model with its column names and standardization (and a classifier's class
    labels) in one file, atomically (``flashgp.cli_files``: a flashgp.bundle that
    ``flashgp.bundle.load`` reads)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_cli_model(path, model, stats, target, features, kernel, classes, categorical)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise CLIError(f"--out: cannot write {path}: {reason}") from None


def _check_fit_paths(args) -> None:
    """Refuse --out / --checkpoint naming DATA, --test or each other, before any work."""
    try:
        check_outputs({"--out": args.out, "--checkpoint": args.checkpoint},
                      {"DATA": args.data, "--test": args.test})
    except OutputPathError as err:
        raise CLIError(str(err), EXIT_USAGE) from None


def cmd_fit(args, say) -> dict:
    """Read, standardize, fit, evaluate and save; returns the JSON-able result."""
    from .cli_classify import check_task_options, cmd_fit_classifier  # it imports this module
    from .cli_multitask import cmd_fit_multitask, target_names  # likewise

    check_task_options(args)  # --task and the options that go with it; sets the default --method
    targets = target_names(args)  # --target A or A,B,...; --multitask / --task-rank need several
    cli_categorical.check_options(args, targets)  # --categorical: one target, regression, exact/basis/itergp
    for flag, value in (("--budget", args.budget), ("--policy", args.policy)):
        if value is not None and args.method != "itergp":
            raise CLIError(f"{flag}: only --method itergp takes it", EXIT_USAGE)
    if len(targets) > 1:
        return cmd_fit_multitask(args, targets, say)
    if args.task == "classification":
        return cmd_fit_classifier(args, say)
    _check_fit_paths(args)
    header, rows = read_table(args.data, "DATA")
    features = select_features(header, args.target, args.features, args.data)
    hint = ("; choose numeric columns with --features" if args.features is None else "") + cli_categorical.HINT
    categorical = cli_categorical.chosen(args, features)  # None, or the --categorical columns with their levels
    if categorical is not None:
        categorical = cli_categorical.add_levels(categorical, header, rows)
    x = cli_categorical.read_inputs(header, rows, features, categorical, "DATA", hint)
    y = numeric_columns(header, rows, [args.target], "--target")[:, 0]
    if len(y) < 3:
        raise CLIError(f"DATA: {args.data} has {len(y)} data row(s); a fit needs at least 3")
    x_train, y_train, x_test, y_test = _split(x, y, args, features, categorical=categorical)
    device = choose_device(args.device)
    stats = cli_categorical.unscaled(standardization(x_train, y_train), features, categorical)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    torch.manual_seed(args.seed)
    train_x = scaled_inputs(x_train, stats, dtype, device, "DATA")
    train_y = to_model_dtype((y_train - stats["y_mean"]) / stats["y_std"], dtype, "--target", device)
    d = train_x.shape[-1]
    continuous = d - (0 if categorical is None else len(categorical["columns"]))
    if args.batch_size is not None and args.method not in ("svgp", "exact"):
        raise CLIError("--batch-size: only --method svgp (minibatches) and exact (random subsets of rows) take it",
                       EXIT_USAGE)
    try:
        inducing = check_inducing(args.method, args.inducing, continuous if args.method == "basis" else d)
        wrap = basis_wrapper(args.method, args.kernel, inducing, continuous)
        kernel = make_kernel(args.kernel, d, wrap) if categorical is None else \
            cli_categorical.make_kernel(args.kernel, features, categorical, wrap)
    except ValueError as err:
        raise CLIError(f"--{err}", EXIT_USAGE) from None
    model = build_model(args.method, train_x, train_y, kernel,
                        likelihoods.Gaussian(noise_floor=args.noise_floor), means.Constant(), None, inducing,
                        args.seed, policy=args.policy or ITERGP_POLICY, budget=args.budget or ITERGP_BUDGET)
    start = time.perf_counter()
    history = _fit_with_checkpoint(model, args, fit_arguments(model, train_x, train_y, args.batch_size,
                                                              args.method == "exact"))
    seconds = time.perf_counter() - start
    lml = total_objective(model, train_x, train_y, torch.Generator(device=device).manual_seed(args.seed))
    result = {"command": "fit", "data": args.data, "target": args.target, "features": features,
              "kernel": args.kernel, "method": args.method, "method_detail": _method_detail(args, model),
              "n_train": len(y_train), "iters": len(history), "lr": args.lr,
              "device": str(device), "solver_path": model.diagnostics.get("path"),
              "train_seconds": seconds, "final_loss": history.loss[-1] if history.loss else None,
              "stopped_early": history.stopped_early, "checkpoint": args.checkpoint,
              "resumed_from_step": history.start_step or None,
              "hyperparameters": hyperparameters(model, features) if categorical is None else
              cli_categorical.hyperparameters(model, features, categorical),
              "categorical": categorical,
              "log_marginal_likelihood": lml,
              "log_marginal_likelihood_target_units": lml - len(y_train) * math.log(stats["y_std"]),
              "test": None, "model": args.out,
              "scaling": {key: stats[key] for key in ("x_mean", "x_std", "y_mean", "y_std")}}
    if x_test is not None:
        mean, std = predict_original_units(model, x_test, stats)
        result["test"] = heldout_metrics(mean, std, y_test)
    if args.out is not None:
        _save(model, args.out, stats, args.target, features, args.kernel, categorical=categorical)
    say(_fit_report(result))
    return result


def _method_detail(args, model) -> str | None:
    """What the fit report says of --method basis, itergp and exact with --batch-size (else None)."""
    if args.method == "basis":
        return f"basis: {model.num_features} functions (Hilbert space)"
    if args.method == "itergp":
        return f"itergp: {model.policy} policy, {model.budget['iterations']} actions"
    if args.method == "exact" and args.batch_size is not None:
        return f"hyperparameters on subsets of {args.batch_size} rows"
    return None


def _fit_with_checkpoint(model, args, data: dict):
    """fg.fit with --checkpoint/--checkpoint-every/--resume; Ctrl-C -> CLIError with exit 130."""
    if args.checkpoint is None and (args.resume or args.checkpoint_every is not None):
        flag = "--resume" if args.resume else "--checkpoint-every"
        raise CLIError(f"{flag}: needs --checkpoint PATH", EXIT_USAGE)
    if args.checkpoint is not None:
        try:
            Path(args.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CLIError(f"--checkpoint: cannot create the folder of {args.checkpoint}: {err}") from None
    try:
        return fit(model, optimizer="adam", lr=args.lr, iters=args.iters, progress=args.progress,
                   seed=args.seed, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                   resume=args.resume, **data)
    except FitInterrupted as stop:
        raise CLIError(f"interrupted at step {stop.step}; checkpoint saved to {stop.checkpoint}; "
                       f"resume with --resume", EXIT_INTERRUPTED) from None
    except NotPSDError:
        raise
    except ValueError as err:  # a checkpoint from another run, or a damaged one
        if args.checkpoint is None:
            raise
        raise CLIError(f"--checkpoint: {err}") from None


def run_lines(r: dict) -> list[str]:
    """The report lines of a fit result ``r`` on how the run went: an early stop, the checkpoint."""
    lines = [f"  warning: {r['stopped_early']}"] if r["stopped_early"] else []
    if r["checkpoint"] is not None:
        lines.append(f"  checkpoint: {r['checkpoint']}" + (
            f" (resumed at step {r['resumed_from_step']})" if r["resumed_from_step"] else ""))
    return lines


def _fit_report(r: dict) -> str:
    """The human-readable summary of a fit result ``r`` (see cmd_fit)."""
    hp = r["hyperparameters"]
    lines = [f"flashgp fit: {r['n_train']} rows x {len(r['features'])} features -> {r['target']!r}; "
             f"Scale({r['kernel']}, ARD{cli_categorical.kernel_text(r.get('categorical'))}); "
             + (f"{r['method_detail']}; " if r.get("method_detail") else "") + f"Adam lr={r['lr']}, "
             f"{r['iters']} steps in "
             f"{r['train_seconds']:.2f} s "
             f"on {r['device']} (solver path: {r['solver_path']})",
             f"  hyperparameters (standardized units): outputscale {hp['outputscale']:.4g}  "
             f"noise {hp['noise']:.4g} (floor {hp['noise_floor']:.3g})  mean {hp['mean']:.4g}"
             + (f"  alpha {hp['alpha']:.4g}" if "alpha" in hp else ""),
             "  lengthscales: " + "  ".join(f"{k} {v:.4g}" for k, v in hp["lengthscale"].items()),
             *cli_categorical.report_lines(hp),
             f"  log marginal likelihood {r['log_marginal_likelihood']:.4f} (standardized target; "
             f"{r['log_marginal_likelihood_target_units']:.4f} in target units)"]
    lines += run_lines(r)
    if r["test"] is not None:
        t = r["test"]
        lines.append(f"  held-out ({t['n']} rows, target units): RMSE {t['rmse']:.4g}  NLL {t['nll']:.4f}  "
                     f"95% coverage {t['coverage95']:.3f}")
    if r["model"] is not None:
        lines.append(f"  saved {r['model']} (the model with its column names and standardization)")
    return "\n".join(lines)


# ----- predict ----------------------------------------------------------------------------
def _check_predict_paths(args) -> None:
    """Refuse --out naming MODEL, DATA or MODEL's sidecar of earlier versions, before any work."""
    try:
        check_outputs({"--out": args.out}, {"MODEL": args.model, "DATA": args.data,
                                            "the sidecar of MODEL": sidecar_of(args.model)})
    except OutputPathError as err:
        raise CLIError(str(err), EXIT_USAGE) from None


def cmd_predict(args, say, say_err) -> dict:
    """Predict at every row of DATA and write the rows plus mean, std, lower, upper."""
    _check_predict_paths(args)
    header, rows = read_table(args.data, "DATA")
    notes = []

    def warn(text: str) -> None:
        notes.append(text)
        say_err(text)

    try:
        model, meta = load_cli_model(args.model, choose_device(args.device), warn)
    except CLIFileError as err:
        raise CLIError(str(err)) from None
    check_columns(header, meta["features"], "DATA", args.data)
    if not rows:
        raise CLIError(f"DATA: {args.data} has no data rows")
    x = cli_categorical.read_inputs(header, rows, meta["features"], meta.get("categorical"), "DATA")
    if not isinstance(meta["target"], str):  # a multitask model: a list of targets
        from .cli_multitask import predict_multitask
        return predict_multitask(args, model, meta, header, rows, x, notes, say)
    if meta["task"] == "classification":
        from .cli_classify import predict_classes
        return predict_classes(args, model, meta, header, rows, x, notes, say)
    start = time.perf_counter()
    mean, std = predict_original_units(model, x, meta)
    seconds = time.perf_counter() - start
    names = write_predictions(args.out, header, rows, mean, std)
    result = {"command": "predict", "model": args.model, "data": args.data, "out": args.out,
              "rows": len(rows), "columns": names, "predict_seconds": seconds, "metrics": None,
              "warnings": notes}
    if meta["target"] in header:
        try:
            y = numeric_columns(header, rows, [meta["target"]], "DATA")[:, 0]
            result["metrics"] = heldout_metrics(mean, std, y)
        except InputError:
            pass  # a target column that is not numeric is passed through, not scored
    text = f"flashgp predict: {len(rows)} rows -> {args.out} ({', '.join(names)}; 95% predictive)"
    if result["metrics"]:
        t = result["metrics"]
        text += (f"\n  against column {meta['target']!r}: RMSE {t['rmse']:.4g}  NLL {t['nll']:.4f}  "
                 f"95% coverage {t['coverage95']:.3f}")
    say(text)
    return result


# ----- demo -------------------------------------------------------------------------------
def _demo_plot(fitted, out_dir: str, say_err) -> str | None:
    """Write predicted-vs-truth and the training curve to OUT/flashgp-demo.png (needs matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        say_err("flashgp demo: matplotlib is not installed, skipping the plot "
                "(pip install 'flashgp[plot]')")
        return None
    from .plot import plot_history, plot_predicted_vs_observed

    data = fitted.data
    pred = fitted.model.predict(data.x_test)
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    plot_predicted_vs_observed(data.to_original_units(pred.mean), pred.stddev * data.y_std,
                               data.to_original_units(data.y_test), ax=left)
    left.set_xlabel(f"observed ({data.name} test target)")
    plot_history(fitted.history, ax=right)
    path = os.path.join(out_dir, "flashgp-demo.png")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with atomic_output(path, "wb") as handle:  # a failed write leaves the previous plot
            figure.savefig(handle, dpi=110, format="png")
    except OSError as err:
        raise CLIError(f"--out: cannot write {path}: {err.strerror or err}") from None
    return path


def cmd_demo(args, say, say_err) -> dict:
    """Fit the packaged data set (flashgp.demo), report, and plot unless --no-plot."""
    from .demo import fit_demo, summarize

    try:
        fitted = fit_demo(args.dataset, args.iters, args.lr, args.solver, progress=args.progress)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(f"--dataset: {err}") from None
    result = {"command": "demo", "dataset": fitted.data.name, **summarize(fitted)}
    result["rmse_target_units"] = result["rmse"] * fitted.data.y_std
    result["plot"] = None if args.no_plot else _demo_plot(fitted, args.out, say_err)
    say(f"flashgp demo: {result['dataset']} (n_train={result['n_train']}, n_test={result['n_test']}, "
        f"d={result['d']}), Scale(Matern-5/2 ARD), Adam lr={args.lr}, {args.iters} steps, "
        f"solver path: {result['path']}\n"
        f"  test RMSE {result['rmse']:.4f} (standardized; {result['rmse_target_units']:.3f} in target units)"
        f"   test NLL {result['nll']:.4f} (standardized)\n"
        f"  training {result['train_seconds']:.2f} s "
        f"({result['train_seconds'] / max(1, args.iters) * 1e3:.1f} ms/step)   "
        f"prediction {result['predict_seconds'] * 1e3:.1f} ms   noise {result['noise']:.4f}"
        + (f"\n  plot: {result['plot']}" if result["plot"] else ""))
    return result


# ----- info -------------------------------------------------------------------------------
def _installed(module: str, distribution: str) -> str | None:
    """The installed version of an optional package (found without importing it), or None."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def cmd_info(args, say) -> dict:
    """Versions, CUDA devices and the kernel backends usable here."""
    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    optional = {name: _installed(name, dist) for name, dist in OPTIONAL_PACKAGES}
    backends = ["dense", "blocked"] + (["triton"] if optional["triton"] and cuda else [])
    from .backends import cpu_fused  # compiles the fused CPU kernels on a machine's first call
    if cpu_fused.available():
        backends.append("cpu")
    result = {"command": "info", "flashgp": __version__, "python": platform.python_version(),
              "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform(),
              "cuda_available": cuda, "cuda_version": torch.version.cuda, "cuda_devices": devices,
              "cpu_threads": torch.get_num_threads(), "backends": backends, "optional": optional,
              "dense_budget_gb": round(default_memory_budget("cuda" if cuda else "cpu") / 1e9, 1)}
    say("\n".join([f"flashgp {result['flashgp']}  python {result['python']}  torch {result['torch']}  "
                   f"numpy {result['numpy']}",
                   f"platform: {result['platform']} ({result['cpu_threads']} torch threads)",
                   "CUDA: " + (f"{len(devices)} device(s), CUDA {torch.version.cuda}: " + "; ".join(
                       f"cuda:{i} {n}" for i, n in enumerate(devices)) if cuda else "not available"),
                   f"backends: {', '.join(backends)} (auto: dense kernel matrices up to "
                   f"{result['dense_budget_gb']} GB on {'cuda:0' if cuda else 'the CPU'})",
                   "optional: " + "  ".join(f"{k} {v or '-'}" for k, v in optional.items())]))
    return result


# ----- entry point ------------------------------------------------------------------------
def _jsonable(value):
    """``value`` with non-finite floats as None (strict JSON) and unknown objects as strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if value is None or isinstance(value, (str, int, bool)) else str(value)


def _with_default_command(argv: list[str]) -> list[str]:
    """No subcommand (nothing, or demo options only) means 'demo'; help and version stay global."""
    if not argv or (argv[0] not in ("-h", "--help", "--version") and argv[0].startswith("-")
                    and not any(arg in SUBCOMMANDS for arg in argv)):
        return ["demo", *argv]
    return argv


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(_with_default_command(argv))
        args.progress = not (args.quiet or args.json)

        def say(text: str) -> None:
            if not (args.quiet or args.json):
                print(text, flush=True)

        def say_err(text: str) -> None:
            if not args.quiet:
                print(text, file=sys.stderr, flush=True)

        if args.command == "fit":
            result = cmd_fit(args, say)
        elif args.command == "predict":
            result = cmd_predict(args, say, say_err)
        elif args.command == "demo":
            result = cmd_demo(args, say, say_err)
        else:
            result = cmd_info(args, say)
        if args.json:
            print(json.dumps(_jsonable(result), indent=2, allow_nan=False))
        return EXIT_OK
    except (CLIError, InputError) as err:
        print(f"flashgp: error: {err}", file=sys.stderr)
        return getattr(err, "code", EXIT_INPUT)
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else EXIT_OK
    except NotPSDError as err:
        print(f"flashgp: error: numerical failure: {err}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("flashgp: interrupted", file=sys.stderr)
        return 130
