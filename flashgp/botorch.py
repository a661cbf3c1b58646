# A BoTorch Model on flashgp's exact GP: acquisition functions, optimize_acqf and fantasies run on
# fg.ExactGP's posterior, with BoTorch's input and outcome transforms around it.
"""``FlashGPModel``: a BoTorch ``Model`` whose posterior is flashgp's exact GP.

Needs BoTorch (``pip install flashgp[botorch]``). The model takes what ``SingleTaskGP`` takes
(``train_X`` ``(*b, n, d)``, ``train_Y`` ``(*b, n, m)``, optional ``train_Yvar``, an input and an
outcome transform) and has the same defaults: an RBF kernel with one lengthscale per input column
(no output scale) under BoTorch's dimension-scaled LogNormal lengthscale prior, a Gaussian
likelihood with a LogNormal(-4, 1) noise prior and a noise floor of 1e-4 (``FixedNoise`` when
``train_Yvar`` is given), a constant mean, and ``Standardize`` on the outcomes; m > 1 outputs
are independent GPs, one batch element of the ExactGP each, as in SingleTaskGP. Its posteriors
are ``GPyTorchPosterior`` objects, so every BoTorch acquisition function takes it. Fit it with
``fg.fit(model, ...)`` (which fits ``model.flashgp_model``); save the GP with
``fg.save(model.flashgp_model, path)``.
"""
from __future__ import annotations

import copy

import torch

try:
    from botorch.models.model import FantasizeMixin, Model
    from botorch.models.transforms.outcome import Standardize
    from botorch.models.utils.assorted import validate_input_scaling
    from botorch.posteriors.gpytorch import GPyTorchPosterior
    from botorch.utils.types import DEFAULT
    from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
except ImportError as err:  # pragma: no cover - exercised only without BoTorch
    raise ImportError("flashgp.botorch needs BoTorch and GPyTorch: pip install flashgp[botorch]") from err

from .kernels import RBF, Kernel
from .likelihoods import FixedNoise, Gaussian, Likelihood
from .means import Constant, Mean
from .models import ExactGP
from .priors import botorch_defaults
from .solvers import Auto

__all__ = ["FlashGPModel", "lengthscale_prior_mode"]

#: the default solver's largest Cholesky problem by device type (``fg.Auto(max_cholesky_n=...)``):
#: a float64 K_hat of 20,000 points is 3.2 GB, factored in well under a second on a data-centre GPU
CHOLESKY_MAX_N = {"cuda": 20_000, "cpu": 4_000}


def lengthscale_prior_mode(d: int) -> float:
    """The mode of BoTorch's lengthscale prior for d inputs (``fg.priors.botorch_defaults(d)``,
    log(lengthscale) ~ N(sqrt(2) + log(d) / 2, 3)): exp(sqrt(2) + log(d) / 2 - 3), the default
    kernel's initial lengthscale (0.29 for d = 2, 0.50 for d = 6)."""
    return float(botorch_defaults(d)["lengthscale"].mode)


