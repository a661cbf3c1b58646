# The operator contract (flashgp.testing.check_operator) on every operator flashgp has: kernel
# operators of several kernels on the dense and blocked backends (symmetric, cross, batched,
# float32, learned inputs), AddedDiag, Sum, Dense, LowRank, LowRankPlusDiag, LowRankPlusBlockDiag
# the products of the Vecchia factor (SparseInverseCholesky.mul / mul_t), the posterior
# covariance operators, and those of structured kernel interpolation (Toeplitz, Kronecker,
# Interpolation, InterpolatedOperator). The fused Triton backend: test_contract_triton.py.
import pytest
import torch

from flashgp.distributions.posterior import DenseDowndated, Downdated
from flashgp.kernels import RBF, RQ, Interpolated, Linear, Matern, Periodic, Polynomial, Scale
from flashgp.linalg import pivoted_cholesky_preconditioner
from flashgp.linalg.vecchia import vecchia_preconditioner
from flashgp.operators import (AddedDiag, Dense, Interpolation, KernelOperator, Kronecker, LowRank,
                               LowRankPlusBlockDiag, LowRankPlusDiag, SumOperator, Toeplitz)
from flashgp.operators.base import Operator
from flashgp.testing import check_operator

from references import (F64, dense_block_low_rank, dense_kernel, dense_sparse_factor, generator, inputs,
                        randomized)

N = 23
KERNELS = {
    "rbf_ard": lambda: Scale(RBF(ard_dims=3)),
    "rbf_bare": lambda: RBF(),
    "matern05": lambda: Scale(Matern(nu=0.5)),
    "matern15": lambda: Scale(Matern(nu=1.5, ard_dims=3)),
    "matern25": lambda: Matern(nu=2.5),
    "rq": lambda: Scale(RQ(ard_dims=3)),
    "periodic": lambda: Periodic(ard_dims=3),
    "linear": lambda: Linear(),
    "polynomial": lambda: Polynomial(power=2),
    "sum": lambda: Scale(RBF(ard_dims=3)) + Scale(Matern(nu=1.5)),
    "product": lambda: Scale(RBF()) * Periodic(),
    "active_dims": lambda: RBF(active_dims=[0, 2]) + Linear(active_dims=[1]),
}
BACKENDS = {"dense": dict(backend="dense"), "blocked": dict(backend="blocked", block_rows=7)}


def kernel_reference(op):
    return dense_kernel(op.kernel, op.x1, op.x2)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_operator(name, backend):
    kernel = randomized(KERNELS[name]())
    x = inputs(N)
    check_operator(lambda: KernelOperator(kernel, x, **BACKENDS[backend]), kernel_reference,
                   name=f"KernelOperator({name}, {backend})")


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", ["rbf_ard", "matern05", "periodic", "sum"])
def test_cross_kernel_operator(name, backend):
    """K(x1, x2), rectangular: everything but the diagonal."""
    kernel = randomized(KERNELS[name]())
    x1, x2 = inputs(17, seed=3), inputs(N, seed=4)
    check_operator(lambda: KernelOperator(kernel, x1, x2, **BACKENDS[backend]), kernel_reference,
                   name=f"KernelOperator({name}, cross, {backend})")


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", ["rbf_ard", "matern25", "linear"])
def test_learned_inputs(name, backend):
    """Gradients with respect to x1 and x2 as well as the hyperparameters."""
    kernel = randomized(KERNELS[name]())
    x1, x2 = inputs(N).requires_grad_(), inputs(11, seed=5).requires_grad_()
    check_operator(lambda: KernelOperator(kernel, x1, **BACKENDS[backend]), kernel_reference,
                   name=f"KernelOperator({name}, x requires grad, {backend})")
    check_operator(lambda: KernelOperator(kernel, x1, x2, **BACKENDS[backend]), kernel_reference,
                   name=f"KernelOperator({name}, x1 and x2 require grad, {backend})")


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("batch_inputs", [True, False], ids=["batched_x", "shared_x"])
def test_batched_kernel_operator(backend, batch_inputs):
    kernel = randomized(Scale(Matern(nu=1.5, ard_dims=3, batch_shape=(2,))))
    x = inputs(N, batch=(2,) if batch_inputs else ())
    check_operator(lambda: KernelOperator(kernel, x, **BACKENDS[backend]), kernel_reference,
                   name=f"KernelOperator(batch 2, {backend})")


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", ["rbf_ard", "matern15", "rq"])
def test_float32_kernel_operator(name, backend):
    """float32 data and parameters against the float64 reference (rtol 1e-4 of the largest entry)."""
    kernel = randomized(KERNELS[name](), dtype=torch.float32)
    x = inputs(N, dtype=torch.float32)
    check_operator(lambda: KernelOperator(kernel, x, **BACKENDS[backend]), kernel_reference,
                   name=f"KernelOperator({name}, float32, {backend})")


