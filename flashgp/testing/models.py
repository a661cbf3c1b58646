# The model contract: what fg.fit, fg.save / fg.load, checkpoints and the prediction code rely on
# of a GPModel (flashgp.models.GPModel), checked through public APIs against float64 references.
"""``check_model(make_model, test_x, loss_reference=..., posterior_reference=...)`` runs:

- ``loss``: ``loss()`` is finite, of the reference's shape ``(*batch,)``, equal to the float64
  reference within ``loss_atol`` (nats per point), and differentiable: after
  ``loss().sum().backward()`` every trainable parameter has a finite gradient (compared with the
  reference's when ``grad_rtol`` is given);
- ``posterior``: ``posterior(x)`` mean and variance ``(*batch, m)`` against the reference;
- ``predict``: ``predict(x)`` has the posterior's mean and its variance plus the likelihood's
  noise (``model.likelihood.noise_diag(m)``);
- ``prior``: ``prior(x)``'s mean ``(*batch, m)`` and covariance Operator ``(*batch, m, m)``, the latter
  through the operator contract, against the model's own mean and kernel evaluated densely;
- ``config``: ``config()`` survives JSON, holds exactly ``config_keys``, and ``from_config`` on
  it rebuilds a model with the same config;
- ``save_load``: ``fg.save`` then ``fg.load`` (a temporary file) gives a model of the same class
  and config, the same tensors and frozen parameters, and, given the same solver state
  (``load_solver_state``), the same loss and predictions;
- ``resume``: a checkpointed ``fg.fit`` stopped by Ctrl-C (a callback raising KeyboardInterrupt)
  and resumed, and one resumed from its periodic checkpoint (a crash), end at the parameters
  and losses of an uninterrupted fit;
- ``solver_state``: ``solver_state()`` is a dict of CPU tensors by name, and
  ``load_solver_state`` of it gives it back.

An exception raised by the model becomes an AssertionError naming the check and the exception.
The references get a float64 deep copy of the model (so they work for float32 models too):
``exact_gp_loss_reference`` and ``exact_gp_posterior_reference`` are those of an ExactGP (dense
Cholesky; any model with ``kernel``, ``mean``, a Gaussian ``likelihood`` and training data).
"""
from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..operators.base import Operator
from ._compare import as_float64, assert_close, assert_shape, calling, fail
from .operators import check_operator

CHECKS = ("loss", "posterior", "predict", "prior", "config", "save_load", "resume", "solver_state")
DEFAULT_FIT = dict(optimizer="adam", lr=0.05, iters=6, seed=0)


# ----- references for an ExactGP ---------------------------------------------------------------

def exact_gp_loss_reference(model) -> Tensor:
    """-log N(y; m(x), K + diag(noise)) / n by a dense Cholesky, ``(*batch,)``, differentiable in the
    model's parameters. ``model``: an ExactGP-like model (in float64 for a reference)."""
    x, y = model.train_x, model.train_y
    n = x.shape[-2]
    k_hat = model.kernel(x) + torch.diag_embed(model.likelihood.noise_diag(n))
    resid = y - model.mean(x)
    chol = torch.linalg.cholesky(k_hat)
    alpha = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return (0.5 * (resid * alpha).sum(-1) + 0.5 * logdet + 0.5 * n * math.log(2 * math.pi)) / n


