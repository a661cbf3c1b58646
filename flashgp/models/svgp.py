# SVGP: the stochastic variational GP (Hensman et al. 2013/2015) with any likelihood, trained on
# minibatches by fg.fit(model, data=..., batch_size=...); the data stay outside the model.
from __future__ import annotations

import time

import torch
from torch import nn

from ..distributions import Posterior
from ..inducing import INIT_METHODS, select_inducing
from ..initial_values import init_from_data
from ..kernels import Kernel
from ..likelihoods import FixedNoise, Gaussian, Likelihood
from ..linalg.inducing import float64_kernel
from ..means import Constant, Mean
from ..objectives import variational_elbo
from ..operators import KernelOperator
from ..serialize import (kernel_from_config, kernel_to_config, likelihood_from_config, likelihood_to_config,
                         mean_from_config, mean_to_config, register_model)
from ..variational import VARIATIONAL, marginals, unchecked_terms, variational_terms
from .base import GPModel, Prior
from .direct_prediction import direct_posterior
from .finite import FIX_PARAMETERS, NonFiniteError, nonfinite_parameters
from .inducing_posterior import InducingPosterior
from .state import StateSnapshot
from .svgp_data import check_batch, check_inducing_inputs, check_outputs
from .validation import check_test_inputs


GRAPH_JITTER = 1e-8  # K_zz's jitter (relative to its mean diagonal) on the unchecked path


