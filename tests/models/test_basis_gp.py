# BasisGP: the finite-feature model converges to the exact GP of the kernel it approximates (the
# mixed continuous x categorical covariance), is differentiable in test inputs, trains to the exact
# model's hyperparameters, and refuses what it cannot do with clear messages.
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Categorical, HilbertSpace, Matern, Scale

F64 = torch.float64


def mixed_data(n=200, levels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=F64) * 4 - 2
    codes = torch.randint(0, levels, (n, 1), generator=g).to(F64)
    offsets = torch.tensor([0.0, 1.0, -0.7, 0.4][:levels], dtype=F64)
    y = torch.sin(2 * x[:, 0]) + offsets[codes[:, 0].long()] + 0.1 * torch.randn(n, generator=g, dtype=F64)
    return torch.cat([x, codes], -1), y


def hyperparameters(model):
    """The natural values of a mixed model's hyperparameters, by role."""
    scale = model.kernel
    product = scale.base
    stationary = product.kernels[0]
    stationary = getattr(stationary, "base", stationary)
    return {"outputscale": float(scale.outputscale.detach()), "lengthscale": float(stationary.lengthscale.detach()),
            "decay": float(product.kernels[1].decay.detach()), "noise": float(model.likelihood.noise.detach())}


def set_values(model, values):
    scale = model.kernel
    stationary = scale.base.kernels[0]
    stationary = getattr(stationary, "base", stationary)
    scale.outputscale = values["outputscale"]
    stationary.lengthscale = values["lengthscale"]
    scale.base.kernels[1].decay = values["decay"]
    model.likelihood.noise = values["noise"]


VALUES = {"outputscale": 1.3, "lengthscale": 0.6, "decay": 0.8, "noise": 0.02}


def exact_model(x, y, nu=2.5):
    model = fg.ExactGP(x, y, Scale(Matern(nu=nu, active_dims=[0]) * Categorical(3, active_dims=[1])),
                       solver=fg.Cholesky())
    set_values(model, VALUES)
    model.mean.constant = 0.1
    return model


def basis_model(x, y, m, nu=2.5, factor=2.0):
    model = fg.BasisGP(x, y, Scale(HilbertSpace(Matern(nu=nu, active_dims=[0]), m, boundary_factor=factor)
                                   * Categorical(3, active_dims=[1])))
    set_values(model, VALUES)
    model.mean.constant = 0.1
    return model


def test_converges_to_the_exact_mixed_gp():
    x, y = mixed_data()
    test = torch.cat([torch.linspace(-1.9, 1.9, 40, dtype=F64).unsqueeze(-1),
                      torch.arange(40, dtype=F64).remainder(3).unsqueeze(-1)], -1)
    exact = exact_model(x, y)
    with torch.no_grad():
        mll = float(exact.mll())
        post = exact.posterior(test)
    gaps = []
    for m in (8, 16, 32, 64):
        model = basis_model(x, y, m)
        with torch.no_grad():
            approx = model.posterior(test)
            gaps.append((abs(float(model.mll()) - mll), float((approx.mean - post.mean).abs().max()),
                         float((approx.variance - post.variance).abs().max())))
    for column in range(3):
        series = [g[column] for g in gaps]
        assert series[-1] < 0.2 * series[0], gaps
    assert gaps[-1][0] < 2e-3 and gaps[-1][1] < 1e-2 and gaps[-1][2] < 1e-2, gaps


def test_fit_reaches_the_exact_models_optimum():
    x, y = mixed_data(seed=1)
    exact = fg.ExactGP(x, y, Scale(RBF(active_dims=[0]) * Categorical(3, active_dims=[1])), solver=fg.Cholesky())
    basis = fg.BasisGP(x, y, Scale(HilbertSpace(RBF(active_dims=[0]), 48, boundary_factor=2.0)
                                   * Categorical(3, active_dims=[1])))
    for model in (exact, basis):
        fg.fit(model, optimizer="lbfgs", iters=60)
    a, b = hyperparameters(exact), hyperparameters(basis)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=0.05), (key, a, b)


def test_posterior_is_differentiable_in_the_test_inputs():
    x, y = mixed_data(n=60)
    basis = basis_model(x, y, 12)
    reference = fg.ExactGP(x, y, basis.kernel, mean=basis.mean, likelihood=basis.likelihood, solver=fg.Cholesky())
    grads = []
    for model in (basis, reference):
        t = torch.tensor([[0.3, 1.0], [-1.1, 2.0], [1.4, 0.0]], dtype=F64, requires_grad=True)
        post = model.posterior(t)
        (post.mean.sum() + post.variance.sum() + post.covariance.to_dense().sum()).backward()
        grads.append(t.grad[:, 0].clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)
    assert float(grads[0].abs().max()) > 0


def test_conditioning_equals_the_rebuilt_model():
    x, y = mixed_data(n=80)
    model = basis_model(x, y, 16)
    new_x = torch.tensor([[0.5, 1.0], [1.2, 2.0]], dtype=F64)
    new_y = torch.tensor([0.3, -0.2], dtype=F64)
    test = torch.tensor([[0.4, 1.0], [-0.5, 0.0]], dtype=F64)
    conditioned = model.condition_on_observations(new_x, new_y)
    rebuilt = fg.BasisGP(torch.cat([x, new_x]), torch.cat([y, new_y]), model.kernel, mean=model.mean,
                         likelihood=model.likelihood)
    with torch.no_grad():
        a, b = conditioned.posterior(test), rebuilt.posterior(test)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.variance, b.variance, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["exchangeable", "lowrank", "onehot"])
