# scikit-learn estimator for GP classification: GPClassifier (fit, predict, predict_proba,
# decision_function, score), on flashgp's Dirichlet-based GP (the exact engine) or an SVGP with a
# Bernoulli or Softmax likelihood; the model each ``method`` builds is chosen in one table
# (CLASSIFIER_METHODS).
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .fit import OPTIMIZERS, fit as fit_model
from .estimator_checks import check_numeric_columns, seed_from
from .estimator_methods import DEFAULT_INDUCING, check_inducing, fit_arguments, total_objective
from .likelihoods import Bernoulli, Softmax
from .log_space import log_space
from .models import SVGP, DirichletGP
from .models.dirichlet import DEFAULT_EPSILON
from .polish import polish_lbfgs
from .tables import spread

POLISH_STEPS = 5  # L-BFGS steps of the polish, as GPRegressor's
PROBA_SEED = 0  # the Monte Carlo draws of predict_proba: the same on every call (deterministic)
CLASS_KINDS = "biufU"  # numpy dtype kinds of classes_ a file may hold (and "object" for strings)


def _regressor():
    """flashgp.sklearn (imported late: it imports this module at its end)."""
    from . import sklearn
    return sklearn


# ----- the models each method builds --------------------------------------------------------------

def _dirichlet_model(estimator, x: torch.Tensor, labels: torch.Tensor, num_classes: int, kernel, solver):
    """method="dirichlet": a ``DirichletGP`` (C exact GP regressions of the Dirichlet transform)."""
    return DirichletGP(x, labels, kernel, num_classes=num_classes, alpha_epsilon=float(estimator.alpha_epsilon),
                       solver=solver)


def _svgp_model(estimator, x: torch.Tensor, labels: torch.Tensor, num_classes: int, kernel, solver):
    """method="svgp": an ``SVGP`` with a ``Bernoulli`` (probit) likelihood for two classes, a
    ``Softmax`` one (C latent functions sharing the kernel) for more; trained on minibatches."""
    if not (isinstance(estimator.solver, str) and estimator.solver == "auto"):
        raise ValueError(f"solver: method='svgp' takes no solver; leave solver='auto' (got {estimator.solver!r:.40})")
    if estimator.polish == "lbfgs":
        raise ValueError("polish: method='svgp' trains on minibatches, which L-BFGS cannot; use polish='auto' or None")
    inducing = check_inducing("svgp", estimator.inducing, x.shape[-1])
    if isinstance(inducing, np.ndarray):
        raise ValueError("inducing: GPClassifier takes a number of inducing points")
    likelihood = Bernoulli() if num_classes == 2 else Softmax(num_classes)
    count = min(DEFAULT_INDUCING, x.shape[-2]) if inducing is None else inducing
    return SVGP(kernel, count, likelihood=likelihood, x=x, seed=seed_from(estimator.random_state, "random_state"))


# method name -> builder (estimator, x (n, d), labels (n,) in 0..C-1, C, kernel, solver) -> a model
# with ``predict_log_proba(x, samples, generator) -> (m, C)`` and ``loss()``, trained by fg.fit
# (with the labels as data and ``batch_size`` when the model trains on minibatches).
CLASSIFIER_METHODS = {"dirichlet": _dirichlet_model, "svgp": _svgp_model}


def _check_epsilon(value) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"alpha_epsilon: expected a finite number > 0, got {value!r}")


