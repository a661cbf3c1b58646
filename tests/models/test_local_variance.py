# Tests for local (nearest-neighbour) predictive variances: the variances against float64 Cholesky
# ones, and their use through CG(local_neighbors). The neighbour search: test_neighbors.py.
import math
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.kernels import Linear, Matern, Scale
from flashgp.models import local_variance as lv

F64 = torch.float64


def points(n, d, seed):
    return torch.rand(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def problem(n=600, m=150, seed=0, lengthscale=(0.15, 0.4, 0.25), noise=0.01):
    x, x_test = points(n, 3, seed), points(m, 3, seed + 1)
    y = torch.sin(2 * math.pi * x).sum(-1) / math.sqrt(3)
    y = y + 0.1 * torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(seed + 2))
    kernel = Scale(Matern(nu=2.5, ard_dims=3))
    with torch.no_grad():
        kernel.base.lengthscale = torch.tensor([lengthscale], dtype=F64)
        kernel.outputscale = torch.tensor(1.7, dtype=F64)
    return x, y, x_test, kernel, torch.full((n,), noise, dtype=F64)


@torch.no_grad()
def exact_variances(kernel, x, noise, x_test):
    k = kernel(x, x) + torch.diag(noise)
    cross = kernel(x, x_test)
    return kernel.diag(x_test) - (cross * torch.linalg.solve(k, cross)).sum(0)


def test_search_inputs_are_lengthscale_scaled_and_raw_otherwise():
    x, _, _, kernel, _ = problem()
    torch.testing.assert_close(lv.search_inputs(kernel, x), x / kernel.base.lengthscale)
    assert lv.search_inputs(Linear(), x) is x


def test_all_neighbours_give_the_exact_variances(monkeypatch):
    monkeypatch.setattr(lv, "CPU_BATCH_BYTES", 64 * 8 * 600 * 600)  # batches of 64, 64, 22
    assert lv.batch_points(600, torch.device("cpu")) == 64
    x, _, x_test, kernel, noise = problem()
    got, info = lv.local_variances(kernel, x, noise, x_test, neighbors=10_000)
    assert info.neighbors == 600 and info.jitter_points == 0
    torch.testing.assert_close(got, exact_variances(kernel, x, noise, x_test), rtol=1e-8, atol=1e-10)


def test_batches_hold_k_nn_to_a_byte_budget_off_cuda(monkeypatch):
    """CPU batches: as many k x k float64 blocks as fit CPU_BATCH_BYTES (at least one, at most
    LOCAL_BATCH); CUDA keeps LOCAL_BATCH. The variances do not depend on the batching."""
    assert lv.batch_points(256, torch.device("cpu")) == lv.CPU_BATCH_BYTES // (8 * 256 * 256)
    assert lv.batch_points(4, torch.device("cpu")) == lv.LOCAL_BATCH
    assert lv.batch_points(10_000, torch.device("cpu")) == 1
    assert lv.batch_points(256, torch.device("cuda")) == lv.LOCAL_BATCH
    x, _, x_test, kernel, noise = problem(n=300, m=40)
    one_batch, _ = lv.local_variances(kernel, x, noise, x_test, neighbors=32)
    monkeypatch.setattr(lv, "CPU_BATCH_BYTES", 3 * 8 * 32 * 32)  # batches of 3 test points
    assert lv.batch_points(32, torch.device("cpu")) == 3
    small_batches, _ = lv.local_variances(kernel, x, noise, x_test, neighbors=32)
    torch.testing.assert_close(small_batches, one_batch, rtol=1e-12, atol=1e-14)


def test_fewer_neighbours_bound_the_exact_variance_from_above_and_converge():
    x, _, x_test, kernel, noise = problem()
    exact = exact_variances(kernel, x, noise, x_test)
    previous = None
    for k in (8, 32, 128):
        got, _ = lv.local_variances(kernel, x, noise, x_test, neighbors=k)
        assert (got >= exact - 1e-10).all()
        if previous is not None:  # nested neighbour sets: never larger with more of them
            assert (got <= previous + 1e-10).all()
        previous = got
    excess = (previous - exact) / (exact + noise[0])
    assert float(excess.median()) < 0.02 and float(excess.median()) > 0  # close, yet not exact


