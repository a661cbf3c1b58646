# Tests for the Vecchia preconditioner: the predecessor search against a brute-force one, the
# sparse factor U against its dense matrix, exactness with all predecessors, the split CG path of
# inv_quad_logdet against float64 Cholesky, and the solver wiring (ExactGP, reuse, save/load).
import pytest
import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale
from flashgp.linalg import PivotCache, inv_quad_logdet, mbcg, pivoted_cholesky_preconditioner
from flashgp.linalg.vecchia import FIRST_BLOCK, predecessor_neighbors, random_order, vecchia_index, \
    vecchia_preconditioner
from flashgp.operators import AddedDiag, Dense, KernelOperator
from flashgp.operators.sparse_inverse import SparseInverseCholesky

F64 = torch.float64


def points(n, d, seed, dtype=F64):
    return torch.rand(n, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def kernel_op(x, lengthscale=0.2, outputscale=1.5, backend="blocked"):
    kernel = Scale(Matern(nu=2.5, lengthscale=lengthscale), outputscale=outputscale).to(x.dtype)
    return KernelOperator(kernel, x, backend=backend)


def dense_k_hat(op, noise):
    return op.to_dense().detach().double() + torch.diag_embed(noise.double())


@pytest.mark.parametrize("n,m", [(300, 8), (2600, 5), (5000, 30)])
def test_predecessor_neighbors_are_the_nearest_earlier_points(n, m):
    z = points(n, 3, seed=n)
    order = random_order(n, 3, z.device)
    got = predecessor_neighbors(z, m, order)
    position = torch.empty(n, dtype=torch.long)
    position[order] = torch.arange(n)
    zp = z[order]
    full = 0
    for i in range(n):
        p = int(position[i])
        row = got[i]
        real = row[row < n]
        assert bool((row[len(real):] == n).all())  # padding last
        # the nearest predecessors, nearest first (a prefix of the sorted list)
        d2 = (zp[:p] - z[i]).square().sum(-1)
        nearest = order[d2.argsort()[:len(real)]]
        assert set(real.tolist()) == set(nearest.tolist()), i
        assert bool((position[real] < p).all())
        if p < FIRST_BLOCK:
            assert len(real) == min(m, p)
        full += len(real) == min(m, p)
    assert full >= 0.9 * n  # fewer than m only where the candidates ran out


def test_vecchia_index_rows_end_with_the_point_and_batch():
    z = points(200, 2, seed=1).expand(3, 200, 2)
    index = vecchia_index(z, 10)
    assert index.shape == (3, 200, 11)
    assert torch.equal(index[..., -1], torch.arange(200).expand(3, 200))
    assert torch.equal(index[0], index[2])  # same points, same order


@pytest.mark.parametrize("n,m", [(150, 6), (400, 20)])
def test_sparse_factor_against_its_dense_matrix(n, m):
    x = points(n, 2, seed=m)
    op = kernel_op(x)
    noise = torch.full((n,), 1e-3, dtype=F64)
    p = vecchia_preconditioner(op, noise, m)
    u = p.to_dense()
    order = random_order(n, 0, x.device)
    assert torch.equal(torch.tril(u[order][:, order]), u[order][:, order])  # triangular in the order
    rhs = torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(p.mul(rhs), u @ rhs, rtol=0, atol=1e-12)
    assert torch.allclose(p.mul_t(rhs), u.T @ rhs, rtol=0, atol=1e-12)
    assert torch.allclose(p.solve(rhs), u.T @ (u @ rhs), rtol=0, atol=1e-10)
    assert torch.allclose(p.logdet(), -2 * torch.linalg.slogdet(u)[1], rtol=1e-12)
    # each row is the conditional of its point given its predecessors: U K_hat U^T has unit
    # diagonal (var(y_i | y_N(i)) / d_i = 1)
    a = u @ dense_k_hat(op, noise) @ u.T
    assert torch.allclose(a.diagonal(), torch.ones(n, dtype=F64), atol=1e-9)


def test_all_predecessors_give_the_exact_inverse():
    n = 120
    x = points(n, 3, seed=5)
    op = kernel_op(x, lengthscale=0.3)
    noise = torch.full((n,), 1e-2, dtype=F64)
    p = vecchia_preconditioner(op, noise, n - 1)
    k_hat = dense_k_hat(op, noise)
    u = p.to_dense()
    assert torch.allclose(u.T @ u @ k_hat, torch.eye(n, dtype=F64), atol=1e-8)
    assert torch.allclose(p.logdet(), torch.linalg.slogdet(k_hat)[1], rtol=1e-10)


def test_split_path_is_exact_with_an_exact_preconditioner():
    """With U^T U = K_hat^{-1}, CG on U K_hat U^T = I converges at once: the inverse quadratic,
    its gradient and the log det equal Cholesky's (the probe part of the log det's gradient is
    stochastic and not checked here)."""
    n = 100
    x = points(n, 2, seed=6)
    kernel = Scale(Matern(nu=2.5, lengthscale=0.3), outputscale=1.2).double()
    op = KernelOperator(kernel, x, backend="dense")
    noise = torch.full((n,), 1e-2, dtype=F64)
    k_hat = AddedDiag(op, noise)
    p = vecchia_preconditioner(op, noise, n - 1)
    rhs = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(7))
    info = {}
    inv_quad, logdet = inv_quad_logdet(k_hat, rhs, p, probes=5, tol=1e-10, lanczos_iters=0, info=info)
    dense = kernel(x) + torch.diag(noise)
    chol = torch.linalg.cholesky(dense)
    exact_iq = (torch.cholesky_solve(rhs[:, None], chol)[:, 0] * rhs).sum()
    assert info["iterations"] <= 2
    assert torch.allclose(inv_quad, exact_iq, rtol=1e-8)
    assert torch.allclose(logdet, 2 * chol.diagonal().log().sum(), rtol=1e-8)
    grads = torch.autograd.grad(inv_quad, list(kernel.parameters()))
    exact = torch.autograd.grad(exact_iq, list(kernel.parameters()))
    for g, e in zip(grads, exact):
        assert torch.allclose(g, e, rtol=1e-7, atol=1e-9)


