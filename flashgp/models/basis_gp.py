# BasisGP: a GP whose kernel is a finite feature map (a Hilbert-space approximation of stationary
# kernels, categorical and linear kernels, their sums and products), solved exactly at O(n P^2).
from __future__ import annotations

import time
import warnings

import torch

from ..initial_values import init_from_data
from ..kernels import Kernel
from ..likelihoods import Likelihood
from ..likelihoods import Gaussian
from ..linalg.basis import BasisTerms, basis_statistics, basis_terms, float64_features, float64_weights, statistic_terms
from ..linalg.inducing import block_rows
from ..means import Constant, Mean, Zero
from ..objectives import basis_mll
from ..operators import KernelOperator
from ..serialize import (kernel_from_config, kernel_to_config, likelihood_from_config, likelihood_to_config,
                         mean_from_config, mean_to_config, register_model)
from .base import Prior
from .finite import check_noise_values, parameters_finite
from .inducing_posterior import InducingPosterior
from .regression import RegressionModel
from .validation import check_test_inputs


# what fixes a kernel's basis B (not its hyperparameters): the data statistics are kept while it holds
BASIS_SETTINGS = ("center", "half_width", "num_basis", "num_levels", "kind")


def basis_signature(kernel: Kernel) -> tuple:
    """The settings that fix the basis B(x) of ``kernel``'s factored features: every module's
    columns (``active_dims``), HilbertSpace boxes and counts, Categorical levels and kinds."""
    parts = []
    for module in kernel.modules():
        if not isinstance(module, Kernel):  # e.g. the parametrizations log_space adds
            continue
        dims = module.active_dims
        parts.append((None if dims is None else tuple(dims.tolist()),
                      tuple(repr(getattr(module, name, None)) for name in BASIS_SETTINGS)))
    return tuple(parts)


def set_domains(kernel: Kernel, x: torch.Tensor) -> None:
    """Give every kernel in ``kernel`` that has a box to set (``HilbertSpace``) and none yet the
    box of the training inputs x ``(*batch, n, d)``."""
    for module in kernel.modules():
        if callable(getattr(module, "set_domain", None)) and not module.has_domain:
            module.set_domain(x)


def outside_domain(kernel: Kernel, x: torch.Tensor) -> str | None:
    """A description of the test inputs x that fall outside a HilbertSpace box of ``kernel``
    (where its basis functions vanish), or None."""
    for module in kernel.modules():
        if not callable(getattr(module, "set_domain", None)):
            continue
        cols = module.base.select_dims(x.detach()).double()
        center = torch.tensor(module.center, dtype=torch.float64, device=cols.device)
        half = torch.tensor(module.half_width, dtype=torch.float64, device=cols.device)
        outside = ((cols - center).abs() > half).any(-1)
        if bool(outside.any()):
            return (f"{int(outside.sum())} of {outside.numel()} test points lie outside the HilbertSpace box "
                    f"(centre {module.center}, half-width {module.half_width}), where the approximation's "
                    "variance falls to 0; rebuild the model with a larger boundary_factor")
    return None


class BasisPrediction(InducingPosterior):
    """Predictions of a finite-feature model: the weights' posterior N(A^{-1} g, A^{-1}) with
    A = I + F^T S^{-1} F = L_A L_A^T, so mean m(x*) + f(x*) A^{-1} g and covariance
    f(x*) A^{-1} f(x*)^T, written as the inducing predictor's k** - f P1 P1^T f^T + f P2 P2^T f^T with
    P1 = I (k** = f(x*) f(x*)^T for this kernel) and P2 = L_A^{-T}."""

    def __init__(self, model, snapshot, rows: int):
        self.snapshot = snapshot
        check_noise_values(model.train_noise().detach())
        terms, path = model.woodbury_terms(rows)
        chol = terms.chol
        p = chol.shape[-1]
        eye = torch.eye(p, dtype=torch.float64, device=chol.device).expand_as(chol)
        p2 = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)  # L_A^{-T}
        alpha = p2 @ terms.c.unsqueeze(-1)
        diagnostics = {"n": model.num_train, "path": "basis", "features": p, "basis_terms": path}
        super().__init__(model.kernel, model.mean, None, alpha, torch.cat([eye, p2], -1), model.dtype,
                         diagnostics, "basis")

    def cross(self, x: torch.Tensor) -> torch.Tensor:
        return float64_features(self.kernel, x)


