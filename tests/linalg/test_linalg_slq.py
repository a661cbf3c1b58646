# Tests for flashgp.linalg.slq: quadrature rules, clamping, and the preconditioned log det estimate.
# Reference: torch.logdet of dense RBF kernel matrices built in the test.
import pytest
import torch

from flashgp.errors import NumericalWarning
from flashgp.linalg import mbcg, pivoted_cholesky_preconditioner, slq, slq_logdet
from flashgp.operators.dense import Dense

F64 = torch.float64


def rbf_matrix(n, seed, lengthscale=0.3):
    """A dense RBF kernel matrix (n, n) on uniform points in [0, 1]^2."""
    x = torch.rand(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return torch.exp(-0.5 * torch.cdist(x, x).square() / lengthscale**2)


def estimate_logdet(kernel, noise, rank, probes, seed):
    """log det(K + noise I) by preconditioned mBCG + SLQ with probes z ~ N(0, P)."""
    n = kernel.shape[-1]
    a = kernel + noise * torch.eye(n, dtype=F64)
    precond = pivoted_cholesky_preconditioner(Dense(kernel), torch.full((n,), noise, dtype=F64), rank)
    z = precond.sample(probes, generator=torch.Generator().manual_seed(seed))
    res = mbcg(lambda v: a @ v, z, precond=precond.solve, tol=1e-5, n_tridiag=probes)
    return precond.logdet() + slq_logdet(res.tridiag, res.init_norm_sq), torch.logdet(a)


def test_exact_quadrature_for_full_tridiagonal():
    # with T the full Lanczos matrix of A, e1^T f(T) e1 = b^T f(A) b / |b|^2
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(12, 12, dtype=F64, generator=gen)
    a = m @ m.T + torch.eye(12, dtype=F64)
    b = torch.randn(12, 1, dtype=F64, generator=gen)
    res = mbcg(lambda v: a @ v, b, tol=1e-13, n_tridiag=1)
    evals, evecs = torch.linalg.eigh(a)
    exact = (b.T @ evecs @ torch.diag(evals.log()) @ evecs.T @ b).squeeze()
    assert torch.allclose(slq_logdet(res.tridiag, res.init_norm_sq), exact, rtol=1e-8)
    exact_sqrt = (b.T @ evecs @ torch.diag(evals.sqrt()) @ evecs.T @ b).squeeze()
    assert torch.allclose(slq(res.tridiag, res.init_norm_sq, torch.sqrt), exact_sqrt, rtol=1e-8)


def test_batched_shapes_and_identity_padding():
    t = torch.eye(4, dtype=F64).repeat(2, 3, 1, 1)
    t[..., 0, 0] = 2.0
    out = slq_logdet(t, torch.full((2, 3), 5.0, dtype=F64))
    assert out.shape == (2,)
    assert torch.allclose(out, torch.full((2,), 5.0 * torch.log(torch.tensor(2.0)).item(), dtype=F64))


def test_nonpositive_eigenvalues_clamped_with_warning():
    t = torch.diag(torch.tensor([1.0, -0.5], dtype=F64)).reshape(1, 2, 2)
    with pytest.warns(NumericalWarning, match="clamped 1 eigenvalue.*min eigenvalue -0.5"):
        out = slq_logdet(t, torch.ones(1, dtype=F64))
    assert torch.isfinite(out)


def test_error_shrinks_with_probes():
    kernel = rbf_matrix(200, seed=1)
    errors = {}
    for probes in (4, 100):
        errs = []
        for seed in range(4):
            est, exact = estimate_logdet(kernel, 0.01, rank=3, probes=probes, seed=seed)
            errs.append(((est - exact) / exact).abs())
        errors[probes] = torch.stack(errs).mean()
    assert errors[100] < 0.5 * errors[4]


def test_accurate_at_100_probes_n500():
    kernel = rbf_matrix(500, seed=2)
    est, exact = estimate_logdet(kernel, 0.01, rank=10, probes=100, seed=3)
    assert ((est - exact) / exact).abs() < 0.03


def test_argument_errors():
    with pytest.raises(ValueError, match="tridiag"):
        slq_logdet(torch.eye(3), torch.ones(1))
    with pytest.raises(ValueError, match="weights"):
        slq_logdet(torch.eye(3).expand(2, 3, 3), torch.ones(3))


def _tridiagonals(a, probes, iters, seed=0):
    """mBCG tridiagonals of a (n, n) for ``probes`` N(0, I) columns, exactly ``iters`` steps."""
    z = torch.randn(a.shape[-1], probes, dtype=F64, generator=torch.Generator().manual_seed(seed))
    res = mbcg(lambda v: a @ v, z, tol=0.0, max_iters=iters, min_iters=iters, n_tridiag=probes,
               warn=False)
    return res.tridiag, res.init_norm_sq


def test_tail_change_tracks_how_far_the_estimate_is_from_settled():
    from flashgp.linalg.slq import slq_logdet_tail_change

    n = 300
    a = rbf_matrix(n, seed=3, lengthscale=0.2) + 1e-4 * torch.eye(n, dtype=F64)  # cond ~ 1e6
    exact = torch.logdet(a)
    short, w_short = _tridiagonals(a, 8, 12)
    long, w_long = _tridiagonals(a, 8, 120)
    change_short = float(slq_logdet_tail_change(short, w_short, 5))
    change_long = float(slq_logdet_tail_change(long, w_long, 5))
    error_short = abs(float(slq_logdet(short, w_short)) - float(exact))
    error_long = abs(float(slq_logdet(long, w_long)) - float(exact))
    # after 12 steps the estimate is far off and still moving; after 120 it has nearly settled
    assert error_short > 10 and change_short > 0.1 * error_short
    assert change_long < 0.01 * change_short and error_long < 0.1 * error_short
    # fewer than 2 * drop steps: no verdict
    assert float(slq_logdet_tail_change(short[..., :8, :8], w_short, 5)) == 0.0


def test_tail_change_ignores_columns_that_froze():
    from flashgp.linalg.slq import slq_logdet_tail_change

    a = torch.diag(torch.linspace(1.0, 100.0, 40, dtype=F64))
    z = torch.zeros(40, 2, dtype=F64)
    z[:3, 0] = 1.0  # spans 3 eigenvectors: its Krylov space is exhausted after 3 steps
    z[:, 1] = torch.randn(40, dtype=F64, generator=torch.Generator().manual_seed(0))
    res = mbcg(lambda v: a @ v, z, tol=0.0, max_iters=25, min_iters=25, n_tridiag=2, warn=False)
    tridiag, weights = res.tridiag, res.init_norm_sq
    assert tridiag.shape[-1] == 25 and tridiag[0, -1, -2] == 0 and tridiag[1, -1, -2] != 0
    # the frozen column's quadrature is exact and counts as settled; the running one moves
    assert float(slq_logdet_tail_change(tridiag[:1], weights[:1], 5)) == 0.0
    assert float(slq_logdet_tail_change(tridiag[1:], weights[1:], 5)) > 0.0


def test_unsettled_log_determinant_warns_with_numbers():
    import warnings as w

    from flashgp.linalg.inv_quad_logdet import inv_quad_logdet
    from flashgp.operators.added_diag import AddedDiag

    n = 300
    kernel = Dense(rbf_matrix(n, seed=4, lengthscale=0.2))
    op = AddedDiag(kernel, torch.full((n,), 1e-4, dtype=F64))
    rhs = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(0))
    info = {}
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        inv_quad_logdet(op, rhs, None, probes=8, tol=10.0, lanczos_iters=12,
                        generator=torch.Generator().manual_seed(1), info=info)
    settled = [str(c.message) for c in caught if "had not settled" in str(c.message)]
    assert len(settled) == 1 and "lanczos_iters" in settled[0] and info["logdet_tail_change"] > 0.01 * n
