# condition_on_observations: the conditioned model predicts as a model rebuilt on all the data,
# with its prediction cache carried over (extended Cholesky factor, warm-started CG).
import pytest
import torch

import flashgp as fg
from flashgp import kernels as K
from flashgp.engines.cholesky import CholeskyEngine

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def data(n, d=2, seed=0):
    x = torch.rand(n, d, generator=gen(seed), dtype=F64)
    return x, torch.sin(6 * x).sum(-1) + 0.05 * torch.randn(n, generator=gen(seed + 1), dtype=F64)


def fitted_like(gp):
    """Fixed, non-default hyperparameters."""
    with torch.no_grad():
        gp.kernel.base.lengthscale = torch.tensor([0.3, 0.45], dtype=F64)
        gp.kernel.outputscale = 1.7
        gp.mean.constant.fill_(0.2)
        if isinstance(gp.likelihood, fg.likelihoods.Gaussian):
            gp.likelihood.noise = 0.02
    return gp.eval()


def exact(x, y, solver=None, likelihood=None):
    return fitted_like(fg.ExactGP(x, y, K.Scale(K.Matern(nu=2.5, ard_dims=2)), likelihood=likelihood,
                                  solver=fg.Cholesky() if solver is None else solver))


def assert_same_posterior(a, b, x, tol):
    pa, pb = a.posterior(x), b.posterior(x)
    torch.testing.assert_close(pa.mean, pb.mean, rtol=tol, atol=tol)
    torch.testing.assert_close(pa.covariance.to_dense(), pb.covariance.to_dense(), rtol=tol, atol=tol)


