# The `flashgp` command line's grammar: the parser of its subcommands, the checked value types
# of its options, and the error that carries an exit status.
from __future__ import annotations

import argparse
import math

from . import __version__
from .estimator_methods import METHODS, MULTITASK
from .linalg.itergp import POLICIES

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2  # success; bad data or environment; bad command line
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
KERNELS = ("rbf", "matern12", "matern32", "matern52", "rq")
SUBCOMMANDS = ("fit", "predict", "demo", "info")
TASKS = ("regression", "classification")
CLASSIFICATION_METHODS = ("dirichlet",)  # classification-only methods; svgp does both tasks


class CLIError(Exception):
    """A failure to report as ``flashgp: error: <message>`` with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that raises CLIError (one line, exit 2) instead of printing the usage."""

    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# ----- command-line values --------------------------------------------------------------
def _checked(convert, ok, expected: str):
    """An argparse ``type``: ``convert(text)``, which must satisfy ``ok``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_fraction = _checked(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")
_positive_float = _checked(float, lambda v: 0 < v < math.inf, "a number > 0")
_count = _checked(int, lambda v: v >= 0, "an integer >= 0")
_nonnegative_float = _checked(float, lambda v: 0 <= v < math.inf, "a number >= 0")
_positive_count = _checked(int, lambda v: v >= 1, "an integer >= 1")


# ----- parser and entry point -------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``flashgp`` with the subcommands fit, predict, demo, info."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no report")
    common.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser = _Parser(prog="flashgp", description="Gaussian processes (flashgp) from the command "
                     "line. Without a subcommand, runs 'demo'.")
    parser.add_argument("--version", action="version", version=f"flashgp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{fit,predict,demo,info}")
    fit = sub.add_parser("fit", parents=[common], help="fit a GP (exact, SGPR, SKI or SVGP; "
                         "or a classifier: Dirichlet GP or SVGP) to a CSV file")
    fit.add_argument("data", metavar="DATA.csv", help="CSV file with a header line")
    fit.add_argument("--target", required=True, help="name of the column to predict (numbers; "
                     "class labels with --task classification); several comma-separated numeric columns "
                     "fit them together (a multitask exact GP; empty cells: not observed)")
    fit.add_argument("--features", help="comma-separated input columns (default: all but the target)")
    fit.add_argument("--kernel", choices=KERNELS, default="matern52", help="covariance (default matern52)")
    fit.add_argument("--categorical", metavar="A,B", help="comma-separated feature columns of levels (read as "
                     "text; one Categorical kernel each, times the kernel of the other features; regression, "
                     "one target, method exact, basis or itergp); predict refuses levels not seen at fit")
    fit.add_argument("--categorical-kind", choices=("exchangeable", "lowrank"), help="the level covariance of "
                     "--categorical columns: exchangeable (default; one correlation between any two levels) or "
                     "lowrank (W W^T + diag(v), rank 1)")
    fit.add_argument("--task", choices=TASKS, default="regression", help="regression (default: a numeric "
                     "target) or classification (the target holds class labels, text or numbers; at least 2)")
    fit.add_argument("--method", choices=METHODS + CLASSIFICATION_METHODS, help="regression: exact (default), "
                     "sgpr (inducing points, any number of features), ski (interpolation on a grid, 1 to 3 "
                     "features), svgp (variational inducing points trained on minibatches, for the largest "
                     "sets), basis (a Hilbert-space basis of the kernel, exact in O(n M^2), 1 to 3 continuous "
                     "features; rbf or matern kernels) or itergp (an exact GP whose posterior uses --budget "
                     "solver actions and reports their uncertainty); classification: dirichlet (default; Dirichlet-based GP, one exact GP per class) "
                     "or svgp (Bernoulli likelihood for 2 classes, Softmax for more; minibatches)")
    fit.add_argument("--multitask", choices=MULTITASK, help="several targets: independent (default; one "
                     "shared kernel, no correlation), icm (a learned task covariance) or lmc (two such terms)")
    fit.add_argument("--task-rank", type=_positive_count, metavar="R", help="several targets with icm or lmc: "
                     "rank of the task covariance (default 1, at most the targets)")
    fit.add_argument("--inducing", type=_positive_count, metavar="M", help="sgpr, svgp: inducing points (default "
                     "500, at most the rows); ski: grid points per feature (default 1000, 100, 30 in 1, 2, 3-D); "
                     "basis: basis functions per continuous feature (default 32, 16, 8 for 1, 2, 3 of them)")
    fit.add_argument("--budget", type=_positive_count, metavar="I", help="itergp: the posterior's solver actions "
                     "(default 100; at least the training rows: the exact posterior)")
    fit.add_argument("--policy", choices=POLICIES, help="itergp: how the actions are chosen: cg (default; "
                     "conjugate gradients), cholesky (unit vectors, data order) or pivoted (pivoted Cholesky)")
    fit.add_argument("--alpha-epsilon", type=_positive_float, metavar="A", help="classification with dirichlet: "
                     "the Dirichlet concentration of the classes a row is not labelled with (default 0.01)")
    fit.add_argument("--iters", type=_count, default=100, help="Adam steps (default 100; svgp: one "
                     "minibatch each)")
    fit.add_argument("--batch-size", type=_positive_count, metavar="B", help="svgp (both tasks): points per "
                     "minibatch (default 1024); exact: rows per random subset (minibatch SGD of the "
                     "hyperparameters; predictions use all rows)")
    fit.add_argument("--lr", type=_positive_float, default=0.1, help="Adam learning rate (default 0.1)")
    fit.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    fit.add_argument("--noise-floor", type=_nonnegative_float, metavar="F", help="lower bound of the "
                     "noise variance in standardized units (default 1e-10 in float64 on the CPU, "
                     "1e-4 in float32 on CUDA); regression only")
    held = fit.add_mutually_exclusive_group()
    held.add_argument("--test-size", type=_fraction, help="fraction of rows held out at random")
    held.add_argument("--test", metavar="TEST.csv", help="held-out rows with the same columns")
    fit.add_argument("--seed", type=_count, default=0, help="seeds the split, the probes and torch")
    fit.add_argument("--out", metavar="MODEL", help="save the model, its column names and "
                     "standardization here (one file; never DATA, --test or --checkpoint)")
    fit.add_argument("--checkpoint", metavar="PATH", help="write the training state here every "
                     "--checkpoint-every steps, at the end and on Ctrl-C")
    fit.add_argument("--checkpoint-every", type=_positive_count, metavar="K",
                     help="steps between checkpoints (default 10)")
    fit.add_argument("--resume", action="store_true", help="go on from --checkpoint when it exists "
                     "(same data and options), else start afresh")
    predict = sub.add_parser("predict", parents=[common], help="predict with a saved model")
    predict.add_argument("model", metavar="MODEL", help="a model written by 'flashgp fit --out'")
    predict.add_argument("data", metavar="DATA.csv", help="CSV file with the model's feature columns")
    predict.add_argument("--out", required=True, metavar="PRED.csv", help="where to write the predictions "
                         "(regression: mean, std, lower, upper; several targets: those with _<target> per target; "
                         "classification: predicted, p_<label> per class)")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="auto: CUDA when present")
    demo = sub.add_parser("demo", parents=[common], help="fit the packaged UCI concrete data set")
    demo.add_argument("--out", default=".", metavar="DIR", help="folder for flashgp-demo.png (default .)")
    demo.add_argument("--no-plot", action="store_true", help="do not write the plot")
    demo.add_argument("--dataset", default="concrete", help="packaged name or a UCI-format folder")
    demo.add_argument("--iters", type=_count, default=50,
                      help="Adam steps (default 50; the test metrics settle by about 40)")
    demo.add_argument("--lr", type=_positive_float, default=0.1)
    demo.add_argument("--solver", choices=("auto", "cg"), default="auto")
    sub.add_parser("info", parents=[common], help="versions, CUDA devices and backends")
    return parser