def test_local_change_is_what_the_farther_half_of_the_neighbours_removed():
    x, _, x_test, kernel, noise = problem()
    full, info = lv.local_variances(kernel, x, noise, x_test, neighbors=40)
    half, _ = lv.local_variances(kernel, x, noise, x_test, neighbors=20)
    want = float(((half - full) / (full + noise[0])).median())
    assert want > 0.005
    assert info.change == pytest.approx(want, rel=1e-8)


def test_cg_local_neighbors_predicts_local_marginals():
    x, y, x_test, kernel, noise = problem()
    model = fg.ExactGP(x, y, kernel, solver=fg.CG(local_neighbors=64, exact_var_max=0, eval_tol=1e-8,
                                                  variance_tol=None))  # uncertified: the local ones
    with torch.no_grad():
        model.likelihood.noise = torch.tensor(0.01, dtype=F64)
    pred = model.predict(x_test)
    want, _ = lv.local_variances(kernel, x, noise, x_test, neighbors=64)
    torch.testing.assert_close(pred.variance, want + 0.01, rtol=1e-10, atol=0)
    d = model.diagnostics
    assert d["variance_method"] == "local" and d["local_neighbors"] == 64 and d["local_seconds"] >= 0
    exact = fg.ExactGP(x, y, kernel, solver=fg.Cholesky())
    with torch.no_grad():
        exact.likelihood.noise = torch.tensor(0.01, dtype=F64)
    torch.testing.assert_close(pred.mean, exact.predict(x_test).mean, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="only marginal variances are known"):
        pred.covariance.to_dense()
    with pytest.raises(ValueError, match="only marginal variances are known"):
        pred.sample()
    # small test sets still get CG variances; the local run left no CG-variance diagnostics behind
    model.solver = fg.CG(local_neighbors=64, exact_var_max=1000, eval_tol=1e-8, variance_tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fg.NumericalWarning)
        small = model.predict(x_test[:5])
    assert model.diagnostics["variance_method"] == "cg" and "local_neighbors" not in model.diagnostics
    torch.testing.assert_close(small.variance, exact.predict(x_test[:5]).variance, rtol=1e-4, atol=0)


def test_local_neighbors_must_be_a_non_negative_int():
    for bad in (-1, 2.5, True):
        with pytest.raises((ValueError, TypeError), match="local_neighbors"):
            fg.CG(local_neighbors=bad)


def test_local_neighbors_survive_a_solver_round_trip():
    from flashgp.serialize import solver_from_config, solver_to_config
    config = solver_to_config(fg.CG(local_neighbors=96))
    assert solver_from_config(config).local_neighbors == 96
    del config["args"]["local_neighbors"]  # a file written before the field existed
    assert solver_from_config(config).local_neighbors == 0


def test_any_kernel_and_per_point_noise_with_all_neighbours_are_exact():
    # a sum with a non-stationary part (neighbours searched in raw inputs) and heteroscedastic
    # FixedNoise: every training point as a neighbour still gives the exact variances
    x, y, x_test, _, _ = problem(n=300, m=40)
    kernel = Scale(Matern(nu=1.5, ard_dims=3)) + Linear()
    noise = 0.005 + 0.02 * points(300, 1, 11).squeeze(-1)
    model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.FixedNoise(noise),
                       solver=fg.CG(local_neighbors=300, exact_var_max=0, eval_tol=1e-10))
    got = model.posterior(x_test).variance
    torch.testing.assert_close(got, exact_variances(kernel, x, noise, x_test), rtol=1e-7, atol=1e-9)
    fewer, _ = lv.local_variances(kernel, x, noise, x_test, neighbors=30)
    assert (fewer >= got - 1e-9).all() and (fewer > got + 1e-6).any()
