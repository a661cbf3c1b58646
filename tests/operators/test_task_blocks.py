# Tests for the operators of multitask kernels (flashgp.kernels.Multitask, LMC): the Kronecker
# operator B ⊗ K_x of a task grid (square and rectangular), TaskBlocks of heterotopic rows and the
# SumOperator of an LMC, against dense float64 matrices written out by hand from the same tensors
# (products, diagonal, rows, dense form, bilinear gradients for the kernel's parameters and for B,
# through flashgp.testing.check_operator and directly), plus task-grid detection.
import math

import pytest
import torch

from flashgp.kernels import LMC, RBF, Matern, Multitask
from flashgp.kernels.multitask import find_grid
from flashgp.operators import Dense, KernelOperator, Kronecker, SumOperator, TaskBlocks
from flashgp.testing import check_operator

F64 = torch.float64
T, D = 3, 2
BACKENDS = {"dense": dict(backend="dense"), "blocked": dict(backend="blocked", block_rows=4)}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def matern52(lengthscale, x1, x2):
    """Matern 5/2 written out from coordinate differences, float64, differentiable in lengthscale."""
    diff = (x1.to(F64).unsqueeze(-2) - x2.to(F64).unsqueeze(-3)) / lengthscale.to(F64).reshape(-1)
    r2 = diff.square().sum(-1)
    pos = r2 > 0  # no infinite derivative of sqrt at r = 0
    s = math.sqrt(5) * torch.where(pos, torch.where(pos, r2, 1.0).sqrt(), 0.0)
    return (1 + s + s * s / 3) * torch.exp(-s)


def rbf(lengthscale, x1, x2):
    diff = (x1.to(F64).unsqueeze(-2) - x2.to(F64).unsqueeze(-3)) / lengthscale.to(F64).reshape(-1)
    return torch.exp(-0.5 * diff.square().sum(-1))


def multitask(seed=0, rank=2, base="matern", ls=(0.7, 1.3)):
    """A float64 Multitask kernel with random W (t, rank), v in [0.2, 0.7] and lengthscales ``ls``."""
    g = gen(seed)
    b = Matern(nu=2.5, ard_dims=D) if base == "matern" else RBF(ard_dims=D)
    kernel = Multitask(b, T, rank).double()
    with torch.no_grad():
        kernel.task_factor.copy_(torch.randn(T, rank, generator=g, dtype=F64))
    kernel.task_variance = torch.rand(T, generator=g, dtype=F64) * 0.5 + 0.2
    kernel.base.lengthscale = torch.tensor([ls], dtype=F64)
    return kernel


def profile(kernel):
    return matern52 if isinstance(kernel.base, Matern) else rbf


def grid(points, t=T):
    """Task-major task-indexed inputs (t n, d + 1) of points (n, d)."""
    n = points.shape[0]
    return torch.cat([points.repeat(t, 1), torch.arange(t).repeat_interleave(n).to(F64).unsqueeze(-1)], -1)


def points(n, seed=1):
    return torch.rand(n, D, generator=gen(seed), dtype=F64) * 3 - 1.5


def rows(n, seed=2, tasks=None):
    """Heterotopic inputs (n, d + 1): random points, random tasks (from ``tasks`` if given)."""
    g = gen(seed)
    choice = torch.tensor(tasks if tasks is not None else list(range(T)))
    s = choice[torch.randint(0, len(choice), (n,), generator=g)]
    return torch.cat([torch.rand(n, D, generator=g, dtype=F64) * 3 - 1.5, s.to(F64).unsqueeze(-1)], -1)


def blocks_dense(kernel, b, x1, x2):
    """B[s_i, s_j] k(x_i, x_j) in float64 from the given B tensor."""
    s1, s2 = x1[:, -1].long(), x2[:, -1].long()
    return b.to(F64)[s1.unsqueeze(-1), s2.unsqueeze(0)] * profile(kernel)(kernel.base.lengthscale, x1[:, :-1],
                                                                            x2[:, :-1])