def added_diag_case(kernel_batch, noise_batch, kernel=lambda batch: Scale(RBF(ard_dims=3, batch_shape=batch)),
                    backend="dense"):
    kernel = randomized(kernel(kernel_batch))
    x = inputs(N)
    noise = (0.1 + torch.rand(*noise_batch, N, generator=generator(6), dtype=F64)).requires_grad_()
    return (lambda: AddedDiag(KernelOperator(kernel, x, **BACKENDS[backend]), noise),
            lambda op: dense_kernel(kernel, x) + torch.diag_embed(noise))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("kernel_batch,noise_batch", [((), ()), ((2,), (2,)), ((2,), ()), ((), (2,))],
                         ids=["single", "batch", "batch_kernel", "batch_noise"])
def test_added_diag(kernel_batch, noise_batch, backend):
    """Kernel plus a learned noise diagonal: gradients for the hyperparameters and the noise. A
    batched noise on an unbatched kernel gives batched rows, and the kernel's gradients sum over
    that batch (bilinear_grad gets left and right with a batch the kernel lacks)."""
    make_op, reference = added_diag_case(kernel_batch, noise_batch, backend=backend)
    check_operator(make_op, reference, name=f"AddedDiag(kernel batch {kernel_batch}, noise batch {noise_batch}, "
                                            f"{backend})")


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", ["linear", "product"])
def test_added_diag_batched_noise_other_kernels(name, backend):
    """Batched noise on an unbatched kernel without the stationary gradient (autograd paths)."""
    make_op, reference = added_diag_case((), (2,), kernel=lambda batch: KERNELS[name](), backend=backend)
    check_operator(make_op, reference, name=f"AddedDiag({name}, noise batch (2,), {backend})")


def test_sum_operator():
    k1, k2 = randomized(Scale(RBF(ard_dims=3))), randomized(Periodic(), seed=3)
    x = inputs(N)
    matrix = torch.randn(N, N, generator=generator(7), dtype=F64).requires_grad_()
    check_operator(lambda: SumOperator(KernelOperator(k1, x, backend="blocked", block_rows=5),
                                       KernelOperator(k2, x, backend="dense"), Dense(matrix)),
                   lambda op: dense_kernel(k1, x) + dense_kernel(k2, x) + matrix,
                   name="SumOperator(kernel, kernel, Dense)")


def test_batch_sum_operator():
    """Members with a batch of one dimension (a 1-D rhs reaches them as an (n, 1) column) and an
    unbatched one."""
    k1 = randomized(Scale(Matern(nu=1.5, ard_dims=3, batch_shape=(2,))))
    k2 = randomized(Periodic(), seed=3)
    x = inputs(N)
    matrix = torch.randn(2, N, N, generator=generator(7), dtype=F64).requires_grad_()
    check_operator(lambda: SumOperator(KernelOperator(k1, x, backend="blocked", block_rows=5),
                                       KernelOperator(k2, x, backend="dense"), Dense(matrix)),
                   lambda op: dense_kernel(k1, x) + dense_kernel(k2, x) + matrix,
                   name="SumOperator(batch kernel, kernel, batch Dense)")


