# Tests for flashgp.kernels: every kernel against a formula written out pair by pair here,
# diag vs the matrix diagonal, gradients (gradcheck), hyperparameter properties and bad arguments.
import math

import pytest
import torch
from torch.func import functional_call

import flashgp as fg
from flashgp.kernels import RBF, RQ, Linear, Matern, Periodic, Polynomial, Scale

K = fg.kernels
F64 = torch.float64
SQ3, SQ5 = math.sqrt(3.0), math.sqrt(5.0)


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


# ----- reference formulas: one pair (a, b) of 1-D float64 tensors -> python float ---------------

def sqdist(a, b, ls):
    return float((((a - b) / ls) ** 2).sum())


def ref_rbf(ls):
    return lambda a, b: math.exp(-0.5 * sqdist(a, b, ls))


def ref_matern(nu, ls):
    def f(a, b):
        r = math.sqrt(sqdist(a, b, ls))
        if nu == 0.5:
            return math.exp(-r)
        if nu == 1.5:
            return (1 + SQ3 * r) * math.exp(-SQ3 * r)
        return (1 + SQ5 * r + 5.0 / 3.0 * r * r) * math.exp(-SQ5 * r)
    return f


def ref_rq(ls, alpha):
    return lambda a, b: (1 + sqdist(a, b, ls) / (2 * alpha)) ** (-alpha)


def ref_periodic(ls, period):
    def f(a, b):
        total = 0.0
        for j in range(a.shape[0]):
            lj = float(ls[j]) if ls.dim() else float(ls)
            pj = float(period[j]) if period.dim() else float(period)
            total += math.sin(math.pi * abs(float(a[j] - b[j])) / pj) ** 2 / lj**2
        return math.exp(-2 * total)
    return f


def ref_linear(variance):
    return lambda a, b: variance * float(a @ b)


def ref_poly(power, offset):
    return lambda a, b: (float(a @ b) + offset) ** power


def ref_matrix(fn, x1, x2, cols=None):
    """Loop over all pairs of rows (x: (n, d)); ``cols`` selects active columns."""
    if cols is not None:
        x1, x2 = x1[:, cols], x2[:, cols]
    out = torch.empty(x1.shape[0], x2.shape[0], dtype=F64)
    for i in range(x1.shape[0]):
        for j in range(x2.shape[0]):
            out[i, j] = fn(x1[i], x2[j])
    return out


# ----- the kernels under test, each with its hand-written reference (d = 3 inputs) -------------

ARD_LS = torch.tensor([0.6, 1.3, 2.1], dtype=F64)
ARD_PERIOD = torch.tensor([0.9, 1.7, 3.0], dtype=F64)


def _set(kernel, **values):
    kernel = kernel.double()  # before setting: exact float64 hyperparameters
    for name, value in values.items():
        setattr(kernel, name, value)
    return kernel


def case_rbf():
    return _set(RBF(), lengthscale=0.8), ref_rbf(torch.tensor(0.8, dtype=F64))


def case_rbf_ard():
    return _set(RBF(ard_dims=3), lengthscale=ARD_LS), ref_rbf(ARD_LS)


def case_matern(nu, ard):
    def make():
        if ard:
            return _set(Matern(nu=nu, ard_dims=3), lengthscale=ARD_LS), ref_matern(nu, ARD_LS)
        return _set(Matern(nu=nu), lengthscale=0.9), ref_matern(nu, torch.tensor(0.9, dtype=F64))
    return make


def case_rq():
    return _set(RQ(), lengthscale=1.1, alpha=0.7), ref_rq(torch.tensor(1.1, dtype=F64), 0.7)


def case_rq_ard():
    return _set(RQ(ard_dims=3), lengthscale=ARD_LS, alpha=2.5), ref_rq(ARD_LS, 2.5)


def case_periodic():
    k = _set(Periodic(), lengthscale=0.8, period=1.4)
    return k, ref_periodic(torch.tensor(0.8, dtype=F64), torch.tensor(1.4, dtype=F64))


def case_periodic_ard():
    k = _set(Periodic(ard_dims=3), lengthscale=ARD_LS, period=ARD_PERIOD)
    return k, ref_periodic(ARD_LS, ARD_PERIOD)


