# Finite feature maps (Kernel.features) and the Hilbert-space approximation of stationary kernels:
# f(x1) f(x2)^T equals the kernel, the spectral densities integrate back to the kernels, and the
# approximation converges to the exact kernel as the basis grows.
import math

import pytest
import torch

from flashgp.kernels import RBF, Categorical, HilbertSpace, Linear, Matern, Periodic, Scale
from flashgp.serialize import kernel_from_config, kernel_to_config

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def mixed_inputs(n, seed=0, batch=()):
    g = gen(seed)
    cont = torch.rand(*batch, n, 2, generator=g, dtype=F64) * 4 - 2
    codes = torch.randint(0, 4, (*batch, n, 1), generator=g).to(F64)
    return torch.cat([cont, codes], -1)


def boxed(kernel, x):
    for module in kernel.modules():
        if isinstance(module, HilbertSpace):
            module.set_domain(x)
    return kernel


KERNELS = {
    "hilbert_rbf_ard": lambda: HilbertSpace(RBF(ard_dims=2, active_dims=[0, 1], lengthscale=[0.7, 1.1]), [5, 7]),
    "hilbert_matern_iso": lambda: HilbertSpace(Matern(nu=1.5, active_dims=[0, 1], lengthscale=0.6), 6),
    "exchangeable": lambda: Categorical(4, active_dims=[2]),
    "onehot": lambda: Categorical(4, kind="onehot", active_dims=[2]),
    "lowrank": lambda: Categorical(4, kind="lowrank", rank=2, active_dims=[2]),
    "linear": lambda: Linear(variance=0.7, active_dims=[0, 1]),
    "scaled_product": lambda: Scale(HilbertSpace(Matern(nu=2.5, ard_dims=2, active_dims=[0, 1]), 6)
                                    * Categorical(4, kind="lowrank", rank=1, active_dims=[2]), outputscale=1.7),
    "sum": lambda: Scale(HilbertSpace(RBF(ard_dims=2, active_dims=[0, 1]), 5)) + Categorical(4, active_dims=[2])
    + Linear(active_dims=[1]),
}


def randomize(kernel, seed=3):
    g = gen(seed)
    with torch.no_grad():
        for p in kernel.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return kernel


@pytest.mark.parametrize("name", list(KERNELS))
def test_features_reproduce_the_kernel(name):
    x1, x2 = mixed_inputs(30, 0), mixed_inputs(20, 1)
    kernel = randomize(boxed(KERNELS[name]().double(), x1))
    f1, f2 = kernel.features(x1), kernel.features(x2)
    assert f1.shape[:-1] == (30,) and f2.shape[-1] == f1.shape[-1]
    dense = kernel(x1, x2).detach()
    f1, f2 = f1.detach(), f2.detach()
    # the Hilbert-space kernel's own evaluate is f f^T; the others are evaluated by their formulas
    assert torch.allclose(f1 @ f2.mT, dense, rtol=0, atol=1e-12 * float(dense.abs().max()))
    assert torch.allclose(f1.square().sum(-1), kernel.diag(x1), rtol=1e-12, atol=1e-14)


def test_features_with_batches():
    x = mixed_inputs(12, 0, batch=(2,))
    kernel = Scale(HilbertSpace(RBF(ard_dims=2, active_dims=[0, 1], batch_shape=(2,)), 4)
                   * Categorical(4, active_dims=[2], batch_shape=(2,))).double()
    randomize(boxed(kernel, x))
    f = kernel.features(x)
    assert f.shape == (2, 12, 16 * 5)
    assert torch.allclose(f @ f.mT, kernel(x), atol=1e-12)
    # one input set against a batch of kernels
    assert kernel.features(x[0]).shape == (2, 12, 80)


def test_kernels_without_features_say_what_to_do():
    with pytest.raises(TypeError, match="HilbertSpace"):
        RBF().features(torch.zeros(3, 1))
    with pytest.raises(TypeError, match="HilbertSpace"):
        (Categorical(3) * RBF()).features(torch.zeros(3, 1))
    with pytest.raises(TypeError, match="spectral density"):
        HilbertSpace(Periodic())
    with pytest.raises(TypeError, match="spectral density"):
        HilbertSpace(Scale(RBF()))
    with pytest.raises(ValueError, match="num_basis"):
        HilbertSpace(RBF(ard_dims=3), 40)  # 64,000 functions
    with pytest.raises(ValueError, match="num_basis"):
        HilbertSpace(RBF(ard_dims=2), [4, 4, 4])
    with pytest.raises(ValueError, match="boundary_factor"):
        HilbertSpace(RBF(), boundary_factor=1.0)
    with pytest.raises(ValueError, match="center, half_width"):
        HilbertSpace(RBF(ard_dims=1), center=[0.0])
    with pytest.raises(ValueError, match="no box"):
        HilbertSpace(RBF())(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="columns"):
        boxed(HilbertSpace(RBF(ard_dims=2)), torch.zeros(4, 2))(torch.zeros(3, 3))


