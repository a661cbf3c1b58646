# Tests for flashgp.operators.Interpolation and its cubic convolution weights: Keys' kernel
# (a = -0.5), exactness on quadratics, third-order convergence, tensor products in 2-D and 3-D,
# products W v and W^T u against the dense W (float64, 1e-10 relative), chunked rows with a bounded
# temporary, points outside the grid refused with a message that says where.
import math

import pytest
import torch

from flashgp.operators import Interpolation
from flashgp.operators import interpolation as interpolation_module
from flashgp.operators.interpolation import STENCIL_SLACK, cubic_kernel, cubic_weights, stencil_offsets

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.rand(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


def dense_weights(x, start, spacing, shape):
    """W (n, G) from Keys' kernel at every grid point (tensor products over dimensions)."""
    out = None
    for k, g in enumerate(shape):
        grid = start[k] + spacing[k] * torch.arange(g, dtype=F64)
        w = cubic_kernel((x[..., k:k + 1] - grid) / spacing[k])
        out = w if out is None else (out.unsqueeze(-1) * w.unsqueeze(-2)).flatten(-2)
    return out


def inside(n, start, spacing, shape, seed=0, batch=()):
    """n points uniform on [u_1, u_{g-2}] per dimension (where the stencils fit)."""
    low = torch.tensor([s + h for s, h in zip(start, spacing)], dtype=F64)
    high = torch.tensor([s + (g - 2) * h for s, h, g in zip(start, spacing, shape)], dtype=F64)
    return low + (high - low) * rand(*batch, n, len(shape), seed=seed)


def test_keys_kernel_values():
    s = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, -1.5], dtype=F64)
    # a = -0.5: 1.5|s|^3 - 2.5|s|^2 + 1 on [0, 1], -0.5|s|^3 + 2.5|s|^2 - 4|s| + 2 on (1, 2)
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625, -0.0625], dtype=F64)
    assert torch.allclose(cubic_kernel(s), expected, rtol=0, atol=1e-15)


def test_weights_reproduce_quadratics_and_converge_at_third_order():
    start, g = -1.0, 40
    h = 4.0 / (g - 3)
    x = inside(500, [start], [h], (g,))
    grid = start + h * torch.arange(g, dtype=F64)
    corner, weights = cubic_weights(x, [start], [h], (g,))
    values = lambda f: (weights * f(grid)[corner.unsqueeze(-1) + torch.arange(4)]).sum(-1)
    assert torch.allclose(weights.sum(-1), torch.ones(500, dtype=F64), rtol=0, atol=1e-14)
    quadratic = lambda t: 0.3 - 2 * t + 0.7 * t ** 2
    assert relative(values(quadratic), quadratic(x[:, 0])) < 1e-13
    errors = []
    for g in (20, 40, 80):
        h = 4.0 / (g - 3)
        x = inside(500, [start], [h], (g,))
        grid = start + h * torch.arange(g, dtype=F64)
        corner, weights = cubic_weights(x, [start], [h], (g,))
        errors.append(float((values(torch.sin) - torch.sin(x[:, 0])).abs().max()))
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(rates) > 2.7, (errors, rates)


@pytest.mark.parametrize("shape", [(9,), (6, 8), (5, 6, 7)])
def test_tensor_product_weights_match_the_dense_reference(shape):
    start = [-1.0, 0.5, 2.0][: len(shape)]
    spacing = [0.3, 0.7, 0.25][: len(shape)]
    x = inside(30, start, spacing, shape)
    op = Interpolation.cubic(x, start, spacing, shape)
    ref = dense_weights(x, start, spacing, shape)
    assert op.shape == (30, math.prod(shape))
    assert relative(op.to_dense(), ref) < 1e-14
    assert torch.allclose(op.to_dense().sum(-1), torch.ones(30, dtype=F64), atol=1e-13)
    v, u = rand(op.size, 3, seed=1), rand(30, 3, seed=2)
    assert relative(op.matmul(v), ref @ v) < 1e-10
    assert relative(op.t_matmul(u), ref.T @ u) < 1e-10
    assert relative(op.t_matmul(u[:, 0]), ref.T @ u[:, 0]) < 1e-10
    # offsets are row-major over the grid (the first dimension slowest), 4 per dimension
    assert stencil_offsets(shape).shape == (4 ** len(shape),)
    assert torch.equal(op.index()[0], op.corner[0] + stencil_offsets(shape))


