# Tests for kernel hyperparameters and arguments: natural-unit properties (softplus-constrained),
# their shapes and defaults, and ValueError/TypeError naming the bad argument.
import pytest
import torch
from torch.nn import functional as F

import flashgp as fg
from flashgp.kernels import RBF, RQ, Linear, Matern, Periodic, Polynomial, Scale

K = fg.kernels
F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


# ----- hyperparameter properties ----------------------------------------------------------------

@pytest.mark.parametrize("kernel,name,value", [
    (RBF(), "lengthscale", 0.37), (RBF(ard_dims=3), "lengthscale", [0.2, 1.0, 30.0]),
    (Matern(nu=0.5), "lengthscale", 1e-3), (RQ(), "alpha", 4.0), (Periodic(), "period", 2.5),
    (Periodic(ard_dims=2), "lengthscale", [0.5, 2.0]), (Linear(), "variance", 0.01),
    (Polynomial(), "offset", 3.0), (Scale(RBF()), "outputscale", 25.0),
    (RBF(batch_shape=(2,)), "lengthscale", [[[0.5]], [[2.0]]]),
])
def test_property_round_trip(kernel, name, value):
    kernel = kernel.double()
    setattr(kernel, name, value)
    got = getattr(kernel, name)
    expected = torch.as_tensor(value, dtype=F64).expand(got.shape)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)
    raw = getattr(kernel, "raw_" + name)
    assert isinstance(raw, torch.nn.Parameter) and raw.shape == got.shape
    assert torch.isfinite(raw).all()


def test_shapes_of_hyperparameters():
    assert RBF().lengthscale.shape == (1, 1)
    assert RBF(ard_dims=4).lengthscale.shape == (1, 4)
    assert RBF(ard_dims=4, batch_shape=(3,)).lengthscale.shape == (3, 1, 4)
    assert RQ(batch_shape=(3,)).alpha.shape == (3,)
    assert Scale(RBF(batch_shape=(3,))).outputscale.shape == (3,)
    assert Scale(RBF(batch_shape=(3,))).batch_shape == (3,)


def test_values_are_positive_through_softplus():
    k = Scale(RBF()).double()
    with torch.no_grad():
        k.base.raw_lengthscale.fill_(-30.0)
        k.raw_outputscale.fill_(2.0)
    assert float(k.base.lengthscale.detach()) > 0
    torch.testing.assert_close(k.base.lengthscale, F.softplus(torch.full((1, 1), -30.0, dtype=F64)))
    torch.testing.assert_close(k.outputscale, F.softplus(torch.tensor([2.0], dtype=F64)).reshape(()))
    # any raw value is allowed; an optimizer can never make the kernel invalid
    x = rand(4, 2, seed=25)
    assert torch.isfinite(k(x)).all()


def test_default_hyperparameters():
    torch.testing.assert_close(RBF().lengthscale, torch.ones(1, 1))
    torch.testing.assert_close(Scale(RBF()).outputscale, torch.tensor(1.0))
    assert Matern().nu == 2.5


def test_is_stationary_flags():
    assert RBF().is_stationary and Matern().is_stationary and RQ().is_stationary
    assert not Linear().is_stationary and not Periodic().is_stationary
    assert Scale(RBF()).is_stationary and (RBF() + Matern()).is_stationary
    assert not (RBF() * Linear()).is_stationary


def test_sum_flattens_members():
    a, b, c = RBF(), Matern(), Linear()
    s = a + b + c
    assert isinstance(s, K.Sum) and list(s.kernels) == [a, b, c]
    p = a * b * c
    assert isinstance(p, K.Product) and len(p.kernels) == 3
    assert len(list(s.parameters())) == 3


# ----- bad arguments: ValueError/TypeError naming the argument ---------------------------------

@pytest.mark.parametrize("make,exc,match", [
    (lambda: Matern(nu=2.0), ValueError, "nu"),
    (lambda: Matern(nu=3), ValueError, "nu"),
    (lambda: RBF(ard_dims=0), ValueError, "ard_dims"),
    (lambda: RBF(ard_dims=2.0), ValueError, "ard_dims"),
    (lambda: Periodic(ard_dims=-1), ValueError, "ard_dims"),
    (lambda: RBF(lengthscale=-1.0), ValueError, "lengthscale"),
    (lambda: RBF(lengthscale=0.0), ValueError, "lengthscale"),
    (lambda: RQ(alpha=float("nan")), ValueError, "alpha"),
    (lambda: Periodic(period=0.0), ValueError, "period"),
    (lambda: Linear(variance=-2.0), ValueError, "variance"),
    (lambda: Polynomial(power=0), ValueError, "power"),
    (lambda: Polynomial(power=1.5), ValueError, "power"),
    (lambda: Scale(RBF(), outputscale=-1.0), ValueError, "outputscale"),
    (lambda: Scale("rbf"), TypeError, "base"),
    (lambda: RBF(active_dims=[]), ValueError, "active_dims"),
    (lambda: RBF(active_dims=[-1]), ValueError, "active_dims"),
    (lambda: K.Sum(RBF(), "x"), TypeError, "kernels"),
])
def test_constructor_errors(make, exc, match):
    with pytest.raises(exc, match=rf"\b{match}\b"):
        make()


def test_adding_a_non_kernel_is_a_type_error():
    with pytest.raises(TypeError):
        RBF() + 1.0
    with pytest.raises(TypeError):
        RBF() * "k"


@pytest.mark.parametrize("kernel,x1,x2,exc,match", [
    (RBF(), rand(5, 3), rand(4, 2), ValueError, "x2"),
    (Linear(), rand(5, 3), rand(4, 2), ValueError, "x2"),
    (RBF(ard_dims=3), rand(5, 2), None, ValueError, "ard_dims"),
    (RQ(ard_dims=2), rand(5, 3), None, ValueError, "ard_dims"),
    (Periodic(ard_dims=3), rand(5, 1), None, ValueError, "ard_dims"),
    (Periodic(ard_dims=2), rand(5, 3), None, ValueError, "ard_dims"),
    (RBF(active_dims=[0, 5]), rand(5, 3), None, ValueError, "active_dims"),
    (RBF(), rand(5), None, ValueError, "x1"),
    (RBF(), torch.arange(6).reshape(3, 2), None, TypeError, "x1"),
    (RBF(), [[0.0, 1.0]], None, TypeError, "x1"),
    (RBF(), rand(5, 3), "x", TypeError, "x2"),
])
def test_call_errors(kernel, x1, x2, exc, match):
    with pytest.raises(exc, match=rf"\b{match}\b"):
        kernel.double()(x1, x2)


def test_diag_needs_equal_rows():
    with pytest.raises(ValueError, match=r"\bx2\b"):
        RBF().double()(rand(5, 2), rand(4, 2), diag=True)


@pytest.mark.parametrize("name,value,match", [
    ("lengthscale", -0.5, "lengthscale"),
    ("lengthscale", 0.0, "lengthscale"),
    ("lengthscale", float("inf"), "lengthscale"),
    ("lengthscale", [1.0, 2.0], "lengthscale"),  # ard_dims=3: not broadcastable
])
def test_setter_errors_name_the_property(name, value, match):
    kernel = RBF(ard_dims=3).double()
    before = kernel.raw_lengthscale.detach().clone()
    with pytest.raises(ValueError, match=rf"\b{match}\b"):
        setattr(kernel, name, value)
    torch.testing.assert_close(kernel.raw_lengthscale.detach(), before)  # unchanged
