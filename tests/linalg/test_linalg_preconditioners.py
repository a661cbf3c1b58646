# Tests for flashgp.linalg.preconditioners: pivoted Cholesky accuracy and row budget, the
# preconditioner's effect on CG iterations, and the Nystrom rebuild of the factor from its pivots.
import pytest
import torch

from flashgp.kernels import Matern, Scale
from flashgp.linalg import (mbcg, nystrom_factor, pivoted_cholesky, pivoted_cholesky_preconditioner,
                            pivoted_cholesky_with_pivots)
from flashgp.operators import KernelOperator
from flashgp.operators.dense import Dense

F64 = torch.float64


class CountingDense(Dense):
    """Dense operator that counts row evaluations and refuses products."""

    def __init__(self, matrix):
        super().__init__(matrix)
        self.rows_evaluated = 0

    def rows(self, index):
        assert index.shape[-1] == 1
        self.rows_evaluated += 1
        return super().rows(index)

    def _matmul(self, rhs):
        raise AssertionError("pivoted_cholesky must not use products")


def rbf_matrix(n, seed, lengthscale=0.2, batch=()):
    x = torch.rand(*batch, n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return torch.exp(-0.5 * torch.cdist(x, x).square() / lengthscale**2)


@pytest.mark.parametrize("batch", [(), (3,)])
def test_exact_for_low_rank_matrix(batch):
    w = torch.randn(*batch, 50, 7, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = w @ w.transpose(-1, -2)
    op = CountingDense(a)
    factor = pivoted_cholesky(op, 10)
    assert factor.shape[-1] <= 10 and factor.shape[:-1] == (*batch, 50)
    assert torch.allclose(factor @ factor.transpose(-1, -2), a, atol=1e-9)
    assert op.rows_evaluated <= 8  # stopped early once the error vanished


def test_error_decreases_with_rank():
    a = rbf_matrix(200, seed=1)
    errors = []
    for rank in (1, 5, 20, 60):
        factor = pivoted_cholesky(Dense(a), rank)
        errors.append(torch.linalg.matrix_norm(a - factor @ factor.T).item())
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:]))
    assert errors[-1] < 1e-3 * errors[0]


def test_batch_elements_pick_own_pivots():
    a = rbf_matrix(60, seed=2, batch=(2,))
    factor = pivoted_cholesky(Dense(a), 15)
    for i in range(2):
        alone = pivoted_cholesky(Dense(a[i]), 15)
        assert torch.allclose(factor[i, :, : alone.shape[-1]], alone, atol=1e-12)


def test_rank_capped_and_zero():
    a = torch.eye(5, dtype=F64) * 2.0
    factor = pivoted_cholesky(Dense(a), 50)
    assert factor.shape == (5, 5) and torch.allclose(factor @ factor.T, a)
    noise = torch.full((5,), 0.1, dtype=F64)
    p = pivoted_cholesky_preconditioner(Dense(a), noise, 0)
    assert p.rank == 0 and torch.allclose(p.to_dense(), 0.1 * torch.eye(5, dtype=F64))
    with pytest.raises(ValueError, match="rank"):
        pivoted_cholesky(Dense(a), -1)


def test_preconditioner_cuts_cg_iterations():
    n, noise = 1000, 1e-2
    kernel = rbf_matrix(n, seed=3)
    a = kernel + noise * torch.eye(n, dtype=F64)
    rhs = torch.randn(n, 1, dtype=F64, generator=torch.Generator().manual_seed(4))
    noise_diag = torch.full((n,), noise, dtype=F64)
    iterations = {}
    for rank in (0, 50):
        p = pivoted_cholesky_preconditioner(Dense(kernel), noise_diag, rank)
        res = mbcg(lambda v: a @ v, rhs, precond=p.solve, tol=1e-6, max_iters=1000)
        assert res.converged
        iterations[rank] = res.iterations
    assert iterations[50] < 0.5 * iterations[0]


# ----- pivots and the Nystrom rebuild ------------------------------------------------------------

def relative_gap(factor, other):
    """||L L^T - M M^T||_F / ||L L^T||_F."""
    low = factor @ factor.transpose(-1, -2)
    return float(torch.linalg.matrix_norm(low - other @ other.transpose(-1, -2)).max()
                 / torch.linalg.matrix_norm(low).min())


def matern_operator(n=300, d=3, seed=5, lengthscale=0.4, batch_shape=()):
    x = torch.rand(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))
    kernel = Scale(Matern(nu=2.5, ard_dims=d, lengthscale=lengthscale, batch_shape=batch_shape),
                   outputscale=1.3).double()
    return KernelOperator(kernel, x, backend="dense"), kernel, x


