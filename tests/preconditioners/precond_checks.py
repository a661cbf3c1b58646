# Shared checks of a built preconditioner against float64 dense algebra: solve, log det, sample
# covariance and the spectrum floor, for the tests in this folder.
import torch

from flashgp.kernels import Matern, Scale
from flashgp.operators import KernelOperator

F64 = torch.float64


def points(n, d=2, seed=0, dtype=F64, batch=()):
    return torch.rand(*batch, n, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def kernel_op(x, lengthscale=0.2, outputscale=1.5, backend="dense"):
    kernel = Scale(Matern(nu=2.5, lengthscale=lengthscale), outputscale=outputscale).to(x.dtype)
    return KernelOperator(kernel, x, backend=backend)


def dense_k(op):
    return op.to_dense().detach().double()


def dense_p(precond):
    """P (*batch, n, n) float64 from its solve (P^{-1} columns, inverted)."""
    n = precond.shape[-1]
    eye = torch.eye(n, dtype=precond.dtype).expand(*precond.batch_shape, n, n)
    return torch.linalg.inv(precond.solve(eye).double())


def check_against_dense(precond, expected_p, *, samples=20000, seed=0, rtol=1e-8):
    """solve and logdet of ``precond`` match the float64 matrix ``expected_p``, and its samples
    have that covariance: whitened by chol(P)^{-1} they have covariance I, each entry within
    6 / sqrt(samples) (the standard error of an entry is 1 / sqrt(samples), sqrt(2) times that
    on the diagonal), so a missing or mis-scaled term of P fails."""
    n = expected_p.shape[-1]
    rhs = torch.randn(*expected_p.shape[:-2], n, 3, dtype=F64, generator=torch.Generator().manual_seed(seed))
    want = torch.linalg.solve(expected_p, rhs)
    got = precond.solve(rhs.to(precond.dtype)).double()
    assert float((got - want).norm() / want.norm()) < rtol
    torch.testing.assert_close(precond.logdet().double(), torch.logdet(expected_p), rtol=rtol, atol=rtol)
    draws = precond.sample(samples, generator=torch.Generator().manual_seed(seed + 1)).double()
    assert draws.shape == (*expected_p.shape[:-1], samples)
    white = torch.linalg.solve_triangular(torch.linalg.cholesky(expected_p), draws, upper=False)
    cov = white @ white.transpose(-1, -2) / samples
    error = (cov - torch.eye(n, dtype=F64)).abs().max()
    assert float(error) < 6 / samples ** 0.5, float(error)


def smallest_eigenvalue(precond, k_hat):
    """The smallest eigenvalue of P^{-1} K_hat (a similarity of the symmetric P^{-1/2} K_hat P^{-1/2})."""
    p = dense_p(precond)
    chol = torch.linalg.cholesky(p)
    inner = torch.linalg.solve_triangular(chol, k_hat, upper=False)
    inner = torch.linalg.solve_triangular(chol, inner.transpose(-1, -2), upper=False)
    return float(torch.linalg.eigvalsh(0.5 * (inner + inner.transpose(-1, -2))).min())