@register_model("SVGP")
class SVGP(GPModel):
    """Stochastic variational GP: M inducing inputs Z, a Gaussian q(u) over the latent values at
    Z, and the evidence lower bound

        ELBO = sum_i E_q(f_i)[log p(y_i | f_i)] - KL(q(u) || p(u)),

    estimated without bias from minibatches (the data term scaled by n / b). Any flashgp
    likelihood: ``Gaussian`` (regression; the ELBO equals SGPR's bound at the optimal q),
    ``StudentT`` (robust), ``Poisson`` (counts), ``Bernoulli`` (binary classification),
    ``Softmax`` (C classes, C latent functions). Like GPyTorch's ``VariationalStrategy`` with
    ``VariationalELBO`` and GPflow's ``SVGP``.

    Args:
        kernel: a ``flashgp.kernels.Kernel``; with several latent functions (``num_outputs``) it
            is shared, or has ``batch_shape`` (num_outputs,) for one per latent.
        inducing: the inducing inputs Z ``(M, d)`` (shared by the latents) or ``(num_outputs, M, d)``;
            or a number M, chosen from ``x`` by ``init``.
        likelihood: default ``Gaussian()``.
        mean: default ``Constant()`` (one constant per latent when there are several).
        num_outputs: latent functions (default: the likelihood's ``num_latents``, C for
            ``Softmax(C)``, else 1). With an elementwise likelihood and num_outputs > 1, the
            outputs are independent and targets have shape (n, num_outputs).
        whiten: q over v = L^{-1} u with K_zz = L L^T (default; better conditioned) or over u.
        variational: "cholesky" (full S, default), "meanfield" (diagonal S) or "natural" (full
            S in natural parameters, for natural-gradient steps: ``fg.fit(..., natural_lr=...)``).
        learn_inducing: train Z (default True).
        jitter: added to K_zz's diagonal, relative to its mean (None: only when it does not factor).
        x, y: training data (or a sample of it) used at construction only: to choose M inducing
            inputs and the initial hyperparameters (``fg.init_from_data``; y only with a Gaussian
            likelihood). The model does not keep them.
        num_data: n, the number of training points the ELBO is scaled to; None: set by
            ``fg.fit`` from its data.
        init: "kmeans++" (default) or "rpcholesky", how M inducing inputs are chosen from x.
        seed: seeds that choice.

    ``loss(batch=(x, y))`` is -ELBO / n estimated on the batch (x ``(b, d)``, y ``(b,)`` or
    ``(b, num_outputs)``); ``fg.fit(model, data=(x, y) or a DataLoader, batch_size=...)`` trains it
    (the data may stay in CPU memory; batches are moved to the model's device). ``posterior(x)``
    gives q(f*) (``(num_outputs, t)`` with several latents); ``predict(x)`` adds the Gaussian noise,
    or gives the likelihood's predictive moments (``PredictiveMoments``: for ``Bernoulli`` and
    ``Softmax`` the class probabilities as the mean); ``predict_proba(x)`` class probabilities.
    M x M algebra is float64; per-point work is in the model's dtype (``variational.terms``).
    """

    config_keys = frozenset({"kernel", "likelihood", "mean", "num_inducing", "input_dims", "num_outputs",
                             "whiten", "variational", "learn_inducing", "jitter", "num_data"})
    data_buffers = ()
    trains_on_batches = True

    def __init__(self, kernel: Kernel, inducing, likelihood: Likelihood | None = None, mean: Mean | None = None,
                 *, num_outputs: int | None = None, whiten: bool = True, variational: str = "cholesky",
                 learn_inducing: bool = True, jitter: float | None = None, x=None, y=None,
                 num_data: int | None = None, init: str = "kmeans++", seed: int = 0):
        super().__init__()
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel: expected a flashgp.kernels.Kernel, got {type(kernel).__name__}")
        likelihood = Gaussian() if likelihood is None else likelihood
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood: expected a flashgp likelihood, got {type(likelihood).__name__}")
        if isinstance(likelihood, FixedNoise):
            raise TypeError("likelihood: FixedNoise holds one variance per training point, which minibatches "
                            "cannot index; SVGP takes Gaussian() or a non-Gaussian likelihood")
        if variational not in VARIATIONAL:
            raise ValueError(f"variational: expected one of {tuple(VARIATIONAL)}, got {variational!r}")
        for name, value in (("whiten", whiten), ("learn_inducing", learn_inducing)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: expected True or False, got {value!r}")
        if init not in INIT_METHODS:
            raise ValueError(f"init: expected one of {INIT_METHODS}, got {init!r}")
        if jitter is not None and (isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not jitter > 0):
            raise ValueError(f"jitter: expected None or a positive number (relative to K_zz's mean diagonal), got {jitter!r}")
        self.num_outputs = check_outputs(num_outputs, likelihood)
        self.num_data = None if num_data is None else self._check_num_data(num_data)
        self.whiten, self.learn_inducing, self.jitter = whiten, learn_inducing, jitter
        batch = (self.num_outputs,) if self.num_outputs > 1 else ()
        mean = Constant(batch_shape=batch) if mean is None else mean
        if not isinstance(mean, Mean):
            raise TypeError(f"mean: expected a flashgp mean, got {type(mean).__name__}")
        self.kernel, self.likelihood, self.mean = kernel, likelihood, mean
        z, count, data, like = check_inducing_inputs(inducing, x, y, self.num_outputs)
        self.to(dtype=like.dtype, device=like.device)
        if data is not None:
            x, y = data
            init_from_data(self, data=(x, y if likelihood.conjugate else None))
            if count is not None:
                with torch.no_grad():
                    z = select_inducing(x, min(count, x.shape[-2]), init, self.kernel, seed)
        self._set_inducing(z)
        self.variational = VARIATIONAL[variational](z.shape[-2], batch).to(dtype=z.dtype, device=z.device)
        if not whiten:  # start at the prior, q(u) = p(u)
            with torch.no_grad():
                kzz = float64_kernel(self.kernel, z)
                self.variational.initialize(torch.zeros(kzz.shape[:-1], dtype=torch.float64, device=z.device), kzz)
        self._prediction = None

    def _set_inducing(self, z: torch.Tensor) -> None:
        z = z.detach().clone()
        if self.learn_inducing:
            self.inducing_points = nn.Parameter(z)
        else:
            self.register_buffer("inducing_points", z)

    @staticmethod
    def _check_num_data(num_data) -> int:
        if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
            raise ValueError(f"num_data: expected a positive int (the number of training points), got {num_data!r}")
        return num_data

    # ----- GPModel ------------------------------------------------------------------------------
    @property
    def num_train(self) -> int:
        """n, the number of training points (``num_data``; 0 before the first fit)."""
        return self.num_data or 0

    @property
    def dtype(self) -> torch.dtype:
        return self.inducing_points.dtype

    @property
    def device(self) -> torch.device:
        return self.inducing_points.device

    @property
    def input_dims(self) -> int:
        return self.inducing_points.shape[-1]

    @property
    def num_classes(self) -> int | None:
        """Classes of a classification likelihood (2 for ``Bernoulli``, C for ``Softmax(C)``), else None."""
        return getattr(self.likelihood, "num_classes", None)

    def prior(self, x) -> Prior:
        x = check_test_inputs(x, self.inducing_points)
        return Prior(self.mean(x), KernelOperator(self.kernel, x))

    def terms(self):
        """The ``VariationalTerms`` of the current q(u), Z and kernel (differentiable)."""
        return variational_terms(self.kernel, self.inducing_points, self.variational, self.whiten, self.jitter)

    def elbo(self, x, y, num_data: int | None = None) -> torch.Tensor:
        """The ELBO per training point estimated on the batch x ``(b, d)``, y: the data term's mean
        over the batch minus KL / n (n: ``num_data``, else the model's); a scalar, differentiable.
        Unbiased for the full-data ELBO / n when the batch is drawn uniformly."""
        n = self._check_num_data(num_data) if num_data is not None else self.num_data
        if n is None:
            raise ValueError("num_data: the model does not know n yet; pass num_data or train with fg.fit")
        x, y = check_batch(x, y, self)
        start = time.perf_counter()
        terms = self.terms()
        mu, var = marginals(self.kernel, self.mean, self.inducing_points, terms, x)
        value = variational_elbo(self.likelihood, y, mu, var, terms.kl, n)
        # no KL value here: reading it back would stall the GPU in the middle of every step
        self.diagnostics = {"path": "svgp", "inducing": self.inducing_points.shape[-2], "batch": x.shape[-2],
                            "jitter": terms.jitter, "seconds": time.perf_counter() - start}
        return value

    @property
    def graph_capturable(self) -> bool:
        """Whether ``unchecked_loss`` serves replays from a CUDA graph (``fg.fit`` on CUDA): not for
        natural parameters, whose moments check positive definiteness on the host."""
        return self.variational.kind != "natural"

    def unchecked_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss(batch=(x, y))`` without reading anything back from the device, for replays from
        a CUDA graph (``flashgp.graph_step``): x ``(b, d)`` and y as ``loss`` takes them are taken as
        valid (``fg.fit`` checks the whole data once), K_zz always gets ``jitter`` (default
        ``GRAPH_JITTER``) of its mean diagonal, and the per-point work is float64 (the
        cross-covariance's precision check of float32 distances reads a value back). Returns (loss,
        info): the scalar loss and ``torch.linalg.cholesky_ex``'s info, nonzero when K_zz did not
        factor (the loss is then not usable)."""
        terms, info = unchecked_terms(self.kernel, self.inducing_points, self.variational, self.whiten,
                                      GRAPH_JITTER if self.jitter is None else self.jitter)
        if self.num_outputs > 1 and self.likelihood.num_latents == 1:
            y = y.transpose(0, 1)  # (b, C) -> (C, b), as the latents
        x = x.unsqueeze(-1) if x.dim() == 1 else x
        mu, var = marginals(self.kernel, self.mean, self.inducing_points, terms, x.double())
        ell = self.likelihood._expected_log_prob(y.to(mu.dtype), mu, var, self.likelihood.points)
        return -(ell.sum() / ell.shape[-1] - terms.kl.sum() / self.num_data), info

    def check_data(self, x, y, rows: int = 65536) -> None:
        """Check training data (x, y) as every batch of ``loss`` would be checked (shapes, finite
        values, targets the likelihood takes), ``rows`` at a time on the model's device; for
        steps that skip the per-batch checks (``unchecked_loss``)."""
        n = len(x)
        for start in range(0, n, rows):
            self._check_rows(x[start:start + rows], y[start:start + rows])

    @torch.no_grad()
    def _check_rows(self, x, y) -> None:
        xb, yb = check_batch(x, y, self)
        latents = (self.num_outputs, xb.shape[0]) if self.num_outputs > 1 else (xb.shape[0],)
        zeros = torch.zeros(latents, dtype=xb.dtype, device=xb.device)
        self.likelihood.expected_log_prob(yb, zeros, zeros + 1)  # refuses targets it cannot take

    def loss(self, generator: torch.Generator | None = None, batch=None) -> torch.Tensor:
        """-ELBO per training point on ``batch`` = (x, y) (``elbo``); ``generator`` is unused."""
        if batch is None:
            raise ValueError("batch: an SVGP keeps no training data; train it with fg.fit(model, data=(x, y), "
                             "batch_size=...) or pass batch=(x, y)")
        x, y = batch
        return -self.elbo(x, y)

    def posterior(self, x) -> Posterior:
        """q(f*) at test inputs x ``(t, d)``: mean and variance ``(t,)``, or ``(num_outputs, t)``
        with several latents, and the covariance operator. Differentiable in x when x requires
        grad (``models.direct_prediction``: q(u)'s terms held fixed)."""
        x = check_test_inputs(x, self.inducing_points)
        start = time.perf_counter()
        differentiable = torch.is_grad_enabled() and x.requires_grad
        with torch.no_grad():
            cache = self._cache()
        with torch.set_grad_enabled(differentiable):
            post = direct_posterior(cache, x) if differentiable else cache.posterior(x)
            _ = post.variance
        self.diagnostics = {**post.diagnostics, "seconds": time.perf_counter() - start}
        return post

    def _cache(self) -> InducingPosterior:
        cache = self._prediction
        if cache is None or not cache.snapshot.matches(self):
            params = nonfinite_parameters(self)
            if params:
                raise NonFiniteError(f"non-finite parameters: {'; '.join(params)}. {FIX_PARAMETERS}")
            snapshot = StateSnapshot(self)
            terms = self.terms()
            z = self.inducing_points.detach()
            cache = InducingPosterior(self.kernel, self.mean, z, terms.alpha, terms.proj, self.dtype,
                                      {"path": "svgp", "inducing": z.shape[-2], "jitter": terms.jitter}, "svgp")
            cache.snapshot = snapshot
            self._prediction = cache
        return cache

    def train(self, mode: bool = True):
        if mode:
            self._prediction = None
        return super().train(mode)

    def predict(self, x, noise=None):
        """Observations y* at x: with a Gaussian-noise likelihood the posterior plus the noise (a
        ``Posterior``); otherwise the likelihood's predictive moments (``PredictiveMoments``:
        mean and variance of y*, ``(t,)`` or ``(C, t)``)."""
        if self.likelihood.conjugate:
            return super().predict(x, noise)
        post = self.posterior(x)
        with torch.no_grad():
            return self.likelihood.predictive(post.mean, post.latent_variance)

    def predict_proba(self, x) -> torch.Tensor:
        """Class probabilities ``(t, C)`` at x ``(t, d)``: for ``Bernoulli`` C = 2 (P(y = 0), P(y = 1));
        for ``Softmax`` its C classes. Other likelihoods: TypeError."""
        post = self.posterior(x)
        probability = getattr(self.likelihood, "probabilities", None) or getattr(self.likelihood, "probability", None)
        if probability is None:
            raise TypeError(f"predict_proba: {type(self.likelihood).__name__} is not a classification likelihood")
        with torch.no_grad():
            p = probability(post.mean, post.latent_variance)
        if p.dim() == post.mean.dim() and self.likelihood.num_latents == 1:  # Bernoulli: P(y = 1)
            return torch.stack([1 - p, p], -1)
        return p.transpose(-1, -2)

    def predict_log_proba(self, x, samples=None, generator=None) -> torch.Tensor:
        """log ``predict_proba(x)`` ``(t, C)`` (``samples`` and ``generator`` are accepted for the
        classifiers' common signature and unused: the likelihood fixes its own quadrature or draws)."""
        return self.predict_proba(x).clamp_min(torch.finfo(self.dtype).tiny).log()

    # ----- files --------------------------------------------------------------------------------
    def config(self) -> dict:
        return {"kernel": kernel_to_config(self.kernel), "likelihood": likelihood_to_config(self.likelihood),
                "mean": mean_to_config(self.mean), "num_inducing": self.inducing_points.shape[-2],
                "input_dims": self.input_dims, "num_outputs": self.num_outputs, "whiten": self.whiten,
                "variational": self.variational.kind, "learn_inducing": self.learn_inducing,
                "jitter": self.jitter, "num_data": self.num_data}

    @classmethod
    def from_config(cls, config: dict, tensors: dict) -> SVGP:
        z = tensors.get("inducing_points")
        if not isinstance(z, torch.Tensor) or z.dim() < 2:
            raise ValueError("tensors: expected inducing_points (M, d)")
        model = cls(kernel_from_config(config["kernel"]), torch.zeros_like(z),
                    likelihood=likelihood_from_config(config["likelihood"]), mean=mean_from_config(config["mean"]),
                    num_outputs=config["num_outputs"], variational=config["variational"],
                    learn_inducing=config["learn_inducing"], jitter=config["jitter"], num_data=config["num_data"])
        if not isinstance(config["whiten"], bool):
            raise ValueError(f"whiten: expected true or false, got {config['whiten']!r:.50}")
        model.whiten = config["whiten"]  # q comes with the tensors: no prior initialization needed
        return model
