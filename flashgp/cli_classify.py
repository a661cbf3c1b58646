# The command line's classification: `flashgp fit --task classification` (class labels in the
# target column; a DirichletGP or an SVGP with a Bernoulli / Softmax likelihood, built by
# GPClassifier's builders) and `flashgp predict` with such a model (the predicted label and one
# probability column per class). The regression flow stays in flashgp.cli, which calls in here.
from __future__ import annotations

import csv
import math
import os
import time
from types import SimpleNamespace

import numpy as np
import torch

from .cli import _check_fit_paths, _fit_with_checkpoint, _save, _split, choose_device, make_kernel, run_lines
from .cli_parser import CLASSIFICATION_METHODS, EXIT_USAGE, CLIError
from .estimator_methods import fit_arguments, total_objective
from .models.dirichlet import DEFAULT_EPSILON
from .outputs import atomic_output
from .tables import (
    PREDICT_CHUNK,
    InputError,
    numeric_columns,
    read_table,
    scaled_inputs,
    select_features,
    spread,
)

CLASSIFIERS = ("dirichlet", "svgp")  # --method values of --task classification; the first is the default
SAMPLES = 256  # Monte Carlo draws of a Dirichlet model's class probabilities (GPClassifier's default)
PROBA_SEED = 0  # the same draws on every call and every chunk: a row's probabilities never depend on the others
PREDICTED = "predicted"  # the column of the most probable label; "p_<label>" hold the probabilities


# ----- options ----------------------------------------------------------------------------------
def check_task_options(args) -> None:
    """Refuse (exit 2, naming the flag) the options that do not go with --task and --method, and
    set the default --method: exact for regression, dirichlet for classification."""
    if args.task == "regression":
        if args.method in CLASSIFICATION_METHODS:
            raise CLIError(f"--method: {args.method} is a classification method; add --task classification",
                           EXIT_USAGE)
        if args.alpha_epsilon is not None:
            raise CLIError("--alpha-epsilon: only --task classification with --method dirichlet takes it",
                           EXIT_USAGE)
        args.method = args.method or "exact"
        return
    method = args.method = args.method or CLASSIFIERS[0]
    if method not in CLASSIFIERS:
        raise CLIError(f"--method: {method} is a regression method; --task classification takes "
                       f"{' or '.join(CLASSIFIERS)} (default {CLASSIFIERS[0]})", EXIT_USAGE)
    if args.noise_floor is not None:
        raise CLIError("--noise-floor: a classifier has no Gaussian noise variance to bound (regression only)",
                       EXIT_USAGE)
    if method == "dirichlet":
        for flag, value in (("--inducing", args.inducing), ("--batch-size", args.batch_size)):
            if value is not None:
                raise CLIError(f"{flag}: only --method svgp takes it (--task classification uses dirichlet, "
                               "one exact GP per class, unless --method svgp)", EXIT_USAGE)
    elif args.alpha_epsilon is not None:
        raise CLIError("--alpha-epsilon: only --method dirichlet takes it (svgp has a Bernoulli or Softmax "
                       "likelihood)", EXIT_USAGE)


# ----- class labels -----------------------------------------------------------------------------
def read_labels(header: list[str], rows: list[list[str]], target: str, arg: str) -> list[str]:
    """The target column's cells (stripped); InputError naming ``arg`` for a blank one."""
    col = header.index(target)
    labels = [row[col].strip() for row in rows]
    for line, label in enumerate(labels, start=2):
        if not label:
            raise InputError(f"{arg}: missing class label in column {target!r} (line {line})")
    return labels


def label_values(texts: list[str]) -> list:
    """The labels as ints when every one reads as an int, else as floats when every one reads as
    a finite number, else as the strings themselves (so they sort as GPClassifier's classes_)."""
    try:
        return [int(text) for text in texts]
    except ValueError:
        pass
    try:
        values = [float(text) for text in texts]
    except ValueError:
        return list(texts)
    return values if all(math.isfinite(v) for v in values) else list(texts)


def label_text(label) -> str:
    """A class label as written to CSV files and column names (floats in their shortest form)."""
    return repr(label) if isinstance(label, float) else str(label)