def test_vecchia_beats_an_equal_memory_low_rank_factor():
    """Dense data, small noise (3D, many points per lengthscale): CG needs far fewer iterations
    with 30 neighbours than with a pivoted Cholesky of rank 31 (the same n x 31 numbers)."""
    n = 1000
    x = points(n, 3, seed=8)
    op = kernel_op(x, lengthscale=0.15, backend="dense")
    noise = torch.full((n,), 1e-4, dtype=F64)
    k_hat = AddedDiag(op, noise)
    rhs = torch.randn(n, 1, dtype=F64, generator=torch.Generator().manual_seed(9))
    vecchia = vecchia_preconditioner(op, noise, 30)
    low_rank = pivoted_cholesky_preconditioner(op, noise, 31)
    its = {name: mbcg(k_hat.matmul, rhs, precond=p.solve, tol=1e-2, max_iters=400, warn=False).iterations
           for name, p in (("vecchia", vecchia), ("low_rank", low_rank))}
    assert its["vecchia"] * 5 < its["low_rank"], its


def model_at(x, y, solver, lengthscale=(0.3, 0.2, 0.25), noise=3e-3):
    kernel = Scale(Matern(nu=2.5, ard_dims=x.shape[-1]))
    model = fg.ExactGP(x, y, kernel, solver=solver)
    with torch.no_grad():
        model.kernel.base.lengthscale = torch.tensor([lengthscale], dtype=x.dtype)
        model.kernel.outputscale = torch.tensor(1.5, dtype=x.dtype)
        model.likelihood.noise = torch.tensor(noise, dtype=x.dtype)
    return model


def mll_and_grad(model):
    model.zero_grad()
    value = model.mll()
    value.backward()
    return float(value.detach()), torch.cat([p.grad.flatten() for p in model.parameters()])


def toy_data(n=1200, d=3, seed=10, dtype=F64):
    x = points(n, d, seed, dtype)
    g = torch.Generator().manual_seed(seed + 1)
    return x, torch.sin(6 * x).sum(-1) + 0.05 * torch.randn(n, generator=g, dtype=dtype)


def test_exact_gp_with_vecchia_matches_cholesky():
    x, y = toy_data()
    exact_value, exact_grad = mll_and_grad(model_at(x, y, fg.Cholesky()))
    model = model_at(x, y, fg.CG(precond=fg.Vecchia(20), lanczos_iters=10, eval_tol=1e-8))
    draws = [mll_and_grad(model) for _ in range(4)]
    value = sum(v for v, _ in draws) / len(draws)
    grad = torch.stack([g for _, g in draws]).mean(0)
    assert abs(value - exact_value) < 2e-3  # per point
    assert float((grad - exact_grad).norm() / exact_grad.norm()) < 0.05
    d = model.diagnostics
    assert d["precond_neighbors"] == 20 and d["precond_rank"] == 0
    assert d["precond_pivots"] == "reused" and d["cg_iterations"] == 10
    model.eval()
    xt = points(100, 3, seed=11)
    reference = model_at(x, y, fg.Cholesky())
    reference.eval()
    with torch.no_grad():
        mean, exact_mean = model.predict(xt).mean, reference.predict(xt).mean
    assert float((mean - exact_mean).abs().max()) < 1e-5 * float(exact_mean.abs().max())
    assert model.diagnostics["precond_neighbors"] == 20


