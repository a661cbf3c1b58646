# Tests for flashgp.operators.Kronecker: products one factor at a time against torch.kron (float64,
# 1e-10 relative), batches, diagonal, rows and entries, gradients per factor (a tensor shared by
# several factors gets their sum), argument errors.
import pytest
import torch

from flashgp.operators import Dense, Kronecker, Toeplitz

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


def kron(*matrices):
    out = matrices[0]
    for m in matrices[1:]:
        out = torch.kron(out, m)
    return out


@pytest.mark.parametrize("sizes", [(5,), (3, 4), (2, 3, 4), (1, 6, 1)])
def test_products_match_torch_kron(sizes):
    matrices = [rand(g, g, seed=g) for g in sizes]
    op = Kronecker(*(Dense(m) for m in matrices))
    ref = kron(*matrices)
    rhs = rand(op.size, 3, seed=9)
    assert op.shape == ref.shape
    assert relative(op.matmul(rhs), ref @ rhs) < 1e-10
    assert relative(op.matmul(rhs[:, 1]), ref @ rhs[:, 1]) < 1e-10
    assert relative(op.to_dense(), ref) < 1e-15
    assert relative(op.diagonal(), ref.diagonal()) < 1e-15
    index = torch.tensor([op.size - 1, 0, op.size // 2])
    assert relative(op.rows(index), ref[index]) < 1e-15


def test_batched_factors():
    a, b = rand(2, 3, 3), rand(4, 4, seed=1)
    op = Kronecker(Dense(a), Dense(b))
    ref = torch.stack([torch.kron(a[i], b) for i in range(2)])
    assert op.shape == (2, 12, 12)
    rhs = rand(1, 12, 2, seed=2)
    assert relative(op.matmul(rhs), ref @ rhs) < 1e-10
    assert relative(op.diagonal(), ref.diagonal(dim1=-2, dim2=-1)) < 1e-15
    per_batch = torch.tensor([[0, 11], [5, 6]])
    assert relative(op.rows(per_batch), torch.stack([ref[i, per_batch[i]] for i in range(2)])) < 1e-15


def test_toeplitz_factors_entries():
    c1, c2 = rand(4), rand(5, seed=1)
    op = Kronecker(Toeplitz(c1), Toeplitz(c2))
    ref = kron(Toeplitz(c1).to_dense(), Toeplitz(c2).to_dense())
    i, j = torch.arange(20).unsqueeze(-1), torch.arange(20)
    assert relative(op.entries(i, j), ref) < 1e-15
    assert op.shift_invariant and not Kronecker(Dense(rand(2, 2))).shift_invariant


def test_gradients_of_each_factor_and_of_a_shared_tensor():
    c = rand(4).requires_grad_()
    d = rand(3, seed=1).requires_grad_()
    op = Kronecker(Toeplitz(c), Toeplitz(d), Toeplitz(c))  # c in two factors
    assert op.grad_inputs() == (c, d)
    left, right = rand(48, 2, seed=2), rand(48, 2, seed=3)
    grads = op.bilinear_grad(left, right)
    ref = kron(*(Toeplitz(t).to_dense() for t in (c, d, c)))
    expected = torch.autograd.grad((left * (ref @ right)).sum(), (c, d))
    for g, e in zip(grads, expected):
        assert relative(g, e) < 1e-10


def test_factor_without_gradients():
    matrix = rand(3, 3).requires_grad_()
    op = Kronecker(Dense(rand(2, 2, seed=1)), Dense(matrix))
    left, right = rand(6, 2, seed=2), rand(6, 2, seed=3)
    (grad,) = op.bilinear_grad(left, right)
    ref = torch.kron(rand(2, 2, seed=1), matrix)
    (expected,) = torch.autograd.grad((left * (ref @ right)).sum(), matrix)
    assert relative(grad, expected) < 1e-12
    assert Kronecker(Dense(rand(2, 2))).bilinear_grad(left[:2], right[:2]) == ()


def test_bad_arguments():
    with pytest.raises(TypeError, match="factors: expected one or more Operator"):
        Kronecker()
    with pytest.raises(TypeError, match="factors: expected one or more Operator"):
        Kronecker(rand(2, 2))
    with pytest.raises(ValueError, match="diagonal: needs square factors"):
        Kronecker(Dense(rand(2, 3))).diagonal()


def test_rectangular_factors_match_dense():
    """Rectangular factors (cross covariances between grids): products, rows, entries of the
    dense form and both factors' bilinear gradients against torch.kron."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(5, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    op, dense = Kronecker(Dense(a), Dense(b)), torch.kron(a, b)
    assert op.shape == (15, 8)
    torch.testing.assert_close(op.to_dense(), dense, rtol=0, atol=1e-14)
    v = torch.randn(8, 3, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(op.matmul(v), dense @ v, rtol=1e-13, atol=1e-13)
    index = torch.tensor([0, 7, 14])
    torch.testing.assert_close(op.rows(index), dense[index].detach(), rtol=0, atol=1e-14)
    u = torch.randn(15, 3, dtype=torch.float64, generator=gen)
    grads = op.bilinear_grad(u, v)
    ref = torch.autograd.grad((u * (torch.kron(a, b) @ v)).sum(), [a, b])
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
