# Cases for the fused Triton kernels against float64 dense references. Run on CUDA, or on the CPU
# through tests/backends/test_triton_kernels.py, which starts pytest on this file with TRITON_INTERPRET=1.
import math

import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import flashgp as fg  # noqa: E402
from flashgp.backends import fused  # noqa: E402
from flashgp.kernels import RBF, RQ, Linear, Matern, Periodic, Scale  # noqa: E402
from flashgp.operators import KernelOperator  # noqa: E402

if not fused.fused_available("cuda" if torch.cuda.is_available() else "cpu"):
    pytest.skip("fused kernels cannot run here: no CUDA and TRITON_INTERPRET is not 1",
                allow_module_level=True)

from flashgp.backends import triton_dense as td  # noqa: E402
from flashgp.backends import triton_kernels as tk  # noqa: E402
from kernel_helpers import randomized  # noqa: E402

F64 = torch.float64
DEVICE = "cuda" if torch.cuda.is_available() and not tk.INTERPRETED else "cpu"
PRECISIONS = ["fp32", "tf32x3", "fp16x3", "tf32", "bf16"]
TOL = {"fp32": 1e-5, "tf32x3": 1e-5, "fp16x3": 1e-5, "tf32": 1e-2, "bf16": 2e-2}  # products, row sums
GRAD_TOL = {"fp32": 2e-5, "tf32x3": 2e-5, "fp16x3": 2e-5, "tf32": 1e-2, "bf16": 3e-2}  # gradients
SMALL = dict(block_m=32, block_n=32)  # several (partial) row blocks and column tiles at n = 37, 70
# Triton 3.6's interpreter converts loop bounds with a NumPy call deprecated in NumPy 1.25
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def rel_err(value, ref):
    """max |value - ref| / max |ref| (both in float64)."""
    return float((value.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def reference_terms(profile, r2, alpha):
    """(k, dk/dr2, dk/dalpha) in float64 from the textbook formulas; dk/dr2 := 0 at r2 = 0."""
    if profile == "rq":
        a = alpha[:, None, None]
        q = 1 + r2 / (2 * a)
        k = q.pow(-a)
        return k, -0.5 * k / q, k * (1 - 1 / q - q.log())
    nu_scale = {"rbf": None, "matern12": 1.0, "matern32": 3.0, "matern52": 5.0}[profile]
    if nu_scale is None:
        k = torch.exp(-0.5 * r2)
        return k, -0.5 * k, None
    s = (nu_scale * r2).sqrt()
    e = torch.exp(-s)
    if profile == "matern12":
        return e, torch.where(r2 > 0, -0.5 * e / s.clamp_min(1e-300), 0.0), None
    if profile == "matern32":
        return (1 + s) * e, -1.5 * e, None
    return (1 + s + s * s / 3) * e, -5.0 / 6.0 * (1 + s) * e, None


def scaled_points(batch, n1, n2, d, seed=0):
    """z1 (B, n1, d), z2 (B, n2, d), the first 5 rows shared (exact duplicates), exact r2 in float64."""
    z1, z2 = rand(batch, n1, d, seed=seed), rand(batch, n2, d, seed=seed + 1)
    z2[:, :5] = z1[:, :5]
    r2 = (z1[:, :, None, :] - z2[:, None, :, :]).pow(2).sum(-1)
    return z1, z2, r2


ALPHA = torch.tensor([0.7, 2.5], dtype=F64)


# ----- the raw kernels ----------------------------------------------------------------------------

@pytest.mark.parametrize("t", [1, 11, 33])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("profile", list(tk.PROFILES))
def test_kv_matmul(profile, precision, t):
    z1, z2, r2 = scaled_points(2, 37, 70, 3)
    alpha = ALPHA.to(DEVICE) if profile == "rq" else None
    v = rand(2, 70, t, seed=5)
    out = tk.kv_matmul(z1, z2, v, profile, alpha, precision, **SMALL)
    k, _, _ = reference_terms(profile, r2, alpha)
    assert out.shape == (2, 37, t) and out.dtype == torch.float32
    assert rel_err(out, k @ v) < TOL[precision]


@pytest.mark.parametrize("precision", ["fp32", "tf32x3"])
def test_kv_matmul_over_many_column_tiles_stays_float32_accurate(precision):
    """8,192 columns (256 tiles): on an H200, tf32x3 with every tile chained on one tensor-core
    accumulator was 1.2e-4 off at 20,000 columns (its own rounding of the running sum)."""
    z1, z2, r2 = scaled_points(1, 64, 8192, 3, seed=11)
    v = rand(1, 8192, 11, seed=12)
    out = tk.kv_matmul(z1 * 0.3, z2 * 0.3, v, "rbf", precision=precision, block_m=64, block_n=32)
    k, _, _ = reference_terms("rbf", r2 * 0.09, None)
    assert rel_err(out, k @ v) < 1e-5


@pytest.mark.parametrize("d", [1, 4, 6, tk.DIRECT_MAX_D])
@pytest.mark.parametrize("precision", ["fp32", "tf32x3", "fp16x3", "bf16"])
def test_kv_matmul_point_records_of_each_width(d, precision):
    """Inputs of 1 to DIRECT_MAX_D columns (records of 4 and of 8 floats), 65 columns of V (the
    last launch takes one), 70 columns of K padded to three tiles of 32."""
    z1, z2, r2 = scaled_points(1, 37, 70, d, seed=21)
    v = rand(1, 70, 65, seed=22)
    out = tk.kv_matmul(z1 * 0.5, z2 * 0.5, v, "matern32", precision=precision, **SMALL)
    k = reference_terms("matern32", r2 * 0.25, None)[0]
    assert out.shape == (1, 37, 65)
    assert rel_err(out, k @ v) < TOL[precision]


@pytest.mark.parametrize("profile", ["rbf", "matern52"])
def test_kv_matmul_fp16x3_default_launch_settings(profile):
    """The per-profile defaults of the record product (triton_records.FP16X3_CONFIGS), with
    partial row blocks and column tiles at n1 = 150, n2 = 170."""
    z1, z2, r2 = scaled_points(1, 150, 170, 3, seed=23)
    v = rand(1, 170, 11, seed=24)
    out = tk.kv_matmul(z1, z2, v, profile, precision="fp16x3")
    assert rel_err(out, reference_terms(profile, r2, None)[0] @ v) < TOL["fp16x3"]


@pytest.mark.parametrize("n2", [70, 3000])
def test_fp16x3_keeps_each_column_float32_accurate(n2):
    """fp16x3 ranges V per column into float16's span: columns 1e-30 to 1e30 apart, a zero
    column and tiny entries inside a column all keep float32-level relative accuracy."""
    z1, z2, r2 = scaled_points(1, 37, n2, 3, seed=14)
    v = rand(1, n2, 9, seed=15) * torch.logspace(-30, 30, 9, dtype=F64, device=DEVICE)
    v[..., 4] = 0.0
    v[:, ::2, 6] *= 1e-6
    out = tk.kv_matmul(z1, z2, v, "matern52", precision="fp16x3", **SMALL)
    ref = reference_terms("matern52", r2, None)[0] @ v
    col_err = (out.double() - ref).abs().amax(-2) / ref.abs().amax(-2).clamp_min(1e-300)
    assert (out[..., 4] == 0).all() and float(col_err.max()) < 1e-5


@triton.jit
def _fp16_split_kernel(X, HI, LO, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    hi, lo = tk._fp16_split(tl.load(X + offs, mask=offs < n))
    tl.store(HI + offs, hi.to(tl.float32), mask=offs < n)
    tl.store(LO + offs, lo.to(tl.float32), mask=offs < n)


def test_fp16_split_error_is_float32_level():
    """hi + lo = x within 2^-22 |x| (both parts normal) and 2^-25 absolute (lo subnormal),
    for kernel entries in [0, 1] and ranged vectors up to 2^14."""
    x = torch.cat([torch.rand(2048, dtype=F64, device=DEVICE),
                   torch.rand(2048, dtype=F64, device=DEVICE).pow(20),
                   rand(2048, seed=16) * 2.0 ** 13]).float()
    hi, lo = torch.empty_like(x), torch.empty_like(x)
    _fp16_split_kernel[(6,)](x, hi, lo, x.numel(), BLOCK=1024)
    assert torch.equal(hi, x.half().float())                            # hi: x to nearest float16
    err = (hi.double() + lo.double() - x.double()).abs()
    assert (err <= torch.maximum(x.double().abs() * 2.0 ** -22, torch.tensor(2.0 ** -25))).all()


@triton.jit
def _split_kernel(X, HI, LO, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    hi, lo = tk._tf32_split(tl.load(X + offs, mask=offs < n))
    tl.store(HI + offs, hi, mask=offs < n)
    tl.store(LO + offs, lo, mask=offs < n)


def test_tf32_split_is_exact_and_rounded_to_nearest():
    x = (rand(4096, seed=13) * torch.logspace(-30, 30, 4096, dtype=F64, device=DEVICE)).float()
    hi, lo = torch.empty_like(x), torch.empty_like(x)
    _split_kernel[(4,)](x, hi, lo, x.numel(), BLOCK=1024)
    assert torch.equal(hi.double() + lo.double(), x.double())          # the split loses nothing
    assert not (hi.view(torch.int32) & 0x1FFF).any()                  # hi has a 10-bit mantissa
    assert (lo.abs() <= x.abs() * 2.0 ** -11).all()                   # to nearest: |lo| <= ulp/2


@pytest.mark.parametrize("t", [1, 33])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("profile", list(tk.PROFILES))
def test_row_grad(profile, precision, t):
    z1, z2, r2 = scaled_points(2, 37, 70, 3, seed=2)
    alpha = ALPHA.to(DEVICE) if profile == "rq" else None
    u, v = rand(2, 37, t, seed=6), rand(2, 70, t, seed=7)
    h_sum, hz, wk, wda = tk.row_grad(z1, z2, u, v, profile, alpha, precision, **SMALL)
    k, dk, dka = reference_terms(profile, r2, alpha)
    w = u @ v.transpose(-1, -2)
    h = w * dk
    tol = GRAD_TOL[precision]  # gradient pieces (Matern-1/2's dk/dr2 ~ 1/r amplifies r2 round-off)
    assert rel_err(h_sum, h.sum(-1)) < tol
    assert hz.shape == (2, 37, 3) and rel_err(hz, h @ z2) < tol
    assert rel_err(wk, (w * k).sum(-1)) < tol
    assert (wda is None) == (profile != "rq")
    if profile == "rq":
        assert rel_err(wda, (w * dka).sum(-1)) < tol


@pytest.mark.parametrize("precision", ["fp32", "tf32x3"])
@pytest.mark.parametrize("profile", ["rbf", "matern12", "rq"])
def test_inputs_wider_than_direct_max_d(profile, precision):
    """d > DIRECT_MAX_D: r2 from the geometry dot |a|^2 + |b|^2 - 2 a.b instead of elementwise."""
    d = tk.DIRECT_MAX_D + 4
    z1, z2, r2 = scaled_points(2, 37, 70, d, seed=4)
    z1, z2, r2 = z1 / 3, z2 / 3, r2 / 9  # O(1) distances in 12 dimensions
    alpha = ALPHA.to(DEVICE) if profile == "rq" else None
    k, dk, dka = reference_terms(profile, r2, alpha)
    v = rand(2, 70, 11, seed=5)
    assert rel_err(tk.kv_matmul(z1, z2, v, profile, alpha, precision, **SMALL), k @ v) < TOL[precision]
    u = rand(2, 37, 5, seed=6)
    h_sum, hz, wk, wda = tk.row_grad(z1, z2, u, v[..., :5], profile, alpha, precision, **SMALL)
    w = u @ v[..., :5].transpose(-1, -2)
    h = w * dk
    assert rel_err(h_sum, h.sum(-1)) < GRAD_TOL[precision]
    assert hz.shape == (2, 37, d) and rel_err(hz, h @ z2) < GRAD_TOL[precision]
    assert rel_err(wk, (w * k).sum(-1)) < GRAD_TOL[precision]


@pytest.mark.parametrize("d", [3, tk.DIRECT_MAX_D + 4])
@pytest.mark.parametrize("profile", list(tk.PROFILES))
def test_dense_profile(profile, d):
    """The one-pass dense build: K and scale * dk/dr2 per batch element, direct and dot geometry,
    tiles that overhang both edges (n1 = 37, n2 = 70 with 64 x 64 tiles), exact duplicates."""
    from flashgp.backends import triton_dense
    z1, z2, r2 = scaled_points(2, 37, 70, d, seed=40)
    z1, z2, r2 = z1 / math.sqrt(d / 3), z2 / math.sqrt(d / 3), r2 / (d / 3)
    alpha = ALPHA.to(DEVICE) if profile == "rq" else None
    scale = torch.tensor([0.5, 3.0], dtype=F64, device=DEVICE)
    k_ref, dk_ref, _ = reference_terms(profile, r2, alpha)
    k, dk = triton_dense.dense_profile(z1, z2, profile, scale, alpha)
    assert k.shape == dk.shape == (2, 37, 70) and k.dtype == torch.float32
    assert rel_err(k, scale[:, None, None] * k_ref) < 1e-5
    assert rel_err(dk, scale[:, None, None] * dk_ref) < 1e-5
    k_only, none = triton_dense.dense_profile(z1, z2, profile, None, alpha, derivative=False)
    assert none is None and rel_err(k_only, k_ref) < 1e-5


def test_fused_dense_matches_kernel():
    """fused_dense on a batched Scale(RQ) with active dims equals the kernel evaluated by torch."""
    kernel = randomized(Scale(RQ(ard_dims=2, active_dims=[0, 2], batch_shape=(2,))), device=DEVICE)
    x1, x2 = rand(37, 4, seed=41), rand(2, 33, 4, seed=42)
    k, dk = fused.fused_dense(kernel, x1, x2)
    assert k.shape == dk.shape == (2, 37, 33)
    assert rel_err(k, kernel(x1, x2).detach()) < 1e-5
    k_sym, none = fused.fused_dense(kernel, x1, None, derivative=False)
    assert none is None and rel_err(k_sym, kernel(x1).detach()) < 1e-5


@pytest.mark.parametrize("learned_x", [True, False])
def test_dense_backend_float32_matches_blocked(learned_x, monkeypatch):
    """KernelOperator(backend="dense") on float32 data (on CUDA its K comes from the one-pass
    Triton build; products by the stored-matrix kernel) against the float64 blocked operator:
    products and gradients, which come from
    the fused gradient pass (the row pass with x learned, the symmetric pair pass without), so
    no dk/dr2 is stored."""
    kernel = randomized(Scale(Matern(nu=2.5, ard_dims=3)), device=DEVICE)
    x = rand(70, 3, seed=43)
    ref = KernelOperator(kernel, x.requires_grad_(learned_x), backend="blocked")
    kernel32 = randomized(Scale(Matern(nu=2.5, ard_dims=3)), device=DEVICE).float()
    kernel32.load_state_dict({k: v.float() for k, v in kernel.state_dict().items()})
    x32 = x.detach().float().requires_grad_(learned_x)
    small = KernelOperator(kernel32, x32, backend="dense")
    v, left = rand(70, 11, seed=44), rand(70, 11, seed=45)
    assert rel_err(small.matmul(v.float()), ref.matmul(v)) < 1e-5
    assert not small._stored_ready  # below STORED_PRODUCT_MIN_ENTRIES: torch's product
    monkeypatch.setattr("flashgp.operators.kernel.STORED_PRODUCT_MIN_ENTRIES", 0)
    op = KernelOperator(kernel32, x32, backend="dense")
    assert op._fused_parts is not None and op._dense_derivative is None
    assert rel_err(op.matmul(v.float()), ref.matmul(v)) < 1e-5
    assert op._stored_ready  # the product read the stored K by the Triton kernel
    targets = list(kernel32.parameters()) + ([x32] if learned_x else [])
    got = op.bilinear_grad(left.float(), v.float())
    check_grads([g.double() for g in got], ref.bilinear_grad(left, v), 1e-4)
    assert len(got) == len(targets)


def test_wide_v_is_chunked():
    """t above KV_MAX_T / GRAD_MAX_T runs as several launches that add up."""
    z1, z2, r2 = scaled_points(1, 20, 30, 2, seed=3)
    t = max(tk.KV_MAX_T, tk.GRAD_MAX_T) + 6
    u, v = rand(1, 20, t, seed=8), rand(1, 30, t, seed=9)
    k, dk, _ = reference_terms("rbf", r2, None)
    assert rel_err(tk.kv_matmul(z1, z2, v, "rbf"), k @ v) < 1e-5
    h_sum, hz, wk, _ = tk.row_grad(z1, z2, u, v, "rbf")
    w = u @ v.transpose(-1, -2)
    assert rel_err(h_sum, (w * dk).sum(-1)) < 1e-5 and rel_err(hz, (w * dk) @ z2) < 1e-5
    assert rel_err(wk, (w * k).sum(-1)) < 1e-5


def test_launch_argument_errors():
    z = rand(1, 5, 2)
    v = rand(1, 5, 3)
    with pytest.raises(ValueError, match="profile"):
        tk.kv_matmul(z, z, v, "cosine")
    with pytest.raises(ValueError, match="precision"):
        tk.kv_matmul(z, z, v, "rbf", precision="fp16")
    with pytest.raises(ValueError, match="alpha"):
        tk.kv_matmul(z, z, v, "rq")
    with pytest.raises(ValueError, match="block_m"):
        tk.kv_matmul(z, z, v, "rbf", block_m=24)
    with pytest.raises(ValueError, match="z2"):
        tk.kv_matmul(z, rand(1, 5, 3), v, "rbf")
    with pytest.raises(ValueError, match="v"):
        tk.kv_matmul(z, z, rand(1, 4, 3), "rbf")
    assert tk.MAX_D == fused.MAX_D and tuple(tk.PRECISIONS) == fused.PRECISIONS


# ----- kernels, gradients and operators -----------------------------------------------------------

KERNELS = {
    "rbf": lambda: Scale(RBF(ard_dims=3)),
    "matern12": lambda: Scale(Matern(nu=0.5, ard_dims=3)),
    "matern32_bare": lambda: Matern(nu=1.5),
    "matern52": lambda: Scale(Matern(nu=2.5, ard_dims=3)),
    "rq": lambda: Scale(RQ(ard_dims=3)),
}


def dense_grads(kernel, x1, x2, left, right, targets):
    k = kernel(x1, x2)
    return torch.autograd.grad((k * (left @ right.transpose(-1, -2))).sum(), targets)


def check_grads(got, ref, tol):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and rel_err(g, r) < tol


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(KERNELS))
def test_fused_matmul_and_bilinear_grad(name, precision):
    kernel = randomized(KERNELS[name](), device=DEVICE)
    parts = fused.fused_parts(kernel)
    x1 = rand(37, 3, seed=10).requires_grad_()
    x2 = rand(70, 3, seed=11).requires_grad_()
    params = list(kernel.parameters())
    # cross K(x1, x2): row pass and column pass
    v = rand(70, 11, seed=12)
    out = fused.fused_matmul(kernel, x1, x2, v, precision, **SMALL)
    assert out.dtype == F64 and rel_err(out, kernel(x1, x2).detach() @ v) < TOL[precision]
    left, right = rand(37, 11, seed=13), rand(70, 11, seed=14)
    got = fused.fused_bilinear_grad(parts, x1, x2, left, right, params + [x1, x2], precision, **SMALL)
    check_grads(got, dense_grads(kernel, x1, x2, left, right, params + [x1, x2]), GRAD_TOL[precision])
    # symmetric K(x2, x2): one pass on [left, right], [right, left]
    left = rand(70, 11, seed=15)
    got = fused.fused_bilinear_grad(parts, x2, None, left, right, params + [x2], precision, **SMALL)
    check_grads(got, dense_grads(kernel, x2, x2, left, right, params + [x2]), GRAD_TOL[precision])


@pytest.mark.parametrize("base", ["rbf", "rq"])
def test_batched_kernel_with_active_dims(base):
    """Kernel batch (2,), inputs broadcast over it, active_dims, hyperparameters per batch."""
    cls = RBF if base == "rbf" else RQ
    kernel = randomized(Scale(cls(ard_dims=2, active_dims=[0, 2], batch_shape=(2,))), device=DEVICE)
    x1 = rand(37, 4, seed=20).requires_grad_()        # shared by both GPs of the batch
    x2 = rand(2, 33, 4, seed=21).requires_grad_()
    v = rand(2, 33, 1, seed=22)
    out = fused.fused_matmul(kernel, x1, x2, v, "fp32", **SMALL)
    assert out.shape == (2, 37, 1) and rel_err(out, kernel(x1, x2).detach() @ v) < 1e-5
    params = list(kernel.parameters())
    left, right = rand(2, 37, 11, seed=23), rand(2, 33, 11, seed=24)
    targets = params + [x1, x2]
    got = fused.fused_bilinear_grad(fused.fused_parts(kernel), x1, x2, left, right, targets, **SMALL)
    check_grads(got, dense_grads(kernel, x1, x2, left, right, targets), 2e-5)
    xs = rand(2, 37, 4, seed=25).requires_grad_()
    got = fused.fused_bilinear_grad(fused.fused_parts(kernel), xs, None, left, left, params + [xs], **SMALL)
    check_grads(got, dense_grads(kernel, xs, xs, left, left, params + [xs]), 2e-5)


def test_kernel_operator_triton_backend():
    kernel = randomized(Scale(Matern(nu=2.5, ard_dims=3)), device=DEVICE)
    x = rand(70, 3, seed=30).requires_grad_()
    op = KernelOperator(kernel, x, backend="triton")
    ref = KernelOperator(kernel, x, backend="blocked")
    assert op.backend == "triton" and op.precision == "fp16x3"
    v = rand(70, 4, seed=31)
    assert rel_err(op.matmul(v), ref.matmul(v)) < 1e-5
    assert rel_err(op.matmul(v[:, 0]), ref.matmul(v[:, 0])) < 1e-5
    left = rand(70, 5, seed=32)
    check_grads(op.bilinear_grad(left, v[:, :3].repeat(1, 2)[:, :5]),
                ref.bilinear_grad(left, v[:, :3].repeat(1, 2)[:, :5]), 2e-5)
    vb = rand(2, 70, 3, seed=33)  # a batch that comes from the right-hand side only
    assert rel_err(op.matmul(vb), ref.matmul(vb)) < 1e-5
    targets = list(kernel.parameters()) + [x]
    check_grads(op.bilinear_grad(vb, vb), dense_grads(kernel, x, x, vb, vb, targets), 2e-5)
    cross = KernelOperator(kernel, x[:20], x, backend="triton", precision=PRECISIONS[-1])
    assert cross.backend == "triton" and cross.shape == (20, 70)
    assert rel_err(cross.matmul(v), kernel(x[:20], x).detach() @ v) < TOL[PRECISIONS[-1]]
    # kernels the fused backend cannot evaluate fall back to blocked, never dense
    for other in (Scale(RBF()) + Linear(), Scale(Periodic()), Scale(RBF()) * Scale(RBF())):
        assert KernelOperator(other.double(), x, backend="triton").backend == "blocked"
    with pytest.raises(ValueError, match="precision"):
        KernelOperator(kernel, x, backend="triton", precision="fp16")


def test_exact_gp_cg_triton_matches_cholesky_and_blocked():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(100, 2, generator=gen) * 4).to(DEVICE)
    y = torch.sin(2 * x).sum(-1) + 0.1 * torch.randn(100, generator=gen).to(DEVICE)
    x_test = torch.linspace(0, 4, 12, device=DEVICE).unsqueeze(-1).expand(12, 2).contiguous()
    results = {}
    solvers = {"cholesky": fg.Cholesky(),
               "triton": fg.CG(backend="triton", tol=1e-4, probes=20, precond=fg.PivotedCholesky(80)),
               "blocked": fg.CG(backend="blocked", tol=1e-4, probes=20, precond=fg.PivotedCholesky(80))}
    for name, solver in solvers.items():
        torch.manual_seed(0)
        model = fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=2)), solver=solver).to(DEVICE)
        mll = model.mll(generator=torch.Generator(device=DEVICE).manual_seed(1))
        mll.backward()
        with torch.no_grad():
            mean = model.posterior(x_test).mean
        results[name] = (mll.item(), [p.grad.clone() for p in model.parameters()], mean,
                         dict(model.diagnostics))
    assert results["triton"][3]["backend"] == "triton" and results["blocked"][3]["backend"] == "blocked"
    # same probes, same arithmetic up to float32 round-off
    assert math.isclose(results["triton"][0], results["blocked"][0], rel_tol=1e-4, abs_tol=1e-5)
    check_grads(results["triton"][1], results["blocked"][1], 1e-3)
    # the exact answer, within the stochastic log-determinant error
    assert abs(results["triton"][0] - results["cholesky"][0]) < 1e-2
    assert rel_err(results["triton"][2], results["cholesky"][2].double()) < 1e-2


