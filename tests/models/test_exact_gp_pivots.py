# Tests for the reuse of preconditioner pivots across ExactGP training steps (PivotedCholesky
# refresh_every): the refresh schedule in diagnostics, fits against refresh_every=1 and Cholesky,
# and the cache's life: set_train_data, dtype changes, deepcopy, fg.save, prediction.
import copy

import pytest
import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale

F64 = torch.float64


def problem(n=600, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1]) + 0.3 * x[:, 2] + 0.1 * torch.randn(n, generator=g, dtype=F64)
    return x, y


def cg(refresh_every, rank=100):
    return fg.CG(tol=1.0, probes=10, precond=fg.PivotedCholesky(rank, refresh_every=refresh_every),
                 backend="dense")


def adam_fit(solver, steps=15, n=600, probe_seed=3):
    """(fitted hyperparameters (lengthscales, outputscale, noise), mll per step, diagnostics per step)."""
    x, y = problem(n)
    model = fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=3)), solver=solver)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(probe_seed)
    mlls, diagnostics = [], []
    for _ in range(steps):
        opt.zero_grad()
        mll = model.mll(generator=generator)
        (-mll).backward()
        opt.step()
        mlls.append(float(mll.detach()))
        diagnostics.append(dict(model.diagnostics))
    hyper = torch.cat([model.kernel.base.lengthscale.detach().flatten(), model.kernel.outputscale.detach().view(1),
                       model.likelihood.noise.detach().view(1)])
    return hyper, mlls, diagnostics


def test_reused_pivots_fit_like_fresh_ones_and_like_cholesky():
    exact, _, _ = adam_fit(fg.Cholesky())
    fresh, fresh_mll, fresh_diag = adam_fit(cg(1))
    reused, reused_mll, reused_diag = adam_fit(cg(10))
    assert [d["precond_pivots"] for d in fresh_diag] == ["greedy"] * 15
    assert [d["precond_pivots"] for d in reused_diag] == ["greedy"] + ["reused"] * 9 + ["greedy"] + ["reused"] * 4
    assert reused_mll[0] == fresh_mll[0]  # step 1: the same greedy preconditioner, the same probes
    # the estimator is unbiased for any SPD preconditioner: both fits land where Cholesky does, up to
    # the noise of the probes (observed: <= 1.2 % over probe seeds; a preconditioner of the wrong
    # rows, or none, is 2.5-8 % off)
    for fitted in (fresh, reused):
        assert float(((fitted - exact).abs() / exact).max()) < 0.02, (fitted, exact)
    assert float(((reused - fresh).abs() / fresh).max()) < 0.02


def model(n=300, solver=None):
    x, y = problem(n)
    return fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=3)), solver=solver or cg(10, rank=30))


def test_set_train_data_invalidates_the_pivots():
    gp = model()
    for _ in range(2):
        gp.mll()
    assert gp.diagnostics["precond_pivots"] == "reused" and gp.pivot_cache.pivots is not None
    x, y = problem(300, seed=1)
    gp.set_train_data(x, y)
    assert gp.pivot_cache.pivots is None
    gp.mll()
    assert gp.diagnostics["precond_pivots"] == "greedy"
    x, y = problem(250, seed=2)  # another n too
    gp.set_train_data(x, y)
    gp.mll()
    assert gp.diagnostics["precond_pivots"] == "greedy" and gp.pivot_cache.pivots.shape == (30,)
    gp.mll()
    assert gp.diagnostics["precond_pivots"] == "reused"


def test_a_new_dtype_or_solver_gets_fresh_pivots():
    gp = model()
    gp.mll()
    gp.float()
    gp.mll()
    assert gp.diagnostics["precond_pivots"] == "greedy" and gp.pivot_cache.pivots is not None
    gp.solver = cg(10, rank=20)
    gp.mll()
    assert gp.diagnostics["precond_pivots"] == "greedy" and gp.pivot_cache.pivots.shape == (20,)
    gp.solver = fg.CG(precond=None, backend="dense")
    gp.mll()
    assert gp.diagnostics["precond_pivots"] is None


def test_cholesky_path_and_predictions_leave_the_pivots_alone():
    gp = model(solver=fg.Cholesky())
    gp.mll()
    assert "precond_pivots" not in gp.diagnostics and gp.pivot_cache.pivots is None
    gp.solver = cg(10, rank=30)
    gp.mll()
    pivots = gp.pivot_cache.pivots.clone()
    gp.posterior(problem(20, seed=4)[0])  # prediction builds its own (greedy) preconditioner
    assert torch.equal(gp.pivot_cache.pivots, pivots) and gp.pivot_cache.builds == 1


def test_deepcopy_save_and_load(tmp_path):
    gp = model()
    gp.mll()
    twin = copy.deepcopy(gp)
    assert twin.pivot_cache is not gp.pivot_cache and torch.equal(twin.pivot_cache.pivots, gp.pivot_cache.pivots)
    twin.mll()
    assert twin.diagnostics["precond_pivots"] == "reused" and gp.pivot_cache.builds == 1
    keys = set(gp.state_dict())
    assert not any("pivot" in key for key in keys)
    fg.save(gp, tmp_path / "gp.fgp")
    loaded = fg.load(tmp_path / "gp.fgp")
    assert set(loaded.state_dict()) == keys and loaded.pivot_cache.pivots is None
    assert loaded.solver == gp.solver and loaded.solver.precond.refresh_every == 10


def test_refresh_every_is_validated_and_serialized():
    assert fg.PivotedCholesky().refresh_every == 10
    with pytest.raises(ValueError, match="^refresh_every"):
        fg.PivotedCholesky(refresh_every=0)
    with pytest.raises(TypeError, match="^refresh_every"):
        fg.PivotedCholesky(refresh_every=2.5)
    from flashgp.serialize import solver_from_config, solver_to_config
    solver = cg(4)
    assert solver_from_config(solver_to_config(solver)) == solver
    old = solver_to_config(solver)  # a file written before refresh_every existed
    del old["args"]["precond"]["args"]["refresh_every"]
    assert solver_from_config(old).precond == fg.PivotedCholesky(100)


def test_max_rank_is_serialized_and_old_files_load():
    from flashgp.serialize import solver_from_config, solver_to_config
    solver = fg.CG(precond=fg.PivotedCholesky(50, max_rank=200))
    assert solver_from_config(solver_to_config(solver)) == solver
    old = solver_to_config(fg.CG(precond=fg.PivotedCholesky(50)))  # written before max_rank existed
    del old["args"]["precond"]["args"]["max_rank"]
    assert solver_from_config(old).precond == fg.PivotedCholesky(50)