def test_vecchia_batches_are_each_their_own():
    """A batch of two kernels (lengthscales 0.1 and 0.4): each element searches its own neighbours
    in its own scaled inputs and is the conditional factor of its own K_hat."""
    n = 90
    x = points(n, 2, seed=13)
    kernel = Scale(Matern(nu=2.5, ard_dims=2, batch_shape=(2,))).double()
    kernel.base.lengthscale = torch.tensor([[[0.1, 0.3]], [[0.4, 0.2]]], dtype=F64)
    kernel.outputscale = torch.tensor([1.0, 2.0], dtype=F64)
    op = KernelOperator(kernel, x, backend="blocked")
    noise = torch.tensor([[1e-3], [1e-2]], dtype=F64).expand(2, n)
    p = vecchia_preconditioner(op, noise, 10)
    assert p.index.shape == (2, n, 11) and not torch.equal(p.index[0], p.index[1])
    k_hat = dense_k_hat(op, noise)
    u = p.to_dense()
    a = u @ k_hat @ u.transpose(-1, -2)
    assert torch.allclose(a.diagonal(dim1=-2, dim2=-1), torch.ones(2, n, dtype=F64), atol=1e-9)
    exact = vecchia_preconditioner(op, noise, n - 1)
    assert torch.allclose(exact.logdet(), torch.linalg.slogdet(k_hat)[1], rtol=1e-10)
    rhs = torch.randn(2, n, dtype=F64, generator=torch.Generator().manual_seed(14))
    inv_quad, logdet = inv_quad_logdet(AddedDiag(op, noise), rhs, exact, probes=3, tol=1e-10, lanczos_iters=0)
    assert torch.allclose(inv_quad, (rhs * torch.linalg.solve(k_hat, rhs)).sum(-1), rtol=1e-8)
    assert torch.allclose(logdet, torch.linalg.slogdet(k_hat)[1], rtol=1e-8)


def test_neighbour_search_is_reused_then_refreshed():
    x, y = toy_data(n=300)
    model = model_at(x, y, fg.CG(precond=fg.Vecchia(10, refresh_every=2)))
    sources = []
    for _ in range(3):
        with torch.no_grad():
            model.mll()
        sources.append(model.diagnostics["precond_pivots"])
    assert sources == ["searched", "reused", "searched"]


def test_vecchia_float32_and_save_load(tmp_path):
    x, y = toy_data(n=600, dtype=torch.float32)
    model = model_at(x, y, fg.CG(precond=fg.Vecchia(20, seed=3), lanczos_iters=10))
    value32, grad32 = mll_and_grad(model)
    exact_value, exact_grad = mll_and_grad(model_at(x.double(), y.double(), fg.Cholesky()))
    assert abs(value32 - exact_value) < 2e-2  # one probe draw (the SLQ estimate is random)
    assert float((grad32.double() - exact_grad).norm() / exact_grad.norm()) < 0.2
    path = tmp_path / "m.flashgp"
    fg.save(model, path)
    loaded = fg.load(path)
    assert loaded.solver.precond == fg.Vecchia(20, seed=3)


def test_vecchia_bad_input():
    with pytest.raises(ValueError, match="neighbors"):
        fg.Vecchia(0)
    with pytest.raises(TypeError, match="neighbors"):
        fg.Vecchia(2.5)
    with pytest.raises(TypeError, match="precond"):
        fg.CG(precond="vecchia")
    dense = Dense(torch.eye(5, dtype=F64))
    with pytest.raises(TypeError, match="KernelOperator"):
        vecchia_preconditioner(dense, torch.ones(5, dtype=F64), 3)
    x = points(50, 2, seed=12)
    x[3, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        vecchia_preconditioner(kernel_op(x), torch.full((50,), 1e-2, dtype=F64), 5)
    with pytest.raises(ValueError, match="shapes"):
        SparseInverseCholesky(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 2))


def test_pivot_cache_vecchia_key_changes_with_n():
    cache = PivotCache()
    for n in (100, 120):
        x = points(n, 2, seed=n)
        p = cache.vecchia(kernel_op(x), torch.full((n,), 1e-2, dtype=F64), fg.Vecchia(8))
        assert p.index.shape == (n, 9) and cache.source == "searched"