def kron_reference(kernel, g1, g2):
    """(op) -> kron(B, K_x(g1, g2)) with B the operator's own first factor."""
    return lambda op: torch.kron(op.factors[0].matrix.to(F64), profile(kernel)(kernel.base.lengthscale, g1, g2))


# ----- Kronecker: a full task grid ----------------------------------------------------------------

@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("base", ["matern", "rbf"])
def test_kronecker_contract(base, backend):
    """Multitask.operator on a task-major grid is Kronecker(Dense(B), KernelOperator): the whole
    operator contract against kron(B, K_x), gradients for the lengthscales and for B."""
    kernel, pts = multitask(base=base), points(9)
    x = grid(pts)
    op = kernel.operator(x, **BACKENDS[backend])
    assert isinstance(op, Kronecker) and op.shape == (9 * T, 9 * T)
    assert len(op.grad_inputs()) == 2 and op.grad_inputs()[0] is op.factors[0].matrix  # B, then K_x's
    check_operator(lambda: kernel.operator(x, **BACKENDS[backend]), kron_reference(kernel, pts, pts),
                   rtol=1e-10, name=f"Multitask Kronecker ({base}, {backend})")


def test_explicit_kronecker_of_dense_and_kernel_operator():
    """Kronecker(Dense(B), KernelOperator(k, x)) built by hand, B a non-leaf tensor made from W and
    v: the contract against kron(B, K_x) of that same B tensor."""
    kernel, pts = multitask(seed=3), points(7, seed=4)
    w = torch.randn(T, T, generator=gen(5), dtype=F64, requires_grad=True)
    v = torch.rand(T, generator=gen(6), dtype=F64).requires_grad_()
    b = w @ w.T + torch.diag(v)

    def make():
        return Kronecker(Dense(b), KernelOperator(kernel.base, pts, backend="dense"))

    check_operator(make, lambda op: torch.kron(b, matern52(kernel.base.lengthscale, pts, pts)), rtol=1e-10)


def test_rectangular_kronecker_between_grids():
    """K(test grid, train grid) of m and n points is a rectangular Kronecker (m t, n t): products,
    rows, dense form and gradients against kron(B, K_x(x*, x))."""
    kernel, train, test = multitask(), points(8), points(5, seed=9)
    op = kernel.operator(grid(test), grid(train))
    assert isinstance(op, Kronecker) and op.shape == (5 * T, 8 * T)
    check_operator(lambda: kernel.operator(grid(test), grid(train)), kron_reference(kernel, test, train),
                   rtol=1e-10, name="rectangular Kronecker")