def case_linear():
    return _set(Linear(), variance=0.6), ref_linear(0.6)


def case_poly():
    return _set(Polynomial(power=3), offset=0.5), ref_poly(3, 0.5)


def case_scale():
    base, ref = case_matern(2.5, True)()
    k = _set(Scale(base), outputscale=1.7)
    return k, lambda a, b: 1.7 * ref(a, b)


def case_sum():
    (k1, r1), (k2, r2) = case_rbf_ard(), case_linear()
    return k1 + k2, lambda a, b: r1(a, b) + r2(a, b)


def case_product():
    (k1, r1), (k2, r2) = case_periodic(), case_rq()
    return k1 * k2, lambda a, b: r1(a, b) * r2(a, b)


def case_nested():
    # Scale(RBF) + Scale(Matern) * Linear: sums of products of scaled kernels
    (k1, r1), (k2, r2), (k3, r3) = case_rbf(), case_matern(1.5, False)(), case_poly()
    k = _set(Scale(k1), outputscale=0.4) + _set(Scale(k2), outputscale=2.0) * k3
    return k, lambda a, b: 0.4 * r1(a, b) + 2.0 * r2(a, b) * r3(a, b)


def case_active_dims():
    # RBF on columns (0, 2) plus Linear on column 1
    k1 = _set(RBF(ard_dims=2, active_dims=[0, 2]), lengthscale=torch.tensor([0.7, 1.9], dtype=F64))
    k2 = _set(Linear(active_dims=[1]), variance=1.5)
    r1 = ref_rbf(torch.tensor([0.7, 1.9], dtype=F64))
    return k1 + k2, lambda a, b: r1(a[[0, 2]], b[[0, 2]]) + 1.5 * float(a[1] * b[1])


CASES = {
    "rbf": case_rbf, "rbf_ard": case_rbf_ard,
    "matern05": case_matern(0.5, False), "matern15": case_matern(1.5, False),
    "matern25": case_matern(2.5, False), "matern05_ard": case_matern(0.5, True),
    "matern15_ard": case_matern(1.5, True), "matern25_ard": case_matern(2.5, True),
    "rq": case_rq, "rq_ard": case_rq_ard, "periodic": case_periodic, "periodic_ard": case_periodic_ard,
    "linear": case_linear, "polynomial": case_poly, "scale": case_scale, "sum": case_sum,
    "product": case_product, "nested": case_nested, "active_dims": case_active_dims,
}


