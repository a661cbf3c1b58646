# Tests for flashgp.linalg.safe_cholesky: plain factorization, reported jitter, NotPSDError, bad input.
# Reference: torch.linalg.cholesky on well-conditioned matrices.
import warnings

import pytest
import torch

from flashgp.errors import NotPSDError, NumericalWarning
from flashgp.linalg import safe_cholesky

F64 = torch.float64


def test_pd_matrix_needs_no_jitter():
    m = torch.randn(3, 20, 20, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = m @ m.transpose(-1, -2) + torch.eye(20, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        factor, jitter = safe_cholesky(a)
    assert jitter == 0.0 and isinstance(jitter, float)
    assert torch.allclose(factor, torch.linalg.cholesky(a))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_singular_psd_gets_jitter_and_warning(dtype):
    w = torch.randn(30, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    a = w @ w.T  # rank 5
    with pytest.warns(NumericalWarning, match="jitter"):
        factor, jitter = safe_cholesky(a)
    assert jitter > 0
    mean_diag = a.diagonal().mean().item()
    assert jitter >= (1e-8 if dtype == F64 else 1e-6) * mean_diag * 0.999
    recon = factor @ factor.T
    assert torch.allclose(recon, a + jitter * torch.eye(30, dtype=dtype), atol=1e-4 * mean_diag)


def test_explicit_jitter_and_batch():
    w = torch.randn(2, 10, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    a = w @ w.transpose(-1, -2)
    with pytest.warns(NumericalWarning, match="1e-05"):
        factor, jitter = safe_cholesky(a, jitter=1e-5)
    assert jitter == pytest.approx(1e-5) and factor.shape == (2, 10, 10)


def test_indefinite_raises():
    a = torch.diag(torch.tensor([1.0, 2.0, -3.0], dtype=F64))
    with pytest.raises(NotPSDError, match="jitter") as info:
        safe_cholesky(a)
    assert "-3" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_input():
    a = torch.eye(3)
    a[0, 1] = float("nan")
    with pytest.raises(ValueError, match="matrix"):
        safe_cholesky(a)
    with pytest.raises(ValueError, match="matrix"):
        safe_cholesky(torch.ones(3, 2))
    with pytest.raises(ValueError, match="jitter"):
        safe_cholesky(torch.zeros(2, 2), jitter=-1.0)
