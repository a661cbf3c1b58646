# Tests for flashgp.linalg.mbcg: solves, residuals, frozen columns and Lanczos tridiagonals.
# Reference: torch.linalg.solve / eigvalsh on small dense float64 matrices.
import warnings

import pytest
import torch

from flashgp.errors import NumericalWarning
from flashgp.linalg import CGResult, mbcg
from flashgp.operators.dense import Dense
from flashgp.operators.low_rank import LowRankPlusDiag

F64 = torch.float64


def spd(eigenvalues, batch=(), seed=0):
    """A random SPD matrix (*batch, n, n) with the given spectrum (n,)."""
    gen = torch.Generator().manual_seed(seed)
    n = eigenvalues.shape[-1]
    q, _ = torch.linalg.qr(torch.randn(*batch, n, n, dtype=F64, generator=gen))
    return (q * eigenvalues.to(F64)) @ q.transpose(-1, -2)


def random_precond(n, batch=(), seed=1):
    gen = torch.Generator().manual_seed(seed)
    factor = torch.randn(*batch, n, 5, dtype=F64, generator=gen)
    diag = torch.rand(*batch, n, dtype=F64, generator=gen) + 0.5
    return LowRankPlusDiag(factor, diag)


@pytest.mark.parametrize("use_precond", [False, True])
def test_solves_batched_spd(use_precond):
    a = spd(torch.logspace(0, 3, 200), batch=(3,))
    rhs = torch.randn(3, 200, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    precond = random_precond(200, (3,)).solve if use_precond else None
    res = mbcg(lambda v: a @ v, rhs, precond=precond, tol=1e-10, max_iters=1000)
    assert isinstance(res, CGResult) and res.converged
    exact = torch.linalg.solve(a, rhs)
    assert torch.allclose(res.solution, exact, rtol=0, atol=1e-7 * exact.abs().max())
    true_residual = (rhs - a @ res.solution).norm(dim=-2) / rhs.norm(dim=-2)
    assert res.residual.shape == (3, 4)
    assert torch.allclose(res.residual, true_residual, rtol=1e-2, atol=1e-13)
    assert res.residual.mean() < 1e-10


def test_accepts_operator_and_reports_init_norm():
    a = spd(torch.linspace(1, 10, 50))
    rhs = torch.randn(50, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    p = random_precond(50)
    res = mbcg(Dense(a), rhs, precond=p, tol=1e-8)
    assert torch.allclose(res.init_norm_sq, (rhs * p.solve(rhs)).sum(-2))
    assert torch.allclose(res.solution, torch.linalg.solve(a, rhs), atol=1e-6)


def test_stops_at_tolerance_and_respects_min_iters():
    a = spd(torch.logspace(0, 3, 100))
    rhs = torch.randn(100, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    loose = mbcg(lambda v: a @ v, rhs, tol=1e-1)
    assert loose.residual.mean() < 1e-1 and loose.iterations < 60
    forced = mbcg(lambda v: a @ v, rhs, tol=1e-1, min_iters=loose.iterations + 5)
    assert forced.iterations == loose.iterations + 5
    with pytest.warns(NumericalWarning, match="no convergence"):
        capped = mbcg(lambda v: a @ v, rhs, tol=1e-12, max_iters=3)
    assert capped.iterations == 3 and not capped.converged


def test_zero_rhs_column_and_exact_convergence_do_not_nan():
    a = spd(torch.linspace(1, 5, 20))
    rhs = torch.randn(20, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
    rhs[:, 1] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        res = mbcg(lambda v: a @ v, rhs, tol=0.0, max_iters=60, n_tridiag=3)
    assert torch.isfinite(res.solution).all() and torch.isfinite(res.tridiag).all()
    assert (res.solution[:, 1] == 0).all()
    assert torch.equal(res.tridiag[1], torch.eye(res.tridiag.shape[-1], dtype=F64))
    assert torch.allclose(res.solution[:, [0, 2]], torch.linalg.solve(a, rhs[:, [0, 2]]), atol=1e-10)


def test_freeze_before_min_iters_is_noticed_at_the_next_check():
    """Before min_iters the host asks whether every column froze only every FREEZE_CHECK_EVERY
    iterations; the steps past the freeze change nothing (frozen columns take zero steps)."""
    from flashgp.linalg.mbcg import FREEZE_CHECK_EVERY
    rhs = torch.randn(15, 2, dtype=F64, generator=torch.Generator().manual_seed(8))
    res = mbcg(lambda v: 3.0 * v, rhs, tol=1e-3, min_iters=50, n_tridiag=2)  # frozen after one step
    assert res.iterations == FREEZE_CHECK_EVERY and res.converged
    assert torch.allclose(res.solution, rhs / 3.0, atol=1e-14)
    eye = torch.eye(FREEZE_CHECK_EVERY - 1, dtype=F64)
    assert torch.allclose(res.tridiag[:, 1:, 1:], eye.expand(2, -1, -1))  # identity after the freeze


def test_all_zero_rhs():
    rhs = torch.zeros(2, 10, 2)
    res = mbcg(lambda v: v, rhs, n_tridiag=1)
    assert res.iterations == 0 and res.converged
    assert (res.solution == 0).all() and res.tridiag.shape == (2, 1, 1, 1)
    assert (res.tridiag == 1).all()


def test_identity_freezes_after_one_step():
    rhs = torch.randn(15, 2, dtype=F64, generator=torch.Generator().manual_seed(6))
    res = mbcg(lambda v: 3.0 * v, rhs, tol=0.0, max_iters=15, n_tridiag=2)
    assert torch.allclose(res.solution, rhs / 3.0)
    assert torch.isfinite(res.tridiag).all()
    evals = torch.linalg.eigvalsh(res.tridiag)
    # T = [[3]] padded with identity: e1^T log(T) e1 = log 3
    assert torch.allclose(evals.max(-1).values, torch.tensor(3.0, dtype=F64))


def test_tridiag_spectrum_matches_operator():
    evals = torch.linspace(1, 10, 30)
    a = spd(evals, batch=(2,))
    rhs = torch.randn(2, 30, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        res = mbcg(lambda v: a @ v, rhs, tol=0.0, max_iters=30, n_tridiag=2)
    assert res.tridiag.shape == (2, 2, 30, 30)
    got = torch.linalg.eigvalsh(res.tridiag)
    assert torch.allclose(got, evals.to(F64).expand_as(got), atol=1e-8)


def test_preconditioned_tridiag_spectrum_is_that_of_pinv_a():
    n, evals = 30, torch.linspace(1, 10, 30, dtype=F64)
    p = random_precond(n)
    p_evals, p_vecs = torch.linalg.eigh(p.to_dense())
    p_half = (p_vecs * p_evals.sqrt()) @ p_vecs.T
    a = p_half @ spd(evals, seed=8) @ p_half  # P^{-1} A is similar to the middle factor
    rhs = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        res = mbcg(lambda v: a @ v, rhs, precond=p.solve, tol=0.0, max_iters=n, n_tridiag=2)
    got = torch.linalg.eigvalsh(res.tridiag)
    assert torch.allclose(got, evals.expand_as(got), atol=1e-7)


def test_max_tridiag_iters_limits_size():
    a = spd(torch.logspace(0, 2, 60))
    rhs = torch.randn(60, 3, dtype=F64, generator=torch.Generator().manual_seed(10))
    res = mbcg(lambda v: a @ v, rhs, tol=1e-8, n_tridiag=1, max_tridiag_iters=7)
    assert res.iterations > 7 and res.tridiag.shape == (1, 7, 7)


def test_float32_batched():
    a = spd(torch.logspace(0, 2, 80), batch=(2, 3)).float()
    rhs = torch.randn(2, 3, 80, 2, generator=torch.Generator().manual_seed(11))
    res = mbcg(lambda v: a @ v, rhs, tol=1e-4, n_tridiag=1)
    assert res.solution.dtype == torch.float32 and res.tridiag.dtype == torch.float32
    exact = torch.linalg.solve(a.double(), rhs.double())
    assert ((res.solution.double() - exact).norm() / exact.norm()) < 1e-3


def test_indefinite_warns_without_nan():
    a = torch.diag(torch.tensor([1.0, -1.0], dtype=F64))
    rhs = torch.tensor([[1.0], [1.0]], dtype=F64)
    with pytest.warns(NumericalWarning, match="not positive"):
        res = mbcg(lambda v: a @ v, rhs, tol=1e-6, n_tridiag=1)
    assert torch.isfinite(res.solution).all() and torch.isfinite(res.tridiag).all()


def test_argument_errors():
    with pytest.raises(ValueError, match="rhs"):
        mbcg(lambda v: v, torch.ones(3))
    with pytest.raises(ValueError, match="n_tridiag"):
        mbcg(lambda v: v, torch.ones(3, 2), n_tridiag=3)
    with pytest.raises(TypeError, match="matmul"):
        mbcg(5, torch.ones(3, 2))


# ----- full re-orthogonalization --------------------------------------------------------------

def ill_conditioned_kernel(n=600, lengthscale=0.1, noise=1e-3, seed=5):
    """An RBF kernel matrix on [0, 1]^2 plus noise (float64) and 3 right-hand sides."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, dtype=F64, generator=gen)
    k_hat = torch.exp(-0.5 * torch.cdist(x, x).square() / lengthscale**2) + noise * torch.eye(n, dtype=F64)
    return k_hat, torch.randn(n, 3, dtype=F64, generator=gen)


def test_reorthogonalization_recovers_float32_convergence():
    """Float32 CG loses the orthogonality of its residuals on an ill-conditioned kernel system and
    slows down; re-orthogonalized CG reaches the tolerance in fewer iterations, and its answer is
    right (true residual in float64, and against the float64 solve)."""
    k_hat, rhs = ill_conditioned_kernel()
    a32, b32 = k_hat.float(), rhs.float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        plain = mbcg(a32, b32, tol=1e-3, max_iters=600)
    reorth = mbcg(a32, b32, tol=1e-3, max_iters=600, reorthogonalize=True)
    assert reorth.converged and reorth.iterations < 0.8 * plain.iterations
    true = (rhs - k_hat @ reorth.solution.double()).norm(dim=0) / rhs.norm(dim=0)
    assert float(true.max()) < 5e-3
    exact = torch.linalg.solve(k_hat, rhs)
    assert float(((reorth.solution.double() - exact).norm(dim=0) / exact.norm(dim=0)).max()) < 0.05


def test_reorthogonalized_tridiagonals_and_solution_in_float64():
    """In float64 on a well-conditioned system the solution is the same; the Lanczos tridiagonals
    of the probe columns keep giving Ritz values inside the spectrum."""
    eig = torch.linspace(0.5, 40.0, 80, dtype=F64)
    a = spd(eig, seed=7)
    rhs = torch.randn(80, 4, dtype=F64, generator=torch.Generator().manual_seed(8))
    plain = mbcg(a, rhs, tol=1e-10, max_iters=200, n_tridiag=3)
    reorth = mbcg(a, rhs, tol=1e-10, max_iters=200, n_tridiag=3, reorthogonalize=True)
    assert torch.allclose(reorth.solution, torch.linalg.solve(a, rhs), rtol=1e-7, atol=1e-9)
    assert reorth.iterations <= plain.iterations
    ritz = torch.linalg.eigvalsh(reorth.tridiag)
    assert float(ritz.min()) > 0.5 - 1e-6 and float(ritz.max()) < 40.0 + 1e-6


def test_reorthogonalization_leaves_broken_columns_alone():
    """A column frozen by a breakdown keeps its residual (re-orthogonalization must not shrink it
    into a false convergence); the breakdown is counted as without it."""
    a = torch.diag(torch.tensor([1.0, 2.0, -3.0, 4.0], dtype=F64))
    rhs = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=F64)
    rhs[:, 1] = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        plain = mbcg(a, rhs, tol=1e-8, max_iters=20)
        reorth = mbcg(a, rhs, tol=1e-8, max_iters=20, reorthogonalize=True)
    assert reorth.breakdowns == plain.breakdowns == 1
    assert not reorth.converged
    assert torch.allclose(reorth.residual, plain.residual, rtol=1e-6)
