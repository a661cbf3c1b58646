# Tests for the block preconditioner P = L L^T + blockdiag(K_hat - L L^T): the spatial order,
# LowRankPlusBlockDiag against its dense matrix (solve, log det, diagonal, samples), batches,
# float32, jitter, and its effect on CG through ExactGP.
import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Matern, Scale
from flashgp.linalg import mbcg, pivoted_cholesky, pivoted_cholesky_preconditioner
from flashgp.linalg.block_preconditioner import block_preconditioner
from flashgp.linalg.spatial import block_index, spatial_order
from flashgp.operators import Dense, KernelOperator

F64 = torch.float64


def points(n, d, seed, dtype=F64):
    return torch.rand(n, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def kernel_op(x, lengthscale=0.2, outputscale=1.5, nu=2.5):
    kernel = Scale(Matern(nu=nu, lengthscale=lengthscale), outputscale=outputscale).to(x.dtype)
    return KernelOperator(kernel, x, backend="blocked")


def dense_reference(op, noise, factor, index):
    """L L^T + blockdiag(K + diag(noise) - L L^T) over the blocks of index, float64."""
    k_hat = op.to_dense().detach().double() + torch.diag_embed(noise.double())
    low = factor.double() @ factor.double().transpose(-1, -2)
    out = low.clone()
    n = k_hat.shape[-1]
    for b, block in enumerate(index.reshape(-1, index.shape[-1])):
        del b
        block = block[block < n]
        out[..., block[:, None], block[None, :]] = k_hat[..., block[:, None], block[None, :]]
    return out


@pytest.mark.parametrize("d", [1, 2, 3])
def test_spatial_order_blocks_are_separated_boxes(d):
    n, b = 700, 32
    z = points(n, d, seed=d)
    order = spatial_order(z, b)
    assert torch.equal(order.sort().values, torch.arange(n))
    runs = [z[order[s:s + b]] for s in range(0, n, b)]
    assert all(len(r) == b for r in runs[:-1])
    # recursive axis-aligned cuts: any two runs are separated along some coordinate
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            apart = (runs[i].amax(0) <= runs[j].amin(0)) | (runs[j].amax(0) <= runs[i].amin(0))
            assert bool(apart.any()), (i, j)
    if d == 1:  # in one dimension the runs are the sorted points
        assert torch.equal(z[order, 0].sort().values, z[order, 0]) or all(
            float(runs[i].max()) <= float(runs[i + 1].min()) for i in range(len(runs) - 1))


def test_block_index_pads_the_last_block():
    z = points(100, 2, seed=0)
    index = block_index(z.expand(3, 100, 2), 32)
    assert index.shape == (3, 4, 32)
    for element in index:
        flat = element.flatten()
        assert torch.equal(flat[flat < 100].sort().values, torch.arange(100))
        assert bool((flat[100:] == 100).all()) and bool((flat[:100] < 100).all())
    with pytest.raises(ValueError, match="block"):
        block_index(z, 0)


@pytest.mark.parametrize("n,block,rank", [(300, 64, 20), (257, 32, 0), (100, 128, 10)])
def test_block_preconditioner_matches_its_dense_matrix(n, block, rank):
    x = points(n, 2, seed=n)
    op = kernel_op(x)
    noise = torch.full((n,), 1e-3, dtype=F64)
    factor = pivoted_cholesky(op, rank)
    p = block_preconditioner(op, noise, factor, block)
    ref = dense_reference(op, noise, factor, p.index)
    assert torch.allclose(p.to_dense(), ref, rtol=0, atol=1e-12 * float(ref.abs().max()))
    rhs = torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(p.solve(rhs), torch.linalg.solve(ref, rhs), rtol=1e-8, atol=1e-10)
    assert torch.allclose(p.logdet(), torch.linalg.slogdet(ref)[1], rtol=1e-10)
    assert torch.allclose(p.diagonal(), ref.diagonal(), rtol=1e-12)
    assert p.rank == factor.shape[-1] and p.block_size == min(block, n)


def test_block_preconditioner_samples_have_its_covariance():
    n = 60
    x = points(n, 2, seed=5)
    op = kernel_op(x, lengthscale=0.3)
    noise = torch.full((n,), 1e-2, dtype=F64)
    factor = pivoted_cholesky(op, 5)
    p = block_preconditioner(op, noise, factor, 16)
    ref = dense_reference(op, noise, factor, p.index)
    draws = 40000
    samples = p.sample(draws, generator=torch.Generator().manual_seed(2)).double()
    cov = samples @ samples.T / draws
    err = float((cov - ref).norm() / ref.norm())
    low_rank_only = factor @ factor.T + torch.diag(noise)  # what samples without blocks would have
    assert err < 0.03
    assert float((low_rank_only - ref).norm() / ref.norm()) > 10 * err


def test_block_preconditioner_batches_are_each_their_own():
    n = 150
    x = points(n, 2, seed=7)
    kernel = Scale(RBF(batch_shape=(2,))).double()
    kernel.base.lengthscale = torch.tensor([[[0.1]], [[0.4]]], dtype=F64)
    kernel.outputscale = torch.tensor([1.0, 2.0], dtype=F64)
    op = KernelOperator(kernel, x, backend="blocked")
    noise = torch.tensor([[1e-3], [1e-2]], dtype=F64).expand(2, n)
    factor = pivoted_cholesky(op, 10)
    p = block_preconditioner(op, noise, factor, 32)
    assert p.shape == (2, n, n)
    ref = dense_reference(op, noise, factor, p.index[0])  # one order: x is shared
    rhs = torch.randn(2, n, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(p.solve(rhs), torch.linalg.solve(ref, rhs), rtol=1e-8, atol=1e-10)
    assert torch.allclose(p.logdet(), torch.linalg.slogdet(ref)[1], rtol=1e-10)


def test_block_preconditioner_float32_is_consistent():
    """In float32 P is defined by its stored whiteners and factor: solve inverts P's own product."""
    n = 400
    x = points(n, 3, seed=8, dtype=torch.float32)
    op = kernel_op(x, lengthscale=0.15)
    noise = torch.full((n,), 1e-4)
    p = pivoted_cholesky_preconditioner(op, noise, 30, block_size=64)
    assert p.dtype == torch.float32
    dense = p.matmul(torch.eye(n, dtype=F64))  # the product runs in float64 on the stored factors
    assert torch.allclose(dense, dense.T, atol=1e-12 * float(dense.abs().max()))
    assert float(torch.linalg.eigvalsh(dense).min()) > 0
    rhs = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    rel = (dense @ p.solve(rhs) - rhs).norm() / rhs.norm()
    assert float(rel) < 1e-8  # solves run in float64 on the stored factors
    assert abs(float(p.logdet()) - float(torch.linalg.slogdet(dense)[1])) < 1e-5 * n


def test_blocks_that_fail_cholesky_get_jitter():
    n = 80
    x = points(n, 2, seed=9)
    op = kernel_op(x)
    factor = 1.00001 * pivoted_cholesky(op, 10)  # L L^T > K along L: K - L L^T is indefinite
    info = {}
    p = block_preconditioner(op, torch.full((n,), 1e-6, dtype=F64), factor, 20, info=info)
    assert info["jittered_blocks"] > 0 and info["max_jitter"] > 0 and "diagonal_blocks" not in info
    assert p.build_info is info
    assert float(torch.linalg.eigvalsh(p.to_dense()).min()) > 0


def test_blocks_beyond_jitter_keep_their_diagonal():
    """A factor far from K's (L L^T = 4 K along L): jitter up to 1e-3 of the kernel's scale does
    not help, so those blocks keep only their diagonal; P stays SPD and exact for its solves."""
    n = 80
    x = points(n, 2, seed=9)
    op = kernel_op(x)
    factor = 2.0 * pivoted_cholesky(op, 10)
    noise = torch.full((n,), 1e-3, dtype=F64)
    info = {}
    p = block_preconditioner(op, noise, factor, 20, info=info)
    assert info["diagonal_blocks"] > 0
    dense = p.to_dense()
    assert float(torch.linalg.eigvalsh(dense).min()) > 0
    rhs = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(dense @ p.solve(rhs), rhs, atol=1e-8)
    assert torch.allclose(p.logdet(), torch.linalg.slogdet(dense)[1], rtol=1e-10)
    with pytest.raises(ValueError, match="non-finite"):
        block_preconditioner(op, noise, factor * float("nan"), 20)


def test_block_preconditioner_needs_a_kernel_operator():
    a = torch.eye(10, dtype=F64)
    with pytest.raises(TypeError, match="KernelOperator"):
        block_preconditioner(Dense(a), torch.ones(10, dtype=F64), torch.zeros(10, 0, dtype=F64), 4)
    with pytest.raises(ValueError, match="block_size"):
        fg.PivotedCholesky(10, block_size=-1)
    with pytest.raises(TypeError, match="block_size"):
        fg.PivotedCholesky(10, block_size=2.5)


def test_blocks_cut_cg_iterations_at_small_noise():
    """Many points per lengthscale and small noise: the low rank misses the short range; the
    blocks catch it (fewer iterations to 1e-2 than the same memory spent on rank: 104 against
    511 when written)."""
    n = 1500
    x = points(n, 3, seed=10)
    op = kernel_op(x, lengthscale=0.15)
    noise = torch.full((n,), 1e-4, dtype=F64)
    k_hat = op.to_dense().detach() + torch.diag(noise)
    rhs = torch.randn(n, 1, dtype=F64, generator=torch.Generator().manual_seed(11))
    iterations = {}
    for rank, block in ((40 + 64, 0), (40, 64)):
        p = pivoted_cholesky_preconditioner(op, noise, rank, block_size=block)
        result = mbcg(lambda v: k_hat @ v, rhs, precond=p.solve, tol=1e-2, max_iters=2000, warn=False)
        assert result.converged
        iterations[block] = result.iterations
    assert iterations[64] < 0.4 * iterations[0], iterations


def test_exact_gp_with_blocks_matches_cholesky():
    g = torch.Generator().manual_seed(12)
    x = torch.rand(1200, 3, dtype=F64, generator=g)
    y = torch.sin(6 * x).sum(-1) + 0.02 * torch.randn(1200, dtype=F64, generator=g)

    def model(solver):
        m = fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=3, lengthscale=0.2)), solver=solver)
        m.likelihood.noise = 4e-4
        return m

    exact = model(fg.Cholesky())
    reference = exact.mll()
    reference.backward()
    ref_grad = torch.cat([p.grad.flatten() for p in exact.parameters()])
    solver = fg.CG(precond=fg.PivotedCholesky(30, block_size=100), backend="dense", probes=30,
                   eval_tol=1e-8)
    values, grads = [], []
    for seed in range(4):
        m = model(solver)
        value = m.mll(generator=torch.Generator().manual_seed(seed))
        value.backward()
        values.append(float(value.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        assert m.diagnostics["precond_block_size"] == 100
        assert m.diagnostics["precond_block_repairs"]["diagonal_blocks"] == 0
    assert abs(sum(values) / 4 - float(reference.detach())) < 5e-3
    grad = torch.stack(grads).mean(0)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) < 0.05
    mean = m.posterior(x[:20]).mean
    assert torch.allclose(mean, exact.posterior(x[:20]).mean, atol=1e-5)
    assert m.diagnostics["precond_block_size"] == 100


def test_training_reuses_pivots_with_blocks_and_saves_the_setting():
    """Adam steps with PivotedCholesky(block_size=...): the pivots are reused between greedy
    builds as without blocks, each build has blocks, and the solver config round-trips."""
    from flashgp.serialize import solver_from_config, solver_to_config
    g = torch.Generator().manual_seed(13)
    x = torch.rand(600, 2, dtype=F64, generator=g)
    y = torch.sin(5 * x).sum(-1) + 0.05 * torch.randn(600, dtype=F64, generator=g)
    solver = fg.CG(precond=fg.PivotedCholesky(20, refresh_every=3, block_size=64), backend="dense")
    model = fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=2)), solver=solver)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sources, orders = [], []
    for _ in range(6):
        opt.zero_grad()
        loss = -model.mll(generator=torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()
        sources.append(model.diagnostics["precond_pivots"])
        orders.append(model.pivot_cache.blocks)
        assert model.diagnostics["precond_block_size"] == 64
        assert torch.isfinite(loss)
    assert sources[:3] == ["greedy", "reused", "reused"] and "greedy" in sources[3:]
    same = [o.data_ptr() == orders[0].data_ptr() for o in orders]
    assert same[:3] == [True, True, True]  # reused builds keep the spatial order (no new one)
    assert not same[sources.index("greedy", 1)]  # a greedy build orders the points afresh
    assert solver_from_config(solver_to_config(solver)) == solver
    old = solver_to_config(fg.CG())  # written before block_size existed: the default, 0
    del old["args"]["precond"]["args"]["block_size"]
    assert solver_from_config(old).precond.block_size == 0


def test_chunked_build_and_solves_match(monkeypatch):
    """Large n takes the chunked paths: the build in chunks of blocks, and solves that convert
    float32 whiteners a chunk at a time instead of keeping a float64 copy. Same operator."""
    import flashgp.linalg.block_preconditioner as build
    import flashgp.operators.block_low_rank as blocks
    n = 300
    x = points(n, 2, seed=14, dtype=torch.float32)
    op = kernel_op(x)
    noise = torch.full((n,), 1e-3)
    factor = pivoted_cholesky(op, 15)
    whole = block_preconditioner(op, noise, factor, 32)
    monkeypatch.setattr(build, "BUILD_CHUNK_ENTRIES", 3 * 32 * 32)
    monkeypatch.setattr(blocks, "WHITEN_CHUNK_ENTRIES", 2 * 32 * 32)
    monkeypatch.setattr(blocks, "WHITENER_CACHE_BYTES", 0)
    chunked = block_preconditioner(op, noise, factor, 32)
    assert chunked._whitener64 is None and len(chunked._chunks()) == 5
    assert torch.equal(chunked.whitener, whole.whitener)
    rhs = torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(15))
    assert torch.allclose(chunked.solve(rhs), whole.solve(rhs), rtol=1e-12, atol=1e-12)
    assert torch.allclose(chunked.logdet(), whole.logdet())
    gen = torch.Generator().manual_seed(16)
    assert torch.allclose(chunked.sample(2, generator=gen), whole.sample(2, generator=gen.manual_seed(16)))