class GPClassifier(ClassifierMixin, BaseEstimator):
    """GP classification as a scikit-learn estimator, binary and multiclass.

    ``method="dirichlet"`` (the default) is Milios et al.'s Dirichlet-based GP
    (``flashgp.DirichletGP``): the one-hot labels become C regression problems with known
    heteroskedastic noise, solved by C exact GPs (Cholesky or BBMM, ``solver``) whose
    hyperparameters (one set per class) maximize their marginal likelihood; class probabilities
    are E[softmax(f)] over the latent posterior, by Monte Carlo.

    Args:
        kernel: "rbf", "matern12", "matern32", "matern52" or "rq" (one lengthscale per feature,
            times a learned output scale; one such kernel per class), or a
            ``flashgp.kernels.Kernel`` object without a batch shape, deep-copied at fit and
            given one set of hyperparameters per class.
        iters: optimizer steps on the classes' negative log marginal likelihoods (0: none; the
            values are then those chosen from the data, see ``fg.init_from_data``).
        lr: learning rate (Adam) or initial step length (L-BFGS), in log space for positive
            hyperparameters, as ``GPRegressor``.
        optimizer: "adam" or "lbfgs".
        solver: "auto" (Cholesky up to 2,000 points, CG beyond), "cholesky", "cg", or a flashgp
            solver object.
        device: "auto" (CUDA when available), "cpu", "cuda" or a torch device.
        dtype: "float64" (default) or "float32".
        normalize_x: standardize each input column with its training mean and standard deviation.
        random_state: seeds the CG probe vectors during fit (int, RandomState or None).
        verbose: show the training progress bar.
        polish: up to 5 L-BFGS steps at the end of the fit, kept if they raise the marginal
            likelihood: "auto" (default; when the solver is exact), "lbfgs" or None.
        method: "dirichlet" (default) or "svgp" (``flashgp.SVGP`` with a probit ``Bernoulli``
            likelihood for two classes, ``Softmax`` for more: ``inducing`` points, minibatches of
            ``batch_size``, each of the ``iters`` Adam steps one batch; for large n).
        inducing: "svgp": the number of inducing points (default 500, at most n).
        batch_size: "svgp": points per minibatch (default 1,024).
        alpha_epsilon: the Dirichlet concentration of the classes a point is not labelled with
            (``DirichletGP``; the paper's 0.01).
        samples: Monte Carlo draws per prediction; the same draws (seed ``PROBA_SEED``) on every
            call, so predictions are deterministic and a point's do not depend on the others.

    Labels may be any values numpy can sort (ints, strings, ...); ``classes_`` holds them sorted.
    ``decision_function`` is the log-odds log p1 - log p0 of ``predict_proba`` for two classes
    ``(n,)`` and the log-probabilities ``(n, C)`` otherwise, so its sign (argmax) agrees with
    ``predict`` and its order with ``predict_proba``.

    Fitted attributes: ``model_`` (on standardized inputs), ``classes_``, ``n_iter_``,
    ``history_``, ``polish_history_``, ``log_marginal_likelihood_`` (total over the points and
    classes, of the transformed targets), ``x_mean_``, ``x_scale_``, ``n_features_in_``,
    ``feature_names_in_`` (pandas input).
    """

    def __init__(self, kernel="rbf", iters=100, lr=0.1, optimizer="adam", solver="auto", device="auto",
                 dtype="float64", normalize_x=True, random_state=None, verbose=False, polish="auto",
                 method="dirichlet", alpha_epsilon=DEFAULT_EPSILON, samples=256, inducing=None, batch_size=None):
        self.kernel = kernel
        self.iters = iters
        self.lr = lr
        self.optimizer = optimizer
        self.solver = solver
        self.device = device
        self.dtype = dtype
        self.normalize_x = normalize_x
        self.random_state = random_state
        self.verbose = verbose
        self.polish = polish
        self.method = method
        self.alpha_epsilon = alpha_epsilon
        self.samples = samples
        self.inducing = inducing
        self.batch_size = batch_size

    # ----- parameter checks (at fit) --------------------------------------------------------------
    def _check_params(self) -> None:
        sk = _regressor()
        if self.method not in CLASSIFIER_METHODS:
            raise ValueError(f"method: expected one of {sorted(CLASSIFIER_METHODS)}, got {self.method!r}")
        if self.dtype not in sk.DTYPES:
            raise ValueError(f"dtype: expected one of {sorted(sk.DTYPES)}, got {self.dtype!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.polish is None or isinstance(self.polish, str) and self.polish in sk.POLISH):
            raise ValueError(f"polish: expected one of {sk.POLISH}, got {self.polish!r}")
        if not isinstance(self.iters, numbers.Integral) or isinstance(self.iters, bool) or self.iters < 0:
            raise ValueError(f"iters: expected an int >= 0, got {self.iters!r}")
        if (not isinstance(self.lr, numbers.Real) or isinstance(self.lr, bool) or not self.lr > 0
                or not math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr!r}")
        if not isinstance(self.samples, numbers.Integral) or isinstance(self.samples, bool) or self.samples < 1:
            raise ValueError(f"samples: expected an int >= 1, got {self.samples!r}")
        _check_epsilon(self.alpha_epsilon)
        for name in ("normalize_x", "verbose"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")

    # GPRegressor's readers of the shared settings (they use only kernel, solver and device)
    def _make_kernel(self, n_features: int):
        return _regressor().GPRegressor._make_kernel(self, n_features)

    def _make_solver(self):
        return _regressor().GPRegressor._make_solver(self)

    def _torch_device(self) -> torch.device:
        return _regressor().GPRegressor._torch_device(self)

    # ----- fit ------------------------------------------------------------------------------------
    def fit(self, X, y):
        """Fit the per-class GPs to X (n_samples, n_features) and labels y (n_samples,). Returns self."""
        sk = _regressor()
        self._check_params()
        solver, device, dtype = self._make_solver(), self._torch_device(), sk.DTYPES[self.dtype]
        check_numeric_columns(X)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y: expected at least 2 classes, got 1 class ({classes[0]!r}); "
                             "a classifier needs samples of two or more classes")
        kernel = self._make_kernel(X.shape[1])
        seed = seed_from(self.random_state, "random_state")
        x_mean = X.mean(axis=0) if self.normalize_x else np.zeros(X.shape[1])
        x_scale = spread(X) if self.normalize_x else np.ones(X.shape[1])
        x_t = sk.GPRegressor._to_tensor((X - x_mean) / x_scale, dtype, device, "X",
                                        "use normalize_x=True, dtype='float64' or rescale X")
        labels = torch.as_tensor(encoded.reshape(-1), dtype=torch.int64, device=device)
        model = CLASSIFIER_METHODS[self.method](self, x_t, labels, len(classes), kernel, solver)
        targets = labels.to(model.dtype)
        with log_space(model):
            history = fit_model(model, optimizer=self.optimizer, lr=float(self.lr), iters=int(self.iters),
                                progress=bool(self.verbose), seed=seed,
                                **fit_arguments(model, x_t, targets, self.batch_size))
            polished = None
            if self.iters > 0 and (self.polish == "lbfgs" or self.polish == "auto" and model.deterministic):
                polished = polish_lbfgs(model, POLISH_STEPS, seed, progress=bool(self.verbose))
        lml = total_objective(model, x_t, targets, torch.Generator(device=device).manual_seed(seed))
        # fitted attributes only once everything succeeded
        self.classes_, self.x_mean_, self.x_scale_ = classes, x_mean, x_scale
        self.model_, self.history_, self.n_iter_ = model.eval(), history, len(history)
        self.polish_history_, self.log_marginal_likelihood_ = polished, lml
        return self

    # ----- predictions ------------------------------------------------------------------------------
    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        check_numeric_columns(X)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def predict_log_proba(self, X):
        """Log class probabilities at X (n_samples, n_features): ``(n_samples, n_classes)``, columns in
        the order of ``classes_``."""
        sk = _regressor()
        X = self._validated(X)
        fix = "these rows lie far outside the training inputs' range" if self.normalize_x else \
            "refit with normalize_x=True or dtype='float64'"
        model, parts = self.model_, []
        for start in range(0, X.shape[0], sk.PREDICT_CHUNK):
            x = (X[start:start + sk.PREDICT_CHUNK] - self.x_mean_) / self.x_scale_
            x_t = sk.GPRegressor._to_tensor(x, model.dtype, model.device, "X", fix)
            generator = torch.Generator(device=model.device).manual_seed(PROBA_SEED)  # same draws per chunk
            log_p = model.predict_log_proba(x_t, samples=int(self.samples), generator=generator)
            parts.append(log_p.detach().cpu().double().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes_)))

    def predict_proba(self, X):
        """Class probabilities at X (n_samples, n_features): ``(n_samples, n_classes)``, rows summing
        to 1, columns in the order of ``classes_``."""
        proba = np.exp(self.predict_log_proba(X))
        return proba / proba.sum(axis=1, keepdims=True)

    def decision_function(self, X):
        """Scores at X: ``(n_samples,)`` log p(classes_[1]) - log p(classes_[0]) for two classes
        (positive: classes_[1]), else the log-probabilities ``(n_samples, n_classes)``."""
        log_p = self.predict_log_proba(X)
        return log_p[:, 1] - log_p[:, 0] if len(self.classes_) == 2 else log_p

    def predict(self, X):
        """The most probable class at X: ``(n_samples,)`` values of ``classes_``."""
        log_p = self.predict_log_proba(X)
        return self.classes_[np.argmax(log_p, axis=1)]

    # ----- files ----------------------------------------------------------------------------------
    def save(self, path):
        """Write the fitted estimator to the file ``path`` (one ``flashgp.bundle`` of kind
        "estimator", as ``GPRegressor.save``: no pickle, equal predictions after ``load``).
        ``classes_`` must hold numbers, bools or strings. Returns the path written."""
        check_is_fitted(self)
        from .estimator_file import _to_json, save_estimator
        classes = self.classes_
        if classes.dtype.kind not in CLASS_KINDS and not (
                classes.dtype == object and all(isinstance(c, str) for c in classes)):
            raise TypeError(f"classes_: cannot save labels of dtype {classes.dtype} (expected numbers, "
                            "bools or strings)")
        dtype = "object" if classes.dtype == object else classes.dtype.str
        return save_estimator(self, path, fitted={"classes_": {"dtype": dtype,
                                                               "values": _to_json(classes.tolist())}})

    @classmethod
    def load(cls, path, device=None):
        """A fitted estimator read from a file of ``GPClassifier.save``; ``device`` as for
        ``GPRegressor.load``. Raises FileNotFoundError or ``flashgp.ModelFileError``."""
        from .estimator_file import load_estimator
        return load_estimator(cls, path, device, restore=_restore_classes)


def _restore_classes(estimator, fitted: dict, model, scaling):
    """``load_estimator``'s classifier part: ``classes_`` checked against the model's classes."""
    from .estimator_file import _from_json
    entry = fitted.get("classes_")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "values"} or not isinstance(entry["values"], list):
        raise ValueError("classes_: expected a dict with the keys dtype and values")
    dtype = entry["dtype"]
    if dtype == "object":
        if not all(isinstance(v, str) for v in entry["values"]):
            raise ValueError("classes_: expected strings for dtype object")
        classes = np.empty(len(entry["values"]), dtype=object)
        classes[:] = entry["values"]
    else:
        if not isinstance(dtype, str) or np.dtype(dtype).kind not in CLASS_KINDS:
            raise ValueError(f"classes_: unsupported dtype {dtype!r:.40}")
        classes = np.asarray(_from_json(entry["values"]), dtype=np.dtype(dtype))
    count = getattr(model, "num_classes", None)
    if classes.ndim != 1 or len(classes) != count or len(np.unique(classes)) != len(classes):
        raise ValueError(f"classes_: expected {count} distinct labels for the model, got {len(classes)}")

    def finish():
        estimator.classes_ = classes
    return finish