@pytest.mark.parametrize("shape", [(N, N), (3, N, N), (N, 11)], ids=["square", "batch", "rectangular"])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "nograd"])
def test_dense(shape, grad):
    matrix = torch.randn(*shape, generator=generator(8), dtype=F64).requires_grad_(grad)
    check_operator(lambda: Dense(matrix), lambda op: matrix, name=f"Dense{shape}")


@pytest.mark.parametrize("batch", [(), (2,)], ids=["single", "batch"])
def test_low_rank(batch):
    factor = torch.randn(*batch, N, 4, generator=generator(9), dtype=F64)
    diag = 0.5 + torch.rand(*batch, N, generator=generator(10), dtype=F64)
    check_operator(lambda: LowRank(factor, scale=-0.5), lambda op: -0.5 * factor @ factor.mT,
                   name="LowRank(scale -0.5)")
    check_operator(lambda: LowRankPlusDiag(factor, diag),
                   lambda op: factor @ factor.mT + torch.diag_embed(diag), name="LowRankPlusDiag")


@pytest.mark.parametrize("batch", [(), (2,)], ids=["single", "batch"])
def test_low_rank_plus_block_diag(batch):
    """The block preconditioner as an operator, against the matrix its stored whiteners W_j and
    whitened factor M define (rebuilt densely in references.py); it has no rows()."""
    kernel = randomized(Scale(Matern(nu=1.5, ard_dims=3, batch_shape=batch)))
    x = inputs(N)
    noise = torch.full((N,), 0.05, dtype=F64)
    precond = pivoted_cholesky_preconditioner(KernelOperator(kernel, x), noise, rank=4, block_size=5)
    assert isinstance(precond, LowRankPlusBlockDiag)
    check_operator(lambda: precond, dense_block_low_rank, skip=("rows",), rtol=1e-8,
                   name=f"LowRankPlusBlockDiag(batch {batch})")


class SparseFactor(Operator):
    """U (or U^T) of a SparseInverseCholesky, which is no Operator, seen as one through its
    products ``mul`` (``mul_t``) and ``to_dense`` (U), so that the operator contract covers them."""

    def __init__(self, precond, transpose=False):
        self.precond, self.transpose = precond, transpose
        self.shape = torch.Size((*precond.index.shape[:-2], precond.n, precond.n))
        self.dtype, self.device = precond.dtype, precond.device

    def _matmul(self, rhs):
        return self.precond.mul_t(rhs) if self.transpose else self.precond.mul(rhs)

    def to_dense(self):
        u = self.precond.to_dense()
        return u.mT if self.transpose else u


@pytest.mark.parametrize("transpose", [False, True], ids=["U", "U_T"])
@pytest.mark.parametrize("batch", [(), (2,)], ids=["single", "batch"])
def test_sparse_inverse_cholesky_factor(batch, transpose):
    """The Vecchia factor's products and dense form against U rebuilt entry by entry."""
    kernel = randomized(Scale(Matern(nu=1.5, ard_dims=3, batch_shape=batch)))
    precond = vecchia_preconditioner(KernelOperator(kernel, inputs(N)), torch.full((N,), 0.05, dtype=F64), 5)
    u = dense_sparse_factor(precond)
    check_operator(lambda: SparseFactor(precond, transpose), lambda op: u.mT if transpose else u,
                   skip=("diagonal", "rows"), name=f"SparseInverseCholesky.{'mul_t' if transpose else 'mul'}")