def test_statistics_and_row_blocks_give_the_same_values(kind):
    """The likelihood from data statistics (B^T B once, then O(R^2 P) per step) equals the one
    accumulated over the data in row blocks, value and gradients, and so do the predictions."""
    x, y = mixed_data(n=90)
    test = torch.tensor([[0.4, 1.0], [-0.5, 0.0], [1.7, 2.0]], dtype=F64)

    def make(blocks):
        model = fg.BasisGP(x, y, Scale(HilbertSpace(Matern(nu=2.5, active_dims=[0]), 10)
                                       * Categorical(3, kind=kind, active_dims=[1])))
        if blocks:
            model.memory_budget = 4 * 8 * 40 * 11  # 11 rows per block: 9 blocks
            model._statistics_apply = lambda: False
        return model
    values = []
    for model in (make(False), make(True)):
        loss = model.loss()
        loss.backward()
        with torch.no_grad():
            post = model.posterior(test)
        values.append((loss.detach(), [p.grad.clone() for p in model.parameters()], post.mean, post.variance,
                       dict(model.diagnostics)))
    assert values[0][4]["basis_terms"] == "statistics" and values[1][4]["basis_terms"] == "blocks"
    torch.testing.assert_close(values[0][0], values[1][0], rtol=1e-12, atol=0)
    for a, b in zip(values[0][1], values[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for k in (2, 3):
        torch.testing.assert_close(values[0][k], values[1][k], rtol=1e-10, atol=1e-12)


def test_row_blocks_give_the_same_values():
    x, y = mixed_data(n=90)
    whole, blocked = basis_model(x, y, 10), basis_model(x, y, 10)
    blocked.memory_budget = 4 * 8 * 40 * 11  # 11 rows per block: 9 blocks
    values = []
    for model in (whole, blocked):
        model._statistics_apply = lambda: False
        loss = model.loss()
        loss.backward()
        values.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert blocked.diagnostics["blocks"] == 9 and whole.diagnostics["blocks"] == 1
    torch.testing.assert_close(values[0][0], values[1][0], rtol=1e-12, atol=0)
    for a, b in zip(values[0][1], values[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_statistics_follow_the_data():
    x, y = mixed_data(n=60)
    model = basis_model(x, y, 8)
    before = float(model.mll().detach())
    model.set_train_data(x[:40], y[:40])
    reference = basis_model(x[:40], y[:40], 8)
    reference.kernel.base.kernels[0].center = model.kernel.base.kernels[0].center
    reference.kernel.base.kernels[0].half_width = model.kernel.base.kernels[0].half_width
    assert float(model.mll()) == pytest.approx(float(reference.mll()), rel=1e-12) and float(model.mll()) != before
    with torch.no_grad():
        model.train_y.mul_(2.0)  # edited in place: the statistics are recomputed
    reference.set_train_data(x[:40], 2 * y[:40])
    assert float(model.mll()) == pytest.approx(float(reference.mll()), rel=1e-12)


def test_warns_outside_the_box_and_refuses_kernels_without_features():
    x, y = mixed_data(n=40)
    model = basis_model(x, y, 8, factor=1.2)
    with pytest.warns(UserWarning, match="outside the HilbertSpace box"):
        model.posterior(torch.tensor([[5.0, 0.0]], dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.posterior(torch.tensor([[1.0, 0.0]], dtype=F64))
    with pytest.raises(TypeError, match="finite feature map"):
        fg.BasisGP(x, y, Scale(RBF(active_dims=[0])))
    with pytest.raises(ValueError, match="memory_budget"):
        fg.BasisGP(x, y, Categorical(3, active_dims=[1]), memory_budget=0)
    with pytest.raises(ValueError, match="not a level code"):
        model.posterior(torch.tensor([[0.0, 3.0]], dtype=F64))


def test_box_comes_from_the_training_inputs_and_survives_files(tmp_path):
    x, y = mixed_data(n=50)
    model = basis_model(x, y, 8, factor=1.5)
    box = model.kernel.base.kernels[0]
    low, high = float(x[:, 0].min()), float(x[:, 0].max())
    assert box.center == pytest.approx([(low + high) / 2]) and box.half_width == pytest.approx([1.5 * (high - low) / 2])
    fg.save(model, tmp_path / "basis.fgp")
    loaded = fg.load(tmp_path / "basis.fgp")
    assert loaded.kernel.base.kernels[0].center == box.center
    test = torch.tensor([[0.2, 2.0]], dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.posterior(test).mean, model.posterior(test).mean, rtol=0, atol=0)


def test_statistics_are_computed_once_per_fit_and_in_log_space():
    """A fit (and the estimator's log-space polish, whose parametrizations change the kernel's
    classes) reuses the data statistics: they are computed once per data and basis."""
    from flashgp.log_space import log_space
    x, y = mixed_data(n=80)
    model = basis_model(x, y, 8)
    calls = []
    original = model._data_statistics.__func__

    def counted(self, rows):
        key_before = self._statistics[0]
        out = original(self, rows)
        calls.append(key_before is not self._statistics[0])
        return out
    model._data_statistics = counted.__get__(model)
    fg.fit(model, optimizer="lbfgs", iters=5, progress=False)
    with log_space(model):
        model.loss().backward()
    assert sum(calls) == 1 and len(calls) > 5