def match_labels(texts: list[str], classes: list, arg: str) -> np.ndarray:
    """Class indices (n,) of ``texts`` among ``classes`` (numbers compare as numbers);
    InputError naming ``arg`` and the line for a label that is not one of them."""
    numeric = not isinstance(classes[0], str)
    index = {c: i for i, c in enumerate(classes)}  # 1 and 1.0 are one key
    out = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        key = text
        if numeric:
            values = label_values([text])
            key = None if isinstance(values[0], str) else values[0]
        if key not in index:
            shown = ", ".join(label_text(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise InputError(f"{arg}: label {text!r} (line {i + 2}) is not one of the classes of the "
                             f"training data ({shown})")
        out[i] = index[key]
    return out


# ----- the model --------------------------------------------------------------------------------
def build_classifier(args, x: torch.Tensor, labels: torch.Tensor, num_classes: int, kernel):
    """The model of --method on standardized inputs x (n, d) and class indices (n,), built by
    GPClassifier's builders (``flashgp.sklearn_classifier.CLASSIFIER_METHODS``)."""
    try:
        from .sklearn_classifier import CLASSIFIER_METHODS
    except ImportError as err:
        raise CLIError(f"--task classification: needs scikit-learn (pip install 'flashgp[sklearn]'): "
                       f"{err}") from None
    settings = SimpleNamespace(  # the GPClassifier settings the builders read
        alpha_epsilon=DEFAULT_EPSILON if args.alpha_epsilon is None else args.alpha_epsilon,
        solver="auto", polish=None, inducing=args.inducing, random_state=args.seed)
    try:
        return CLASSIFIER_METHODS[args.method](settings, x, labels, num_classes, kernel, None)
    except ValueError as err:
        text = str(err)
        for name in ("inducing", "alpha_epsilon"):
            if text.startswith(name + ":"):
                raise CLIError(f"--{name.replace('_', '-')}{text[len(name):]}", EXIT_USAGE) from None
        raise CLIError(f"--method {args.method}: {text}") from None


def class_log_proba(model, x: np.ndarray, stats: dict, arg: str) -> np.ndarray:
    """Log class probabilities (m, C) at raw inputs x (m, d), rows normalized, in chunks."""
    parts = []
    for start in range(0, x.shape[0], PREDICT_CHUNK):
        x_t = scaled_inputs(x[start:start + PREDICT_CHUNK], stats, model.dtype, model.device, arg)
        generator = torch.Generator(device=model.device).manual_seed(PROBA_SEED)
        log_p = model.predict_log_proba(x_t, samples=SAMPLES, generator=generator)
        parts.append(log_p.detach().double().cpu().numpy())
    log_p = np.concatenate(parts)
    peak = log_p.max(axis=1, keepdims=True)
    return log_p - (peak + np.log(np.exp(log_p - peak).sum(axis=1, keepdims=True)))


def classification_metrics(log_p: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, mean log loss (nats) and expected calibration error (10 bins) of log class
    probabilities (m, C) against class indices y (m,)."""
    from .plot import expected_calibration_error
    proba = np.exp(log_p)
    proba /= proba.sum(axis=1, keepdims=True)
    chosen = np.maximum(log_p[np.arange(len(y)), y], math.log(np.finfo(np.float64).tiny))
    return {"n": len(y), "accuracy": float(np.mean(proba.argmax(axis=1) == y)),
            "log_loss": float(-np.mean(chosen)), "ece": expected_calibration_error(proba, y)}


# ----- fit --------------------------------------------------------------------------------------
def cmd_fit_classifier(args, say) -> dict:
    """`flashgp fit --task classification`: read, standardize the inputs, fit, evaluate, save;
    returns the JSON-able result."""
    _check_fit_paths(args)
    header, rows = read_table(args.data, "DATA")
    features = select_features(header, args.target, args.features, args.data)
    hint = "; choose numeric columns with --features" if args.features is None else ""
    x = numeric_columns(header, rows, features, "DATA", hint)
    values = label_values(read_labels(header, rows, args.target, "--target"))
    if len(values) < 3:
        raise CLIError(f"DATA: {args.data} has {len(values)} data row(s); a fit needs at least 3")
    classes = sorted(set(values))
    if len(classes) < 2:
        raise CLIError(f"--target: column {args.target!r} of {args.data} holds one class "
                       f"({label_text(classes[0])!r}); classification needs at least 2")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in values], dtype=np.int64)
    x_train, y_train, x_test, y_test = _split(x, y, args, features, lambda h, r: match_labels(
        read_labels(h, r, args.target, "--test"), classes, "--test"))
    if len(np.unique(y_train)) < 2:
        raise CLIError(f"--test-size: the {len(y_train)} training rows hold one class "
                       f"({label_text(classes[y_train[0]])!r}); classification needs at least 2")
    device = choose_device(args.device)
    stats = {"x_mean": x_train.mean(axis=0).tolist(), "x_std": spread(x_train).tolist(), "y_mean": 0.0,
             "y_std": 1.0}
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    torch.manual_seed(args.seed)
    train_x = scaled_inputs(x_train, stats, dtype, device, "DATA")
    labels = torch.as_tensor(y_train, dtype=torch.int64, device=device)
    d = train_x.shape[-1]
    model = build_classifier(args, train_x, labels, len(classes), make_kernel(args.kernel, d))
    targets = labels.to(model.dtype)
    start = time.perf_counter()
    history = _fit_with_checkpoint(model, args, fit_arguments(model, train_x, targets, args.batch_size))
    seconds = time.perf_counter() - start
    objective = total_objective(model, train_x, targets, torch.Generator(device=device).manual_seed(args.seed))
    model.eval()
    result = {"command": "fit", "task": "classification", "data": args.data, "target": args.target,
              "features": features, "classes": classes,
              "train_class_counts": np.bincount(y_train, minlength=len(classes)).tolist(),
              "kernel": args.kernel, "method": args.method, "n_train": len(y_train), "iters": len(history),
              "lr": args.lr, "device": str(device), "train_seconds": seconds,
              "final_loss": history.loss[-1] if history.loss else None, "stopped_early": history.stopped_early,
              "checkpoint": args.checkpoint, "resumed_from_step": history.start_step or None,
              "log_marginal_likelihood": objective, "test": None, "model": args.out,
              "scaling": {key: stats[key] for key in ("x_mean", "x_std")}}
    if args.method == "svgp":
        result.update(inducing=int(model.inducing_points.shape[-2]), batch_size=args.batch_size,
                      likelihood=type(model.likelihood).__name__)
    else:
        result["alpha_epsilon"] = model.alpha_epsilon
    if x_test is not None:
        result["test"] = classification_metrics(class_log_proba(model, x_test, stats, "--test"), y_test)
    if args.out is not None:
        _save(model, args.out, stats, args.target, features, args.kernel, classes)
    say(_fit_report(result))
    return result


def _fit_report(r: dict) -> str:
    """The human-readable summary of a classification fit result ``r`` (see cmd_fit_classifier)."""
    shown = ", ".join(f"{label_text(c)} ({k})" for c, k in zip(r["classes"][:20], r["train_class_counts"]))
    model = (f"SVGP ({r['likelihood']}, {r['inducing']} inducing points)" if r["method"] == "svgp"
             else f"DirichletGP (alpha_epsilon {r['alpha_epsilon']:.3g})")
    bound = "ELBO" if r["method"] == "svgp" else "log marginal likelihood, summed over the classes"
    lines = [f"flashgp fit: {r['n_train']} rows x {len(r['features'])} features -> {r['target']!r}, "
             f"{len(r['classes'])} classes: {shown}{', ...' if len(r['classes']) > 20 else ''}",
             f"  {model} with Scale({r['kernel']}, ARD); Adam lr={r['lr']}, {r['iters']} steps in "
             f"{r['train_seconds']:.2f} s on {r['device']}",
             f"  {bound} {r['log_marginal_likelihood']:.4f}"]
    lines += run_lines(r)
    if r["test"] is not None:
        t = r["test"]
        lines.append(f"  held-out ({t['n']} rows): accuracy {t['accuracy']:.4f}  log loss {t['log_loss']:.4f}  "
                     f"ECE {t['ece']:.4f}")
    if r["model"] is not None:
        lines.append(f"  saved {r['model']} (the model with its column names, standardization and classes)")
    return "\n".join(lines)


# ----- predict ----------------------------------------------------------------------------------
def write_class_predictions(path: str, header: list[str], rows: list[list[str]], proba: np.ndarray,
                            classes: list) -> list[str]:
    """Write the input rows plus ``predicted`` (the most probable label) and ``p_<label>`` per
    class to ``path`` atomically; returns the new names (a name that is already an input column
    gets the prefix ``predicted_``, as for regression)."""
    new = [PREDICTED] + [f"p_{label_text(c)}" for c in classes]
    names = [c if c not in header else f"predicted_{c}" for c in new]
    texts = [label_text(c) for c in classes]
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_output(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header + names)
            for row, p in zip(rows, proba):
                writer.writerow(row + [texts[int(np.argmax(p))]] + [f"{v:.10g}" for v in p])
    except OSError as err:
        raise InputError(f"--out: cannot write {path}: {err.strerror or err}") from None
    return names


def predict_classes(args, model, meta: dict, header: list[str], rows: list[list[str]], x: np.ndarray,
                    notes: list[str], say) -> dict:
    """`flashgp predict` with a classifier: the rows of DATA plus the predicted label and the class
    probabilities; scored when DATA has the target column with labels among the classes."""
    classes = meta["classes"]
    start = time.perf_counter()
    log_p = class_log_proba(model, x, meta, "DATA")
    seconds = time.perf_counter() - start
    proba = np.exp(log_p)
    proba /= proba.sum(axis=1, keepdims=True)
    names = write_class_predictions(args.out, header, rows, proba, classes)
    result = {"command": "predict", "task": "classification", "model": args.model, "data": args.data,
              "out": args.out, "rows": len(rows), "columns": names, "classes": classes,
              "predict_seconds": seconds, "metrics": None, "warnings": notes}
    if meta["target"] in header:
        try:
            y = match_labels(read_labels(header, rows, meta["target"], "DATA"), classes, "DATA")
            result["metrics"] = classification_metrics(log_p, y)
        except InputError:
            pass  # labels that are missing or not among the classes are passed through, not scored
    text = (f"flashgp predict: {len(rows)} rows -> {args.out} ({names[0]}, and the probabilities "
            f"{', '.join(names[1:4])}{', ...' if len(names) > 4 else ''})")
    if result["metrics"]:
        t = result["metrics"]
        text += (f"\n  against column {meta['target']!r}: accuracy {t['accuracy']:.4f}  "
                 f"log loss {t['log_loss']:.4f}  ECE {t['ece']:.4f}")
    say(text)
    return result
