# scikit-learn estimator around flashgp's regression models: GPRegressor (fit, predict, sample_y, score).
# Inputs and targets are standardized with training statistics inside; results are in data units.
from __future__ import annotations

import copy
import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import kernels as fk
from .fit import OPTIMIZERS, fit as fit_model
from .fit_warnings import reemit_fit_warnings
from .likelihoods import FixedNoise, Gaussian
from .log_space import log_space
from .means import Constant
from .estimator_checks import (check_numeric_columns as _check_numeric_columns, check_target_scale as _check_target_scale,
                               fixed_noise_values, noise_floor_value, seed_from as _seed)
from .estimator_methods import (LIKELIHOODS, build_model, check_likelihood, fit_arguments, fitted_kernel,
                                method_settings, total_objective)
from . import sklearn_multioutput as multi, estimator_categorical as categorical_columns
from .models.validation import check_device
from .distributions.posterior import MAX_DENSE_SAMPLE
from .polish import polish_lbfgs
from .solvers import CG, Auto, Cholesky
from .tables import spread, to_model_dtype

KERNELS = {  # (features, active_dims=None) -> kernel
    "rbf": lambda d, dims=None: fk.RBF(ard_dims=d, active_dims=dims),
    "matern12": lambda d, dims=None: fk.Matern(nu=0.5, ard_dims=d, active_dims=dims),
    "matern32": lambda d, dims=None: fk.Matern(nu=1.5, ard_dims=d, active_dims=dims),
    "matern52": lambda d, dims=None: fk.Matern(nu=2.5, ard_dims=d, active_dims=dims),
    "rq": lambda d, dims=None: fk.RQ(ard_dims=d, active_dims=dims),
}
SOLVERS = {"auto": Auto, "cholesky": Cholesky, "cg": CG}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
POLISH = ("auto", "lbfgs", None)
POLISH_STEPS = 5  # L-BFGS steps (each up to 20 iterations); 2-4 reach the optimum on UCI sets
PREDICT_CHUNK = 4096  # test rows per posterior call when no joint covariance is needed
MAX_OUTPUT_BYTES = 1 << 30  # the largest returned covariance or sample array (float64); raise it to allow more


def _check_output_size(what: str, shape: tuple, alternative: str) -> None:
    """Refuse an output of ``shape`` (float64) above MAX_OUTPUT_BYTES before allocating it."""
    size = math.prod(shape)
    if size * 8 > MAX_OUTPUT_BYTES:
        dims = " x ".join(f"{n:,}" for n in shape)
        raise ValueError(f"{what}: the result would be {dims} float64 values ({size * 8 / 1e9:.3g} GB, "
                         f"and several times that while it is computed), above "
                         f"flashgp.sklearn.MAX_OUTPUT_BYTES ({MAX_OUTPUT_BYTES / 1e9:.3g} GB); "
                         f"{alternative}")