@pytest.mark.parametrize("certified", [False, True], ids=["low_rank", "certified_variances"])
def test_posterior_covariance_operators(certified):
    """Downdated (prior - left right^T, optionally rescaled to given variances) and DenseDowndated."""
    kernel = randomized(Scale(RBF(ard_dims=3)))
    x = inputs(N)
    left = 0.3 * torch.randn(N, 3, generator=generator(11), dtype=F64)
    prior = dense_kernel(kernel, x).detach()
    low_rank = prior - left @ left.mT
    variances = None
    if certified:
        variances = low_rank.diagonal() * (1 + 0.2 * torch.rand(N, generator=generator(12), dtype=F64))
    expected = low_rank
    if certified:
        s = (variances / low_rank.diagonal()).sqrt()
        expected = s[:, None] * low_rank * s[None, :]
    check_operator(lambda: Downdated(KernelOperator(kernel, x), left, left, variances),
                   lambda op: expected, skip=("bilinear_grad",), name=f"Downdated(certified={certified})")
    if not certified:
        down = left @ left.mT
        check_operator(lambda: DenseDowndated(KernelOperator(kernel, x), down), lambda op: prior - down,
                       skip=("bilinear_grad", "rows"), name="DenseDowndated")


def test_posterior_covariance_operators_on_a_batch_of_one():
    """A 1-D right-hand side on a batch-1 prior (the members get the column, not a second unsqueeze)."""
    kernel = randomized(Scale(RBF(ard_dims=3, batch_shape=(1,))))
    x = inputs(N).unsqueeze(0)
    left = 0.3 * torch.randn(1, N, 3, generator=generator(13), dtype=F64)
    prior = dense_kernel(kernel, x).detach()
    down = left @ left.mT
    check_operator(lambda: Downdated(KernelOperator(kernel, x), left, left), lambda op: prior - down,
                   skip=("bilinear_grad",), name="Downdated(batch 1)")
    check_operator(lambda: DenseDowndated(KernelOperator(kernel, x), down), lambda op: prior - down,
                   skip=("bilinear_grad", "rows"), name="DenseDowndated(batch 1)")


# ----- structured kernel interpolation (SKI): Toeplitz, Kronecker, Interpolation, InterpolatedOperator ---

def toeplitz_reference(column, levels):
    """T[i, j] = column[|i_1 - j_1|, ..., |i_k - j_k|] entry by entry (float64, differentiable)."""
    grid = column.shape[column.dim() - levels:]
    points = torch.cartesian_prod(*[torch.arange(g) for g in grid]).reshape(-1, levels)
    diff = (points.unsqueeze(1) - points.unsqueeze(0)).abs()  # (G, G, k)
    return column.to(F64)[(..., *diff.unbind(-1))]


def cubic_reference(x, start, spacing, shape):
    """W (n, G): Keys' kernel (a = -0.5) at every grid point, written out, tensor products."""
    def keys(s):
        s = s.abs()
        return torch.where(s <= 1, 1.5 * s**3 - 2.5 * s**2 + 1,
                           torch.where(s < 2, -0.5 * s**3 + 2.5 * s**2 - 4 * s + 2, torch.zeros_like(s)))
    out = None
    for k, g in enumerate(shape):
        grid = start[k] + spacing[k] * torch.arange(g, dtype=F64)
        w = keys((x[..., k:k + 1].to(F64) - grid) / spacing[k])
        out = w if out is None else (out.unsqueeze(-1) * w.unsqueeze(-2)).flatten(-2)
    return out


@pytest.mark.parametrize("grid,levels,batch", [((9,), 1, ()), ((1,), 1, ()), ((13,), 1, (2,)), ((4, 6), 2, ()),
                                                ((3, 4, 5), 3, ()), ((5, 3), 2, (2,))],
                         ids=["g9", "g1", "batch", "two_level", "three_level", "two_level_batch"])
def test_toeplitz(grid, levels, batch):
    column = torch.rand(*batch, *grid, generator=generator(20), dtype=F64).requires_grad_()
    check_operator(lambda: Toeplitz(column, levels), lambda op: toeplitz_reference(column, levels),
                   name=f"Toeplitz({grid}, levels={levels}, batch {batch})")


