# Tests for flashgp.operators.InterpolatedOperator (W1 K_UU W2^T): products, diagonal, rows and
# dense forms against W K_UU W^T written out densely (float64, 1e-10 relative), gradients carried
# from the grid's generators to parameters, grids so large that no G x G (or n x n) matrix could
# exist, and argument errors.
import pytest
import torch

from flashgp.operators import Dense, InterpolatedOperator, Interpolation, Kronecker, Toeplitz

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.rand(shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


def points(n, shape, seed=0, spacing=0.5):
    """n points where cubic stencils fit on the grid of ``shape`` starting at 0."""
    low = torch.full((len(shape),), spacing, dtype=F64)
    high = torch.tensor([(g - 2) * spacing for g in shape], dtype=F64)
    return low + (high - low) * rand(n, len(shape), seed=seed)


def interpolation(x, shape, spacing=0.5):
    return Interpolation.cubic(x, [0.0] * len(shape), [spacing] * len(shape), shape)


def rbf_column(g, lengthscale, spacing=0.5):
    return torch.exp(-0.5 * (torch.arange(g, dtype=F64) * spacing / lengthscale) ** 2)


class Problem:
    """A 2-D grid with K_UU = outputscale * T(l1) ⊗ T(l2), the parameters leaves requiring grad."""

    def __init__(self, shape=(9, 11), n1=40, n2=None, batch=False):
        self.shape = shape
        size = (2,) if batch else ()
        self.lengthscales = (0.7 + rand(*size, 2, seed=5)).requires_grad_()
        self.outputscale = (1.0 + rand(*size, seed=6)).requires_grad_()
        self.w1 = interpolation(points(n1, shape), shape)
        self.w2 = None if n2 is None else interpolation(points(n2, shape, seed=1), shape)

    def make_grid(self):
        ls, o = self.lengthscales, self.outputscale
        c1 = o.unsqueeze(-1) * rbf_column(self.shape[0], ls[..., :1])
        return Kronecker(Toeplitz(c1), Toeplitz(rbf_column(self.shape[1], ls[..., 1:])))

    def operator(self):
        return InterpolatedOperator(self.w1, self.make_grid, self.w2, params=(self.lengthscales, self.outputscale))

    def dense(self):
        k_uu = self.make_grid().to_dense()
        w1 = self.w1.to_dense()
        w2 = w1 if self.w2 is None else self.w2.to_dense()
        return w1 @ k_uu @ w2.mT


@pytest.mark.parametrize("n2", [None, 17, 60], ids=["symmetric", "cross_fewer", "cross_more"])
def test_matches_the_dense_matrix(n2):
    problem = Problem(n2=n2)
    op, ref = problem.operator(), problem.dense().detach()
    assert op.backend == "ski" and op.precision == "float64"
    rhs = rand(op.n_cols, 3, seed=2)
    assert relative(op.matmul(rhs), ref @ rhs) < 1e-10
    assert relative(op.to_dense(), ref) < 1e-10
    index = torch.tensor([5, 0, 39])
    assert relative(op.rows(index), ref[index]) < 1e-10
    if n2 is None:
        assert relative(op.diagonal(), ref.diagonal()) < 1e-10


def test_batched_grid():
    problem = Problem(batch=True)
    op, ref = problem.operator(), problem.dense().detach()
    assert op.shape == (2, 40, 40)
    rhs = rand(2, 40, 3, seed=2)
    assert relative(op.matmul(rhs), ref @ rhs) < 1e-10
    assert relative(op.diagonal(), ref.diagonal(dim1=-2, dim2=-1)) < 1e-10
    per_batch = torch.tensor([[3, 1], [0, 39]])
    assert relative(op.rows(per_batch), torch.stack([ref[b, per_batch[b]] for b in range(2)])) < 1e-10


@pytest.mark.parametrize("n2", [None, 23])
def test_bilinear_grad_reaches_the_parameters(n2):
    problem = Problem(n2=n2)
    op = problem.operator()
    assert op.grad_inputs() == (problem.lengthscales, problem.outputscale)
    left, right = rand(40, 4, seed=3), rand(op.n_cols, 4, seed=4)
    grads = op.bilinear_grad(left, right)
    expected = torch.autograd.grad((left * (problem.dense() @ right)).sum(), op.grad_inputs())
    for g, e in zip(grads, expected):
        assert relative(g, e) < 1e-10
    assert InterpolatedOperator(problem.w1, problem.make_grid).bilinear_grad(left, left) == ()


def test_dense_form_is_differentiable_through_a_given_grid():
    problem = Problem(n2=13)
    op = problem.operator()
    value = op.to_dense(problem.make_grid()).sum()
    grads = torch.autograd.grad(value, (problem.lengthscales, problem.outputscale))
    expected = torch.autograd.grad(problem.dense().sum(), (problem.lengthscales, problem.outputscale))
    for g, e in zip(grads, expected):
        assert relative(g, e) < 1e-10


@pytest.mark.parametrize("shape,levels", [((1 << 20,), 1), ((1024, 1024), 0), ((64, 64, 64), 3)],
                         ids=["toeplitz_1m", "kronecker_1m", "three_level_262k"])
def test_grids_too_large_for_any_dense_matrix(shape, levels, monkeypatch):
    """G = 2^18 to 2^20 grid points: G x G float64 would take 0.5-8 TB. Products, the diagonal, a
    row and the gradient run from the generators alone (to_dense of the grid would be refused)."""
    def refuse(self):
        raise AssertionError("a dense grid matrix was formed")
    monkeypatch.setattr(Toeplitz, "to_dense", refuse)
    monkeypatch.setattr(Kronecker, "to_dense", refuse)
    lengthscale = torch.tensor(20.0, dtype=F64, requires_grad=True)

    def make_grid():
        if levels == 0:
            return Kronecker(*(Toeplitz(rbf_column(g, lengthscale)) for g in shape))
        offsets = torch.cartesian_prod(*[torch.arange(g, dtype=F64) * 0.5 for g in shape]).reshape(-1, len(shape))
        column = torch.exp(-0.5 * (offsets / lengthscale).square().sum(-1))
        return Toeplitz(column.reshape(shape), levels)
    x = points(500, shape)
    op = InterpolatedOperator(interpolation(x, shape), make_grid, params=(lengthscale,))
    out = op.matmul(rand(500, 2, seed=1))
    diagonal = op.diagonal()
    row = op.rows(torch.tensor([7]))
    (grad,) = op.bilinear_grad(rand(500, 1, seed=2), rand(500, 1, seed=3))
    assert out.shape == (500, 2) and torch.isfinite(out).all()
    assert torch.allclose(diagonal, torch.ones(500, dtype=F64), atol=1e-3)  # RBF: k(x, x) = 1 to interpolation error
    assert torch.allclose(row[0, 7], diagonal[7], rtol=1e-12) and torch.isfinite(grad)


def test_bad_arguments():
    w = interpolation(points(10, (8,)), (8,))
    with pytest.raises(TypeError, match="left, right: expected Interpolation"):
        InterpolatedOperator(Dense(torch.eye(8, dtype=F64)), lambda: Toeplitz(rand(8)))
    with pytest.raises(TypeError, match="make_grid: expected a shift-invariant grid operator"):
        InterpolatedOperator(w, lambda: Dense(torch.eye(8, dtype=F64)))
    with pytest.raises(ValueError, match="grid sizes differ"):
        InterpolatedOperator(w, lambda: Toeplitz(rand(9)))
    cross = InterpolatedOperator(w, lambda: Toeplitz(rand(8)), interpolation(points(5, (8,)), (8,)))
    with pytest.raises(ValueError, match="diagonal: only defined for the symmetric operator"):
        cross.diagonal()
