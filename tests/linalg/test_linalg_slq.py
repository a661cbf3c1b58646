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