@pytest.mark.parametrize("shared", [False, True], ids=["own_columns", "shared_column"])
def test_kronecker_of_toeplitz(shared):
    """Three Toeplitz factors; a column shared by two factors gets the sum of their gradients."""
    c1 = torch.rand(4, generator=generator(21), dtype=F64).requires_grad_()
    c2 = c1 if shared else torch.rand(4, generator=generator(22), dtype=F64).requires_grad_()
    c3 = torch.rand(2, 3, generator=generator(23), dtype=F64).requires_grad_()

    def reference(op):
        a, b, c = (toeplitz_reference(c, 1) for c in (c1, c2, c3))
        return torch.stack([torch.kron(torch.kron(a, b), c[i]) for i in range(2)])  # c: a batch of 2
    check_operator(lambda: Kronecker(Toeplitz(c1), Toeplitz(c2), Toeplitz(c3)), reference,
                   name=f"Kronecker(Toeplitz x3, shared={shared})")


def test_kronecker_of_dense():
    matrices = [torch.randn(g, g, generator=generator(24 + g), dtype=F64).requires_grad_() for g in (3, 2, 4)]
    check_operator(lambda: Kronecker(*(Dense(m) for m in matrices)),
                   lambda op: torch.kron(torch.kron(*matrices[:2]), matrices[2]), name="Kronecker(Dense x3)")


@pytest.mark.parametrize("shape,batch", [((11,), ()), ((6, 7), ()), ((5, 4, 6), ()), ((8,), (2,))],
                         ids=["1d", "2d", "3d", "batch"])
def test_interpolation(shape, batch):
    """W (n, G), rectangular, no gradients: against Keys' weights at every grid point."""
    start, spacing = [-1.0 - 0.1 * k for k in range(len(shape))], [0.5 + 0.1 * k for k in range(len(shape))]
    low = torch.tensor([s + h for s, h in zip(start, spacing)], dtype=F64)
    high = torch.tensor([s + (g - 2) * h for s, h, g in zip(start, spacing, shape)], dtype=F64)
    x = low + (high - low) * torch.rand(*batch, 17, len(shape), generator=generator(25), dtype=F64)
    check_operator(lambda: Interpolation.cubic(x, start, spacing, shape),
                   lambda op: cubic_reference(x, start, spacing, shape), name=f"Interpolation({shape})")


SKI_KERNELS = {  # name -> (base kernel, d, grid size): Kronecker of Toeplitz or multi-level Toeplitz
    "rbf_1d": (lambda: Scale(RBF()), 1, 12),
    "rbf_ard_2d": (lambda: Scale(RBF(ard_dims=2)), 2, (7, 9)),
    "matern_2d": (lambda: Scale(Matern(nu=1.5, ard_dims=2)), 2, 8),
    "rq_3d": (lambda: RQ(), 3, 6),
    "rbf_batch": (lambda: Scale(RBF(batch_shape=(2,))), 1, 10),
}


def ski_reference(kernel, x1, x2=None):
    """W1 K_UU W2^T with K_UU the base kernel evaluated densely at the explicit grid points."""
    spec = kernel.grid(x1, *([] if x2 is None else [x2]))
    axes = [s + h * torch.arange(g, dtype=F64) for s, h, g in zip(spec.start, spec.spacing, spec.shape)]
    points = torch.cartesian_prod(*axes).reshape(-1, len(axes))
    k_uu = dense_kernel(kernel.base, points)
    w1 = cubic_reference(x1, spec.start, spec.spacing, spec.shape)
    w2 = w1 if x2 is None else cubic_reference(x2, spec.start, spec.spacing, spec.shape)
    return w1 @ k_uu @ w2.transpose(-1, -2)


@pytest.mark.parametrize("cross", [False, True], ids=["symmetric", "cross"])
@pytest.mark.parametrize("name", list(SKI_KERNELS))
def test_interpolated_operator(name, cross):
    base, d, grid = SKI_KERNELS[name]
    kernel = Interpolated(randomized(base()), grid_size=grid)
    x1 = inputs(N, d=d)
    x2 = inputs(13, d=d, seed=7) * 0.8 if cross else None
    kernel.grid(x1, *([] if x2 is None else [x2]))  # fixed from both, as a model's training inputs would
    check_operator(lambda: kernel.operator(x1, x2), lambda op: ski_reference(kernel, x1, x2),
                   name=f"InterpolatedOperator({name}, {'cross' if cross else 'symmetric'})")
