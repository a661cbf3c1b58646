# Tests for flashgp.linalg.lanczos: orthonormal basis, Q^T A Q = T, spectrum, breakdown, root inverse.
# Reference: dense float64 eigvalsh / inv on small matrices.
import warnings

import pytest
import torch

from flashgp.errors import NumericalWarning
from flashgp.linalg import lanczos, lanczos_root_inverse
from flashgp.linalg.lanczos import SMALL_EIGH_MAX, small_eigh
from flashgp.operators.dense import Dense

F64 = torch.float64


def spd(eigenvalues, batch=(), seed=0):
    """A random SPD matrix (*batch, n, n) with the given spectrum (n,)."""
    gen = torch.Generator().manual_seed(seed)
    n = eigenvalues.shape[-1]
    q, _ = torch.linalg.qr(torch.randn(*batch, n, n, dtype=F64, generator=gen))
    return (q * eigenvalues.to(F64)) @ q.transpose(-1, -2)


def test_basis_orthonormal_and_projection_tridiagonal():
    a = spd(torch.logspace(-2, 2, 60), batch=(2,))
    init = torch.randn(2, 60, dtype=F64, generator=torch.Generator().manual_seed(1))
    q, t = lanczos(lambda v: a @ v, init, 20)
    assert q.shape == (2, 60, 20) and t.shape == (2, 20, 20)
    eye = torch.eye(20, dtype=F64)
    assert torch.allclose(q.transpose(-1, -2) @ q, eye.expand(2, 20, 20), atol=1e-12)
    assert torch.allclose(q.transpose(-1, -2) @ a @ q, t, atol=1e-11)
    assert torch.allclose(t, t.transpose(-1, -2))
    assert (t.triu(2) == 0).all()
    assert torch.allclose(q[..., 0], init / init.norm(dim=-1, keepdim=True))


def test_full_run_reproduces_spectrum_and_root_inverse():
    evals = torch.logspace(-1, 3, 40)  # wide spectrum: needs the re-orthogonalization
    a = spd(evals, seed=2)
    init = torch.randn(40, dtype=F64, generator=torch.Generator().manual_seed(3))
    q, t = lanczos(Dense(a), init, 100)
    assert t.shape == (40, 40)
    assert torch.allclose(torch.linalg.eigvalsh(t), evals.to(F64), rtol=1e-9)
    root = lanczos_root_inverse(q, t)
    assert root.shape == (40, 40)
    assert torch.allclose(root @ root.T, torch.linalg.inv(a), atol=1e-9)


def test_breakdown_pads_with_zeros_and_identity():
    # A with 3 distinct eigenvalues: the Krylov space has dimension 3
    evals = torch.tensor([1.0, 1.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0])
    a = spd(evals, batch=(2,), seed=4)
    a[1] = spd(torch.linspace(1, 8, 8), seed=5)
    init = torch.randn(2, 8, dtype=F64, generator=torch.Generator().manual_seed(6))
    q, t = lanczos(lambda v: a @ v, init, 8)
    assert q.shape == (2, 8, 8)
    assert (q[0, :, 3:] == 0).all()
    assert torch.equal(t[0, 3:, 3:], torch.eye(5, dtype=F64))
    assert (t[0, 2, 3] == 0) and (t[0, 3, 2] == 0)
    assert torch.allclose(torch.linalg.eigvalsh(t[0, :3, :3]), torch.tensor([1.0, 2.0, 5.0], dtype=F64))
    assert torch.allclose(torch.linalg.eigvalsh(t[1]), torch.linspace(1, 8, 8, dtype=F64))
    # Q T^{-1} Q^T acts as A^{-1} on the Krylov space of element 0
    root = lanczos_root_inverse(q, t)
    approx = root[0] @ (root[0].T @ init[0])
    assert torch.allclose(approx, torch.linalg.solve(a[0], init[0]), atol=1e-10)


def test_all_broken_down_stops_early_and_zero_init():
    a = 2.0 * torch.eye(10, dtype=F64)
    init = torch.ones(10, dtype=F64)
    q, t = lanczos(lambda v: a @ v, init, 10)
    assert q.shape == (10, 1) and torch.allclose(t, torch.tensor([[2.0]], dtype=F64))
    q, t = lanczos(lambda v: a @ v, torch.zeros(10, dtype=F64), 5)
    assert (q == 0).all() and torch.equal(t, torch.ones(1, 1, dtype=F64))


def test_float32():
    a = spd(torch.linspace(1, 10, 50), seed=7).float()
    q, t = lanczos(lambda v: a @ v, torch.ones(50), 15)
    assert q.dtype == torch.float32
    assert torch.allclose(q.T @ q, torch.eye(15), atol=1e-5)
    assert torch.allclose(q.T @ a @ q, t, atol=1e-4)


def test_root_inverse_clamps_with_warning():
    q = torch.eye(3, dtype=F64)
    t = torch.diag(torch.tensor([1.0, 2.0, -1e-3], dtype=F64))
    with pytest.warns(NumericalWarning, match="clamped 1 eigenvalue"):
        root = lanczos_root_inverse(q, t)
    assert torch.isfinite(root).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lanczos_root_inverse(q, torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64)))


def test_argument_errors():
    with pytest.raises(ValueError, match="num_iters"):
        lanczos(lambda v: v, torch.ones(3), 0)
    with pytest.raises(ValueError, match="t:"):
        lanczos_root_inverse(torch.ones(4, 2), torch.eye(3))


@pytest.mark.parametrize("k", [5, 64, SMALL_EIGH_MAX + 3])
def test_small_eigh_matches_float64_and_keeps_dtype(k):
    g = torch.Generator().manual_seed(k)
    a = torch.randn(3, k, k, generator=g, dtype=torch.float64)
    a = a + a.transpose(-1, -2)
    evals, evecs = small_eigh(a.float())
    assert evals.dtype == evecs.dtype == torch.float32 and evecs.shape == (3, k, k)
    ref = torch.linalg.eigvalsh(a)
    assert torch.allclose(evals.double(), ref, atol=1e-4 * ref.abs().max().item())
    rebuilt = (evecs.double() * evals.double().unsqueeze(-2)) @ evecs.double().transpose(-1, -2)
    assert (rebuilt - a).abs().max() < 1e-4 * a.abs().max()