@pytest.mark.parametrize("kernel", [RBF(lengthscale=0.8), Matern(nu=0.5, lengthscale=0.8),
                                    Matern(nu=1.5, lengthscale=0.8), Matern(nu=2.5, lengthscale=0.8)],
                         ids=["rbf", "matern12", "matern32", "matern52"])
def test_spectral_density_integrates_to_the_kernel(kernel):
    """k(r) = (2 pi)^-1 int S(w) cos(w r) dw in 1-D (trapezoid rule far into the tails)."""
    kernel = kernel.double()
    w = torch.linspace(0, 4000, 2_000_001, dtype=F64)
    density = kernel.log_spectral_density(w.unsqueeze(-1)).exp().detach()
    for r in (0.0, 0.3, 1.0, 2.0):
        value = torch.trapezoid(density * torch.cos(w * r), w) / math.pi  # both halves of the line
        exact = kernel(torch.tensor([[0.0]], dtype=F64), torch.tensor([[r]], dtype=F64))[0, 0].detach()
        # the Matern-1/2 density decays as w^-2: its truncated tail bounds the error at r = 0
        assert abs(float(value - exact)) < (2e-4 if kernel.__dict__.get("nu") == 0.5 else 1e-7), (r, value, exact)


def test_ard_spectral_density_in_2d():
    kernel = Matern(nu=2.5, ard_dims=2, lengthscale=[0.5, 1.3]).double()
    w = torch.linspace(-60, 60, 1201, dtype=F64)
    grid = torch.stack(torch.meshgrid(w, w, indexing="ij"), -1).reshape(-1, 2)
    density = kernel.log_spectral_density(grid).exp().reshape(1201, 1201)
    r = torch.tensor([0.2, -0.4], dtype=F64)
    phase = torch.cos(grid @ r).reshape(1201, 1201)
    value = torch.trapezoid(torch.trapezoid(density * phase, w), w) / (2 * math.pi) ** 2
    exact = kernel(torch.zeros(1, 2, dtype=F64), r.unsqueeze(0))[0, 0]
    assert abs(float(value - exact)) < 2e-3


@pytest.mark.parametrize("kernel, counts, last", [
    (RBF(ard_dims=2, lengthscale=[0.5, 0.8]), (8, 16, 32), 1e-4),
    (Matern(nu=2.5, ard_dims=2, lengthscale=[0.5, 0.8]), (8, 16, 32), 5e-3),
    (Matern(nu=1.5, lengthscale=0.7), (8, 16, 32), 1e-2),
], ids=["rbf", "matern52", "matern32"])
def test_approximation_converges(kernel, counts, last):
    kernel = kernel.double()
    x = torch.rand(150, 2, generator=gen(4), dtype=F64) * 4 - 2
    errors = []
    for m in counts:
        approx = HilbertSpace(kernel, m, boundary_factor=2.0)
        approx.set_domain(x)
        errors.append(float((approx(x) - kernel(x)).abs().max()))
    assert all(b < 0.5 * a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < last, errors


def test_gradients_reach_the_base_kernel():
    x = torch.rand(20, 1, generator=gen(5), dtype=F64)
    approx = HilbertSpace(RBF(), 12).double()
    approx.set_domain(x)
    approx.features(x).square().sum().backward()
    assert approx.base.raw_lengthscale.grad is not None and float(approx.base.raw_lengthscale.grad.abs()) > 0


def test_box_round_trips_through_the_config():
    x = torch.rand(20, 2, generator=gen(6), dtype=F64) * 3 + 1
    kernel = Scale(HilbertSpace(RBF(), [4, 6], boundary_factor=1.8)) * Categorical(3, kind="onehot", active_dims=[2])
    kernel.kernels[0].base.set_domain(x)
    config = kernel_to_config(kernel)
    rebuilt = kernel_from_config(config)
    assert kernel_to_config(rebuilt) == config
    box = rebuilt.kernels[0].base
    assert box.num_basis == [4, 6] and box.center == kernel.kernels[0].base.center
    assert box.half_width == pytest.approx([1.8 * h for h in (x.amax(0) - x.amin(0)).div(2).tolist()])