def test_batched_points():
    shape, start, spacing = (10,), [0.0], [0.5]
    x = inside(12, start, spacing, shape, batch=(2,))
    op = Interpolation.cubic(x, start, spacing, shape)
    ref = dense_weights(x, start, spacing, shape)
    v = rand(2, 10, 3, seed=1)
    assert relative(op.matmul(v), ref @ v) < 1e-10
    assert relative(op.matmul(v[:1]), ref @ v[:1]) < 1e-10  # one right-hand side for the batch
    u = rand(2, 12, 3, seed=2)
    assert relative(op.t_matmul(u), ref.mT @ u) < 1e-10
    per_batch = torch.tensor([[0, 11], [3, 4]])
    assert torch.equal(op.rows(per_batch), torch.stack([ref[b, per_batch[b]] for b in range(2)]))


def test_rows_are_taken_in_bounded_chunks(monkeypatch):
    """A batched W's products (gathers) hold temporaries (chunk, 4^d, t) with chunk 4^d t <=
    ROW_CHUNK_ENTRIES (an unbatched W multiplies as a sparse CSR matrix, without temporaries)."""
    shape, start, spacing = (7, 9), [0.0, 0.0], [0.5, 0.5]
    x = inside(101, start, spacing, shape, batch=(1,))
    v, u = rand(1, 63, 5, seed=1), rand(1, 101, 5, seed=2)
    whole = Interpolation.cubic(x, start, spacing, shape)
    expected = whole.matmul(v), whole.t_matmul(u)
    monkeypatch.setattr(interpolation_module, "ROW_CHUNK_ENTRIES", 16 * 5 * 7)  # 7 rows at a time
    op = Interpolation.cubic(x, start, spacing, shape)
    seen = []
    index = op.index
    monkeypatch.setattr(op, "index", lambda rows=slice(None): seen.append(index(rows).shape) or index(rows))
    assert relative(op.matmul(v), expected[0]) < 1e-14
    assert relative(op.t_matmul(u), expected[1]) < 1e-14
    assert len(seen) == 2 * math.ceil(101 / 7) and max(s[-2] * s[-1] * 5 for s in seen) <= 16 * 5 * 7
    unbatched = Interpolation.cubic(x[0], start, spacing, shape)  # the CSR products agree
    assert relative(unbatched.matmul(v[0]), expected[0][0]) < 1e-14
    assert relative(unbatched.t_matmul(u[0]), expected[1][0]) < 1e-14


def test_grid_edges_are_accepted_within_round_off():
    shape, start, spacing = (8,), [0.0], [1.0]
    edges = torch.tensor([[1.0], [6.0], [1.0 - STENCIL_SLACK / 2], [6.0 + STENCIL_SLACK / 2]], dtype=F64)
    op = Interpolation.cubic(edges, start, spacing, shape)
    w = op.to_dense()
    assert w[0, 1] == 1 and w[1, 6] == 1  # grid points themselves: weight 1
    assert torch.allclose(w.sum(-1), torch.ones(4, dtype=F64), atol=1e-6)


@pytest.mark.parametrize("value,where", [(0.5, "dimension 1"), (7.5, "dimension 1"), (float("nan"), "dimension 1")])
def test_points_outside_the_grid_are_refused(value, where):
    x = torch.tensor([[3.0, 3.0], [3.0, value]], dtype=F64)
    with pytest.raises(ValueError, match=rf"x: 1 of 2 points lie outside the interpolation grid in {where}.*"
                                         r"stencils cover \[1, 6\].*pass grid_bounds"):
        cubic_weights(x, [0.0, 0.0], [1.0, 1.0], (8, 8))


def test_bad_arguments():
    with pytest.raises(ValueError, match="x: expected 2 columns"):
        cubic_weights(torch.ones(3, 1, dtype=F64), [0.0, 0.0], [1.0, 1.0], (8, 8))
    with pytest.raises(ValueError, match="corner, weights, offsets: expected"):
        Interpolation(torch.zeros(3), torch.ones(3, 4), torch.arange(4), 10)