class GPRegressor(RegressorMixin, BaseEstimator):
    """GP regression as a scikit-learn estimator: exact (``flashgp.ExactGP``), with inducing points
    (``flashgp.SGPR``) or with structured kernel interpolation (SKI, an ExactGP with a
    ``flashgp.kernels.Interpolated`` kernel).

    Args:
        kernel: "rbf", "matern12", "matern32", "matern52" or "rq" (each with one lengthscale per
            feature, times a learned output scale), or a ``flashgp.kernels.Kernel`` object, which
            is deep-copied at fit and used as given (no output scale is added; values it was not
            given start from the standardized data, see ``fg.init_from_data``).
        iters: optimizer steps on the negative log marginal likelihood. 0: no optimization at
            all (no polish either), as scikit-learn's ``optimizer=None``: the hyperparameters keep
            their initial values (those of a kernel object as given; else chosen from the data,
            see ``fg.init_from_data``).
        lr: learning rate (Adam) or initial step length (L-BFGS). Positive hyperparameters
            (lengthscales, output scale, noise) are optimized in log space, as scikit-learn does,
            so an Adam step changes each by a factor of up to about exp(lr).
        optimizer: "adam" (robust, but at a fixed lr it ends near the optimum, not at it) or
            "lbfgs" (converges in a few steps, e.g. ``lr=1.0, iters=5``, but its line search can
            fail from a poor start).
        solver: "auto" (Cholesky up to 2,000 points, CG beyond), "cholesky", "cg", or a flashgp
            solver object (``fg.Auto(...)``, ``fg.Cholesky(...)``, ``fg.CG(...)``).
        device: "auto" (CUDA when available), "cpu", "cuda" or another torch device name.
        dtype: "float64" (default) or "float32" for the model's tensors.
        normalize_x: standardize each input column with its training mean and standard deviation
            before the kernel sees it (constant columns are only centred). Named kernels start at
            lengthscale 0.5 in those units (``fg.init_from_data``); ``lengthscale_`` is reported
            in the data's units.
        normalize_y: standardize the targets likewise; predictions are mapped back.
        noise: None to learn a Gaussian noise variance; else a fixed noise variance (float) or one
            per training point (array (n_samples,)), in the squared units of y.
        noise_floor: lower bound of the learned noise variance, in the squared units of y (like
            ``noise``; only with ``noise=None``). None (default): the default of
            ``fg.likelihoods.Gaussian``, a fraction of the prior variance of the (standardized)
            targets: 1e-10 var(y) in float64, 1e-4 var(y) in float32. A learned noise that
            ends on its floor is reported by a NumericalWarning (the data may be noise-free; a
            lower floor lets the mean interpolate them).
        random_state: seeds the CG probe vectors and the choice of inducing points during fit
            (int, RandomState or None).
        method: "exact" (default), "sgpr" (Titsias' sparse GP: ``inducing`` points learned with
            the hyperparameters; for n beyond what the exact GP can afford, any dimension), "ski"
            (structured kernel interpolation on a regular grid: 1 to 3 features, very large n;
            trained by CG), "svgp" (``flashgp.SVGP``: inducing points, minibatches of
            ``batch_size``, each of the ``iters`` steps one batch; any likelihood), "basis"
            (``flashgp.BasisGP``: Scale(HilbertSpace(kernel, m)), exact in O(n P^2), 1 to 3 continuous
            columns; named kernels "rbf", "matern*") or "itergp" (``flashgp.IterGP``: trained as
            "exact"; its posterior adds the uncertainty of ``itergp_budget`` solver actions).
        inducing: None (default: 500 inducing points for "sgpr" and "svgp", capped at n; for "ski"
            a grid of 1000, 100 or 30 points per feature in 1, 2 or 3 dimensions; for "basis" 32,
            16 or 8 basis functions per continuous column); for "sgpr" and "svgp" a count or the
            inducing inputs (m, n_features) in the units of X; for "ski" the grid points per
            feature, for "basis" the basis functions per continuous column (one number, or one each).
        likelihood: "gaussian" (default), or with method="svgp" "student_t" (robust to
            outliers; learned degrees of freedom) or "poisson" (counts y >= 0, log link; y is then
            never standardized and predictions are expected counts).
        batch_size: points per minibatch of method="svgp" (default 1,024); with method="exact", rows
            per random subset: each Adam step fits the hyperparameters to one subset (minibatch SGD,
            ``fg.fit(model, batch_size=m)``), no polish; predictions use all n rows.
        itergp_policy, itergp_budget: method="itergp": "cg" (None: default), "cholesky" or "pivoted";
            the policy's actions, an int (None: 100).
        multitask: how 2-D targets y (n_samples, n_targets) are modelled (one ``flashgp.MultitaskGP``,
            each target standardized on its own, method="exact"): None (default) independent
            outputs that share the kernel's hyperparameters, each with its own variance, noise and
            mean (scikit-learn's GaussianProcessRegressor also shares the kernel); "icm" correlated
            outputs, B = W Wᵀ + diag(v) with W of ``task_rank`` columns; "lmc" a sum of two such
            terms with their own lengthscales. Predictions are then (n_samples, n_targets).
        task_rank: the columns of W for "icm" and "lmc" (1 to n_targets).
        verbose: show the training progress bar.
        polish: finish the fit with up to 5 L-BFGS steps (strong Wolfe line search, fixed probes),
            kept only if they raise the marginal likelihood: "lbfgs" always (with iters > 0),
            None never, "auto" (default) when the solver is exact (Cholesky; e.g. "auto" up to
            2,000 points). Adam finds the region of the optimum and the polish converges there,
            so the defaults reach the optimum of scikit-learn's L-BFGS-B fit (test RMSE at most
            2% above its in 23 of 24 small-data fits; ``benchmarks/sklearn_compare.py``). On the
            CG path the objective is noisy and each step costs several solves, hence "auto"
            leaves it out.
        categorical: columns of levels: None (a DataFrame's category, object, string, bool columns)
            or a list of indices or names. Kernel: Scale(cont * Categorical(L_1) * ...); a kernel object
            is used as given (set its active_dims) times the Categoricals. See the guide, "Categorical columns".
        categorical_kind: "exchangeable" or "lowrank" (rank 1), for every Categorical kernel.

    Fitted attributes: ``model_`` (the ``ExactGP``, ``SGPR``, ``SVGP``, ``BasisGP``, ``IterGP``, on standardized data), ``lengthscale_``
    (n_features,), ``outputscale_``, ``noise_``, ``noise_floor_`` (None for a fixed noise),
    ``constant_`` (data units; None where the kernel does not have them at the usual place),
    ``log_marginal_likelihood_`` (total over the training points, of the standardized targets,
    as scikit-learn's ``log_marginal_likelihood_value_``),
    ``n_iter_`` and ``history_`` (of ``optimizer``), ``polish_history_`` (None if no polish ran),
    ``x_mean_``, ``x_scale_``, ``y_mean_``, ``y_scale_``,
    ``n_features_in_``, ``feature_names_in_`` (pandas input), ``categorical_columns_`` (indices)
    and ``categories_`` (the sorted levels of each; ``lengthscale_`` is NaN at those columns).
    """

    def __init__(self, kernel="matern52", iters=100, lr=0.1, optimizer="adam", solver="auto",
                 device="auto", dtype="float64", normalize_x=True, normalize_y=True, noise=None,
                 random_state=None, verbose=False, polish="auto", noise_floor=None, method="exact",
                 inducing=None, likelihood="gaussian", batch_size=None, multitask=None, task_rank=1,
                 categorical=None, categorical_kind="exchangeable", itergp_policy=None, itergp_budget=None):
        self.kernel = kernel
        self.iters = iters
        self.lr = lr
        self.optimizer = optimizer
        self.solver = solver
        self.device = device
        self.dtype = dtype
        self.normalize_x = normalize_x
        self.normalize_y = normalize_y
        self.noise = noise
        self.random_state = random_state
        self.verbose = verbose
        self.polish = polish
        self.noise_floor = noise_floor
        self.method = method
        self.inducing = inducing
        self.likelihood = likelihood
        self.batch_size = batch_size
        self.multitask = multitask
        self.task_rank = task_rank
        self.categorical = categorical
        self.categorical_kind = categorical_kind
        self.itergp_policy, self.itergp_budget = itergp_policy, itergp_budget

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # 2-D y: see ``multitask``
        return tags

    # ----- parameter checks (at fit, as scikit-learn asks) -----------------------------------
    def _make_kernel(self, n_features: int, scaled: bool = True, active_dims=None) -> fk.Kernel:
        if isinstance(self.kernel, str):
            if self.kernel not in KERNELS:
                raise ValueError(f"kernel: expected one of {sorted(KERNELS)} or a flashgp kernel, "
                                 f"got {self.kernel!r}")
            base = KERNELS[self.kernel](n_features, active_dims)
            return fk.Scale(base) if scaled else base
        if not isinstance(self.kernel, fk.Kernel):
            raise TypeError(f"kernel: expected a name or a flashgp.kernels.Kernel, "
                            f"got {type(self.kernel).__name__}")
        if self.kernel.batch_shape != torch.Size():
            raise ValueError(f"kernel: expected a kernel without batch_shape, "
                             f"got {tuple(self.kernel.batch_shape)}")
        return copy.deepcopy(self.kernel)

    def _make_solver(self):
        if isinstance(self.solver, str):
            if self.solver not in SOLVERS:
                raise ValueError(f"solver: expected one of {sorted(SOLVERS)} or a flashgp solver, "
                                 f"got {self.solver!r}")
            return SOLVERS[self.solver]()
        if not isinstance(self.solver, (Auto, Cholesky, CG)):
            raise TypeError(f"solver: expected a name or fg.Auto/fg.Cholesky/fg.CG, "
                            f"got {type(self.solver).__name__}")
        return self.solver

    def _torch_device(self) -> torch.device:
        if isinstance(self.device, str) and self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device: expected 'auto', 'cpu', 'cuda' or a torch.device, "
                            f"got {type(self.device).__name__}")
        return check_device(self.device, "'auto', 'cpu' or 'cuda'")

    def _check_params(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.polish is None or isinstance(self.polish, str) and self.polish in POLISH):
            raise ValueError(f"polish: expected one of {POLISH}, got {self.polish!r}")
        if not isinstance(self.iters, numbers.Integral) or isinstance(self.iters, bool) or self.iters < 0:
            raise ValueError(f"iters: expected an int >= 0, got {self.iters!r}")
        if (not isinstance(self.lr, numbers.Real) or isinstance(self.lr, bool) or not self.lr > 0
                or not math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr!r}")
        for name in ("normalize_x", "normalize_y", "verbose"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")

    def _noise_floor(self, y_scale: float):
        """The floor of the learned noise in the model's (standardized) units, or None (default)."""
        return noise_floor_value(self.noise_floor, self.noise, y_scale)

    def _fixed_noise(self, n: int):
        """The fixed noise variances (n,) in data units, or None to learn the noise."""
        return fixed_noise_values(self.noise, n)

    # ----- fit ---------------------------------------------------------------------------------
    def fit(self, X, y):
        """Fit the GP hyperparameters to X (n_samples, n_features) and y (n_samples,) or
        (n_samples, n_targets) (see ``multitask``). Returns self."""
        self._check_params()
        solver, device = self._make_solver(), self._torch_device()
        dtype = DTYPES[self.dtype]
        outputs = multi.is_multioutput(y)
        X, columns = categorical_columns.fit_columns(self, X, outputs)  # levels -> codes, numbers checked
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=outputs)
        y = y.astype(np.float64, copy=False)
        if outputs:
            return multi.fit_outputs(self, X, y, solver, device, dtype)
        settings = method_settings(self, X.shape[1], len(columns.indices))  # inducing, solver, batch_size, ...
        kernel = categorical_columns.make_kernel(self, X.shape[1], columns, settings.wrap)
        fixed = self._fixed_noise(X.shape[0])
        seed = _seed(self.random_state, "random_state")
        inducing = settings.inducing
        likelihood_name = check_likelihood(self.method, self.likelihood)
        counts = likelihood_name == "poisson"  # the log link needs the counts themselves

        x_mean, x_scale = categorical_columns.unscaled(*self._input_scaling(X), columns)
        y_mean = float(y.mean()) if self.normalize_y and not counts else 0.0
        y_scale = float(spread(y[:, None])[0]) if self.normalize_y and not counts else 1.0
        _check_target_scale(y, y_scale if self.normalize_y else float(np.abs(y).max() or 1.0), self.normalize_y)
        x_t = self._to_tensor((X - x_mean) / x_scale, dtype, device, "X",
                              "use normalize_x=True, dtype='float64' or rescale X")
        y_t = self._to_tensor((y - y_mean) / y_scale, dtype, device, "y",
                              "use normalize_y=True, dtype='float64' or rescale y")
        floor = self._noise_floor(y_scale)
        likelihood = Gaussian(noise_floor=floor) if fixed is None else FixedNoise(self._to_tensor(
            fixed / y_scale**2, dtype, device, "noise", "noise / var(y) must fit the model's dtype"))
        if likelihood_name != "gaussian":
            if fixed is not None or floor is not None:
                raise ValueError(f"noise: likelihood={likelihood_name!r} has no Gaussian noise; leave noise and "
                                 "noise_floor at None")
            likelihood = LIKELIHOODS[likelihood_name]()
        # the constant mean starts at 0 (the targets' mean with normalize_y), so that iters=0 gives
        # scikit-learn's prior mean; the other values not given start from the (scaled) data
        if isinstance(inducing, np.ndarray):  # inducing inputs in the model's (scaled) units
            inducing = (inducing - x_mean) / x_scale
        model = build_model(self.method, x_t, y_t, kernel, likelihood, Constant(0.0), solver, inducing, seed,
                            **settings.options)
        return self._train(model, x_t, y_t, seed, (x_mean, x_scale, y_mean, y_scale), fixed, columns)

    def _input_scaling(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(means, scales) of the columns of X with ``normalize_x``, else (0, 1)."""
        if not self.normalize_x:
            return np.zeros(X.shape[1]), np.ones(X.shape[1])
        return X.mean(axis=0), spread(X)

    def _train(self, model, x_t, y_t, seed, scaling, fixed, columns=None):
        """Fit ``model`` (Adam, then the polish), set the fitted attributes; returns self."""
        x_mean, x_scale, y_mean, y_scale = scaling
        device = x_t.device
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with log_space(model):
                history = fit_model(model, optimizer=self.optimizer, lr=float(self.lr), iters=int(self.iters),
                                    progress=bool(self.verbose), seed=seed,
                                    **fit_arguments(model, x_t, y_t, self.batch_size, self.method == "exact"))
                polished = None
                if self._polishes(model):
                    polished = polish_lbfgs(model, POLISH_STEPS, seed, progress=bool(self.verbose))
        reemit_fit_warnings(caught, model.likelihood, y_scale)
        lml = total_objective(model, x_t, y_t, torch.Generator(device=device).manual_seed(seed))
        # fitted attributes only once everything succeeded
        self.x_mean_, self.x_scale_, self.y_mean_, self.y_scale_ = x_mean, x_scale, y_mean, y_scale
        self.model_, self.history_, self.n_iter_ = model.eval(), history, len(history)
        self.polish_history_ = polished
        self.log_marginal_likelihood_ = lml
        categorical_columns.set_fitted(self, columns)
        self._set_hyperparameters(fixed)
        return self

    def _polishes(self, model) -> bool:
        """Whether the fit ends with L-BFGS steps (``polish``; "auto": when the model's objective
        is exact and deterministic, ``model.deterministic``: the Cholesky path, SGPR; never with
        iters=0, which optimizes nothing, nor after training on random subsets: method="exact" with
        batch_size, whose point is not to evaluate all n rows at every step)."""
        if self.iters == 0 or self.batch_size is not None and not model.trains_on_batches:
            return False
        if self.polish != "auto":
            return self.polish == "lbfgs"
        return model.deterministic

    @staticmethod
    def _to_tensor(values: np.ndarray, dtype: torch.dtype, device: torch.device, name: str,
                   fix: str) -> torch.Tensor:
        """float64 ``values`` as a tensor of the model's dtype; ValueError naming ``name`` when
        they overflow it (a finite 1e39 in a float32 model), with the ``fix``."""
        return to_model_dtype(np.ascontiguousarray(values), dtype, name, device, fix, ValueError).clone()

    def _set_hyperparameters(self, fixed) -> None:
        """The fitted hyperparameters in the data's units (None where not found)."""
        if np.ndim(self.y_scale_):
            return multi.hyperparameters(self)
        kernel = base = fitted_kernel(self.model_)
        self.outputscale_ = None
        if isinstance(kernel, fk.Scale):
            self.outputscale_ = float(kernel.outputscale.detach()) * self.y_scale_**2
            base = kernel.base.base if isinstance(kernel.base, fk.HilbertSpace) else kernel.base  # "basis"
        self.lengthscale_ = None
        if isinstance(base, fk.Stationary) and base.active_dims is None:
            ls = base.lengthscale.detach().cpu().double().numpy().reshape(-1)
            self.lengthscale_ = np.broadcast_to(ls, self.x_scale_.shape) * self.x_scale_
        self.noise_floor_ = None
        self.noise_ = None
        if not isinstance(self.model_.likelihood, (Gaussian, FixedNoise)):
            pass  # no Gaussian noise (likelihood="student_t" or "poisson")
        elif fixed is None:
            self.noise_ = float(self.model_.likelihood.noise.detach()) * self.y_scale_**2
            self.noise_floor_ = self.model_.likelihood.noise_floor * self.y_scale_**2
        else:
            self.noise_ = float(fixed[0]) if np.ndim(self.noise) == 0 else np.array(fixed)
        self.constant_ = float(self.model_.mean.constant.detach()) * self.y_scale_ + self.y_mean_
        categorical_columns.continuous_lengthscales(self)

    # ----- predictions -------------------------------------------------------------------------
    def _posterior(self, X, include_noise: bool, joint: bool = False):
        if joint and include_noise and not self.model_.likelihood.conjugate:
            raise ValueError(f"include_noise: likelihood={self.likelihood!r} gives only the moments of new "
                             "observations; joint ones (return_cov, sample_y) need include_noise=False")
        x = (X - self.x_mean_) / self.x_scale_
        fix = "these rows lie far outside the training inputs' range" if self.normalize_x else \
            "refit with normalize_x=True or dtype='float64'"
        x_t = self._to_tensor(x, self.model_.dtype, self.model_.device, "X", fix)
        return self.model_.predict(x_t) if include_noise else self.model_.posterior(x_t)

    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = categorical_columns.predict_columns(self, X)  # levels -> the codes of the fit
        _check_numeric_columns(X)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def predict(self, X, return_std=False, return_cov=False, include_noise=True):
        """Predictive mean at X (n_samples, n_features) -> (n_samples,) (or (n_samples, n_targets)),
        in the units of y.

        Args:
            return_std: also return the predictive standard deviations, shaped like the mean.
            return_cov: also return the joint predictive covariance (n_samples, n_samples) (for
                2-D targets (n_samples, n_samples, n_targets), one per target).
            include_noise: the distribution of new observations (True, default) or of the
                latent function (False).
        """
        if return_std and return_cov:
            raise ValueError("return_std, return_cov: at most one of them can be True")
        X = self._validated(X)
        if return_cov:
            m = X.shape[0]
            _check_output_size("return_cov", (m, m), f"use return_std=True for the {m:,} marginal "
                               "standard deviations, or ask for the covariance of fewer points at a time")
            post = self._posterior(X, include_noise, joint=True)
            if np.ndim(self.y_scale_):  # (m, m, t), one joint covariance per output
                return self._to_y(post.mean), multi.joint_covariance(post, self.y_scale_)
            # one float64 copy that is ours, edited in place (no m x m temporaries beside it)
            cov = post.covariance.to_dense().detach().to("cpu", torch.float64, copy=True).numpy()
            if post.noise is not None:
                cov[np.diag_indices(m)] += post.noise.detach().cpu().double().numpy()
            cov *= self.y_scale_**2
            return self._to_y(post.mean), cov
        means, stds = [], []
        # chunks of PREDICT_CHUNK rows, the remainder joined to the last one: every chunk of a
        # large X is then over CG's exact_var_max, so all get the same (Lanczos) variances
        starts = list(range(0, X.shape[0], PREDICT_CHUNK))
        if len(starts) > 1 and X.shape[0] - starts[-1] < PREDICT_CHUNK:
            starts.pop()
        for start, stop in zip(starts, starts[1:] + [X.shape[0]]):
            post = self._posterior(X[start:stop], include_noise)
            means.append(self._to_y(post.mean))
            if return_std:
                stds.append(post.stddev.detach().cpu().double().numpy() * self.y_scale_)
        mean = np.concatenate(means)
        return (mean, np.concatenate(stds)) if return_std else mean

    def _to_y(self, values: torch.Tensor) -> np.ndarray:
        return values.detach().cpu().double().numpy() * self.y_scale_ + self.y_mean_

    def sample_y(self, X, n_samples=1, random_state=None, include_noise=True):
        """Joint samples of the predictive distribution at X: (n_samples_X, n_samples), or
        (n_samples_X, n_targets, n_samples) for 2-D targets (joint over points and targets).

        ``random_state``: int, RandomState or None (numpy's global state), seeds the draws.
        """
        if not isinstance(n_samples, numbers.Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
        X = self._validated(X)
        m = X.shape[0]
        if m > MAX_DENSE_SAMPLE:
            raise ValueError(f"X: joint samples at {m:,} points need a dense {m:,} x {m:,} covariance; "
                             f"sample at most {MAX_DENSE_SAMPLE:,} points per call (the draws are "
                             "joint only within a call), or use predict(X, return_std=True)")
        _check_output_size("sample_y", (m, int(n_samples)), "ask for fewer samples or points per call")
        seed = _seed(random_state, "random_state")
        post = self._posterior(X, include_noise, joint=True)
        generator = torch.Generator(device=self.model_.device).manual_seed(seed)
        draws = post.sample(int(n_samples), generator=generator)  # (n_samples, n_samples_X[, n_targets])
        return np.moveaxis(self._to_y(draws), 0, -1)

    # ----- files -------------------------------------------------------------------------------
    def save(self, path):
        """Write the fitted estimator to the file ``path`` (str or os.PathLike; e.g. "gp.fgp").

        One file, written atomically (a failed write leaves the previous file), holding the
        model (hyperparameters, training data in standardized units, solver state), the input
        and target scaling, the constructor settings and the fitted attributes, as JSON and
        weights-only tensors: ``GPRegressor.load`` runs no code (unlike pickle or joblib), and
        its predictions equal this estimator's, to the bit, on the same device. A symbolic link
        at ``path`` is followed. Returns the path written (a ``pathlib.Path``).

        Settings are saved as given: names, numbers, arrays, flashgp kernel and solver objects,
        torch devices and numpy RandomStates. The file is a ``flashgp.bundle`` (kind "estimator");
        ``fg.load`` refuses it (it is not a bare model), ``flashgp.bundle.load`` reads its parts.
        """
        check_is_fitted(self)
        from .estimator_file import save_estimator
        return save_estimator(self, path)

    @classmethod
    def load(cls, path, device=None):
        """A fitted estimator read from a file of ``GPRegressor.save``.

        device: where the model goes; None (default): the saved ``device`` setting ("auto":
        CUDA when present, else the CPU). Raises FileNotFoundError, or ``flashgp.ModelFileError``
        (a ValueError) naming the path for any other file, a damaged one, or one whose settings
        or scaling are invalid (non-finite, scales <= 0, lengths other than the features).
        """
        from .estimator_file import load_estimator
        return load_estimator(cls, path, device)

from .sklearn_classifier import GPClassifier  # noqa: E402,F401  (GP classification, flashgp/sklearn_classifier.py)
