# DirichletGP: GP classification on the exact engine (Milios et al. 2018, "Dirichlet-based
# Gaussian processes for large-scale calibrated classification"): one-hot labels become C
# heteroskedastic regression problems, one batch of C independent exact GPs with fixed noise.
from __future__ import annotations

import math
import numbers

import torch

from ..kernels import Kernel
from ..likelihoods import FixedNoise
from ..means import Constant, Mean
from ..serialize import (ConfigError, kernel_from_config, kernel_to_config, mean_from_config, mean_to_config,
                         register_model, solver_from_config, solver_to_config)
from .exact_gp import ExactGP
from .regression import RegressionModel
from .validation import as_float_tensor, check_test_inputs

DEFAULT_EPSILON = 0.01  # the paper's alpha_epsilon (its best calibrated choice on its benchmarks)
SAMPLE_BLOCK = 1 << 22  # samples x classes x test points per block of predict_proba


def dirichlet_targets(labels: torch.Tensor, num_classes: int, alpha_epsilon: float,
                      dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The regression targets and noise variances of the Dirichlet transform, each ``(C, n)``.

    With alpha = one_hot(labels) + alpha_epsilon ``(C, n)`` (the Dirichlet's concentrations),
    each Gamma(alpha, 1) marginal is matched by a lognormal: noise variance
    s = log(1 / alpha + 1) and target y = log(alpha) - s / 2.

    Args:
        labels: class indices 0..C-1, ``(n,)`` integers (checked by the caller).
        num_classes: C.
        alpha_epsilon: the concentration of the classes a point is not labelled with (> 0).
        dtype: the floating dtype of the results.
    """
    one_hot = torch.nn.functional.one_hot(labels.long(), num_classes).T.to(torch.float64)
    alpha = one_hot + float(alpha_epsilon)
    noise = torch.log1p(1 / alpha)
    targets = alpha.log() - noise / 2
    return targets.to(dtype), noise.to(dtype)


def check_labels(labels, n: int | None, num_classes, device=None) -> tuple[torch.Tensor, int]:
    """(labels as an int64 tensor ``(n,)`` on ``device``, the number of classes C).

    ValueError naming ``labels`` unless they are n integers (integral floats are accepted) in
    0..C-1 with at least two distinct values; ``num_classes`` None: C = max(labels) + 1, else
    an int >= 2 above every label (a class may then lack points)."""
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                    or num_classes < 2):
        raise ValueError(f"num_classes: expected None or an int >= 2, got {num_classes!r}")
    if isinstance(labels, (str, bytes)) or labels is None:
        raise ValueError(f"labels: expected integer class indices 0..C-1, got {type(labels).__name__}")
    try:
        tensor = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(
            labels.to_numpy() if hasattr(labels, "to_numpy") else labels)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"labels: expected integer class indices 0..C-1, got {type(labels).__name__}") from None
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"labels: expected integer class indices 0..C-1, got dtype {tensor.dtype}")
    if tensor.dim() != 1 or (n is not None and tensor.shape[0] != n):
        expected = "(n,)" if n is None else f"({n},), one per row of x"
        raise ValueError(f"labels: expected shape {expected}, got {tuple(tensor.shape)}")
    if tensor.is_floating_point() and not (bool(torch.isfinite(tensor).all())
                                           and bool((tensor == tensor.round()).all())):
        raise ValueError("labels: expected integer class indices 0..C-1, got non-integer values")
    tensor = tensor.detach().to(device=device, dtype=torch.int64).clone()
    if tensor.numel() == 0:
        raise ValueError("labels: expected at least one label, got none")
    low, high = int(tensor.min()), int(tensor.max())
    classes = high + 1 if num_classes is None else int(num_classes)
    if low < 0 or high >= classes:
        raise ValueError(f"labels: expected class indices in 0..{classes - 1}, got values from {low} to {high}")
    if low == high:
        raise ValueError(f"labels: expected at least 2 distinct classes, got only class {low}; "
                         "a classifier needs points of two or more classes")
    return tensor, classes


def batched_kernel(kernel: Kernel, num_classes: int) -> Kernel:
    """``kernel`` with batch_shape (C,): as given if it has it, else a copy with one set of
    hyperparameters per class, each starting at ``kernel``'s values (values it was not given
    stay unset, for ``fg.init_from_data``). The copy goes through ``flashgp.serialize``, so
    only registered kernel classes can be batched here."""
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel: expected a flashgp.kernels.Kernel, got {type(kernel).__name__}")
    shape = torch.Size([num_classes])
    if kernel.batch_shape == shape:
        return kernel
    if kernel.batch_shape != torch.Size():
        raise ValueError(f"kernel: expected batch_shape () or ({num_classes},) (one per class), "
                         f"got {tuple(kernel.batch_shape)}")
    try:
        config = kernel_to_config(kernel)
    except TypeError as err:
        raise ValueError(f"kernel: {err}; or pass a kernel with batch_shape=({num_classes},)") from None
    new = kernel_from_config(_with_batch(config, [num_classes]))
    with torch.no_grad():
        for old, fresh in zip(kernel.modules(), new.modules()):
            for name, tensor in [*old.named_parameters(recurse=False), *old.named_buffers(recurse=False)]:
                target = getattr(fresh, name)
                target.copy_(tensor.detach().to(target.device).expand(target.shape))
            fresh._unset = set(getattr(old, "_unset", ()))
            for name, (kind, exact, _) in (getattr(old, "_exact_values", None) or {}).items():
                target = fresh._exact_target(name, kind)
                if old.exact_value(name) is not None and target is not None:
                    fresh.remember_exact(name, exact.expand(target.shape), kind)
    return new


def _with_batch(config: dict, batch: list) -> dict:
    """A kernel config with every leaf's batch_shape set to ``batch``."""
    out = dict(config)
    if "batch_shape" in out.get("args", {}):
        out["args"] = {**out["args"], "batch_shape": list(batch)}
    if "children" in out:
        out["children"] = [_with_batch(child, batch) for child in out["children"]]
    return out


@register_model("DirichletGP")
class DirichletGP(ExactGP):
    """GP classification by Dirichlet-based regression (Milios et al. 2018) on the exact engine.

    The labels' one-hot vectors plus ``alpha_epsilon`` are the concentrations alpha of a
    Dirichlet; each class's Gamma(alpha, 1) marginal is approximated by a lognormal, which
    turns classification into C independent GP regressions of y = log(alpha) - s / 2 with
    known noise s = log(1 / alpha + 1) (``dirichlet_targets``). They are trained and queried as
    one batch of C exact GPs (an ``ExactGP`` with batch shape (C,)): ``fg.fit``, ``fg.save`` /
    ``fg.load``, checkpoints and both solvers (Cholesky, BBMM) work as for regression. Class
    probabilities are E[softmax(f)], f ~ the latent posterior at a point (``predict_proba``).

    Args:
        x: training inputs (n, d); (n,) is read as (n, 1).
        labels: class indices 0..C-1, ``(n,)`` integers (a tensor, array or list).
        kernel: a ``flashgp.kernels.Kernel``. Without a batch shape it is copied into one of
            batch shape (C,) (hyperparameters per class, starting at the given values); one of
            batch shape (C,) is used as given.
        num_classes: C; None (default): the largest label plus one.
        alpha_epsilon: the Dirichlet concentration of the classes a point is not labelled
            with (> 0; the paper's default 0.01). Smaller values make the targets further
            apart and their noise larger.
        solver: ``fg.Auto()`` (default), ``fg.Cholesky()`` or ``fg.CG(...)``.
        mean: default ``Constant(batch_shape=(C,))`` (one constant per class, started at the
            mean of its targets by ``fg.init_from_data``); any flashgp mean that broadcasts.

    The noise is the transform's alone (a ``FixedNoise`` likelihood, ``(C, n)``); the paper's
    variant with an extra learned noise is not offered. Training data: ``train_x`` ``(C, n, d)``
    (x once per class), ``train_y`` ``(C, n)`` (the targets), ``train_labels`` ``(n,)``.
    ``loss()`` is ``(C,)``, each class's negative log marginal likelihood per point;
    ``posterior(x)`` the latent ``(C, m)``; ``predict(x)`` adds the mean training noise of
    each class (of little use for classification). Raises ValueError naming ``labels`` for
    non-integer labels, labels outside 0..C-1 or fewer than two distinct classes.
    """

    conditions_on_rows = False  # derived targets / task-indexed rows: rebuild the model instead

    config_keys = frozenset({"kernel", "mean", "solver", "num_classes", "alpha_epsilon"})

    def __init__(self, x, labels, kernel: Kernel, num_classes: int | None = None,
                 alpha_epsilon: float = DEFAULT_EPSILON, solver=None, mean: Mean | None = None):
        x = self._inputs(x)
        labels, classes = check_labels(labels, x.shape[0], num_classes, x.device)
        if (isinstance(alpha_epsilon, bool) or not isinstance(alpha_epsilon, numbers.Real)
                or not 0 < alpha_epsilon < math.inf):
            raise ValueError(f"alpha_epsilon: expected a finite number > 0, got {alpha_epsilon!r}")
        kernel = batched_kernel(kernel, classes)
        targets, noise = dirichlet_targets(labels, classes, float(alpha_epsilon), x.dtype)
        mean = Constant(batch_shape=(classes,)) if mean is None else mean
        self._pending_labels = labels
        super().__init__(x.expand(classes, *x.shape), targets, kernel, FixedNoise(noise), mean, solver)
        self.num_classes, self.alpha_epsilon = classes, float(alpha_epsilon)

    @staticmethod
    def _inputs(x, like: torch.Tensor | None = None) -> torch.Tensor:
        """x as a float tensor (n, d) (the classes' batch dimension is the model's own)."""
        x = as_float_tensor(x, "x", like=like)
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.dim() != 2:
            raise ValueError(f"x: expected shape (n, d) (the batch dimension holds the classes), "
                             f"got {tuple(x.shape)}")
        return x

    def _take_data(self) -> None:
        super()._take_data()
        self.register_buffer("train_labels", self._pending_labels.to(self.train_x.device))
        del self._pending_labels

    def set_train_data(self, x, labels=None) -> None:
        """Replace the training data: x (n, d) and labels ``(n,)`` in 0..C-1 (C fixed by the model);
        the targets and the FixedNoise variances are derived again. (The constructor passes the
        derived ``(C, n, d)`` inputs and ``(C, n)`` targets; they go to ``RegressionModel``.)"""
        if "_pending_labels" in self.__dict__:  # the constructor's call, from ExactGP
            return RegressionModel.set_train_data(self, x, labels)
        x = self._inputs(x, like=self.train_x)
        labels, _ = check_labels(labels, x.shape[0], self.num_classes, x.device)
        targets, noise = dirichlet_targets(labels, self.num_classes, self.alpha_epsilon, x.dtype)
        previous = self.likelihood.noise
        self.likelihood.noise = noise
        try:
            RegressionModel.set_train_data(self, x.expand(self.num_classes, *x.shape), targets)
        except (ValueError, TypeError):
            self.likelihood.noise = previous
            raise
        self.train_labels = labels

    # ----- class probabilities --------------------------------------------------------
    def predict_log_proba(self, x, samples: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
        """log E[softmax(f)] at test inputs x (m, d): ``(m, C)``, by Monte Carlo over the latent
        posterior marginals f_c ~ N(mean_c, var_c), in log space (log-sum-exp).

        The same ``samples`` standard-normal draws ``(samples, C)`` serve every test point (common
        random numbers): a point's probabilities do not depend on the other points in x, and
        are reproducible with a seeded ``generator`` (on the model's device; default: torch's
        global one).
        """
        if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
            raise ValueError(f"samples: expected an int >= 1, got {samples!r}")
        x = check_test_inputs(x, self.train_x)
        if x.dim() != 2:
            raise ValueError(f"x: expected shape (m, {self.train_x.shape[-1]}), got {tuple(x.shape)}")
        post = self.posterior(x)
        with torch.no_grad():
            mean, std = post.mean.detach(), post.variance.detach().clamp_min(0).sqrt()  # (C, m)
            draws = torch.randn(int(samples), self.num_classes, 1, generator=generator,
                                dtype=mean.dtype, device=mean.device)
            block = max(1, SAMPLE_BLOCK // (int(samples) * self.num_classes))
            parts = []
            for start in range(0, mean.shape[-1], block):
                f = mean[:, start:start + block] + std[:, start:start + block] * draws  # (S, C, b)
                parts.append(torch.logsumexp(torch.log_softmax(f, dim=1), dim=0) - math.log(samples))
            log_p = torch.cat(parts, dim=-1).T if parts else mean.new_zeros(0, self.num_classes)
        return log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)  # rows normalized (round-off)

    def predict_proba(self, x, samples: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class probabilities E[softmax(f)] at test inputs x (m, d): ``(m, C)``, rows summing to 1
        (Monte Carlo with ``samples`` draws; see ``predict_log_proba``)."""
        return self.predict_log_proba(x, samples, generator).exp()

    def predict_labels(self, x, samples: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
        """The most probable class at each test input (the argmax of ``predict_proba``), ``(m,)`` int64."""
        return self.predict_log_proba(x, samples, generator).argmax(-1)

    # ----- files ----------------------------------------------------------------------
    def config(self) -> dict:
        """The kernel, mean and solver (``flashgp.serialize``), num_classes and alpha_epsilon;
        the likelihood is derived from the labels (``train_labels``, in the state dict)."""
        return {"kernel": kernel_to_config(self.kernel), "mean": mean_to_config(self.mean),
                "solver": solver_to_config(self.solver), "num_classes": self.num_classes,
                "alpha_epsilon": self.alpha_epsilon}

    @classmethod
    def from_config(cls, config: dict, tensors: dict) -> DirichletGP:
        """A DirichletGP on tensors["train_x"] ``(C, n, d)`` (its first class's copy) and
        tensors["train_labels"] ``(n,)`` with the parts ``config`` describes."""
        classes, epsilon = config["num_classes"], config["alpha_epsilon"]
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise ConfigError(f"num_classes: expected an int >= 2, got {classes!r:.50}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
            raise ConfigError(f"alpha_epsilon: expected a number, got {epsilon!r:.50}")
        x, labels = tensors["train_x"], tensors.get("train_labels")
        if x.dim() != 3 or x.shape[0] != classes:
            raise ConfigError(f"train_x: expected shape ({classes}, n, d), got {tuple(x.shape)}")
        if labels is None:
            raise ConfigError("train_labels: missing from the tensors")
        return cls(x[0], labels, kernel_from_config(config["kernel"]), num_classes=classes,
                   alpha_epsilon=epsilon, solver=solver_from_config(config["solver"]),
                   mean=mean_from_config(config["mean"]))
