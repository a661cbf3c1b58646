# Tests for flashgp.linalg.preconditioners: pivoted Cholesky accuracy and row budget, and the
# preconditioner's effect on CG iterations for an RBF kernel matrix.
import pytest
import torch

from flashgp.linalg import mbcg, pivoted_cholesky, pivoted_cholesky_preconditioner
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
