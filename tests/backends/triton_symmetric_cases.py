# Cases for the symmetric fused kernels (K(z, z), each off-diagonal entry computed once) against
# float64 dense references; run like triton_cases.py (see tests/backends/test_triton_kernels.py).
import pytest
import torch

pytest.importorskip("triton")

from triton_cases import (ALPHA, DEVICE, GRAD_TOL, KERNELS, PRECISIONS, TOL,  # noqa: E402
                          check_grads, dense_grads, rand, reference_terms, rel_err)

from flashgp.backends import fused  # noqa: E402
from flashgp.backends import triton_kernels as tk  # noqa: E402
from flashgp.backends import triton_symmetric as ts  # noqa: E402
from flashgp.kernels import RBF, RQ, Scale  # noqa: E402
from kernel_helpers import randomized  # noqa: E402

# 150 points in 64-row blocks (the last partial), 32-column tiles, chunks of 2 tiles: diagonal
# squares, several chunks per row block, chunks cut short by the last tile
SMALL = dict(block_m=64, block_n=32, chunk=2)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


def points(batch, n, d, seed=0):
    """z (B, n, d) with exact duplicate points (the last 10 repeat the first 10), exact r2."""
    z = rand(batch, n, d, seed=seed) / (d / 3) ** 0.5
    z[:, -10:] = z[:, :10]
    return z, (z[:, :, None, :] - z[:, None, :, :]).pow(2).sum(-1)


def pair_sums(profile, z, r2, alpha, u, v):
    """float64 (s (B, D), wk (B,), wda (B,) or None) that sym_param_grad returns."""
    k, dk, dka = reference_terms(profile, r2, alpha)
    w = u @ v.transpose(-1, -2)
    s = torch.einsum("bij,bijk->bk", w * dk, (z[:, :, None, :] - z[:, None, :, :]).pow(2))
    return s, (w * k).sum((-1, -2)), None if dka is None else (w * dka).sum((-1, -2))


@pytest.mark.parametrize("d", [3, tk.DIRECT_MAX_D + 4])
@pytest.mark.parametrize("t", [1, 11, 33])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("profile", list(tk.PROFILES))
def test_sym_kv_matmul(profile, precision, t, d):
    z, r2 = points(2, 150, d, seed=50)
    alpha = ALPHA.to(DEVICE) if profile == "rq" else None
    v = rand(2, 150, t, seed=51)
    out = ts.sym_kv_matmul(z, v, profile, alpha, precision, **SMALL)
    k, _, _ = reference_terms(profile, r2, alpha)
    assert out.shape == (2, 150, t) and out.dtype == torch.float32
    assert rel_err(out, k @ v) < TOL[precision]


@pytest.mark.parametrize("d", [3, tk.DIRECT_MAX_D + 4])
@pytest.mark.parametrize("t", [1, 11, 20])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("profile", list(tk.PROFILES))
def test_sym_param_grad(profile, precision, t, d):
    """t = 20 runs as two launches of GRAD_MAX_T / 2 columns."""
    z, r2 = points(2, 150, d, seed=52)
    alpha = ALPHA.to(DEVICE) if profile == "rq" else None
    u, v = rand(2, 150, t, seed=53), rand(2, 150, t, seed=54)
    s, wk, wda = ts.sym_param_grad(z, u, v, profile, alpha, precision, **SMALL)
    s_ref, wk_ref, wda_ref = pair_sums(profile, z, r2, alpha, u, v)
    assert s.shape == (2, d) and wk.shape == (2,)
    tol = GRAD_TOL[precision]
    assert rel_err(s, s_ref) < tol and rel_err(wk, wk_ref) < tol
    assert (wda is None) == (profile != "rq")
    if profile == "rq":
        assert rel_err(wda, wda_ref) < tol


def test_sym_default_launch_matches_rectangular_kernel():
    """Default block sizes and chunk (one program per row block here), against kv_matmul."""
    z, _ = points(1, 300, 3, seed=55)
    v = rand(1, 300, 11, seed=56)
    assert rel_err(ts.sym_kv_matmul(z, v, "matern52"), tk.kv_matmul(z, z, v, "matern52").double()) < 1e-5


def test_sym_argument_errors():
    z, v = rand(1, 5, 2), rand(1, 5, 3)
    with pytest.raises(ValueError, match="block_m"):
        ts.sym_kv_matmul(z, v, "rbf", block_m=32, block_n=64)
    with pytest.raises(ValueError, match="chunk"):
        ts.sym_kv_matmul(z, v, "rbf", chunk=0)
    with pytest.raises(ValueError, match="v"):
        ts.sym_param_grad(z, v, rand(1, 4, 3), "rbf")
    assert ts.sym_kv_matmul(z[:, :0], v[:, :0], "rbf").shape == (1, 0, 3)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(KERNELS))
def test_symmetric_hyperparameter_gradient(name, precision):
    """K(x, x) with x not requiring a gradient: the product and the hyperparameters' gradients
    through the symmetric kernels (lengthscales via the probe of fused._symmetric_param_grad)."""
    kernel = randomized(KERNELS[name](), device=DEVICE)
    x = rand(150, 3, seed=57)
    v = rand(150, 11, seed=58)
    out = fused.fused_matmul(kernel, x, None, v, precision, block_m=64, block_n=32)
    assert rel_err(out, kernel(x).detach() @ v) < TOL[precision]
    params = list(kernel.parameters())
    left = rand(150, 11, seed=59)
    got = fused.fused_bilinear_grad(fused.fused_parts(kernel), x, None, left, v, params, precision,
                                    block_m=64, block_n=32)
    check_grads(got, dense_grads(kernel, x, x, left, v, params), GRAD_TOL[precision])


@pytest.mark.parametrize("base", [RBF, RQ])
def test_symmetric_gradient_with_kernel_batch_and_active_dims(base):
    """Kernel batch (2,) with per-GP hyperparameters, shared inputs, active_dims; a fixed
    (non-trainable) lengthscale gets no probe gradient."""
    kernel = randomized(Scale(base(ard_dims=2, active_dims=[0, 2], batch_shape=(2,))), device=DEVICE)
    x = rand(70, 4, seed=60)
    left, right = rand(2, 70, 5, seed=61), rand(2, 70, 5, seed=62)
    params = list(kernel.parameters())
    got = fused.fused_bilinear_grad(fused.fused_parts(kernel), x, None, left, right, params)
    check_grads(got, dense_grads(kernel, x, x, left, right, params), 2e-5)
    kernel.base.raw_lengthscale.requires_grad_(False)
    params = [p for p in kernel.parameters() if p.requires_grad]
    got = fused.fused_bilinear_grad(fused.fused_parts(kernel), x, None, left, right, params)
    check_grads(got, dense_grads(kernel, x, x, left, right, params), 2e-5)