def _check_tensor(value, name: str, min_dim: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(f"{name}: expected at least {min_dim} dimensions, got shape {tuple(value.shape)}")
    return value


def _check_data(train_X, train_Y, train_Yvar) -> None:
    """train_X ``(*b, n, d)``, train_Y ``(*b, n, m)`` with the same batch and n, train_Yvar like train_Y."""
    _check_tensor(train_X, "train_X", 2)
    _check_tensor(train_Y, "train_Y", 2)
    if train_Y.shape[:-1] != train_X.shape[:-1]:
        raise ValueError(f"train_Y: expected shape {(*train_X.shape[:-1], 1)} (an explicit output "
                         f"dimension, as BoTorch models take), got {tuple(train_Y.shape)} for train_X "
                         f"{tuple(train_X.shape)}")
    if train_Y.dtype != train_X.dtype:
        raise TypeError(f"train_Y: expected the dtype of train_X ({train_X.dtype}), got {train_Y.dtype}")
    if train_Y.shape[-1] < 1:
        raise ValueError(f"train_Y: expected at least one output column, got shape {tuple(train_Y.shape)}")
    if train_Yvar is not None:
        _check_tensor(train_Yvar, "train_Yvar", 2)
        if train_Yvar.shape != train_Y.shape:
            raise ValueError(f"train_Yvar: expected the shape of train_Y {tuple(train_Y.shape)}, "
                             f"got {tuple(train_Yvar.shape)}")


class FlashGPModel(Model, FantasizeMixin):
    """A BoTorch model on ``fg.ExactGP``, with SingleTaskGP's defaults.

    Args:
        train_X: training inputs ``(*b, n, d)`` (float64 recommended, as for BoTorch).
        train_Y: training outcomes ``(*b, n, m)``. With m > 1 the outputs are independent GPs
            with their own hyperparameters: the ExactGP has batch shape ``(*b, m)`` (its inputs
            ``(*b, m, n, d)``, targets ``(*b, m, n)``), as SingleTaskGP batches its outputs.
        train_Yvar: observed noise variances ``(*b, n, m)`` (a ``FixedNoise`` likelihood), or
            None (a learned Gaussian noise).
        kernel: a flashgp kernel on the transformed inputs. Default: ``RBF(ard_dims=d)`` (batch
            shape ``(*b, m)``, or b for m = 1) with BoTorch's lengthscale prior
            log(lengthscale) ~ N(sqrt(2) + log(d)/2, 3), starting at its mode
            (``fg.priors.botorch_defaults``; ``fg.fit`` then fits MAP).
        likelihood: a flashgp Gaussian-noise likelihood. Default: ``Gaussian`` with noise floor
            1e-4 starting at the mode of the LogNormal(-4, 1) noise prior (and that prior), or
            ``FixedNoise`` of the transformed ``train_Yvar``.
        mean: a flashgp mean. Default: ``Constant(0)``.
        solver: the ExactGP's solver. Default: ``fg.Auto`` with Cholesky up to
            ``CHOLESKY_MAX_N`` points (20,000 on CUDA, 4,000 on a CPU; CG beyond): acquisition
            functions ask for many variances per step, which a Cholesky factor gives by two
            triangular solves where CG needs a certified solve per point.
        input_transform: a BoTorch ``InputTransform`` (e.g. ``Normalize(d)``), applied to the
            training inputs here (its coefficients are learned from them) and to test inputs in
            ``posterior``; its own parameters are not trained by ``fg.fit``.
        outcome_transform: a BoTorch ``OutcomeTransform``; default ``Standardize(m)``, None
            for none. The GP is fitted to the transformed outcomes; posteriors are untransformed.

    ``flashgp_model`` is the underlying ``fg.ExactGP`` (on the transformed data): ``fg.fit(model)``
    fits it (a MAP fit with the default priors) and ``fg.save(model.flashgp_model, path)`` saves it.
    Posteriors are joint Gaussians over the q points of each test set, differentiable in X when
    flashgp's posterior is.
    """

    def __init__(self, train_X: torch.Tensor, train_Y: torch.Tensor, train_Yvar: torch.Tensor | None = None,
                 kernel: Kernel | None = None, likelihood: Likelihood | None = None, mean: Mean | None = None,
                 solver=None, input_transform=None, outcome_transform=DEFAULT):
        super().__init__()
        _check_data(train_X, train_Y, train_Yvar)
        if likelihood is not None and train_Yvar is not None:
            raise ValueError("likelihood: pass either train_Yvar (a FixedNoise likelihood) or a likelihood, not both")
        batch, outputs = train_X.shape[:-2], train_Y.shape[-1]
        self._num_outputs = outputs
        if outcome_transform is DEFAULT:
            outcome_transform = Standardize(m=outputs, batch_shape=batch)
        with torch.no_grad():
            transformed_X = self.transform_inputs(train_X, input_transform)  # learns e.g. Normalize's bounds
            if input_transform is not None:
                transformed_X = input_transform.preprocess_transform(train_X)
        if outcome_transform is not None:
            outcome_transform.train()
            train_Y, train_Yvar = outcome_transform(Y=train_Y, Yvar=train_Yvar, X=transformed_X)
        validate_input_scaling(train_X=transformed_X, train_Y=train_Y, train_Yvar=train_Yvar,
                               check_nans_only=kernel is not None)
        d = transformed_X.shape[-1]
        batch = batch if outputs == 1 else torch.Size([*batch, outputs])  # the ExactGP's
        defaults = botorch_defaults(d)
        default_kernel, default_likelihood = kernel is None, likelihood is None and train_Yvar is None
        if default_kernel:
            kernel = RBF(ard_dims=d, lengthscale=float(defaults["lengthscale"].mode), batch_shape=batch)
            kernel.set_prior("lengthscale", defaults["lengthscale"])
        if train_Yvar is not None:
            likelihood = FixedNoise(self._targets(train_Yvar))
        elif default_likelihood:
            likelihood = Gaussian(noise=float(defaults["noise"].mode), noise_floor=defaults["noise_floor"],
                                  batch_shape=batch)
            likelihood.set_prior("noise", defaults["noise"])
        if mean is None:
            mean = Constant(0.0, batch_shape=batch)
        if solver is None:
            solver = Auto(max_cholesky_n=CHOLESKY_MAX_N.get(train_X.device.type, CHOLESKY_MAX_N["cpu"]))
        self.flashgp_model = ExactGP(self._inputs(transformed_X), self._targets(train_Y), kernel,
                                     likelihood=likelihood, mean=mean, solver=solver)
        if input_transform is not None:
            self.input_transform = input_transform
            self._original_train_inputs = train_X.detach()
            self._has_transformed_inputs = True
        if outcome_transform is not None:
            self.outcome_transform = outcome_transform
        self.to(device=train_X.device, dtype=train_X.dtype)

    # ----- BoTorch's layout and the ExactGP's ----------------------------------------------
    def _inputs(self, X: torch.Tensor) -> torch.Tensor:
        """Transformed inputs ``(*b, q, d)`` for the ExactGP: ``(*b, m, q, d)`` when m > 1."""
        m = self._num_outputs
        return X if m == 1 else X.unsqueeze(-3).expand(*X.shape[:-2], m, *X.shape[-2:])

    def _targets(self, Y: torch.Tensor) -> torch.Tensor:
        """Outcomes (or their variances) ``(..., q, m)`` as the ExactGP's ``(..., q)`` or ``(..., m, q)``."""
        return Y.squeeze(-1) if self._num_outputs == 1 else Y.transpose(-1, -2)

    # ----- what BoTorch asks of a model -----------------------------------------------------
    @property
    def num_outputs(self) -> int:
        """The number of outputs m."""
        return self._num_outputs

    @property
    def batch_shape(self) -> torch.Size:
        """The model's batch shape: that of its training data (``(*s, *b)`` for a fantasy model),
        without the outputs' dimension."""
        gp = self.flashgp_model
        shape = torch.broadcast_shapes(gp.train_x.shape[:-2], gp.train_y.shape[:-1])
        return shape if self._num_outputs == 1 else shape[:-1]

    @property
    def likelihood(self) -> Likelihood:
        """The flashgp likelihood of the underlying ExactGP."""
        return self.flashgp_model.likelihood

    @property
    def train_inputs(self) -> tuple[torch.Tensor]:
        """(the transformed training inputs ``(*batch, n, d)``,), as a GPyTorch model in eval mode holds them."""
        return (self.flashgp_model.train_x,)

    @property
    def train_targets(self) -> torch.Tensor:
        """The outcome-transformed training targets ``(*batch, n)``."""
        return self.flashgp_model.train_y

    def _set_transformed_inputs(self) -> None:
        """On ``eval()``: after ``train()``, the training inputs are transformed again (the
        transform may have changed meanwhile); the ExactGP's data are replaced only if they differ."""
        if getattr(self, "input_transform", None) is None or self._has_transformed_inputs:
            return
        with torch.no_grad():
            transformed = self.input_transform.preprocess_transform(self._original_train_inputs)
        gp = self.flashgp_model
        transformed = self._inputs(transformed)
        if transformed.shape != gp.train_x.shape and transformed.dim() <= gp.train_x.dim():
            try:  # a fantasy model's batch of data sets shares its original inputs
                transformed = transformed.expand(gp.train_x.shape)
            except RuntimeError:
                pass
        if transformed.shape != gp.train_x.shape or not torch.equal(transformed, gp.train_x):
            gp.set_train_data(transformed, gp.train_y)
        self._has_transformed_inputs = True

    def _revert_to_original_inputs(self) -> None:
        """On ``train()``: flashgp trains on the transformed inputs it holds, so only the flag
        changes (``eval()`` then transforms them again)."""
        if getattr(self, "input_transform", None) is not None:
            self._has_transformed_inputs = False

    # ----- posterior ------------------------------------------------------------------------
    def _latent(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean ``(*batch, q)``, dense covariance ``(*batch, q, q)``) of f at transformed inputs
        X ``(*t, q, d)``, batch = broadcast(t, model batch) (test batch dimensions beyond the
        model's are separate test sets; with m > 1 outputs batch ends in m); differentiable in X."""
        post = self.flashgp_model.posterior(X if self._num_outputs == 1 else X.unsqueeze(-3))
        return post.mean, post.covariance.to_dense()

    def _noise(self, observation_noise, mean: torch.Tensor) -> torch.Tensor | None:
        """The observation noise variances to add, shaped like ``mean`` (``(*batch, q)``, or
        ``(*batch, m, q)`` for m > 1 outputs), or None."""
        if observation_noise is False or observation_noise is None:
            return None
        if isinstance(observation_noise, torch.Tensor):  # (*t, q, m), as BoTorch passes it
            noise = observation_noise.to(mean)
            if self._num_outputs > 1:
                noise = noise.transpose(-1, -2) if noise.dim() >= 2 else noise
            elif noise.dim() >= 2 and noise.shape[-1] == 1:
                noise = noise.squeeze(-1)
            try:
                return noise.expand(mean.shape)
            except RuntimeError:
                raise ValueError(f"observation_noise: expected variances of shape (..., q, {self._num_outputs}) "
                                 f"broadcastable to the test sets', got {tuple(observation_noise.shape)}") from None
        if observation_noise is not True:
            raise TypeError(f"observation_noise: expected True, False or a tensor, got {observation_noise!r}")
        likelihood = self.likelihood
        if isinstance(likelihood, FixedNoise):  # as BoTorch does: the mean training noise
            noise = likelihood.noise.mean(-1, keepdim=True)
        else:
            noise = likelihood.noise_diag(1)
        return noise.to(mean).expand(mean.shape)

    def _output_indices(self, output_indices) -> list[int] | None:
        """``output_indices`` as a list of ints in range(m), or None for all outputs in order."""
        if output_indices is None:
            return None
        m = self._num_outputs
        indices = list(output_indices)
        if not indices or not all(isinstance(i, int) and -m <= i < m for i in indices):
            raise ValueError(f"output_indices: expected a non-empty list of ints in range({m}) (the model's "
                             f"outputs), got {output_indices!r}")
        indices = [i % m for i in indices]
        return None if indices == list(range(m)) else indices

    def posterior(self, X: torch.Tensor, output_indices: list[int] | None = None,
                  observation_noise: bool | torch.Tensor = False, posterior_transform=None,
                  **kwargs) -> GPyTorchPosterior:
        """The posterior at X ``(*t, q, d)`` (untransformed inputs), in the outcomes' original
        units: a ``GPyTorchPosterior`` over a ``MultivariateNormal`` with mean ``(*batch, q)`` and
        a dense covariance ``(*batch, q, q)`` (batch = broadcast(t, ``batch_shape``); test sets are
        independent of one another); for m > 1 outputs a ``MultitaskMultivariateNormal`` of the
        independent outputs (mean ``(*batch, q, m)``; one output picked by ``output_indices``: a
        ``MultivariateNormal``).

        observation_noise: False (the latent f), True (plus the likelihood's noise; for
        ``FixedNoise`` the mean training noise) or a tensor ``(*t, q, m)`` of noise variances in
        the outcome-transformed space. posterior_transform: applied last (e.g.
        ``ScalarizedPosteriorTransform``). output_indices: the outputs to return (default all;
        the outcome transform is subset to them, ``subset_output``).
        """
        indices = self._output_indices(output_indices)
        _check_tensor(X, "X", 2)
        self.eval()
        X = self.transform_inputs(X)
        mean, cov = self._latent(X)
        noise = self._noise(observation_noise, mean)
        if noise is not None:
            cov = cov + torch.diag_embed(noise)
        if self._num_outputs == 1:
            distribution = MultivariateNormal(mean, cov)
        else:
            picked = range(self._num_outputs) if indices is None else indices
            parts = [MultivariateNormal(mean[..., i, :], cov[..., i, :, :]) for i in picked]
            distribution = parts[0] if len(parts) == 1 else MultitaskMultivariateNormal.from_independent_mvns(parts)
        posterior = GPyTorchPosterior(distribution)
        transform = getattr(self, "outcome_transform", None)
        if transform is not None:
            if indices is not None:
                transform = transform.subset_output(indices)
            posterior = transform.untransform_posterior(posterior, X=X)
        if posterior_transform is not None:
            return posterior_transform(posterior=posterior, X=X)
        return posterior

    # ----- conditioning and fantasies -------------------------------------------------------
    def condition_on_observations(self, X: torch.Tensor, Y: torch.Tensor, noise: torch.Tensor | None = None,
                                  **kwargs) -> FlashGPModel:
        """A new FlashGPModel conditioned on observations Y ``(*s, *b, q, m)`` at X ``(*b, q, d)``
        (untransformed; Y in the original units, passed through the outcome transform in eval
        mode; ``noise`` ``(*s, *b, q, m)``: their noise variances in the transformed space, for a
        FixedNoise likelihood). The hyperparameters are kept (``ExactGP.condition_on_observations``);
        the new model's batch shape is ``(*s, *b)``. When X or Y require grad, the new model's
        posteriors are differentiable in them (Cholesky path; see ``models.conditioning``)."""
        m = self._num_outputs
        _check_tensor(X, "X", 2)
        _check_tensor(Y, "Y", 2)
        if Y.shape[-1] != m or Y.shape[-2] != X.shape[-2]:
            raise ValueError(f"Y: expected shape (..., {X.shape[-2]}, {m}) (q points like X, the model's {m} "
                             f"outputs), got {tuple(Y.shape)}")
        self.eval()
        transformed = self.transform_inputs(X)
        if getattr(self, "outcome_transform", None) is not None:
            Y, _ = self.outcome_transform(Y, X=transformed)
        if noise is not None:  # (..., q, m) like Y, as BoTorch passes it
            _check_tensor(noise, "noise", 2)
            if noise.shape[-1] != m:
                raise ValueError(f"noise: expected variances of shape (..., q, {m}) like Y, got {tuple(noise.shape)}")
            noise = self._targets(noise)
        gp = self.flashgp_model.condition_on_observations(self._inputs(transformed), self._targets(Y), noise=noise)
        new = copy.deepcopy(self, memo={id(self.flashgp_model): gp})
        if getattr(self, "input_transform", None) is not None:
            shape = torch.broadcast_shapes(X.shape[:-2], self._original_train_inputs.shape[:-2])
            original = self._original_train_inputs.expand(*shape, *self._original_train_inputs.shape[-2:])
            new._original_train_inputs = torch.cat([original, X.detach().expand(*shape, *X.shape[-2:])], -2)
        return new

    def fantasize(self, X: torch.Tensor, sampler, observation_noise: torch.Tensor | None = None,
                  **kwargs) -> FlashGPModel:
        """A fantasy model (BoTorch's ``fantasize``): samples of the posterior at X ``(*b, q, d)``
        with observation noise, conditioned on. With a FixedNoise likelihood and no
        ``observation_noise`` the fantasies take the mean training noise of each output
        (``(*batch, 1, m)``), as BoTorch's models do."""
        if observation_noise is None and isinstance(self.likelihood, FixedNoise):
            mean_noise = self.likelihood.noise.mean(-1, keepdim=True)  # (*batch, 1) or (*batch, m, 1)
            observation_noise = mean_noise.unsqueeze(-1) if self._num_outputs == 1 else mean_noise.transpose(-1, -2)
        return super().fantasize(X, sampler, observation_noise=observation_noise, **kwargs)