@pytest.mark.parametrize("precision,warns", [("fp32", False), ("tf32x3", False), ("fp16x3", False), ("tf32", True)])
def test_coarse_precision_in_training_warns(precision, warns):
    """Training solves with tf32 (or bf16) products warn: their rounding of K can exceed the noise
    and make the mll wrong without CG noticing (measured on an H200, precision_accuracy_h200.md)."""
    import warnings
    from flashgp.errors import NumericalWarning
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(60, 2, generator=gen).to(DEVICE)
    model = fg.ExactGP(x, torch.sin(3 * x).sum(-1), Scale(RBF()),
                       solver=fg.CG(backend="triton", precision=precision, probes=4)).to(DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.mll()
    coarse = [w for w in caught if issubclass(w.category, NumericalWarning) and "in training" in str(w.message)]
    assert bool(coarse) is warns


def stored(k):
    """k (B, n1, n2) copied into aligned rows whose padding holds NaN (a read of it would show)."""
    from flashgp.backends.layout import ROW_ALIGN
    width = -(-k.shape[-1] // ROW_ALIGN) * ROW_ALIGN
    out = torch.full((*k.shape[:-1], width), float("nan"), device=k.device)[..., :k.shape[-1]]
    out.copy_(k)
    return out


@pytest.mark.parametrize("t", [1, 11, 40, td.STORED_MAX_T + 5])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_stored_kv_matmul(precision, t):
    """Stored tiles read by tensor descriptors: partial row blocks and column tiles (70 x 45 in
    32 x 32 tiles, the edges zero-filled), NaN in the row padding, batches, V padded to 16, 64
    columns and wider V in two passes."""
    k = stored(rand(2, 70, 45, seed=70).float())
    v = rand(2, 45, t, seed=71)
    out = td.stored_kv_matmul(k, v, precision, **SMALL)
    assert out.shape == (2, 70, t) and out.dtype == torch.float32
    assert rel_err(out, k.double() @ v) < TOL[precision]


def test_stored_kv_matmul_fp16x3_runs_as_tf32x3_on_any_scale():
    """A stored K is not ranged into float16's span: entries of 1e6 stay float32-accurate."""
    k = stored(rand(1, 70, 45, seed=74).float() * 1e6)
    v = rand(1, 45, 11, seed=75) * 1e5
    assert rel_err(td.stored_kv_matmul(k, v, "fp16x3", **SMALL), k.double() @ v) < TOL["tf32x3"]


def test_stored_kv_matmul_defaults_layout_and_errors():
    k = rand(1, 300, 300, seed=72).float()
    v = rand(1, 300, 4, seed=73)
    ref = k.double() @ v
    assert td.stored_product_ready(k)  # 300 floats a row: 16-byte aligned as it is
    assert rel_err(td.stored_kv_matmul(k, v), ref) < TOL["tf32x3"]
    assert rel_err(td.stored_kv_matmul(stored(k), v, "fp32", num_stages=2), ref) < TOL["fp32"]
    assert td.stored_kv_matmul(k[:, :0], v).shape == (1, 0, 4)
    assert td.stored_product_ready(k[..., :299])  # a view: rows still 300 floats apart
    assert not td.stored_product_ready(k[..., :299].contiguous())  # 299 apart: not 16-byte aligned
    assert not td.stored_product_ready(k.double()) and not td.stored_product_ready(k[..., 1:])
    with pytest.raises(ValueError, match="k: expected a float32"):
        td.stored_kv_matmul(k.double(), v)
    with pytest.raises(ValueError, match="k: expected a float32"):
        td.stored_kv_matmul(k.transpose(1, 2), v)
    with pytest.raises(ValueError, match="v: expected"):
        td.stored_kv_matmul(k, v[:, :30])
    with pytest.raises(ValueError, match="precision"):
        td.stored_kv_matmul(k, v, "fp16")


def test_stored_matmul_broadcasts_batches():
    """fused.stored_matmul: a shared k against batched rhs, and batched k against one rhs."""
    k = stored(rand(2, 40, 40, seed=74).float())
    v = rand(3, 1, 40, 5, seed=75).float()
    assert fused.stored_ready(k) and fused.stored_ready(k[0])
    assert rel_err(fused.stored_matmul(k[0], v[:, 0]), k[0].double() @ v[:, 0].double()) < 1e-5
    out = fused.stored_matmul(k, v)  # (2, 40, 40) x (3, 1, 40, 5) -> (3, 2, 40, 5)
    assert out.shape == (3, 2, 40, 5)
    assert rel_err(out, k.double() @ v.double()) < 1e-5