@pytest.mark.parametrize("layout", ["grid", "heterotopic"])
def test_gradients_reach_task_factor_and_variances(layout):
    """bilinear_grad's gradient for B, pushed back through B = W Wᵀ + diag(v), equals autograd
    of uᵀ K v through the kernel's own dense evaluation (for W, v and the lengthscales)."""
    kernel = multitask(seed=7)
    x = grid(points(6)) if layout == "grid" else rows(17)
    g = gen(8)
    left, right = torch.randn(x.shape[0], 2, generator=g, dtype=F64), torch.randn(x.shape[0], 2, generator=g, dtype=F64)
    op = kernel.operator(x)
    assert isinstance(op, Kronecker if layout == "grid" else TaskBlocks)
    grads = dict(zip(map(id, op.grad_inputs()), op.bilinear_grad(left, right)))
    params = [kernel.task_factor, kernel.raw_task_variance, kernel.base.raw_lengthscale]
    b = op.factors[0].matrix if layout == "grid" else op.b
    mine = torch.autograd.grad(b, params[:2], grads[id(b)])
    expected = torch.autograd.grad((left * (kernel(x) @ right)).sum(), params)
    for got, want in zip([*mine, grads[id(kernel.base.raw_lengthscale)]], expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ----- TaskBlocks: tasks observed at different points -------------------------------------------

@pytest.mark.parametrize("backend", list(BACKENDS))
def test_task_blocks_symmetric_contract(backend):
    """Heterotopic rows: Multitask.operator gives TaskBlocks; the contract against B[s_i, s_j] k(x_i, x_j)."""
    kernel, x = multitask(), rows(23)
    op = kernel.operator(x, **BACKENDS[backend])
    assert isinstance(op, TaskBlocks) and op.shape == (23, 23)
    check_operator(lambda: kernel.operator(x, **BACKENDS[backend]), lambda op: blocks_dense(kernel, op.b, x, x),
                   rtol=1e-10, name=f"TaskBlocks ({backend})")


@pytest.mark.parametrize("case", ["both_heterotopic", "grid_against_rows", "rows_against_grid", "missing_task"])
def test_task_blocks_cross_contract(case):
    """Cross covariances that are not two grids (or rows that lack a task) are TaskBlocks: the
    contract (no diagonal) against the dense blocks."""
    kernel = multitask(seed=2)
    x1, x2 = {"both_heterotopic": (rows(11, seed=3), rows(14, seed=4)),
              "grid_against_rows": (grid(points(4)), rows(13, seed=5)),
              "rows_against_grid": (rows(10, seed=6), grid(points(5))),
              "missing_task": (rows(9, seed=7, tasks=[0, 2]), rows(12, seed=8, tasks=[1]))}[case]
    op = kernel.operator(x1, x2)
    assert isinstance(op, TaskBlocks) and op.shape == (x1.shape[0], x2.shape[0])
    check_operator(lambda: kernel.operator(x1, x2), lambda op: blocks_dense(kernel, op.b, x1, x2), rtol=1e-10,
                   name=f"TaskBlocks cross ({case})")


def test_task_blocks_direct_construction_and_errors():
    """TaskBlocks(base, B, x1) built by hand agrees with the dense blocks; it refuses batched
    inputs, a diagonal when rectangular and a 2-D row index."""
    kernel, x = multitask(seed=4), rows(15)
    b = kernel.task_covariance.detach()
    op = TaskBlocks(kernel.base, b, x)
    dense = blocks_dense(kernel, b, x, x).detach()
    torch.testing.assert_close(op.to_dense().detach(), dense, rtol=1e-12, atol=1e-14)
    rhs = torch.randn(15, 4, generator=gen(1), dtype=F64)
    torch.testing.assert_close(op.matmul(rhs), dense @ rhs, rtol=1e-11, atol=1e-12)
    assert op.grad_inputs() == (kernel.base.raw_lengthscale,)  # B without grad: not an input
    with pytest.raises(ValueError, match="x1, x2: expected task-indexed inputs"):
        TaskBlocks(kernel.base, b, x.unsqueeze(0))
    with pytest.raises(ValueError, match="diagonal: needs a square"):
        TaskBlocks(kernel.base, b, x, rows(4, seed=9)).diagonal()
    with pytest.raises(ValueError, match="index: expected a 1-D index"):
        op.rows(torch.zeros(2, 2, dtype=torch.long))


# ----- LMC: a sum of Multitask terms --------------------------------------------------------------

@pytest.mark.parametrize("layout", ["grid", "heterotopic"])
def test_lmc_operator_contract(layout):
    """An LMC's operator is the SumOperator of its members' (Kronecker on a grid, TaskBlocks
    otherwise); the contract against the sum of the dense terms, gradients for every member's
    lengthscales and B."""
    members = [multitask(seed=1, rank=1), multitask(seed=2, rank=2, base="rbf", ls=(2.0, 0.4))]
    kernel = LMC(*members)
    x = grid(points(6)) if layout == "grid" else rows(19)
    op = kernel.operator(x)
    assert isinstance(op, SumOperator) and len(op.grad_inputs()) == 4
    kind = Kronecker if layout == "grid" else TaskBlocks
    assert all(isinstance(o, kind) for o in op.operators)

    def reference(op):
        total = 0
        for member, part in zip(members, op.operators):
            b = part.factors[0].matrix if kind is Kronecker else part.b
            total = total + blocks_dense(member, b, x, x)
        return total

    check_operator(lambda: kernel.operator(x), reference, rtol=1e-10, name=f"LMC ({layout})")
    torch.testing.assert_close(kernel.task_covariance, members[0].task_covariance + members[1].task_covariance)


# ----- the kernel itself and grid detection -------------------------------------------------------

def test_dense_evaluation_and_exact_factors():
    """kernel(x1, x2) is B[s_i, s_j] k(x_i, x_j) (and its diagonal with diag=True); exact_factors
    gives (K_x, B) in float64 on a grid and None otherwise."""
    kernel = multitask(seed=5)
    x1, x2 = rows(10), rows(7, seed=3)
    b = kernel.task_covariance
    torch.testing.assert_close(kernel(x1, x2), blocks_dense(kernel, b, x1, x2), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(kernel(x1, diag=True), blocks_dense(kernel, b, x1, x1).diagonal(), rtol=1e-12, atol=0)
    pts = points(6)
    kx, bb = kernel.exact_factors(grid(pts))
    assert kx.dtype == bb.dtype == F64 and kx.requires_grad and bb.requires_grad
    torch.testing.assert_close(kx, matern52(kernel.base.lengthscale, pts, pts), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bb, b, rtol=0, atol=0)
    assert kernel.exact_factors(x1) is None


def test_find_grid_accepts_only_full_task_major_grids():
    """find_grid returns the n points of a task-major grid and None for interleaved order, a
    missing or repeated task, points that differ between tasks, or a row count not divisible by t."""
    pts = points(5)
    x = grid(pts)
    torch.testing.assert_close(find_grid(x, T), pts, rtol=0, atol=0)
    assert find_grid(grid(pts, t=1), 1) is not None
    interleaved = x.reshape(T, 5, D + 1).transpose(0, 1).reshape(-1, D + 1)
    assert find_grid(interleaved, T) is None
    swapped = x.clone()
    swapped[:, -1] = swapped[:, -1].flip(0)  # tasks in descending order
    assert find_grid(swapped, T) is None
    moved = x.clone()
    moved[7, 0] += 1e-9  # one point of task 1 differs
    assert find_grid(moved, T) is None
    assert find_grid(x[:-1], T) is None and find_grid(x, 2) is None
    assert find_grid(x[:0], T) is None


def test_task_grid_cache_sees_in_place_edits():
    """task_grid remembers its answer per tensor, but an in-place edit (a new tensor version)
    is looked at again: the operator then stops being a Kronecker."""
    kernel, x = multitask(), grid(points(4)).clone()
    assert kernel.task_grid(x) is not None and isinstance(kernel.operator(x), Kronecker)
    x[5, 1] += 0.25
    assert kernel.task_grid(x) is None and isinstance(kernel.operator(x), TaskBlocks)
    x[5, 1] -= 0.25
    assert kernel.task_grid(x) is not None


def test_rank_zero_kernel_is_diagonal_in_the_tasks():
    """rank 0: W has no columns, B = diag(v) and the grid operator is kron(diag(v), K_x)."""
    kernel = multitask(rank=0)
    assert kernel.task_factor.shape == (T, 0)
    torch.testing.assert_close(kernel.task_covariance, torch.diag(kernel.task_variance), rtol=0, atol=0)
    pts = points(5)
    check_operator(lambda: kernel.operator(grid(pts)), kron_reference(kernel, pts, pts), rtol=1e-10,
                   name="rank-0 Kronecker")


def test_set_task_covariance_full_rank():
    """set_task_covariance(C) with rank t: B = (1 - floor) C + floor diag(C) (the floor kept on
    the diagonal); with rank 1 the diagonal of C is still matched exactly."""
    g = gen(11)
    a = torch.randn(T, T, generator=g, dtype=F64)
    cov = a @ a.T + 0.1 * torch.eye(T, dtype=F64)
    kernel = multitask(rank=T)
    kernel.set_task_covariance(cov, floor=0.05)
    expected = 0.95 * cov + 0.05 * torch.diag(cov.diagonal())
    torch.testing.assert_close(kernel.task_covariance.detach(), expected, rtol=1e-10, atol=1e-12)
    low = multitask(rank=1)
    low.set_task_covariance(cov, floor=0.05)
    torch.testing.assert_close(low.task_covariance.detach().diagonal(), cov.diagonal(), rtol=1e-10, atol=1e-12)