def test_with_pivots_gives_the_pivoted_cholesky_factor_and_its_pivots():
    a = rbf_matrix(200, seed=1)
    factor, pivots, counts = pivoted_cholesky_with_pivots(Dense(a), 30)
    assert torch.equal(factor, pivoted_cholesky(Dense(a), 30))
    assert pivots.shape == (30,) and pivots.dtype == torch.long and int(counts) == 30
    assert len(set(pivots.tolist())) == 30
    lower = factor[pivots]  # lower triangular (up to round-off) with a positive diagonal in pivot order
    assert float((lower - lower.tril()).abs().max()) < 1e-12 and bool((lower.diagonal() > 0).all())


def test_with_pivots_reports_the_remaining_diagonal_error():
    a = rbf_matrix(200, seed=1)
    info = {}
    factor, _, _ = pivoted_cholesky_with_pivots(Dense(a), 30, info=info)
    remaining = (a - factor @ factor.T).diagonal().max()
    assert info["remaining_error"] == pytest.approx(float(remaining), rel=1e-9, abs=1e-14)
    assert info["stop_threshold"] == pytest.approx(1e-8 * float(a.diagonal().sum()))
    assert info["remaining_error"] > info["stop_threshold"]  # rank 30 is not enough here
    low = factor[:, :5] @ factor[:, :5].T  # rank 5: the greedy run stops early, under threshold
    info = {}
    early, _, counts = pivoted_cholesky_with_pivots(Dense(low), 30, info=info)
    assert early.shape[-1] < 30 and int(counts) == early.shape[-1]
    assert info["remaining_error"] <= info["stop_threshold"]


@pytest.mark.parametrize("rank", [10, 30, 60])
def test_nystrom_from_greedy_pivots_is_the_greedy_factor(rank):
    a = rbf_matrix(200, seed=1)
    factor, pivots, counts = pivoted_cholesky_with_pivots(Dense(a), rank)
    rebuilt = nystrom_factor(Dense(a), pivots, counts)
    assert rebuilt.shape == factor.shape and rebuilt.dtype == F64
    assert relative_gap(factor, rebuilt) < 1e-10
    torch.testing.assert_close(rebuilt, factor, rtol=0, atol=1e-9)


def test_nystrom_from_greedy_pivots_of_a_kernel_operator():
    op, _, _ = matern_operator()
    factor, pivots, counts = pivoted_cholesky_with_pivots(op, 40)
    assert relative_gap(factor, nystrom_factor(op, pivots, counts)) < 1e-10


def test_nystrom_of_a_batched_kernel_over_shared_inputs():
    _, kernel, x = matern_operator(n=150, batch_shape=(2,))
    kernel.base.lengthscale = torch.tensor([[[0.3, 0.5, 0.4]], [[0.9, 0.2, 0.6]]], dtype=F64)
    op = KernelOperator(kernel, x, backend="dense")  # batch (2,), inputs (n, d) shared
    factor, pivots, counts = pivoted_cholesky_with_pivots(op, 25)
    assert pivots.shape == (2, 25) and not torch.equal(pivots[0], pivots[1])
    assert relative_gap(factor, nystrom_factor(op, pivots, counts)) < 1e-10


def test_nystrom_keeps_the_zero_columns_of_batch_elements_that_stopped_early():
    # element 0 has rank 4: its greedy run stops after 4 pivots while the others go on to 20,
    # so its later pivots are meaningless (repeats); counts says how many are real
    w = torch.randn(60, 4, dtype=F64, generator=torch.Generator().manual_seed(6))
    a = torch.stack([w @ w.T, rbf_matrix(60, seed=7, lengthscale=0.3), rbf_matrix(60, seed=8, lengthscale=0.3)])
    factor, pivots, counts = pivoted_cholesky_with_pivots(Dense(a), 20)
    assert counts.tolist() == [4, 20, 20] and factor.shape == (3, 60, 20)
    assert bool((factor[0, :, 4:] == 0).all())
    rebuilt = nystrom_factor(Dense(a), pivots, counts)
    assert bool((rebuilt[0, :, 4:] == 0).all())
    assert relative_gap(factor, rebuilt) < 1e-10


