# Tests for flashgp.operators.Toeplitz: products by circulant embedding against the matrix written
# out entry by entry (float64 to 1e-10 relative), awkward sizes, chunked columns, float32, gradients
# through the FFT against autograd of the dense matrix, entries and rows, argument errors.
import pytest
import torch

from flashgp.operators import Toeplitz
from flashgp.operators import toeplitz as toeplitz_module
from flashgp.operators.toeplitz import embed, embedding_size, fast_size

F64 = torch.float64


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def dense(column, levels):
    """T[i, j] = column[|i_1 - j_1|, ...] by loops over the grid positions (the definition)."""
    grid = column.shape[column.dim() - levels:]
    points = torch.cartesian_prod(*[torch.arange(g) for g in grid]).reshape(-1, levels)
    size = points.shape[0]
    out = torch.empty(*column.shape[:column.dim() - levels], size, size, dtype=column.dtype)
    for i in range(size):
        for j in range(size):
            out[..., i, j] = column[(..., *(points[i] - points[j]).abs().tolist())]
    return out


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_fast_sizes():
    assert [fast_size(n) for n in (0, 1, 7, 11, 97, 2 * 10007 - 2)] == [1, 1, 8, 12, 100, 20250]
    assert embedding_size(1) == 1 and embedding_size(5) == 8 and embedding_size(2) == 2


def test_embedding_is_even_and_starts_with_the_column():
    column = rand(6)
    for size in (10, 11, 16):
        e = embed(column, 1, (size,))
        assert torch.equal(e[:6], column)
        assert torch.equal(e[1:], e[1:].flip(0))  # e[L - m] = e[m]: a real spectrum


@pytest.mark.parametrize("grid,levels", [((1,), 1), ((2,), 1), ((17,), 1), ((97,), 1), ((4, 7), 2), ((1, 5), 2),
                                         ((3, 2, 5), 3)])
def test_products_match_the_dense_matrix(grid, levels):
    column = rand(*grid)
    op = Toeplitz(column, levels)
    ref = dense(column, levels)
    rhs = rand(op.size, 4, seed=1)
    assert relative(op.matmul(rhs), ref @ rhs) < 1e-10
    assert relative(op.matmul(rhs[:, 0]), ref @ rhs[:, 0]) < 1e-10
    assert torch.equal(op.to_dense(), ref)
    assert torch.equal(op.diagonal(), ref.diagonal())


def test_batched_column_and_batched_rhs():
    column = rand(3, 9)
    op = Toeplitz(column)
    ref = dense(column, 1)
    rhs = rand(1, 9, 2, seed=1)
    assert op.shape == (3, 9, 9)
    assert relative(op.matmul(rhs), ref @ rhs) < 1e-10  # one rhs for the batch
    rhs = rand(3, 9, 2, seed=2)
    assert relative(op.matmul(rhs), ref @ rhs) < 1e-10
    unbatched = Toeplitz(column[0])
    assert relative(unbatched.matmul(rand(4, 9, 2, seed=3)), ref[0] @ rand(4, 9, 2, seed=3)) < 1e-10


def test_columns_in_chunks_give_the_same_product(monkeypatch):
    column = rand(5, 6)
    rhs = rand(30, 7, seed=1)
    whole = Toeplitz(column, 2).matmul(rhs)
    monkeypatch.setattr(toeplitz_module, "FFT_CHUNK_ENTRIES", 1)  # one column at a time
    chunked = Toeplitz(column, 2).matmul(rhs)
    assert relative(chunked, whole) < 1e-14


def test_float32_products():
    column = torch.exp(-0.5 * (torch.arange(200, dtype=F64) / 30) ** 2)  # an RBF column
    rhs = rand(200, 3, seed=1)
    ref = dense(column, 1) @ rhs
    out = Toeplitz(column.float()).matmul(rhs.float())
    assert out.dtype == torch.float32 and relative(out, ref) < 1e-5


def test_entries_and_rows():
    column = rand(2, 3, 4)
    op = Toeplitz(column, 2)
    ref = dense(column, 2)
    i, j = torch.tensor([[0], [5], [11]]), torch.tensor([3, 7, 11, 0])
    assert torch.equal(op.entries(i, j), ref[:, i, j])
    index = torch.tensor([11, 0, 6])
    assert torch.equal(op.rows(index), ref[:, index])
    per_batch = torch.tensor([[1, 2], [10, 4]])
    assert torch.equal(op.rows(per_batch), torch.stack([ref[b, per_batch[b]] for b in range(2)]))


@pytest.mark.parametrize("grid,levels", [((11,), 1), ((4, 5), 2)])
def test_bilinear_grad_matches_autograd_of_the_dense_matrix(grid, levels):
    column = rand(*grid).requires_grad_()
    op = Toeplitz(column, levels)
    assert op.grad_inputs() == (column,)
    left, right = rand(op.size, 3, seed=1), rand(op.size, 3, seed=2)
    (grad,) = op.bilinear_grad(left, right)
    (expected,) = torch.autograd.grad((left * (dense(column, levels) @ right)).sum(), column)
    assert relative(grad, expected) < 1e-10
    assert Toeplitz(column.detach()).bilinear_grad(left[: grid[0]], right[: grid[0]]) == ()


def test_products_with_grad_on_are_differentiable_and_solver_products_are_not():
    column = rand(8).requires_grad_()
    op = Toeplitz(column)
    rhs = rand(8, 2, seed=1)
    assert op.matmul(rhs).requires_grad
    with torch.no_grad():
        assert not op.matmul(rhs).requires_grad


def test_bad_arguments():
    with pytest.raises(TypeError, match="column: expected a floating point tensor"):
        Toeplitz(torch.arange(4))
    with pytest.raises(ValueError, match="levels: expected an int >= 1"):
        Toeplitz(rand(4), levels=0)
    with pytest.raises(ValueError, match=r"column: expected shape \(\*batch, g_1, ..., g_2\)"):
        Toeplitz(rand(4), levels=2)