@pytest.mark.parametrize("name", list(CASES))
def test_matrix_matches_formula(name):
    kernel, ref = CASES[name]()
    x1, x2 = rand(6, 3, seed=1), rand(5, 3, seed=2)
    expected = ref_matrix(ref, x1, x2)
    got = kernel(x1, x2)
    assert got.shape == (6, 5) and got.dtype == F64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # symmetric form K(x, x): x2 omitted
    sym, sym_ref = kernel(x1), ref_matrix(ref, x1, x1)
    off = ~torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(sym[off], sym_ref[off], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sym.diagonal(), sym_ref.diagonal(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_diag_matches_matrix_diagonal(name):
    kernel, ref = CASES[name]()
    x, x2 = rand(7, 3, seed=3), rand(7, 3, seed=4)
    full = kernel(x)
    torch.testing.assert_close(kernel.diag(x), full.diagonal(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernel(x, x2, diag=True), kernel(x, x2).diagonal(), rtol=1e-12, atol=1e-12)
    expected = torch.tensor([ref(x[i], x2[i]) for i in range(7)], dtype=F64)
    torch.testing.assert_close(kernel(x, x2, diag=True), expected, rtol=1e-12, atol=1e-12)


def test_stationary_far_from_origin_is_accurate():
    # the distance computation must not lose the small differences of large coordinates
    x = rand(8, 2, seed=5) * 0.1 + 1e4
    k = _set(RBF(), lengthscale=0.05)
    torch.testing.assert_close(k(x), ref_matrix(ref_rbf(torch.tensor(0.05, dtype=F64)), x, x),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["rbf", "matern05"])
def test_float32_points_many_lengthscales_apart_keep_their_distances(name):
    # |a|^2 + |b|^2 - 2 a.b in float32 resolves r2 only to ~1e-7 |a|^2: points 2000 lengthscales
    # from the centre would be indistinguishable from their neighbours; float64 distances keep them
    centres = torch.linspace(-4, 4, 9, dtype=F64)
    x = torch.cat([centres, centres + 0.002, centres + 0.0045]).reshape(-1, 1)  # 0.7 and 1.5 lengthscales
    base = RBF(lengthscale=0.003) if name == "rbf" else Matern(nu=0.5, lengthscale=0.003)
    x = x.float()
    expected = base.double()(x.double()).detach()  # same (float32-rounded) inputs, float64 arithmetic
    got = base.float()(x).detach()
    # x / lengthscale itself rounds to eps32 * 1333 ~ 1.6e-4 lengthscales (like the inputs): kernel
    # values can move by a few 1e-5; without float64 distances they were off by up to 0.7
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-3)


def test_matern05_symmetric_diagonal_is_exact():
    # |a|^2 + |b|^2 - 2 a.b leaves O(eps) on the diagonal; exp(-sqrt(r2)) would amplify it
    x = rand(300, 8, seed=6) * 2 + 3
    k = _set(Matern(nu=0.5), lengthscale=1.0)
    assert float((k(x).detach().diagonal() - 1).abs().max()) <= 1e-12


def test_matern_is_ordered_by_smoothness():
    # at the same r, rougher Materns decay faster near 0 (a sanity check of the three formulas)
    x = torch.tensor([[0.0], [0.3]], dtype=F64)
    vals = [_set(Matern(nu=nu), lengthscale=1.0)(x)[0, 1] for nu in (0.5, 1.5, 2.5)]
    rbf = _set(RBF(), lengthscale=1.0)(x)[0, 1]
    assert vals[0] < vals[1] < vals[2] < rbf


# ----- batches ----------------------------------------------------------------------------------

BATCH_FACTORIES = {
    "rbf": lambda: RBF(ard_dims=3, batch_shape=(2,)),
    "matern": lambda: Matern(nu=1.5, batch_shape=(2,)),
    "rq": lambda: RQ(batch_shape=(2,)),
    "periodic": lambda: Periodic(ard_dims=3, batch_shape=(2,)),
    "linear": lambda: Linear(batch_shape=(2,)),
    "polynomial": lambda: Polynomial(power=2, batch_shape=(2,)),
    "scale": lambda: Scale(RBF(batch_shape=(2,))),
}


def _randomize(kernel, seed):
    """Different positive values for every batch member and every hyperparameter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in kernel.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return kernel


def _member(kernel, i):
    """A copy of batch member i as an unbatched kernel (hyperparameters indexed by batch)."""
    factory_args = {}
    if isinstance(kernel, Scale):
        inner = _member(kernel.base, i)
        out = Scale(inner).double()
        out.outputscale = kernel.outputscale[i].detach()
        return out
    if isinstance(kernel, Matern):
        factory_args["nu"] = kernel.nu
    if isinstance(kernel, Polynomial):
        factory_args["power"] = kernel.power
    if getattr(kernel, "ard_dims", None) is not None:
        factory_args["ard_dims"] = kernel.ard_dims
    out = type(kernel)(**factory_args).double()
    for name in kernel._constraints:
        setattr(out, name, getattr(kernel, name)[i].detach())
    return out


@pytest.mark.parametrize("name", list(BATCH_FACTORIES))
def test_batch_shape_matches_members(name):
    kernel = _randomize(BATCH_FACTORIES[name]().double(), seed=7)
    x1, x2 = rand(2, 6, 3, seed=8), rand(2, 4, 3, seed=9)
    got = kernel(x1, x2)
    assert got.shape == (2, 6, 4)
    for i in range(2):
        member = _member(kernel, i)
        torch.testing.assert_close(got[i], member(x1[i], x2[i]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernel.diag(x1), kernel(x1).diagonal(dim1=-2, dim2=-1), rtol=1e-12, atol=1e-10)
    # members differ (the batch really has its own hyperparameters)
    assert not torch.allclose(got[0], _member(kernel, 1)(x1[0], x2[0]))


@pytest.mark.parametrize("name", list(BATCH_FACTORIES))
def test_batched_kernel_broadcasts_unbatched_inputs(name):
    # x (n, d) shared by all batch members -> (2, n1, n2), like GPyTorch
    kernel = _randomize(BATCH_FACTORIES[name]().double(), seed=10)
    x1, x2 = rand(5, 3, seed=11), rand(4, 3, seed=12)
    got = kernel(x1, x2)
    assert got.shape == (2, 5, 4)
    for i in range(2):
        torch.testing.assert_close(got[i], _member(kernel, i)(x1, x2), rtol=1e-12, atol=1e-12)
    assert kernel.diag(x1).shape == (2, 5)


@pytest.mark.parametrize("name", ["rbf", "linear", "scale"])
def test_batched_kernel_with_extra_leading_batch(name):
    # x (3, 2, n, d) with kernel batch (2,): broadcast from the right
    kernel = _randomize(BATCH_FACTORIES[name]().double(), seed=13)
    x = rand(3, 2, 4, 3, seed=14)
    got = kernel(x)
    assert got.shape == (3, 2, 4, 4)
    for i in range(2):
        torch.testing.assert_close(got[:, i], _member(kernel, i)(x[:, i]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_inputs_with_different_batch_dims_broadcast(name):
    # x1 (3, n1, d) against x2 (n2, d) and the reverse: same as expanding the unbatched one
    kernel, _ = CASES[name]()
    xb, x = rand(3, 5, 3, seed=15), rand(4, 3, seed=16)
    expected = kernel(xb, x.expand(3, 4, 3))
    torch.testing.assert_close(kernel(xb, x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernel(x, xb), kernel(x.expand(3, 4, 3), xb), rtol=1e-12, atol=1e-12)


def test_sum_and_product_report_member_batch_shape():
    k1, k2 = RBF(batch_shape=(2,)), Linear(batch_shape=(2,))
    assert (k1 + k2).batch_shape == (2,)
    assert (k1 * k2).batch_shape == (2,)
    assert Scale(k1 + k2).batch_shape == (2,)


# ----- gradients --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_params_and_inputs(name):
    kernel, _ = CASES[name]()
    names = [n for n, _ in kernel.named_parameters()]
    raws = tuple(p.detach().clone().requires_grad_(True) for p in kernel.parameters())
    x1 = rand(4, 3, seed=20).requires_grad_(True)
    x2 = rand(4, 3, seed=21).requires_grad_(True)  # distinct points: r > 0 (Matern 1/2 is not smooth at 0)

    def matrix(*args):
        params = dict(zip(names, args[:-2]))
        return functional_call(kernel, params, (args[-2], args[-1]))

    def diag(*args):
        params = dict(zip(names, args[:-2]))
        return functional_call(kernel, params, (args[-2], args[-1]), {"diag": True})

    assert torch.autograd.gradcheck(matrix, (*raws, x1, x2), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(diag, (*raws, x1, x2), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_rbf_lengthscale_gradient_closed_form():
    # d k / d l = k * |x - x'|^2 / l^3, and d l / d raw = sigmoid(raw) (softplus)
    k = _set(RBF(), lengthscale=0.7)
    x1, x2 = rand(5, 2, seed=22), rand(4, 2, seed=23)
    k(x1, x2).sum().backward()
    d2 = torch.cdist(x1, x2).square()
    kk = torch.exp(-0.5 * d2 / 0.49)
    expected = (kk * d2 / 0.7**3).sum() * torch.sigmoid(k.raw_lengthscale.detach())
    torch.testing.assert_close(k.raw_lengthscale.grad, expected, rtol=1e-10, atol=1e-12)


def test_symmetric_matrix_has_finite_input_gradients():
    # K(x, x) has r = 0 on the diagonal: gradients w.r.t. x must stay finite for every kernel
    for name, make in CASES.items():
        kernel, _ = make()
        x = rand(5, 3, seed=24).requires_grad_(True)
        (g,) = torch.autograd.grad(kernel(x).sum(), x)
        assert torch.isfinite(g).all(), name