def test_cholesky_conditioning_equals_rebuild_without_refactoring(monkeypatch):
    x, y = data(60)
    new_x, new_y = data(4, seed=5)
    test = data(9, seed=9)[0]
    gp = exact(x, y)
    gp.posterior(test)
    cond = gp.condition_on_observations(new_x, new_y)
    rebuilt = exact(torch.cat([x, new_x]), torch.cat([y, new_y]))

    def refuse(*args, **kwargs):
        raise AssertionError("the conditioned model refactored K_hat")
    monkeypatch.setattr(CholeskyEngine, "factor", refuse)
    post = cond.posterior(test)
    monkeypatch.undo()
    ref = rebuilt.posterior(test)
    torch.testing.assert_close(post.mean, ref.mean, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(post.covariance.to_dense(), ref.covariance.to_dense(), rtol=1e-8, atol=1e-8)
    assert cond.num_train == 64 and gp.num_train == 60  # the original model is unchanged
    assert cond.kernel is not gp.kernel


def test_repeated_conditioning_nests_and_matches_rebuild():
    x, y = data(50)
    gp = exact(x, y)
    test = data(6, seed=9)[0]
    steps = [data(1, seed=20 + i) for i in range(5)]
    cond = gp
    for new_x, new_y in steps:
        cond = cond.condition_on_observations(new_x, new_y)
    all_x = torch.cat([x] + [s[0] for s in steps])
    all_y = torch.cat([y] + [s[1] for s in steps])
    assert_same_posterior(cond, exact(all_x, all_y), test, 1e-8)


def test_fantasy_batches_match_rebuilt_models():
    x, y = data(40)
    gp = exact(x, y)
    new_x = torch.rand(3, 2, 2, generator=gen(3), dtype=F64)  # 3 sets of 2 points
    fantasies = torch.randn(4, 3, 2, generator=gen(4), dtype=F64)  # 4 samples each
    cond = gp.condition_on_observations(new_x, fantasies)
    assert cond.train_x.shape == (4, 3, 42, 2)
    test = torch.rand(3, 5, 2, generator=gen(6), dtype=F64)
    post = cond.posterior(test)
    assert post.mean.shape == (4, 3, 5)
    for s, b in [(0, 0), (3, 2), (1, 1)]:
        ref = exact(torch.cat([x, new_x[b]]), torch.cat([y, fantasies[s, b]])).posterior(test[b])
        torch.testing.assert_close(post.mean[s, b], ref.mean, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(post.covariance.to_dense()[s, b], ref.covariance.to_dense(), rtol=1e-8, atol=1e-8)


def test_cg_conditioning_warm_starts_and_matches_rebuild():
    x, y = data(400)
    new_x, new_y = data(3, seed=7)
    test = data(8, seed=9)[0]
    solver = fg.CG(eval_tol=1e-8, variance_tol=None, precond=fg.PivotedCholesky(rank=5))
    gp = exact(x, y, solver)
    gp.posterior(test)
    cond = gp.condition_on_observations(new_x, new_y)
    warm = cond._prediction.diagnostics["cg_iterations"]
    rebuilt = exact(torch.cat([x, new_x]), torch.cat([y, new_y]), solver)
    assert_same_posterior(cond, rebuilt, test, 1e-5)
    cold = rebuilt.diagnostics["cg_iterations"]
    assert warm < cold, (warm, cold)


def test_fixed_noise_needs_and_takes_the_new_variances():
    x, y = data(30)
    noise = torch.full((30,), 0.03, dtype=F64)
    gp = exact(x, y, likelihood=fg.likelihoods.FixedNoise(noise))
    new_x, new_y = data(2, seed=4)
    with pytest.raises(ValueError, match="noise: a FixedNoise likelihood needs"):
        gp.condition_on_observations(new_x, new_y)
    cond = gp.condition_on_observations(new_x, new_y, noise=torch.tensor([0.1, 0.2], dtype=F64))
    rebuilt = exact(torch.cat([x, new_x]), torch.cat([y, new_y]),
                    likelihood=fg.likelihoods.FixedNoise(torch.cat([noise, torch.tensor([0.1, 0.2], dtype=F64)])))
    assert_same_posterior(cond, rebuilt, data(5, seed=8)[0], 1e-8)


def test_bad_observations_are_refused():
    x, y = data(20)
    gp = exact(x, y)
    with pytest.raises(ValueError, match="y: expected shape"):
        gp.condition_on_observations(x[:3], y[:2])
    with pytest.raises(ValueError, match="y: expected finite"):
        gp.condition_on_observations(x[:1], torch.tensor([float("nan")], dtype=F64))
    with pytest.raises(ValueError, match="noise: the model's Gaussian"):
        gp.condition_on_observations(x[:1], y[:1], noise=torch.ones(1, dtype=F64))
    with pytest.raises(ValueError, match="x: expected shape"):
        gp.condition_on_observations(torch.rand(2, 3, dtype=F64), y[:2])


def test_conditioned_model_saves_loads_and_agrees_with_set_train_data(tmp_path):
    x, y = data(30)
    new_x, new_y = data(2, seed=3)
    cond = exact(x, y).condition_on_observations(new_x, new_y)
    test = data(4, seed=5)[0]
    fg.save(cond, tmp_path / "cond.fgp")
    loaded = fg.load(tmp_path / "cond.fgp").eval()
    assert_same_posterior(cond, loaded, test, 1e-10)
    reset = exact(x, y)
    reset.set_train_data(torch.cat([x, new_x]), torch.cat([y, new_y]))
    assert_same_posterior(cond, reset, test, 1e-8)


def test_solver_switch_and_other_models_rebuild_their_cache():
    x, y = data(41)
    gp = exact(x, y, fg.Auto(max_cholesky_n=41))
    gp.posterior(x[:2])
    new_x, new_y = data(2, seed=3)
    cond = gp.condition_on_observations(new_x, new_y)  # 43 points: the CG path from now on
    assert cond._prediction is None
    rebuilt = exact(torch.cat([x, new_x]), torch.cat([y, new_y]), fg.Auto(max_cholesky_n=41))
    assert_same_posterior(cond, rebuilt, x[:3], 1e-6)
    sgpr = fg.SGPR(x, y, K.Scale(K.RBF(ard_dims=2)), inducing=x[:8]).eval()
    cond = sgpr.condition_on_observations(new_x, new_y)
    ref = fg.SGPR(torch.cat([x, new_x]), torch.cat([y, new_y]), K.Scale(K.RBF(ard_dims=2)), inducing=x[:8]).eval()
    ref.load_state_dict(cond.state_dict())
    assert_same_posterior(cond, ref, x[:3], 1e-10)


def test_gradients_flow_through_conditioning_on_the_cholesky_path():
    x, y = data(20)
    gp = exact(x, y)
    test = data(3, seed=4)[0]

    def conditioned(new_x, new_y):
        post = gp.condition_on_observations(new_x, new_y).posterior(test)
        return post.mean, post.covariance.to_dense()
    new_x = torch.rand(2, 2, generator=gen(8), dtype=F64, requires_grad=True)
    new_y = torch.rand(2, generator=gen(9), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(conditioned, (new_x, new_y))
    cg = exact(*data(60), fg.CG(variance_tol=None))
    cg.posterior(test)
    with pytest.raises(NotImplementedError, match="need the Cholesky path"):
        cg.condition_on_observations(new_x, new_y)
    constant = gp.condition_on_observations(new_x.detach(), new_y.detach())
    assert not constant.posterior(test).mean.requires_grad
