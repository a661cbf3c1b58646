# Tests for flashgp.operators: KernelOperator (dense and blocked backends), AddedDiag and
# SumOperator against the dense kernel matrix, and bilinear_grad against autograd.
import pytest
import torch

from flashgp.backends import block_rows_for, choose_backend, cpu_fused
from flashgp.kernels import RBF, RQ, Linear, Matern, Periodic, Polynomial, Scale
from flashgp.operators import AddedDiag, Dense, KernelOperator, SumOperator
from kernel_helpers import randomized

F64 = torch.float64
BACKENDS = [("dense", None), ("blocked", 7), ("blocked", 1), ("blocked", 1000)]
BACKEND_IDS = ["dense", "blocked7", "blocked1", "blocked_big"]


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


KERNELS = {
    "rbf_ard": lambda: RBF(ard_dims=3),
    "matern05": lambda: Matern(nu=0.5),
    "matern15": lambda: Matern(nu=1.5, ard_dims=3),
    "matern25": lambda: Matern(nu=2.5),
    "rq": lambda: RQ(ard_dims=3),
    "periodic": lambda: Periodic(ard_dims=3),
    "linear": lambda: Linear(),
    "polynomial": lambda: Polynomial(power=2),
    "scale_sum": lambda: Scale(RBF(ard_dims=3)) + Scale(Matern(nu=1.5)),
    "product": lambda: Scale(RBF()) * Periodic(),
    "active_dims": lambda: RBF(active_dims=[0, 2]) + Linear(active_dims=[1]),
}


def make_op(kernel, x1, x2=None, backend="dense", block_rows=None):
    return KernelOperator(kernel, x1, x2, backend=backend, block_rows=block_rows)


# ----- products and entries ---------------------------------------------------------------------