@register_model("BasisGP")
class BasisGP(RegressionModel):
    """A GP regression model whose kernel has a finite feature map f (k(x, x') = f(x) . f(x'),
    P features): a Bayesian linear model in P weights, solved exactly in float64 at
    O(n P^2 + P^3) time and O(P^2 + block) memory, linear in n.

    Stationary kernels get a feature map through ``kernels.HilbertSpace`` (the Hilbert-space
    approximation of Solin and Sarkka 2020; its box is set here from the training inputs when
    not given); ``Categorical``, ``Linear`` and ``Scale`` kernels have one, and sums and products
    of such kernels too (sums concatenate features, products take their row-wise Kronecker
    products: P multiplies). The mixed covariance Scale(HilbertSpace(RBF(active_dims=[0, 1]), 16)
    * Categorical(4, active_dims=[2])) has 16^2 x 5 = 1,280 features.

    Args:
        x: training inputs (n, d), or (b, n, d) for a batch of b independent GPs; (n,) is (n, 1).
        y: training targets (n,) or (b, n).
        kernel: a ``flashgp.kernels.Kernel`` with ``has_features``.
        likelihood: ``Gaussian()`` (default) or ``FixedNoise(noise)``.
        mean: ``Constant()`` (default), ``Zero()`` or ``Linear(d)``.
        memory_budget: bytes for one block of the float64 features and their temporaries (default
            256 MiB on a CPU, 4 GiB on a GPU): the n x P features are taken in row blocks, each
            recomputed in the backward pass.

    ``mll()`` is the exact log marginal likelihood of this (approximate) model per point;
    ``loss() = -mll()``; deterministic (no probes), so L-BFGS may polish a fit. With a
    ``Gaussian`` likelihood, a constant or zero mean and features that factor as B(x) D
    (``Kernel.factored_features``: HilbertSpace, Categorical, Linear and their sums, products
    and scalings), the data enter through statistics computed once (B^T B, B^T y, ...; O(n R^2))
    and each evaluation costs O(R^2 P + P^3) whatever n; otherwise each one passes over the data
    in row blocks (``woodbury_terms``). Predictions are the exact posterior of the model; test
    points outside a HilbertSpace box warn. ``diagnostics`` after ``mll()``: path "basis",
    features (P), basis_terms ("statistics" or "blocks"), blocks (0 from statistics), seconds.
    """

    config_keys = frozenset({"kernel", "likelihood", "mean", "memory_budget"})

    def __init__(self, x, y, kernel: Kernel, likelihood: Likelihood | None = None, mean: Mean | None = None,
                 memory_budget: int | None = None):
        super().__init__(x, y, kernel, likelihood, mean)
        if not kernel.has_features:
            raise TypeError(f"kernel: BasisGP needs a kernel with a finite feature map, got {type(kernel).__name__} "
                            "(wrap RBF and Matern kernels in kernels.HilbertSpace(kernel, num_basis=...); "
                            "Categorical, Linear and Scale kernels and sums and products of such kernels have one)")
        if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                          or memory_budget <= 0):
            raise ValueError(f"memory_budget: expected None or a positive number of bytes, got {memory_budget!r}")
        self.memory_budget = memory_budget
        self._statistics = (None, None)
        set_domains(kernel, self._checked_data[0])
        self._take_data()
        init_from_data(self)

    @property
    def deterministic(self) -> bool:
        """Always True: the likelihood is exact (Woodbury, float64) and uses no random numbers."""
        return True

    @property
    def num_features(self) -> int:
        """P, the number of features of the kernel."""
        with torch.no_grad():
            return self.kernel.features(self.train_x[..., :1, :]).shape[-1]

    def _rows(self) -> int:
        batch = int(torch.Size(torch.broadcast_shapes(self.train_x.shape[:-2], self.kernel.batch_shape)).numel())
        return block_rows(self.num_features, batch, self.memory_budget, self.device)

    # ----- training -----------------------------------------------------------------
    def _data_changed(self) -> None:
        self._statistics = (None, None)

    def _statistics_apply(self) -> bool:
        """Whether the likelihood can be computed from data statistics: one learned noise variance
        (``Gaussian``), a constant (or zero) mean, training data without gradients."""
        return (isinstance(self.likelihood, Gaussian) and isinstance(self.mean, (Constant, Zero))
                and not self.train_x.requires_grad and not self.train_y.requires_grad)

    def _data_statistics(self, rows: int):
        """``linalg.basis.BasisStatistics`` of the training data, computed once per data and kernel
        structure (None where the features do not factor)."""
        key = (id(self.train_x), self.train_x._version, id(self.train_y), self.train_y._version,
               basis_signature(self.kernel))
        if self._statistics[0] != key:
            self._statistics = (key, basis_statistics(self.kernel, self.train_x, self.train_y, rows))
        return self._statistics[1]

    def woodbury_terms(self, rows: int) -> tuple[BasisTerms, str]:
        """(the Woodbury terms of the model at its current state, how they were computed): from data
        statistics ("statistics": O(R^2 P + P^3) per call once B^T B is known, ``linalg.basis``)
        where ``_statistics_apply()`` and the kernel's features factor, else over the data in row
        blocks ("blocks": O(n P^2) per call). Differentiable in the hyperparameters."""
        if self._statistics_apply():
            stats = self._data_statistics(rows)
            weights = None if stats is None else float64_weights(self.kernel, self.train_x[..., :1, :])
            if weights is not None:
                constant = getattr(self.mean, "constant", torch.zeros((), dtype=self.dtype, device=self.device))
                return statistic_terms(stats, weights, self.likelihood.noise, constant), "statistics"
        resid = self.train_y - self.mean(self.train_x)
        return basis_terms(self.kernel, resid, self.train_noise(), self.train_x, rows), "blocks"

    def mll(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The exact log marginal likelihood of the model per point ``(*batch,)``, differentiable
        in every hyperparameter (``objectives.basis_mll``). ``generator`` is accepted for the model
        interface and unused."""
        start = time.perf_counter()
        self._check_noise_count(self.num_train)
        if not parameters_finite(self):
            self._nonfinite(None)
        rows = self._rows()
        terms, path = self.woodbury_terms(rows)
        value = basis_mll(terms, self.num_train)
        if not bool(torch.isfinite(value).all()):
            self._nonfinite(None)
        self.diagnostics = {"n": self.num_train, "path": "basis", "features": terms.chol.shape[-1], "basis_terms": path,
                            "blocks": -(-self.num_train // rows) if path == "blocks" else 0,
                            "seconds": time.perf_counter() - start}
        return value.to(self.dtype)

    def loss(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """-mll(): the negative log marginal likelihood per point, ``(*batch,)``."""
        return -self.mll(generator)

    def prior(self, x) -> Prior:
        """The prior mean ``(*batch, m)`` and kernel operator ``(*batch, m, m)`` at inputs x (m, d) or
        ``(*batch, m, d)`` (the model's kernel: the approximation, where the kernel is one)."""
        x = check_test_inputs(x, self.train_x)
        return Prior(self.mean(x), KernelOperator(self.kernel, x))

    def posterior(self, x):
        """The latent posterior at test inputs x, as ``RegressionModel.posterior``; warns when test
        points fall outside a HilbertSpace box."""
        checked = check_test_inputs(x, self.train_x)
        problem = outside_domain(self.kernel, checked)
        if problem is not None:
            warnings.warn(f"x: {problem}", UserWarning, stacklevel=2)
        return super().posterior(x)

    # ----- files and checkpoints ------------------------------------------------------
    def config(self) -> dict:
        """The kernel (with any HilbertSpace box), likelihood and mean (``flashgp.serialize``)."""
        return {"kernel": kernel_to_config(self.kernel), "likelihood": likelihood_to_config(self.likelihood),
                "mean": mean_to_config(self.mean), "memory_budget": self.memory_budget}

    @classmethod
    def from_config(cls, config: dict, tensors: dict) -> BasisGP:
        """A BasisGP on tensors["train_x"], tensors["train_y"]."""
        return cls(tensors["train_x"], tensors["train_y"], kernel_from_config(config["kernel"]),
                   likelihood=likelihood_from_config(config["likelihood"]), mean=mean_from_config(config["mean"]),
                   memory_budget=config["memory_budget"])

    # ----- prediction ---------------------------------------------------------------
    def _new_prediction(self, snapshot) -> BasisPrediction:
        return BasisPrediction(self, snapshot, self._rows())
