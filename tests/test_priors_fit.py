# MAP fits: fg.fit and the L-BFGS polish minimize model.loss() - log_prior / n when priors are
# attached (flashgp.priors), and model.loss() alone otherwise; a tight prior pins a lengthscale.
import math

import pytest
import torch

import flashgp as fg
from flashgp.log_space import log_space
from flashgp.polish import polish_lbfgs
from flashgp.priors import Gamma, LogNormal, Normal

F64 = torch.float64


def data(n=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen, dtype=F64) * 4
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(n, generator=gen, dtype=F64)
    return x, y


def model(n=30, seed=0):
    x, y = data(n, seed)
    return fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF()), solver=fg.Cholesky())


def objective(m) -> float:
    with torch.no_grad():
        return float(m.loss().sum()) - float(fg.priors.log_prior(m)) / m.num_train


def test_the_map_objective_is_the_loss_minus_the_log_prior_per_point():
    m = model()
    m.kernel.base.set_prior("lengthscale", LogNormal(0.0, 1.0))
    m.likelihood.set_prior("noise", Gamma(1.1, 0.05))
    expected = objective(m)
    loss = m.loss().sum()
    assert float(fg.priors.objective(m, loss).detach()) == pytest.approx(expected, rel=1e-14)
    history = fg.fit(m, iters=1, progress=False, seed=0)  # Adam records the loss before its step
    assert history.loss[0] == pytest.approx(expected, rel=1e-12)
    assert fg.priors.num_points(m) == 30


def test_without_priors_the_objective_is_the_loss_itself():
    m = model()
    loss = m.loss().sum()
    assert fg.priors.objective(m, loss) is loss
    expected = float(loss.detach())
    history = fg.fit(m, iters=1, progress=False, seed=0)
    assert history.loss[0] == expected


def test_a_tight_prior_pins_the_lengthscale_far_from_the_mle():
    mle = model()
    fg.fit(mle, optimizer="lbfgs", iters=10, progress=False)
    free = float(mle.kernel.base.lengthscale.detach())
    target = 3.0
    assert abs(free - target) / target > 0.3  # the likelihood alone goes elsewhere
    pinned = model()
    prior = LogNormal(math.log(target) + 0.01 ** 2, 0.01)  # its mode is the target
    assert float(prior.mode) == pytest.approx(target, rel=1e-12)
    pinned.kernel.base.set_prior("lengthscale", prior)
    history = fg.fit(pinned, optimizer="lbfgs", iters=10, progress=False)
    assert float(pinned.kernel.base.lengthscale.detach()) == pytest.approx(target, rel=0.02)
    assert history.loss[-1] == pytest.approx(objective(pinned), abs=1e-6)


def test_lbfgs_polish_in_log_space_raises_the_log_posterior():
    m = model()
    m.kernel.base.set_prior("lengthscale", LogNormal(0.0, 0.5))
    m.kernel.set_prior("outputscale", Gamma(2.0, 2.0))
    m.likelihood.set_prior("noise", LogNormal(-4.0, 1.0))
    fg.fit(m, iters=5, progress=False, seed=0)
    before = objective(m)
    with log_space(m):
        assert objective(m) == pytest.approx(before, rel=1e-12)
        history = polish_lbfgs(m, steps=5, seed=0)
    after = objective(m)
    assert history.stopped_early is None and after < before - 1e-4
    for p in m.parameters():  # at the MAP optimum: the gradient of the objective vanishes
        p.grad = None
    fg.priors.objective(m, m.loss().sum()).backward()
    assert max(float(p.grad.abs().max()) for p in m.parameters()) < 1e-4


def test_the_polish_warning_names_the_log_posterior(monkeypatch):
    import flashgp.polish as polish_module
    m = model()
    m.mean.set_prior("constant", Normal(0.0, 1.0))
    values = iter([0.0, -1.0])  # the polish seems to lower the objective: it is reverted
    monkeypatch.setattr(polish_module, "_objective", lambda model, seed: next(values))
    with pytest.warns(fg.NumericalWarning, match=r"polish ended at log posterior -1 per point"):
        polish_lbfgs(m, steps=1)


def test_a_value_outside_its_priors_support_is_refused_before_any_step():
    m = model()
    m.mean.constant = -0.5
    m.mean.set_prior("constant", LogNormal(0.0, 1.0))
    with pytest.raises(ValueError, match=r"log prior is not finite at the current values of mean.constant "
                                         r"\(LogNormal\(loc=0.0, scale=1.0\)\)"):
        fg.fit(m, iters=1, progress=False)


def test_cuda_graph_steps_are_refused_with_priors():
    x, y = data(40)
    m = fg.SVGP(fg.kernels.Scale(fg.kernels.RBF()), 6, x=x, y=y)
    m.likelihood.set_prior("noise", LogNormal(-4.0, 1.0))
    with pytest.raises(ValueError, match=r"cuda_graph: a recorded step has no log prior term"):
        fg.fit(m, data=(x, y), cuda_graph=True, iters=1, progress=False)


def test_a_minibatch_model_divides_by_its_num_data():
    x, y = data(40)
    m = fg.SVGP(fg.kernels.Scale(fg.kernels.RBF()), 6, x=x, y=y).double()
    m.kernel.base.set_prior("lengthscale", LogNormal(0.0, 1.0))
    m.likelihood.set_prior("noise", LogNormal(-4.0, 1.0))
    with pytest.raises(ValueError, match=r"number of training points is unknown"):
        fg.priors.num_points(m)
    m.num_data = 40
    with torch.no_grad():
        expected = float(m.loss(batch=(x, y))) - float(fg.priors.log_prior(m)) / 40
    history = fg.fit(m, data=(x, y), batch_size=64, iters=1, progress=False, seed=0)  # one batch: all points
    assert fg.priors.num_points(m) == 40
    assert history.loss[0] == pytest.approx(expected, rel=1e-10)


def test_a_multitask_model_divides_by_its_observed_entries():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(10, 1, generator=gen, dtype=F64)
    y = torch.stack([torch.sin(3 * x[:, 0]), torch.cos(3 * x[:, 0])], -1)
    m = fg.MultitaskGP(x, y, fg.kernels.RBF(), solver=fg.Cholesky())
    m.kernel.set_prior("task_variance", Gamma(2.0, 2.0))
    assert fg.priors.num_points(m) == 20
    history = fg.fit(m, iters=1, progress=False, seed=0)
    fresh = fg.MultitaskGP(x, y, fg.kernels.RBF(), solver=fg.Cholesky())
    fresh.kernel.set_prior("task_variance", Gamma(2.0, 2.0))
    assert history.loss[0] == pytest.approx(objective(fresh), rel=1e-12)
