# How numerical trouble is reported: one warning per unconverged CG solve with the residual and
# the remedies, clamped variances counted in diagnostics, and a non-finite loss naming step and parameters.
import re
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.distributions import Posterior
from flashgp.kernels import RBF, Scale
from flashgp.linalg import cg_solve, mbcg
from flashgp.operators import Dense


def numerical_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught if issubclass(w.category, fg.NumericalWarning)]


def starved_model(dtype):
    """A model whose CG solver stops (max_iters=3) far from its tolerance."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(80, 2, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.sin(4 * x).sum(-1)
    solver = fg.CG(tol=1e-8, eval_tol=1e-8, max_iters=3, lanczos_iters=0, precond=None)
    return fg.ExactGP(x, y, Scale(RBF(lengthscale=0.3)), likelihood=fg.likelihoods.Gaussian(noise=1e-3),
                      solver=solver)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unconverged_cg_warns_once_per_solve_with_residual_and_remedies(dtype):
    model = starved_model(dtype)
    _, messages = numerical_warnings(model.mll)
    assert len(messages) == 1, messages
    message = messages[0]
    assert message.startswith("CG for the log marginal likelihood: no convergence")
    residual = float(re.search(r"mean relative residual ([0-9.e+-]+)", message).group(1))
    assert residual > 1e-8 and "after 3 iterations (max_iters 3)" in message
    assert "max_iters" in message and "preconditioner rank" in message
    assert ("float64" in message) == (dtype == torch.float32)
    assert model.diagnostics["converged"] is False and model.diagnostics["cg_iterations"] == 3

    post, messages = numerical_warnings(lambda: model.posterior(model.train_x[:4]))
    _, more = numerical_warnings(lambda: post.variance)
    messages += more
    assert [m.split(":")[0].split(" of ")[-1] for m in messages] == [
        "CG for the posterior mean solve", "4 posterior variances could not be certified to CG(variance_tol=0.01)"]
    assert "raise CG(max_iters=...) (now 3" in messages[1] and "upper bounds" in messages[1]
    assert model.diagnostics["converged"] is False and model.diagnostics["variance_converged"] is False


def test_breakdown_and_no_convergence_fold_into_one_warning():
    indefinite = Dense(torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)))
    rhs = torch.ones(3, 1, dtype=torch.float64)
    info = {}
    _, messages = numerical_warnings(lambda: cg_solve(indefinite, rhs, tol=1e-8, info=info))
    assert len(messages) == 1 and "no convergence" in messages[0] and "broke down" in messages[0]
    assert info["breakdowns"] == 1 and not info["converged"]


def test_mbcg_without_warn_is_silent_and_describes_its_trouble():
    a = torch.diag(torch.logspace(0, 4, 50, dtype=torch.float64))
    rhs = torch.ones(50, 2, dtype=torch.float64)
    result, messages = numerical_warnings(lambda: mbcg(a.__matmul__, rhs, tol=1e-12, max_iters=2, warn=False))
    assert messages == [] and not result.converged
    assert "no convergence" in result.trouble() and "max_iters 2" in result.trouble()
    result, _ = numerical_warnings(lambda: mbcg(a.__matmul__, rhs, tol=1e-6, max_iters=200))
    assert result.converged and result.trouble() is None


def test_clamped_variances_are_counted_in_diagnostics():
    cov = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1e-9, 0.0], [0.0, 0.0, -3e-9]], dtype=torch.float64)
    post = Posterior(torch.zeros(3, dtype=torch.float64), Dense(cov))
    assert torch.equal(post.variance, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert post.diagnostics["variance_clamped"] == 2
    assert post.diagnostics["variance_min_before_clamp"] == pytest.approx(-3e-9)


def test_non_finite_loss_names_the_step_and_the_parameter_values(monkeypatch):
    x = torch.linspace(0, 1, 30, dtype=torch.float64).reshape(-1, 1)
    model = fg.ExactGP(x, torch.sin(6 * x[:, 0]), Scale(RBF()))
    mll, calls = model.mll, []

    def nan_at_third_call(*args, **kwargs):
        calls.append(1)
        out = mll(*args, **kwargs)
        return out * float("nan") if len(calls) == 3 else out

    monkeypatch.setattr(model, "mll", nan_at_third_call)
    with pytest.warns(fg.NumericalWarning) as record:
        history = fg.fit(model, optimizer="adam", iters=5, progress=False)
    message = history.stopped_early
    assert len(history) == 2 and any(str(w.message) == message for w in record)
    assert "fit stopped at step 2" in message and "not applied" in message
    for name, value in model.named_parameters():
        assert f"{name}=[{round(float(value.detach().flatten()[0]), 4)}" in message
