# Log-space optimization of positive hyperparameters (flashgp.log_space) and the L-BFGS polish
# that finishes a fit (flashgp.polish): values kept, same Parameter objects, stable at large
# values, multiplicative Adam steps, convergence to the optimum, and the revert safeguard.
import math

import pytest
import torch

import flashgp as fg
import flashgp.polish as polish_module
from flashgp.errors import NumericalWarning
from flashgp.fit import History, fit
from flashgp.log_space import _RawFromLog, log_space
from flashgp.polish import polish_lbfgs


def problem(n=80, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d)).double()
    return fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian().double(), solver=fg.Cholesky())


def values(model):
    return (model.kernel.base.lengthscale.detach().clone(), model.kernel.outputscale.detach().clone(),
            model.likelihood.noise.detach().clone())


def test_log_space_keeps_values_and_parameter_objects():
    model = problem()
    model.kernel.base.lengthscale = torch.tensor([0.5, 30.0])
    model.likelihood.noise = 0.01
    ids, start, mll = [id(p) for p in model.parameters()], values(model), float(model.mll().detach())
    with log_space(model):
        assert {id(p) for p in model.parameters()} == set(ids)
        inside = dict(model.named_parameters())
        torch.testing.assert_close(inside["kernel.base.parametrizations.raw_lengthscale.original"],
                                   torch.log(start[0]), check_dtype=False)
        floor = model.likelihood._constraints["noise"].lower  # log of the excess over the floor
        torch.testing.assert_close(inside["likelihood.parametrizations.raw_noise.original"].detach(),
                                   torch.log(start[2] - floor))
        assert float(model.mll().detach()) == pytest.approx(mll, rel=1e-12)
    assert [id(p) for p in model.parameters()] == ids
    assert [name for name, _ in model.named_parameters()] == [
        "kernel.raw_outputscale", "kernel.base.raw_lengthscale", "likelihood.raw_noise", "mean.raw_constant"]
    for a, b in zip(values(model), start):
        torch.testing.assert_close(a, b)


def test_raw_from_log_is_finite_for_large_values():
    log_excess = torch.tensor([math.log(1e-6), 0.0, math.log(1e4), math.log(1e300)],
                              dtype=torch.float64, requires_grad=True)
    raw = _RawFromLog()(log_excess)
    torch.testing.assert_close(torch.nn.functional.softplus(raw), torch.exp(log_excess.detach()))
    raw.sum().backward()
    assert torch.all(torch.isfinite(log_excess.grad))


def test_adam_in_log_space_takes_multiplicative_steps():
    """One Adam step of lr 0.1 moves a lengthscale of 50 by ~10% in log space, by ~0.1 without."""
    steps = {}
    for space in ("log", "softplus"):
        model = problem()
        model.kernel.base.lengthscale = torch.tensor([50.0, 50.0])
        context = log_space(model) if space == "log" else torch.enable_grad()
        with context:
            fit(model, optimizer="adam", lr=0.1, iters=1, progress=False)
        steps[space] = model.kernel.base.lengthscale.detach() / 50.0
    step = torch.full((1, 2), 0.1, dtype=torch.float64)  # Adam's first step is lr (up to its eps)
    torch.testing.assert_close(steps["log"].log().abs(), step, rtol=1e-3, atol=0)
    torch.testing.assert_close((50 * (steps["softplus"] - 1)).abs(), step, rtol=1e-3, atol=0)


def test_polish_reaches_the_optimum_after_a_short_adam_run():
    model = problem()
    with log_space(model):
        fit(model, optimizer="adam", lr=0.1, iters=20, progress=False)
        adam_mll = float(model.mll().detach())
        history = polish_lbfgs(model, steps=5, seed=0)
    assert history.stopped_early is None and float(model.mll().detach()) > adam_mll
    model.zero_grad()
    (-model.mll()).backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert gradient.abs().max() < 1e-4  # a stationary point (raw parameters)


def test_polish_that_lowers_the_mll_is_reverted(monkeypatch):
    model = problem()
    with log_space(model):
        fit(model, optimizer="adam", lr=0.1, iters=20, progress=False)
        start, mll = values(model), float(model.mll().detach())

        def worse_fit(model, **kwargs):
            model.likelihood.parametrizations.raw_noise.original.data.fill_(5.0)  # noise e^5
            return History(loss=[1.0])

        monkeypatch.setattr(polish_module, "fit", worse_fit)
        with pytest.warns(NumericalWarning, match=r"polish ended at mll .* below the"):
            history = polish_lbfgs(model, steps=5, seed=0)
        assert "reset" in history.stopped_early
        assert float(model.mll().detach()) == pytest.approx(mll, rel=1e-12)
    for a, b in zip(values(model), start):
        torch.testing.assert_close(a, b)
