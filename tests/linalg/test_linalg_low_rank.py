# Tests for flashgp.operators.low_rank: LowRank and LowRankPlusDiag against their dense matrices.
# Checks products, diagonal, rows, Woodbury solve, exact log det and sample covariance.
import pytest
import torch

from flashgp.operators.low_rank import LowRank, LowRankPlusDiag

F64 = torch.float64


def make(batch=(), n=40, k=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    factor = torch.randn(*batch, n, k, dtype=F64, generator=gen)
    diag = torch.rand(*batch, n, dtype=F64, generator=gen) + 0.1
    dense = factor @ factor.transpose(-1, -2) + torch.diag_embed(diag)
    return LowRankPlusDiag(factor, diag), dense


@pytest.mark.parametrize("row_chunk", [None, 7])
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_low_rank_plus_diag_matches_dense(batch, row_chunk, monkeypatch):
    if row_chunk is not None:  # the capacitance matrix and the solve over chunks of rows not dividing n
        monkeypatch.setattr("flashgp.operators.low_rank.ROW_CHUNK", row_chunk)
        monkeypatch.setattr("flashgp.operators.low_rank.SOLVE_CACHE_BYTES", 0)  # no float64 copies of L
    op, dense = make(batch)
    assert op.shape == dense.shape and op.dtype == F64
    rhs = torch.randn(*batch, 40, 4, dtype=F64)
    assert torch.allclose(op.matmul(rhs), dense @ rhs)
    assert torch.allclose(op.diagonal(), dense.diagonal(dim1=-2, dim2=-1))
    index = torch.randint(0, 40, (*batch, 5))
    expected = dense.gather(-2, index.unsqueeze(-1).expand(*index.shape, 40))
    assert torch.allclose(op.rows(index), expected)
    assert torch.allclose(op.rows(torch.tensor([3, 7])), dense[..., [3, 7], :])
    assert torch.allclose(op.solve(rhs), torch.linalg.solve(dense, rhs))
    assert (op._woodbury is None) == (row_chunk is not None)
    assert torch.allclose(op.solve(rhs[..., :1]), torch.linalg.solve(dense, rhs[..., :1]))  # cached parts
    assert torch.allclose(op.logdet(), torch.logdet(dense))


def test_rank_zero_is_diagonal():
    diag = torch.rand(10, dtype=F64) + 0.5
    op = LowRankPlusDiag(torch.zeros(10, 0, dtype=F64), diag)
    rhs = torch.randn(10, 2, dtype=F64)
    assert torch.allclose(op.solve(rhs), rhs / diag.unsqueeze(-1))
    assert torch.allclose(op.logdet(), diag.log().sum())
    assert op.sample(3).shape == (10, 3)


def test_sample_covariance():
    op, dense = make(n=8, k=2, seed=1)
    samples = op.sample(40000, generator=torch.Generator().manual_seed(2))
    assert samples.shape == (8, 40000)
    cov = samples @ samples.T / samples.shape[-1]
    scale = dense.diagonal().sqrt()
    corr_err = (cov - dense) / (scale[:, None] * scale[None, :])
    assert corr_err.abs().max() < 0.05
    again = op.sample(3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again, op.sample(3, generator=torch.Generator().manual_seed(2)))


def test_low_rank_with_negative_scale():
    w = torch.randn(2, 12, 3, dtype=F64)
    op = LowRank(w, scale=-1.0)
    dense = -w @ w.transpose(-1, -2)
    assert op.shape == (2, 12, 12)
    rhs = torch.randn(2, 12, 2, dtype=F64)
    assert torch.allclose(op.matmul(rhs), dense @ rhs)
    assert torch.allclose(op.matmul(rhs[..., 0]), (dense @ rhs)[..., 0])
    assert torch.allclose(op.diagonal(), dense.diagonal(dim1=-2, dim2=-1))
    index = torch.tensor([[1, 4], [0, 11]])
    assert torch.allclose(op.rows(index), torch.stack([dense[0, [1, 4]], dense[1, [0, 11]]]))


def test_argument_errors():
    with pytest.raises(ValueError, match="diag"):
        LowRankPlusDiag(torch.ones(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="diag"):
        LowRankPlusDiag(torch.ones(4, 2), torch.ones(5))
    with pytest.raises(TypeError, match="factor"):
        LowRank([[1.0]])
    with pytest.raises(ValueError, match="rhs"):
        LowRankPlusDiag(torch.ones(4, 2), torch.ones(4)).solve(torch.ones(3, 1))


@pytest.mark.parametrize("cached", [True, False])
def test_float32_solve_stays_accurate_when_ill_conditioned(cached, monkeypatch):
    """A kernel-like factor with a tiny noise (cond ~ 1e9 > 1 / eps32): the Woodbury terms
    cancel to 1 / (lambda + d) from 1 / d in the directions of L. Computed in float32 they kept
    only a few digits there (quadratic forms off by percent, possibly of the wrong sign); the
    float64 evaluation keeps float32 round-off. Log det likewise."""
    if not cached:
        monkeypatch.setattr("flashgp.operators.low_rank.SOLVE_CACHE_BYTES", 0)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3000, 2, generator=gen, dtype=F64)
    k = torch.exp(-torch.cdist(x, x).square() / 0.5)
    factor = torch.linalg.cholesky(k + 1e-8 * torch.eye(3000, dtype=F64))[:, :60]
    diag = torch.full((3000,), 1e-6, dtype=F64)
    single = LowRankPlusDiag(factor.float(), diag.float())
    exact = LowRankPlusDiag(single.factor.double(), single.diag.double())  # the same operator
    rhs = torch.cat([factor @ torch.randn(60, 4, generator=gen, dtype=F64),
                     torch.randn(3000, 2, generator=gen, dtype=F64)], -1).float().double()
    ref = exact.solve(rhs)
    got = single.solve(rhs.float())
    assert got.dtype == torch.float32 and (single._woodbury is not None) == cached
    rel = (got.double() - ref).norm(dim=0) / ref.norm(dim=0)
    assert float(rel.max()) < 1e-5
    # the quadratic forms of the float32 solution, summed in float64: a float32 sum of these 3,000
    # terms (which cancel 1000-fold) is off by up to 1.5e-5 on its own, depending on the CPU's
    # reduction order (seen with MKL on an AVX-512 machine, one thread)
    quad = (rhs * got.double()).sum(0)
    assert torch.allclose(quad, (rhs * ref).sum(0), rtol=1e-5)
    assert abs(float(single.logdet()) - float(exact.logdet())) < 1e-4 * abs(float(exact.logdet()))
