# RegressionModel: what every Gaussian-noise regression model shares (ExactGP, SGPR): its
# training data, the parts' checks, the prediction cache's life cycle and the posterior's promises.
from __future__ import annotations

import math
import time

import torch

from ..distributions import Posterior
from ..kernels import Kernel
from ..likelihoods import FixedNoise, Gaussian, Likelihood
from ..means import Constant, Mean
from .base import GPModel
from .batched_inputs import posterior_per_test_set
from .conditioning import condition_on_observations
from .direct_prediction import direct_posterior
from .finite import FIX_PARAMETERS, NonFiniteError, check_kernel_values, diagnose, nonfinite_parameters
from .prediction import VARIANCE_KEYS
from .state import StateSnapshot
from .validation import check_batch_shapes, check_columns, check_test_batch, check_test_inputs, check_train_data


class RegressionModel(GPModel):
    """Base of GP regression models with a conjugate (Gaussian-noise) likelihood.

    It holds the training data (buffers ``train_x`` ``(*batch, n, d)``, ``train_y`` ``(*batch, n)``),
    the kernel, likelihood and mean (checked here), and a prediction cache: a subclass builds one
    in ``_new_prediction(snapshot)`` (an object with ``posterior(x)``, ``alpha`` ``(*batch, k, 1)``,
    ``diagnostics`` and ``snapshot``), and ``posterior`` reuses it while the model is unchanged
    (``models.state.StateSnapshot``) and ``_cache_key()`` (e.g. the active solver) is the same.
    ``_data_changed()`` is called when the training data is replaced.
    """

    #: whether ``condition_on_observations`` may append (x, y) rows to the training data (False
    #: where the targets are derived, e.g. DirichletGP's labels, or rows carry a task index)
    conditions_on_rows: bool = True

    def __init__(self, x, y, kernel: Kernel, likelihood: Likelihood | None, mean: Mean | None):
        super().__init__()
        x, y = check_train_data(x, y)
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel: expected a flashgp.kernels.Kernel, got {type(kernel).__name__}")
        likelihood = Gaussian() if likelihood is None else likelihood
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood: expected a flashgp likelihood, got {type(likelihood).__name__}")
        if not likelihood.conjugate:
            raise TypeError(f"likelihood: {type(self).__name__} needs a Gaussian-noise (conjugate) likelihood, "
                            f"Gaussian() or FixedNoise(noise); {type(likelihood).__name__} is not conjugate (its "
                            "posterior is not Gaussian; approximate models will take it)")
        mean = Constant() if mean is None else mean
        if not isinstance(mean, Mean):
            raise TypeError(f"mean: expected a flashgp mean, got {type(mean).__name__}")
        self.kernel, self.likelihood, self.mean = kernel, likelihood, mean
        self._checked_data = (x, y)

    def _take_data(self) -> None:
        """Cast the parts to the data's dtype and device and store the data the constructor
        checked (subclasses call it once their own modules exist)."""
        x, y = self._checked_data
        del self._checked_data
        self.to(dtype=x.dtype, device=x.device)
        self.set_train_data(x, y)

    def set_train_data(self, x, y) -> None:
        """Replace the training data: x (n, d), ``(*b, n, d)`` or (n,) (d = 1), y (n,) or ``(*b, n)``.

        New data is cast to the model's dtype (the dtype of the data it was built with) and must
        be on its device; its batch shape must broadcast with the kernel's, likelihood's and mean's.
        The model keeps its own copy of x and y (the cost: one copy of each, unless the cast
        already made one), so later edits of the caller's arrays never reach it; the kernel must
        stay finite at the inputs (k(x_i, x_i), else ``NonFiniteError`` naming the kernel and dtype).
        """
        x, y = check_train_data(x, y, like=getattr(self, "train_x", None))
        check_batch_shapes(x, {"kernel": self.kernel, "likelihood": self.likelihood, "mean": self.mean})
        check_columns(x, {"kernel": self.kernel.diag, "mean": self.mean})
        self._check_noise_count(x.shape[-2])
        check_kernel_values(self.kernel, x)
        self.register_buffer("train_x", x)
        self.register_buffer("train_y", y)
        self._prediction = None
        self._data_changed()

    def _data_changed(self) -> None:
        """Called after ``set_train_data``: drop solver state that belonged to the old data."""

    def train_noise(self) -> torch.Tensor:
        """The noise variances of the training points ``(*batch, n)`` that inference adds to K (the
        likelihood's ``noise_diag(n)``; a multitask model takes each point's task's noise)."""
        return self.likelihood.noise_diag(self.num_train)

    def _check_noise_count(self, n: int) -> None:
        """A FixedNoise likelihood must hold one variance per training point (it can be reassigned)."""
        if isinstance(self.likelihood, FixedNoise) and self.likelihood.noise.shape[-1] != n:
            raise ValueError(f"noise: the FixedNoise likelihood holds {self.likelihood.noise.shape[-1]} "
                             f"variances, expected one per training point ({n})")

    def train(self, mode: bool = True):
        """Training mode (``mode=True``) also drops the prediction cache, as GPyTorch's ``train()``
        does (predictions detect parameter changes themselves; this covers what they cannot see,
        see ``models.state``). ``eval()`` keeps it."""
        if mode:
            self._prediction = None
        return super().train(mode)

    def condition_on_observations(self, x, y, noise=None) -> RegressionModel:
        """This model given observations y at x, without refitting: a new model of this class on
        the union of the data with copies of the parts, whose prediction cache is carried over
        (an ExactGP's Cholesky factor extended in O(n^2 q), its CG mean solve warm-started; other
        caches are rebuilt when first used); see ``models.conditioning``.

        x: ``(q, d)`` or ``(*b, q, d)``; y: ``(q,)`` or ``(*s, *b, q)`` (s fantasies of b sets of
        points: the new model has batch shape (*s, *b)); noise: the new observations' variances,
        for (and only for) a FixedNoise likelihood. Its predictions equal those of
        the model rebuilt on all the data with the same parameters (to round-off, or to the CG
        tolerance)."""
        return condition_on_observations(self, x, y, noise)

    def _nonfinite(self, err: Exception | None, x: torch.Tensor | None = None) -> None:
        """Raise ``NonFiniteError`` with the diagnosed cause of a failed or non-finite solve (``err``:
        the engine's error, kept as the cause) when one is found (``finite.diagnose``)."""
        problem = diagnose(self, x)
        if problem is not None:
            raise NonFiniteError(problem) from err

    # ----- prediction ---------------------------------------------------------------
    def _cache_key(self):
        """What else a cached prediction depends on (compared with ``==``); None by default."""
        return None

    def _new_prediction(self, snapshot: StateSnapshot):
        """A prediction cache at the current state (see the class docstring)."""
        raise NotImplementedError

    def _prediction_cache(self):
        """The prediction cache at the current state, rebuilt when anything it was computed from
        changed (``models.state.StateSnapshot``) or ``_cache_key()`` differs."""
        key, cache = self._cache_key(), self._prediction
        if cache is None or cache.key != key or not cache.snapshot.matches(self):
            self._prediction = None
            self._check_noise_count(self.num_train)
            params = nonfinite_parameters(self)  # once per state: refused before any solve warns
            if params:
                raise NonFiniteError(f"non-finite parameters: {'; '.join(params)}. {FIX_PARAMETERS}")
            snapshot = StateSnapshot(self)
            try:
                cache = self._new_prediction(snapshot)
            except ValueError as err:  # NotPSDError, invalid noise, a preconditioner's checks
                self._nonfinite(err)
                raise
            cache.key = key
            self._prediction = cache
        return cache

    def _stale_guard(self, snapshot: StateSnapshot):
        """The guard of a posterior's lazy covariance: it raises once the model has left ``snapshot``."""
        def guard():
            if not snapshot.matches(self):
                raise ValueError("covariance: the model changed after this posterior was computed (its "
                                 "parameters, parts or training data were edited); its mean and variance "
                                 "are those of the earlier state, and the covariance cannot be evaluated "
                                 "consistently. Call model.posterior(x) again")
        return guard

    def _check_posterior(self, post: Posterior, x: torch.Tensor) -> None:
        """NonFiniteError (the cause diagnosed, else the numbers) unless the mean and the variances
        are finite; computes the variances (they are cached in ``post``)."""
        try:
            _ = post.variance  # computed and cached; Posterior refuses NaN or infinite variances
        except ValueError as err:
            self._nonfinite(err, x)
            raise NonFiniteError(f"posterior: {err} (at finite parameters and kernel values; diagnostics: "
                                 f"{self.diagnostics}); try float64 data or the Cholesky solver") from err
        # the sum is finite when every entry is (one reduction; an overflowing sum checks them all)
        mean = post.mean.detach()
        if not math.isfinite(float(mean.sum())) and not bool(torch.isfinite(mean).all()):
            self._nonfinite(None, x)
            raise NonFiniteError(f"posterior: the mean is not finite at {int((~torch.isfinite(post.mean)).sum())} "
                                 f"of {post.mean.numel()} test points, at finite parameters and kernel values "
                                 f"(diagnostics: {self.diagnostics}); try float64 data or the Cholesky solver")

    def _direct_posterior(self, cache, x: torch.Tensor, differentiable: bool) -> Posterior:
        """``direct_prediction.direct_posterior`` with the checks of its inputs: x's batch
        dimensions broadcast with the model's (extra leading ones are test sets)."""
        if not getattr(cache, "direct_ok", False):
            raise ValueError(f"x: {type(self).__name__}'s posterior with this solver is not differentiable in x "
                             "(CG local and certified variances are not: predict with "
                             "CG(local_neighbors=0, variance_tol=None) for gradients), or pass x without grad")
        batch = cache.alpha.shape[:-2]
        if any(b not in (1, t) for b, t in zip(reversed(x.shape[:-2]), reversed(batch))):
            raise ValueError(f"x: expected batch dimensions (*sets, *batch) whose last ones broadcast with "
                             f"the model's batch {tuple(batch)}, got shape {tuple(x.shape)}")
        for key in VARIANCE_KEYS:
            cache.diagnostics.pop(key, None)
        with torch.set_grad_enabled(differentiable):
            return direct_posterior(cache, x)

    def posterior(self, x) -> Posterior:
        """The latent posterior p(f(x*) | data) at test inputs x (m, d) or (b, m, d) (batch models:
        batch dimensions that broadcast with the model's).

        A model without batch dimensions also takes x ``(*b, m, d)``: b separate test sets, each
        predicted as on its own (mean ``(*b, m)``, covariance ``(*b, m, m)``, none between the sets).
        Returns a ``Posterior`` (mean, variance, covariance operator, sample, rsample,
        confidence_region). With x requiring grad (and grad mode on) it is differentiable in x
        (``models.direct_prediction``: the cached training solves held fixed, a backward pass
        costs products only); so are many test sets ``(*k, *batch, q, d)`` at once.

        What a posterior promises:

        * current: the cached solves are reused only while the model is unchanged (any change
          of a parameter, part or the training data is seen, ``models.state``); the mean and
          variances are computed now, and the lazy covariance raises ValueError if the model
          changes before it is used (call ``posterior`` again);
        * finite and non-negative: variances below 0 from round-off are clamped (counted in
          diagnostics["variance_clamped"]); a NaN or infinite mean or variance raises
          ``NonFiniteError`` naming the cause (a non-finite parameter, invalid FixedNoise
          variances, a kernel overflowing the dtype at the test or training inputs);
        * bounded memory: test points are taken in chunks, and a low-rank factor of the
          covariance too large to keep is recomputed in chunks when the covariance is used
          (``models.prediction``); dense covariances and samples are size-checked first.
        """
        x = check_test_inputs(x, self.train_x)
        start = time.perf_counter()
        with torch.no_grad():
            cache = self._prediction_cache()
        differentiable = torch.is_grad_enabled() and (x.requires_grad or getattr(cache, "data_grad", False))
        batch = cache.alpha.shape[:-2]
        test_sets = x.dim() - 2 > len(batch)  # batch dimensions the model lacks
        if differentiable or (test_sets and getattr(cache, "direct_matches", lambda m: False)(x.shape[-2])):
            post = self._direct_posterior(cache, x, differentiable)
        else:
            with torch.no_grad():
                if test_sets and not batch:  # test sets for a model without batches
                    post = posterior_per_test_set(cache.posterior, x)
                else:
                    check_test_batch(x, batch)
                    post = cache.posterior(x)
        self.diagnostics = {**cache.diagnostics}
        post.diagnostics = self.diagnostics
        with torch.set_grad_enabled(differentiable):
            self._check_posterior(post, x)
        post.covariance.guard = self._stale_guard(cache.snapshot)
        self.diagnostics["seconds"] = time.perf_counter() - start
        return post