def test_nystrom_at_new_hyperparameters_is_the_exact_nystrom_approximation():
    op, kernel, x = matern_operator()
    _, pivots, counts = pivoted_cholesky_with_pivots(op, 40)
    kernel.base.lengthscale = torch.tensor([[0.7, 0.25, 0.5]], dtype=F64)  # a different K, same pivots
    kernel.outputscale = 0.6
    new_op = KernelOperator(kernel, x, backend="dense")
    rebuilt = nystrom_factor(new_op, pivots, counts)
    with torch.no_grad():
        k = kernel(x)
    cols = k[:, pivots]
    exact = cols @ torch.linalg.solve(k[pivots][:, pivots], cols.T)  # K[:, P] K[P, P]^-1 K[P, :]
    gap = torch.linalg.matrix_norm(rebuilt @ rebuilt.T - exact) / torch.linalg.matrix_norm(exact)
    assert float(gap) < 1e-10
    lower = rebuilt[pivots]
    torch.testing.assert_close(lower, lower.tril(), rtol=0, atol=1e-12)
    assert not rebuilt.requires_grad


def test_nystrom_accepts_shared_pivots_and_refuses_bad_ones():
    a = rbf_matrix(50, seed=2, batch=(2,))
    pivots = torch.tensor([3, 17, 40])
    rebuilt = nystrom_factor(Dense(a), pivots)  # (k,) pivots are shared by the batch
    assert rebuilt.shape == (2, 50, 3)
    for i in range(2):
        torch.testing.assert_close(rebuilt[i], nystrom_factor(Dense(a[i]), pivots), rtol=0, atol=1e-14)
    with pytest.raises(TypeError, match="pivots"):
        nystrom_factor(Dense(a), pivots.float())
    with pytest.raises(ValueError, match="pivots"):
        nystrom_factor(Dense(a), torch.zeros(3, 2, dtype=torch.long))
    assert nystrom_factor(Dense(a), pivots[:0]).shape == (2, 50, 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nystrom_of_ill_conditioned_pivots_jitters_or_gives_up_without_nan(dtype):
    # pivots chosen at a short lengthscale, then the lengthscale grows 1000-fold: K[P, P] is
    # numerically rank one (all entries ~ the outputscale); duplicate pivots make it singular
    op, kernel, x = matern_operator(n=200, lengthscale=0.1)
    _, pivots, _ = pivoted_cholesky_with_pivots(op, 30)
    kernel.base.lengthscale = 100.0
    for p in (pivots, torch.tensor([5, 5, 9, 5])):
        new_op = KernelOperator(kernel.to(dtype), x.to(dtype), backend="dense")
        rebuilt = nystrom_factor(new_op, p)
        if rebuilt is not None:  # the jitter made K[P, P] factorable: L L^T <= K, finite
            assert rebuilt.dtype == dtype and bool(torch.isfinite(rebuilt).all())
            with torch.no_grad():
                gap = (kernel(x.to(dtype)) - rebuilt @ rebuilt.T).double()
            bound = 1e-4 if dtype == torch.float32 else 1e-10
            assert float(torch.linalg.eigvalsh(gap).min()) > -bound
    broken = Dense(torch.full((10, 10), float("nan"), dtype=F64))
    assert nystrom_factor(broken, torch.tensor([1, 2])) is None  # the caller then goes greedy
    assert nystrom_factor(Dense(torch.zeros(10, 10, dtype=F64)), torch.tensor([1, 2])) is None


def test_nystrom_in_chunks_of_points_matches_one_chunk(monkeypatch):
    # the whitening product runs over NYSTROM_CHUNK points at a time and the rows come in blocks
    # of NYSTROM_ROWS pivots: chunks and blocks that do not divide
    # n, batched pivots and early-stopped counts must give the one-chunk factor, and a NaN in
    # any chunk must still be caught
    import flashgp.linalg.preconditioners as preconditioners
    w = torch.randn(70, 3, dtype=F64, generator=torch.Generator().manual_seed(9))
    a = torch.stack([w @ w.T, rbf_matrix(70, seed=10, lengthscale=0.3)])
    factor, pivots, counts = pivoted_cholesky_with_pivots(Dense(a), 12)
    whole = nystrom_factor(Dense(a), pivots, counts)
    monkeypatch.setattr(preconditioners, "NYSTROM_CHUNK", 16)
    monkeypatch.setattr(preconditioners, "NYSTROM_ROWS", 5)  # rows in blocks of 5 pivots too
    chunked = nystrom_factor(Dense(a), pivots, counts)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-13)
    assert relative_gap(factor, chunked) < 1e-10
    bad = a.clone()
    bad[1, 65, :] = float("nan")  # only the last chunk of the rows (column 65) holds the NaN
    bad[1, :, 65] = float("nan")
    assert 65 not in pivots[1].tolist()
    assert nystrom_factor(Dense(bad), pivots, counts) is None