def exact_gp_posterior_reference(model, x: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, variance), each ``(*batch, m)``, of the latent posterior at x (m, d) or ``(*batch, m, d)``
    by a dense Cholesky. ``model``: an ExactGP-like model (in float64 for a reference)."""
    with torch.no_grad():
        tx, y = model.train_x, model.train_y
        x = x.to(tx)
        n = tx.shape[-2]
        chol = torch.linalg.cholesky(model.kernel(tx) + torch.diag_embed(model.likelihood.noise_diag(n)))
        cross = model.kernel(tx, x)  # (*batch, n, m)
        alpha = torch.cholesky_solve((y - model.mean(tx)).unsqueeze(-1), chol)
        mean = model.mean(x) + (cross.mT @ alpha).squeeze(-1)
        half = torch.linalg.solve_triangular(chol, cross, upper=False)
        var = model.kernel(x).diagonal(dim1=-2, dim2=-1) - half.square().sum(-2)
    return mean, var


# ----- the contract ------------------------------------------------------------------------------

def check_model(make_model: Callable, test_x: Tensor, *, loss_reference: Callable,
                posterior_reference: Callable, prior_reference: Callable | None = None,
                loss_atol: float = 1e-8, grad_rtol: float | None = None, mean_atol: float = 1e-8,
                var_rtol: float = 1e-6, var_atol: float = 0.0, fit_kwargs: dict | None = None,
                interrupt_after: int = 3, checkpoint_every: int = 2, tmp_dir=None, seed: int = 0,
                skip: tuple = (), name: str | None = None) -> None:
    """Check a GPModel against float64 references and the fit / save / checkpoint machinery.

    Args:
        make_model: () -> a fresh model, the same one on every call (fits and resumed fits
            each start from one).
        test_x: test inputs (m, d) or ``(*batch, m, d)``.
        loss_reference: (float64 copy of the model) -> its loss ``(*batch,)``, differentiable
            (e.g. ``exact_gp_loss_reference``).
        posterior_reference: (float64 copy, test_x in float64) -> (mean, variance) ``(*batch, m)``.
        prior_reference: (float64 copy, test_x) -> (mean ``(*batch, m)``, covariance ``(*batch, m, m)``);
            default: ``model.mean(x)`` and ``model.kernel(x)`` of the copy.
        loss_atol: |loss - reference| allowed (nats per point).
        grad_rtol: relative tolerance of the loss gradients against the reference's (of the
            largest reference gradient); None: only finite gradients for every parameter.
        mean_atol: |posterior mean - reference| allowed.
        var_rtol, var_atol: |variance - reference| <= var_atol + var_rtol * reference, per point.
        fit_kwargs: ``fg.fit`` arguments of the resume check (default: Adam, lr 0.05, 6 steps,
            seed 0); iters must exceed ``interrupt_after`` and ``checkpoint_every``.
        interrupt_after: steps done before the simulated Ctrl-C.
        checkpoint_every: the fit's checkpoint period (the crash resumes from its first file).
        tmp_dir: where model and checkpoint files go (default: a temporary directory).
        seed: seeds the generators of the loss comparisons and the global RNG of the fits.
        skip: names from ``CHECKS`` not to run ("posterior" skips "predict" too).
        name: how messages name the model (default: its class name).

    Raises:
        AssertionError: the first check that fails.
    """
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"skip: unknown checks {sorted(unknown)}; known: {CHECKS}")
    label = name or type(make_model()).__name__
    fit_kwargs = {**DEFAULT_FIT, **(fit_kwargs or {})}
    with tempfile.TemporaryDirectory() as default_dir:
        folder = Path(tmp_dir if tmp_dir is not None else default_dir)
        trained = []  # the model of the resume check's uninterrupted fit, or of a plain fit

        def fitted():
            if not trained:
                trained.append(_fit(make_model(), fit_kwargs, seed))
            return trained[0]

        checks = {
            "loss": lambda: check_loss(make_model(), loss_reference, atol=loss_atol, grad_rtol=grad_rtol,
                                       seed=seed, label=label),
            "posterior": lambda: check_posterior(make_model(), test_x, posterior_reference, mean_atol=mean_atol,
                                                 var_rtol=var_rtol, var_atol=var_atol, label=label,
                                                 predict="predict" not in skip),
            "prior": lambda: check_prior(make_model(), test_x, prior_reference, label=label),
            "config": lambda: check_config(make_model(), label=label),
            "resume": lambda: trained.append(check_resume(
                make_model, fit_kwargs, folder, interrupt_after=interrupt_after,
                checkpoint_every=checkpoint_every, seed=seed, label=label)),
            "solver_state": lambda: check_solver_state(fitted(), label=label),
            "save_load": lambda: check_save_load(fitted(), test_x, folder / "model.fgp", seed=seed, label=label),
        }
        for check, run in checks.items():
            if check not in skip:
                with calling(f"{label}: {check}"):
                    run()


def _roundoff(dtype: torch.dtype) -> float:
    """The tolerance of results that should agree to rounding: max(1e-10, 4 eps(dtype))."""
    return max(1e-10, 4 * torch.finfo(dtype).eps)


def _float64_copy(model):
    return copy.deepcopy(model).to(torch.float64)


def _generator(model, seed: int) -> torch.Generator:
    return torch.Generator(device=model.device).manual_seed(seed)


def check_loss(model, loss_reference: Callable, *, atol: float, grad_rtol: float | None = None,
               seed: int = 0, label: str = "model") -> None:
    """model.loss(): finite, the reference's shape and value, and a finite gradient for every
    trainable parameter (against the reference's with ``grad_rtol``)."""
    reference_model = _float64_copy(model)
    expected = loss_reference(reference_model)
    loss = model.loss(generator=_generator(model, seed))
    what = f"{label}: loss()"
    assert_shape(loss, expected.shape, what)
    assert_close(loss, expected, rtol=0.0, atol=atol, what=what)
    if not loss.requires_grad:
        fail(what, "the loss does not require grad (not differentiable in the parameters)")
    model.zero_grad(set_to_none=True)
    loss.sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    if missing:
        fail(f"{what} gradients", f"no gradient reaches {missing} (of {[n for n, _ in trainable]})")
    broken = [n for n, p in trainable if not bool(torch.isfinite(p.grad).all())]
    if broken:
        fail(f"{what} gradients", f"non-finite gradients for {broken}")
    if grad_rtol is None:
        return
    expected.sum().backward()
    ref = dict(reference_model.named_parameters())
    scale = max(float(ref[n].grad.abs().max()) for n, _ in trainable if ref[n].grad is not None)
    for n, p in trainable:
        e = ref[n].grad if ref[n].grad is not None else torch.zeros_like(ref[n])
        assert_close(p.grad, e, rtol=0.0, atol=grad_rtol * scale,
                     what=f"{what} gradient of {n} (tolerance relative to the largest gradient {scale:.3g})")


def check_posterior(model, test_x: Tensor, posterior_reference: Callable, *, mean_atol: float, var_rtol: float,
                    var_atol: float = 0.0, label: str = "model", predict: bool = True) -> None:
    """posterior(x) mean and variance against the reference; with ``predict``, predict(x) is the
    posterior plus the likelihood's noise."""
    mean, var = posterior_reference(_float64_copy(model), as_float64(test_x))
    post = model.posterior(test_x)
    what = f"{label}: posterior(x)"
    assert_shape(post.mean, mean.shape, f"{what}.mean")
    assert_close(post.mean, mean, rtol=0.0, atol=mean_atol, what=f"{what}.mean")
    assert_shape(post.variance, var.shape, f"{what}.variance")
    assert_close(post.variance, var, rtol=var_rtol, atol=var_atol, elementwise=True, what=f"{what}.variance")
    if not predict:
        return
    pred = model.predict(test_x)
    noise = model.likelihood.noise_diag(mean.shape[-1]).detach().expand(mean.shape)
    tight = _roundoff(post.mean.dtype)
    assert_close(pred.mean, post.mean, rtol=tight, what=f"{label}: predict(x).mean against posterior(x).mean")
    assert_close(pred.variance, as_float64(post.variance) + as_float64(noise), rtol=tight, elementwise=True,
                 what=f"{label}: predict(x).variance against posterior(x).variance + likelihood noise")


def check_prior(model, test_x: Tensor, prior_reference: Callable | None = None, *, label: str = "model") -> None:
    """prior(x): mean ``(*batch, m)`` and covariance Operator ``(*batch, m, m)`` against the reference
    (default: the model's ``mean`` and ``kernel`` at x in float64); the covariance also passes the
    operator contract (products, entries; no gradients)."""
    reference_model = _float64_copy(model)
    x64 = as_float64(test_x).to(reference_model.device)
    with torch.no_grad():
        if prior_reference is None:
            mean, cov = reference_model.mean(x64), reference_model.kernel(x64)
        else:
            mean, cov = prior_reference(reference_model, x64)
    prior = model.prior(test_x)
    what = f"{label}: prior(x)"
    batch_mean = torch.broadcast_shapes(mean.shape, cov.shape[:-1])
    assert_close(prior.mean.expand(batch_mean), mean.expand(batch_mean), rtol=1e-9, what=f"{what}.mean")
    if not isinstance(prior.covariance, Operator):
        fail(f"{what}.covariance", f"expected a flashgp Operator, got {type(prior.covariance).__name__}")
    cov = cov.detach()
    check_operator(lambda: model.prior(test_x).covariance, lambda op: cov, skip=("bilinear_grad",),
                   name=f"{what}.covariance")


def check_config(model, *, label: str = "model") -> None:
    """config() survives JSON with exactly ``config_keys``; from_config of the JSON rebuilds a
    model whose config() is the same JSON."""
    what = f"{label}: config()"
    config = model.config()
    try:
        text = json.dumps(config, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        fail(what, f"not JSON-serializable: {err}")
    keys = set(type(model).config_keys)
    if set(config) != keys:
        fail(what, f"keys {sorted(config)}, config_keys are {sorted(keys)}")
    rebuilt = type(model).from_config(json.loads(text), model.state_dict())
    rebuilt.load_state_dict(model.state_dict())
    again = json.dumps(rebuilt.config(), sort_keys=True, allow_nan=False)
    if again != text:
        fail(f"{label}: from_config(config())", f"the rebuilt model's config differs:\n  {again}\n  expected {text}")


def check_solver_state(model, *, label: str = "model") -> None:
    """solver_state(): a dict of CPU tensors by name; load_solver_state of it gives it back."""
    what = f"{label}: solver_state()"
    state = model.solver_state()
    if not isinstance(state, dict):
        fail(what, f"expected a dict, got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            fail(what, f"entry {key!r}: expected a str name and a tensor, got {type(value).__name__}")
        if value.device.type != "cpu":
            fail(what, f"entry {key!r} is on {value.device}, expected the CPU")
    model.load_solver_state(state)
    again = model.solver_state()
    if set(again) != set(state) or any(not torch.equal(again[k], state[k]) for k in state):
        fail(f"{label}: load_solver_state(solver_state())", f"gives back {sorted(again)}, expected {sorted(state)} "
                                                            f"with equal tensors")


def _fit(model, fit_kwargs: dict, seed: int, **kwargs):
    """fg.fit(model) with the global RNG seeded (and restored afterwards); returns the model."""
    from ..fit import fit  # late: flashgp.fit imports the models
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        fit(model, progress=False, **fit_kwargs, **kwargs)
    return model


def _assert_same_fit(model, reference, label: str, what: str, rtol: float = 1e-6) -> None:
    ref = dict(reference.named_parameters())
    for n, p in model.named_parameters():
        assert_close(p, ref[n], rtol=rtol, atol=1e-12, what=f"{label}: {what}, parameter {n}")


def check_resume(make_model: Callable, fit_kwargs: dict, folder: Path, *, interrupt_after: int = 3,
                 checkpoint_every: int = 2, seed: int = 0, label: str = "model"):
    """A checkpointed fg.fit interrupted by Ctrl-C after ``interrupt_after`` steps, and one that
    crashed after its first periodic checkpoint, both resumed into fresh models, end at the
    parameters of an uninterrupted fit. Returns the uninterrupted fit's model."""
    iters = fit_kwargs["iters"]
    if not iters > max(interrupt_after, checkpoint_every):
        raise ValueError(f"fit_kwargs: iters ({iters}) must exceed interrupt_after and checkpoint_every")
    reference = _fit(make_model(), fit_kwargs, seed)
    path, crash = folder / "fit.ckpt", folder / "crash.ckpt"

    def ctrl_c(step, loss, model):
        if step + 1 == checkpoint_every:  # the file as a crash right after this step leaves it
            crash.write_bytes(path.read_bytes())
        if step + 1 == interrupt_after:
            raise KeyboardInterrupt

    try:
        _fit(make_model(), fit_kwargs, seed, callback=ctrl_c, checkpoint=path, checkpoint_every=checkpoint_every)
    except KeyboardInterrupt:
        pass
    else:
        fail(f"{label}: resume", "the fit did not stop at the simulated Ctrl-C")
    for file, what in [(path, f"fit resumed after Ctrl-C at step {interrupt_after}"),
                       (crash, f"fit resumed from the checkpoint of step {checkpoint_every} (a crash)")]:
        resumed = _fit(make_model(), fit_kwargs, seed + 1, checkpoint=file, resume=True)
        _assert_same_fit(resumed, reference, label, f"{what} against an uninterrupted fit")
    return reference


def check_save_load(model, test_x: Tensor, path: Path, *, seed: int = 0, label: str = "model",
                    batch=None) -> None:
    """fg.save then fg.load: same class, config, tensors and frozen parameters; with the same
    solver state, the same loss (same generator; ``batch``: the (x, y) a minibatch model's
    ``loss(batch=...)`` takes) and the same predictions."""
    from ..io import load, save  # late: flashgp.io imports the models
    what = f"{label}: fg.save / fg.load"
    save(model, path)
    loaded = load(path)
    if type(loaded) is not type(model):
        fail(what, f"loaded a {type(loaded).__name__}, saved a {type(model).__name__}")
    if json.dumps(loaded.config(), sort_keys=True) != json.dumps(model.config(), sort_keys=True):
        fail(what, "the loaded model's config() differs")
    saved, back = model.state_dict(), loaded.state_dict()
    if set(saved) != set(back):
        fail(what, f"tensors {sorted(back)}, saved {sorted(saved)}")
    for key in saved:
        if saved[key].dtype != back[key].dtype or not torch.equal(saved[key].cpu(), back[key].cpu()):
            fail(what, f"tensor {key} differs after loading")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    frozen_back = {n for n, p in loaded.named_parameters() if not p.requires_grad}
    if frozen != frozen_back:
        fail(what, f"frozen parameters {sorted(frozen_back)}, saved {sorted(frozen)}")
    state = model.solver_state()
    model.load_solver_state(state)
    loaded.load_solver_state(state)
    loaded = loaded.to(model.device)
    tight = _roundoff(model.dtype)
    extra = {} if batch is None else {"batch": batch}
    assert_close(loaded.loss(generator=_generator(loaded, seed), **extra),
                 model.loss(generator=_generator(model, seed), **extra),
                 rtol=tight, what=f"{what}: loss() with one generator seed")
    a, b = loaded.posterior(test_x), model.posterior(test_x)
    assert_close(a.mean, b.mean, rtol=tight, what=f"{what}: posterior(x).mean")
    assert_close(a.variance, b.variance, rtol=tight, what=f"{what}: posterior(x).variance")