@pytest.mark.parametrize("backend,block_rows", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("name", list(KERNELS))
def test_symmetric_products_and_entries(name, backend, block_rows):
    kernel = randomized(KERNELS[name]())
    x = rand(23, 3, seed=2)
    op = make_op(kernel, x, backend=backend, block_rows=block_rows)
    dense = kernel(x).detach()
    assert op.shape == (23, 23) and op.backend == backend and op.dtype == F64
    v = rand(23, 4, seed=3)
    atol = 1e-11
    torch.testing.assert_close(op.matmul(v), dense @ v, rtol=1e-11, atol=atol)
    torch.testing.assert_close(op @ v[:, 0], dense @ v[:, 0], rtol=1e-11, atol=atol)  # vector rhs
    torch.testing.assert_close(op.diagonal(), kernel.diag(x).detach(), rtol=1e-12, atol=1e-12)
    index = torch.tensor([5, 0, 22, 5])
    torch.testing.assert_close(op.rows(index), dense[index], rtol=1e-12, atol=atol)
    torch.testing.assert_close(op.to_dense().detach(), dense, rtol=1e-12, atol=atol)


@pytest.mark.parametrize("backend,block_rows", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("name", ["rbf_ard", "matern05", "periodic", "linear", "scale_sum"])
def test_asymmetric_products_and_rows(name, backend, block_rows):
    kernel = randomized(KERNELS[name]())
    x1, x2 = rand(19, 3, seed=4), rand(12, 3, seed=5)
    op = make_op(kernel, x1, x2, backend=backend, block_rows=block_rows)
    dense = kernel(x1, x2).detach()
    assert op.shape == (19, 12)
    v = rand(12, 3, seed=6)
    torch.testing.assert_close(op.matmul(v), dense @ v, rtol=1e-11, atol=1e-11)
    index = torch.tensor([18, 3])
    torch.testing.assert_close(op.rows(index), dense[index], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.to_dense().detach(), dense, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"\brhs\b"):
        op.matmul(rand(19, 3))
    with pytest.raises(ValueError, match=r"\bdiagonal\b"):
        op.diagonal()


@pytest.mark.parametrize("backend,block_rows", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("kernel_batch", [False, True])
def test_batched_products_and_rows(backend, block_rows, kernel_batch):
    batch = (2,) if kernel_batch else ()
    kernel = randomized(Scale(Matern(nu=2.5, ard_dims=3, batch_shape=batch)), seed=7)
    x = rand(2, 20, 3, seed=8)
    op = make_op(kernel, x, backend=backend, block_rows=block_rows)
    dense = kernel(x).detach()
    assert op.shape == (2, 20, 20) and op.batch_shape == (2,)
    v = rand(2, 20, 5, seed=9)
    torch.testing.assert_close(op.matmul(v), dense @ v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(op.matmul(v[..., 0]), (dense @ v)[..., 0], rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(op.diagonal(), dense.diagonal(dim1=-2, dim2=-1), rtol=1e-12, atol=1e-12)
    # shared index (k,) and per-batch index (2, k)
    shared = torch.tensor([3, 19, 0])
    torch.testing.assert_close(op.rows(shared), dense[:, shared], rtol=1e-12, atol=1e-12)
    per_batch = torch.tensor([[1, 2, 3], [19, 4, 4]])
    expected = torch.stack([dense[0, per_batch[0]], dense[1, per_batch[1]]])
    torch.testing.assert_close(op.rows(per_batch), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.to_dense().detach(), dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["dense", "blocked"])
def test_batched_kernel_with_unbatched_inputs(backend):
    # kernel batch (2,) and x (n, d): a (2, n, n) operator, every member its own hyperparameters
    kernel = randomized(Scale(RBF(batch_shape=(2,))) + Linear(batch_shape=(2,)), seed=10)
    x = rand(15, 3, seed=11)
    op = make_op(kernel, x, backend=backend, block_rows=4)
    dense = kernel(x).detach()
    assert op.shape == (2, 15, 15) and dense.shape == (2, 15, 15)
    v = rand(2, 15, 2, seed=12)
    torch.testing.assert_close(op.matmul(v), dense @ v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(op.diagonal(), dense.diagonal(dim1=-2, dim2=-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.rows(torch.tensor([0, 14])), dense[:, [0, 14]], rtol=1e-12, atol=1e-12)


def test_dense_and_blocked_agree_float32():
    kernel = Scale(Matern(nu=1.5, ard_dims=3))
    x = torch.randn(300, 3) * 3 + 10
    v = torch.randn(300, 4)
    dense = make_op(kernel, x, backend="dense").matmul(v)
    blocked = make_op(kernel, x, backend="blocked", block_rows=37).matmul(v)
    reference = kernel.double()(x.double()).detach() @ v.double()
    for got in (dense, blocked):
        assert got.dtype == torch.float32
        assert float((got.double() - reference).norm() / reference.norm()) < 1e-5


def test_padded_rows_layout():
    """Stored matrices keep rows on ROW_ALIGN-element boundaries (what the Triton stored-matrix
    product reads); the dense backend's stationary K is built into that layout."""
    from flashgp.backends.layout import ROW_ALIGN, padded_rows
    k = padded_rows((2, 5, 37), dtype=torch.float64)
    assert k.shape == (2, 5, 37) and k.stride() == (5 * 48, 48, 1) and k.dtype == torch.float64
    assert padded_rows((3, 3)).stride() == (ROW_ALIGN, 1) and padded_rows((4, 32)).stride() == (32, 1)
    op = make_op(Scale(RBF()), torch.randn(37, 2), backend="dense")
    assert op.to_dense().stride(-2) == 48


# ----- bilinear gradients -----------------------------------------------------------------------

def autograd_bilinear(kernel, x1, x2, left, right, inputs):
    """Gradients of sum(left * (K(x1, x2) @ right)) by autograd through the dense matrix."""
    k = kernel(x1, x2)
    return torch.autograd.grad((left * (k @ right)).sum(), inputs, allow_unused=True)


def assert_grads_close(got, expected, rtol=1e-9, atol=1e-10):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        e = torch.zeros_like(g) if e is None else e
        assert g is not None and g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend,block_rows", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("name", list(KERNELS))
def test_bilinear_grad_params(name, backend, block_rows):
    kernel = randomized(KERNELS[name]())
    x = rand(23, 3, seed=13)
    op = make_op(kernel, x, backend=backend, block_rows=block_rows)
    left, right = rand(23, 3, seed=14), rand(23, 3, seed=15)
    inputs = op.grad_inputs()
    assert len(inputs) == len(list(kernel.parameters()))
    expected = autograd_bilinear(kernel, x, None, left, right, inputs)
    assert_grads_close(op.bilinear_grad(left, right), expected, atol=1e-10)


@pytest.mark.parametrize("backend,block_rows", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("name", ["rbf_ard", "matern15", "matern25", "rq", "periodic", "polynomial",
                                  "scale_sum", "product", "active_dims"])
def test_bilinear_grad_params_and_symmetric_inputs(name, backend, block_rows):
    kernel = randomized(KERNELS[name]())
    x = rand(21, 3, seed=16).requires_grad_(True)
    op = make_op(kernel, x, backend=backend, block_rows=block_rows)
    inputs = op.grad_inputs()
    assert inputs[-1] is x and len(inputs) == len(list(kernel.parameters())) + 1
    left, right = rand(21, 2, seed=17), rand(21, 2, seed=18)
    expected = autograd_bilinear(kernel, x, None, left, right, inputs)
    assert_grads_close(op.bilinear_grad(left, right), expected)


@pytest.mark.parametrize("backend,block_rows", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("grad_x1,grad_x2", [(True, True), (True, False), (False, True)])
def test_bilinear_grad_asymmetric_inputs(backend, block_rows, grad_x1, grad_x2):
    kernel = randomized(KERNELS["scale_sum"](), seed=19)
    x1 = rand(17, 3, seed=20).requires_grad_(grad_x1)
    x2 = rand(11, 3, seed=21).requires_grad_(grad_x2)
    op = make_op(kernel, x1, x2, backend=backend, block_rows=block_rows)
    inputs = op.grad_inputs()
    n_params = len(list(kernel.parameters()))
    assert len(inputs) == n_params + grad_x1 + grad_x2
    assert list(inputs[n_params:]) == [x for x, g in ((x1, grad_x1), (x2, grad_x2)) if g]
    left, right = rand(17, 3, seed=22), rand(11, 3, seed=23)
    expected = autograd_bilinear(kernel, x1, x2, left, right, inputs)
    assert_grads_close(op.bilinear_grad(left, right), expected)


@pytest.mark.parametrize("backend,block_rows", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("kernel_batch", [False, True])
def test_bilinear_grad_batched(backend, block_rows, kernel_batch):
    batch = (2,) if kernel_batch else ()
    kernel = randomized(Scale(RQ(ard_dims=3, batch_shape=batch)) * Periodic(batch_shape=batch), seed=24)
    x = rand(2, 16, 3, seed=25).requires_grad_(True)
    op = make_op(kernel, x, backend=backend, block_rows=block_rows)
    left, right = rand(2, 16, 4, seed=26), rand(2, 16, 4, seed=27)
    inputs = op.grad_inputs()
    expected = autograd_bilinear(kernel, x, None, left, right, inputs)
    got = op.bilinear_grad(left, right)
    assert_grads_close(got, expected)
    if kernel_batch:  # the batch members' gradients are separate, not summed
        assert got[0].shape[0] == 2


SCALED_STATIONARY = {  # the shapes Scale(stationary) kernels come in (own gradient code path)
    "ard_active_dims": (lambda: Scale(RBF(ard_dims=2, active_dims=[0, 2])), (18, 3), None),
    "batched_both": (lambda: Scale(Matern(nu=1.5, ard_dims=3, batch_shape=(2,))), (2, 18, 3), None),
    "batched_x": (lambda: Matern(nu=2.5, ard_dims=3), (2, 18, 3), None),
    "batched_kernel": (lambda: Scale(RBF(batch_shape=(2,))), (18, 3), None),
    "asymmetric": (lambda: Scale(Matern(nu=2.5, ard_dims=3)), (18, 3), (13, 3)),
    "asymmetric_batched": (lambda: Scale(RBF(ard_dims=3, batch_shape=(2,))), (2, 18, 3), (2, 13, 3)),
}


@pytest.mark.parametrize("backend,block_rows", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("case", list(SCALED_STATIONARY))
def test_bilinear_grad_scaled_stationary_shapes(case, backend, block_rows):
    make, shape1, shape2 = SCALED_STATIONARY[case]
    kernel = randomized(make(), seed=53)
    x1 = rand(*shape1, seed=54).requires_grad_(True)
    x2 = None if shape2 is None else rand(*shape2, seed=55).requires_grad_(True)
    op = make_op(kernel, x1, x2, backend=backend, block_rows=block_rows)
    batch = op.batch_shape
    left = rand(*batch, op.n_rows, 3, seed=56)
    right = rand(*batch, op.n_cols, 3, seed=57)
    inputs = op.grad_inputs()
    assert len(inputs) == len(list(kernel.parameters())) + (1 if x2 is None else 2)
    expected = autograd_bilinear(kernel, x1, x2, left, right, inputs)
    assert_grads_close(op.bilinear_grad(left, right), expected)
    dense = kernel(x1, x2).detach()
    torch.testing.assert_close(op.matmul(right), dense @ right, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("kernel_name", ["scale_rbf", "scale_periodic"])
def test_bilinear_grad_is_repeatable(kernel_name):
    base = RBF(ard_dims=3) if kernel_name == "scale_rbf" else Periodic(ard_dims=3)
    kernel = randomized(Scale(base), seed=28)
    x = rand(20, 3, seed=29)
    op = make_op(kernel, x, backend="dense")
    left, right = rand(20, 2, seed=30), rand(20, 2, seed=31)
    expected = autograd_bilinear(kernel, x, None, left, right, op.grad_inputs())
    assert_grads_close(op.bilinear_grad(left, right), expected)
    assert_grads_close(op.bilinear_grad(left, right), expected)  # a second pass gives the same
    # products still work after the gradient passes
    torch.testing.assert_close(op.matmul(left), kernel(x).detach() @ left, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("base,backend", [
    ("rbf", "dense"), ("rbf", "blocked"),
    ("periodic", "dense"), ("periodic", "blocked")])
def test_frozen_params_are_skipped(base, backend):
    kernel = randomized(Scale(RBF(ard_dims=3) if base == "rbf" else Periodic(ard_dims=3)), seed=28)
    kernel.base.raw_lengthscale.requires_grad_(False)
    if base == "periodic":
        kernel.base.raw_period.requires_grad_(False)
    x = rand(20, 3, seed=29)
    op = make_op(kernel, x, backend=backend, block_rows=6)
    assert op.grad_inputs() == (kernel.raw_outputscale,)
    left, right = rand(20, 2, seed=30), rand(20, 2, seed=31)
    expected = autograd_bilinear(kernel, x, None, left, right, op.grad_inputs())
    assert_grads_close(op.bilinear_grad(left, right), expected)


def test_no_grad_inputs_gives_empty_gradients():
    kernel = RBF().double().requires_grad_(False)
    op = make_op(kernel, rand(10, 2))
    assert op.grad_inputs() == ()
    assert tuple(op.bilinear_grad(rand(10, 1), rand(10, 1))) == ()


# ----- AddedDiag and SumOperator ----------------------------------------------------------------

@pytest.mark.parametrize("backend,block_rows", BACKENDS[:2], ids=BACKEND_IDS[:2])
@pytest.mark.parametrize("diag_shape", ["vector", "batched", "broadcast"])
def test_added_diag(backend, block_rows, diag_shape):
    batched = diag_shape != "vector"
    kernel = randomized(Scale(Matern(nu=2.5, ard_dims=3)), seed=32)
    x = rand(2, 18, 3, seed=33) if batched else rand(18, 3, seed=33)
    base = make_op(kernel, x, backend=backend, block_rows=block_rows)
    d_shape = {"vector": (18,), "batched": (2, 18), "broadcast": (18,)}[diag_shape]
    diag = (rand(*d_shape, seed=34).abs() + 0.1).requires_grad_(True)
    op = AddedDiag(base, diag)
    dense = kernel(x).detach() + torch.diag_embed(diag.detach())
    assert op.shape == dense.shape
    v = rand(*dense.shape[:-1], 3, seed=35)
    torch.testing.assert_close(op.matmul(v), dense @ v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(op.diagonal(), dense.diagonal(dim1=-2, dim2=-1), rtol=1e-12, atol=1e-12)
    index = torch.tensor([0, 17, 4])
    torch.testing.assert_close(op.rows(index), dense[..., index, :], rtol=1e-12, atol=1e-12)
    if batched:
        per_batch = torch.tensor([[2, 2], [9, 0]])
        expected = torch.stack([dense[0, per_batch[0]], dense[1, per_batch[1]]])
        torch.testing.assert_close(op.rows(per_batch), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.to_dense().detach(), dense, rtol=1e-12, atol=1e-12)
    # gradients: kernel parameters, then the diagonal (summed back to its own shape)
    inputs = op.grad_inputs()
    assert inputs[-1] is diag
    left, right = rand(*dense.shape[:-1], 3, seed=36), rand(*dense.shape[:-1], 3, seed=37)
    full = kernel(x) + torch.diag_embed(diag)
    expected = torch.autograd.grad((left * (full @ right)).sum(), inputs)
    got = op.bilinear_grad(left, right)
    assert got[-1].shape == diag.shape
    assert_grads_close(got, expected)


def test_added_diag_without_grad_diag():
    kernel = randomized(RBF(), seed=38)
    x = rand(12, 2, seed=39)
    op = AddedDiag(make_op(kernel, x), torch.full((12,), 0.3, dtype=F64))
    assert len(op.grad_inputs()) == 1
    left, right = rand(12, 2, seed=40), rand(12, 2, seed=41)
    expected = autograd_bilinear(kernel, x, None, left, right, op.grad_inputs())
    assert_grads_close(op.bilinear_grad(left, right), expected)


@pytest.mark.parametrize("backend,block_rows", BACKENDS[:2], ids=BACKEND_IDS[:2])
def test_sum_operator(backend, block_rows):
    k1 = randomized(Scale(RBF(ard_dims=3)), seed=42)
    k2 = randomized(Periodic(), seed=43)
    x = rand(19, 3, seed=44).requires_grad_(True)
    diag = (rand(19, seed=45).abs() + 0.5).requires_grad_(True)
    ops = (make_op(k1, x, backend=backend, block_rows=block_rows),
           make_op(k2, x, backend=backend, block_rows=block_rows))
    op = AddedDiag(SumOperator(*ops), diag)
    full = k1(x) + k2(x) + torch.diag(diag)
    dense = full.detach()
    v = rand(19, 2, seed=46)
    torch.testing.assert_close(op.matmul(v), dense @ v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(op.diagonal(), dense.diagonal(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.rows(torch.tensor([3, 7])), dense[[3, 7]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(SumOperator(*ops).to_dense().detach(), dense - torch.diag(diag.detach()))
    inputs = op.grad_inputs()
    # every member's own inputs, in order (x appears once per member), then the diagonal
    assert len(inputs) == (2 + 1) + (2 + 1) + 1 and inputs[-1] is diag
    left, right = rand(19, 3, seed=47), rand(19, 3, seed=48)
    grads = op.bilinear_grad(left, right)
    expected = torch.autograd.grad((left * (full @ right)).sum(), [*k1.parameters(), *k2.parameters(), x, diag])
    # the per-member x gradients add up to the total x gradient
    got_params = grads[0:2] + grads[3:5]
    assert_grads_close(got_params, expected[:4])
    torch.testing.assert_close(grads[2] + grads[5], expected[4], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grads[6], expected[5], rtol=1e-9, atol=1e-10)


def test_sum_operator_rejects_mismatched_shapes():
    a = make_op(RBF().double(), rand(5, 2))
    b = make_op(RBF().double(), rand(6, 2))
    with pytest.raises(ValueError, match=r"\boperators\b"):
        SumOperator(a, b)
    with pytest.raises(TypeError, match=r"\boperators\b"):
        SumOperator(a, torch.eye(5))
    with pytest.raises(ValueError, match=r"\bdiag\b"):
        AddedDiag(a, torch.ones(4, dtype=F64))
    with pytest.raises(TypeError, match=r"\bbase\b"):
        AddedDiag(torch.eye(5), torch.ones(5))


def test_dense_operator_bilinear_grad():
    m = rand(3, 3, seed=49)
    m = (m @ m.T).requires_grad_(True)
    op = Dense(m)
    left, right = rand(3, 2, seed=50), rand(3, 2, seed=51)
    (expected,) = torch.autograd.grad((left * (m @ right)).sum(), m)
    assert_grads_close(op.bilinear_grad(left, right), (expected,))


# ----- backend choice ---------------------------------------------------------------------------

def test_choose_backend():
    assert choose_backend("auto", 1000, 1000, torch.float64) == "dense"
    assert choose_backend("auto", 100_000, 100_000, torch.float32) == "blocked"
    # the choice follows the memory budget: 6 n^2 buffers of itemsize bytes
    n = 1000
    need64 = 6 * n * n * 8
    assert choose_backend("auto", n, n, torch.float64, memory_budget=need64) == "dense"
    assert choose_backend("auto", n, n, torch.float64, memory_budget=need64 - 1) == "blocked"
    assert choose_backend("auto", n, n, torch.float32, memory_budget=need64 // 2) == "dense"
    assert choose_backend("auto", n, n, torch.float64, batch=2, memory_budget=need64) == "blocked"
    # explicit choices are kept
    assert choose_backend("blocked", 10, 10, torch.float64) == "blocked"
    # past the budget off CUDA: the fused CPU kernels where they can run
    assert choose_backend("auto", 10, 10, torch.float64, native=True) == "dense"
    assert choose_backend("auto", n, n, torch.float64, memory_budget=1, native=True) == "cpu"
    assert choose_backend("auto", n, n, torch.float64, memory_budget=1, native=True, device="cuda") == "blocked"
    assert choose_backend("cpu", 10, 10, torch.float64, native=False) == "blocked"
    assert choose_backend("cpu", 10, 10, torch.float64, native=True) == "cpu"
    assert choose_backend("dense", 10**6, 10**6, torch.float32) == "dense"
    with pytest.raises(ValueError, match=r"\bbackend\b"):
        choose_backend("fused-magic", 10, 10, torch.float64)


def test_kernel_operator_records_backend_choice():
    x = rand(50, 2, seed=52)
    assert make_op(RBF().double(), x, backend="auto").backend == "dense"
    small_budget = KernelOperator(RBF().double(), x, memory_budget=1000)
    # past the budget on the CPU: the fused CPU kernels where the kernel has a profile, else blocked
    assert small_budget.backend == ("cpu" if cpu_fused.available() else "blocked")
    assert KernelOperator(RBF().double(), x, memory_budget=1000, backend="blocked").backend == "blocked"
    assert KernelOperator(Linear().double(), x, memory_budget=1000).backend == "blocked"
    with pytest.raises(ValueError, match=r"\bbackend\b"):
        KernelOperator(RBF().double(), x, backend="gpu")


def test_block_rows_for():
    assert block_rows_for(10, 10) == 10  # capped at n1
    assert block_rows_for(10**6, 10**6, tile_entries=10**7) == 10
    assert block_rows_for(10**6, 10**8, tile_entries=10**7) == 1  # at least one row
    assert block_rows_for(1000, 1000, batch=4, tile_entries=40_000) == 10


def test_cg_memory_budget_reaches_the_backend_choice():
    """fg.CG(memory_budget=...) decides dense vs row blocks for the training operator."""
    import flashgp as fg
    x = rand(60, 2, seed=53)
    y = torch.sin(x.sum(-1))
    past = "cpu" if cpu_fused.available() else "blocked"  # past the budget: the fused CPU kernels
    for budget, expected in ((None, "dense"), (0, past)):
        model = fg.ExactGP(x, y, fg.kernels.Scale(RBF()).double(),
                           solver=fg.CG(memory_budget=budget, probes=4))
        model.mll()
        assert model.diagnostics["backend"] == expected


def test_float32_rows_stay_accurate_with_outlying_points():
    """Inputs far from the rest (protein's standardized data reach 54): float32 rows by
    |a|^2 + |b|^2 - 2 a.b lost ~0.13 of an outputscale of 0.75; they now switch to float64."""
    g = torch.Generator().manual_seed(60)
    x = torch.rand(400, 3, generator=g) * 4 - 2
    x[:20] = torch.tensor([0.0, 0.0, 54.0]) + 0.1 * torch.rand(20, 3, generator=g)  # a far cluster
    kernel = Scale(Matern(nu=2.5, lengthscale=0.1), outputscale=0.75)
    op = KernelOperator(kernel, x, backend="blocked")
    index = torch.tensor([0, 7, 123])
    rows = op.rows(index)
    assert rows.dtype == torch.float32
    with torch.no_grad():
        exact = kernel.double()(x[index].double(), x.double())
    assert float((rows.double() - exact).abs().max()) < 1e-4


def test_low_rank_plus_diag_capacitance_failure_is_not_psd_error():
    """I + L^T D^-1 L >= I cannot fail in exact arithmetic; with entries that overflow float64 (an
    L-BFGS trial point at extreme hyperparameters) its factorization fails, and that must be a
    NotPSDError (which fg.fit's line search backs off from), not a raw LinAlgError."""
    from flashgp.errors import NotPSDError
    from flashgp.operators import LowRankPlusDiag
    factor = torch.tensor([[1e200, 0.0], [0.0, 1.0], [1.0, 1e200]], dtype=torch.float64)
    op = LowRankPlusDiag(factor, torch.full((3,), 1e-200, dtype=torch.float64))
    with pytest.raises(NotPSDError, match="preconditioner: I \\+ L\\^T D\\^-1 L could not be factored"):
        op.solve(torch.ones(3, 1, dtype=torch.float64))


def test_polish_on_the_cg_path_backs_off_from_unfactorable_preconditioners():
    """With this data and random_state=13 the L-BFGS polish tries a point where the pivoted
    Cholesky preconditioner's capacitance matrix cannot be factored (before the fix: a raw
    LinAlgError out of fit); the line search must back off and the fit finish."""
    import numpy as np
    pytest.importorskip("sklearn")
    from flashgp.sklearn import GPRegressor
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(40, 2))
    Y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.normal(size=40)
    est = GPRegressor(iters=5, solver="cg", polish="lbfgs", random_state=13).fit(X, Y)
    assert np.all(np.isfinite(est.predict(X[:3])))
