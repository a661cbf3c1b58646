# Tests of the fused CPU backend (backends/cpu_fused.py, cpu_native.py, cpu_kernels.c): its kernels
# against float64 references written out in plain torch, the operator and model paths against
# dense autograd, the blocked fallback when no compiler works, bad input and thread counts.
"""Every reference is computed in float64 from the same (possibly float32) inputs, with
explicit formulas (squared distances elementwise, k and dk/dr2 of each profile, dk/dalpha of
rq) or with autograd through the kernel's own float64 evaluation. Tolerances are relative to
the largest magnitude a result is summed from: ~1e-12 in float64, ~1e-5 in float32.
"""
import copy
import stat

import pytest
import torch

import flashgp as fg
from flashgp.backends import choose_backend, cpu_fused, cpu_native
from flashgp.backends.fused import cpu_ready, fused_matmul
from flashgp.kernels import RBF, RQ, Matern, Scale
from flashgp.operators import KernelOperator

if not cpu_fused.available():
    pytest.skip(f"the fused CPU kernels do not build here: {cpu_native.unavailable_reason()}",
                allow_module_level=True)

PROFILES = ("rbf", "matern12", "matern32", "matern52", "rq")
DTYPES = (torch.float64, torch.float32)
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}


# ----- float64 references ---------------------------------------------------------------------
def sq_dist(z1, z2):
    """(B, n1, n2) squared distances, elementwise in float64."""
    return (z1.double()[:, :, None, :] - z2.double()[:, None, :, :]).pow(2).sum(-1)


def profile_ref(r2, profile, alpha=None):
    """(k, dk/dr2, dk/dalpha or None) of the unit-scale profile, float64, r2 (B, n1, n2)."""
    if profile == "rbf":
        k = torch.exp(-0.5 * r2)
        return k, -0.5 * k, None
    if profile == "matern12":
        r = r2.sqrt()
        k = torch.exp(-r)
        dk = torch.where(r > 0, -0.5 * k / r.clamp_min(1e-300), torch.zeros_like(r))
        return k, dk, None
    if profile == "matern32":
        s = (3 * r2).sqrt()
        e = torch.exp(-s)
        return (1 + s) * e, -1.5 * e, None
    if profile == "matern52":
        s = (5 * r2).sqrt()
        e = torch.exp(-s)
        return (1 + s + s * s / 3) * e, -5.0 / 6.0 * (1 + s) * e, None
    assert profile == "rq"
    a = alpha.double()[:, None, None]
    q = r2 / (2 * a)
    k = (1 + q).pow(-a)
    return k, -0.5 * k / (1 + q), k * (q / (1 + q) - torch.log1p(q))


def check(got, ref, magnitude, dtype, what):
    """|got - ref| <= rtol(dtype) * max|magnitude|, where magnitude bounds the terms summed."""
    assert got is not None and got.shape == ref.shape, (what, None if got is None else got.shape, ref.shape)
    assert got.dtype == dtype, (what, got.dtype)
    scale = float(magnitude.abs().max()) if magnitude.numel() else 0.0
    err = float((got.double() - ref).abs().max()) if ref.numel() else 0.0
    assert err <= RTOL[dtype] * max(scale, 1e-300), f"{what}: error {err:.3e}, scale {scale:.3e}"


def rand(*shape, seed, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def case_inputs(bsz, n1, n2, d, t, dtype, seed):
    z1 = rand(bsz, n1, d, seed=seed, dtype=dtype)
    z2 = rand(bsz, n2, d, seed=seed + 1, dtype=dtype)
    v = rand(bsz, n2, t, seed=seed + 2, dtype=dtype)
    u = rand(bsz, n1, t, seed=seed + 3, dtype=dtype)
    alpha = (0.4 + torch.rand(bsz, generator=torch.Generator().manual_seed(seed + 4), dtype=torch.float64) * 3).to(dtype)
    return z1, z2, u, v, alpha


# ----- 1. the kernels themselves --------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("t", [1, 11, 100])
@pytest.mark.parametrize("d", [1, 3, 9])
@pytest.mark.parametrize("bsz", [1, 3])
@pytest.mark.parametrize("profile", PROFILES)
def test_kernels_match_float64_formulas(profile, bsz, d, t, dtype):
    """kv_matmul (t = 100 > GEMM_MIN_T: kernel tiles and BLAS), kernel_tile and row_grad against
    explicit float64 formulas; n2 = 290 crosses a 256-column tile, n1 = 45 a 32-row chunk and
    leaves a partial group of 4 rows."""
    n1, n2 = 45, 290
    seed = 1000 * PROFILES.index(profile) + 100 * bsz + 10 * d + t
    z1, z2, u, v, alpha = case_inputs(bsz, n1, n2, d, t, dtype, seed)
    a = alpha if profile == "rq" else None
    r2 = sq_dist(z1, z2)
    k, dk, da = profile_ref(r2, profile, a)
    vd, ud, z2d = v.double(), u.double(), z2.double()

    tile = cpu_fused.kernel_tile(z1, z2, profile, a)
    check(tile, k, k, dtype, "kernel_tile")
    out = torch.empty(bsz, n1, n2, dtype=dtype)
    assert cpu_fused.kernel_tile(z1, z2, profile, a, out=out) is out
    check(out, k, k, dtype, "kernel_tile(out=)")

    kv = cpu_fused.kv_matmul(z1, z2, v, profile, a)
    check(kv, k @ vd, k @ vd.abs(), dtype, "kv_matmul")

    h, hz, wk, wda = cpu_fused.row_grad(z1, z2, u, v, profile, a)
    w = ud @ vd.transpose(1, 2)  # W = u v^T
    hm = w * dk  # H = W * dk/dr2
    check(h, hm.sum(-1), hm.abs().sum(-1), dtype, "row_grad h")
    check(hz, hm @ z2d, hm.abs() @ z2d.abs(), dtype, "row_grad hz")
    check(wk, (w * k).sum(-1), (w * k).abs().sum(-1), dtype, "row_grad wk")
    if profile == "rq":
        check(wda, (w * da).sum(-1), (w * da).abs().sum(-1), dtype, "row_grad wda")
    else:
        assert wda is None
    h2, hz2, wk2, wda2 = cpu_fused.row_grad(z1, z2, u, v, profile, a, need_wk=False)
    assert wk2 is None and wda2 is None
    assert torch.equal(h2, h) and torch.equal(hz2, hz)


def test_reference_derivatives_are_those_of_the_profiles():
    """The explicit dk/dr2 and dk/dalpha above agree with autograd through k (checks the checker)."""
    r2 = (torch.rand(50, dtype=torch.float64) * 6 + 0.01).reshape(1, 5, 10).requires_grad_()
    alpha = torch.tensor([1.7], dtype=torch.float64, requires_grad=True)
    for profile in PROFILES:
        k, dk, da = profile_ref(r2, profile, alpha if profile == "rq" else None)
        grads = torch.autograd.grad(k.sum(), [r2, alpha] if profile == "rq" else [r2])
        torch.testing.assert_close(dk, grads[0], rtol=1e-13, atol=0)
        if profile == "rq":
            torch.testing.assert_close(da.sum(), grads[1][0], rtol=1e-13, atol=0)


def test_profiles_match_the_kernels_classes():
    """The reference profiles are those of RBF, Matern and RQ (flashgp.kernels) in float64."""
    r2 = torch.rand(1, 4, 7, dtype=torch.float64) * 5
    kernels = {"rbf": RBF(), "matern12": Matern(nu=0.5), "matern32": Matern(nu=1.5),
               "matern52": Matern(nu=2.5), "rq": RQ(alpha=0.8)}
    for profile, kernel in kernels.items():
        kernel = kernel.double()
        alpha = kernel.alpha.detach().reshape(1) if profile == "rq" else None
        with torch.no_grad():
            torch.testing.assert_close(profile_ref(r2, profile, alpha)[0], kernel.profile(r2),
                                       rtol=1e-14, atol=0)


def test_kernels_with_empty_sides_and_duplicate_points():
    """n1 = 0 or n2 = 0 give empty or zero results; a point equal to a column gives k = 1 and
    Matern-1/2's dk/dr2 = 0 at r = 0 (no inf or nan)."""
    z = rand(1, 5, 2, seed=7)
    v = rand(1, 5, 3, seed=8)
    assert cpu_fused.kv_matmul(z[:, :0], z, v, "rbf").shape == (1, 0, 3)
    torch.testing.assert_close(cpu_fused.kv_matmul(z, z[:, :0], v[:, :0], "rbf"), torch.zeros(1, 5, 3, dtype=torch.float64))
    h, hz, wk, _ = cpu_fused.row_grad(z, z[:, :0], v, v[:, :0], "rbf")
    assert float(h.abs().sum() + hz.abs().sum() + wk.abs().sum()) == 0.0
    for profile in PROFILES:
        a = torch.tensor([1.3], dtype=torch.float64) if profile == "rq" else None
        tile = cpu_fused.kernel_tile(z, z, profile, a)
        torch.testing.assert_close(torch.diagonal(tile, dim1=1, dim2=2), torch.ones(1, 5, dtype=torch.float64),
                                   rtol=1e-15, atol=1e-15)
        h, hz, wk, _ = cpu_fused.row_grad(z, z, v, v, profile, a)
        assert bool(torch.isfinite(h).all() and torch.isfinite(hz).all() and torch.isfinite(wk).all())
        _, dk, _ = profile_ref(sq_dist(z, z), profile, a)
        w = v @ v.transpose(1, 2)
        check(h, (w * dk).sum(-1), (w * dk).abs().sum(-1), torch.float64, f"{profile} h with r = 0")


def test_non_contiguous_and_mixed_dtype_inputs():
    """Transposed (non-contiguous) z2 and v, and v in another dtype, are laid out by the wrapper."""
    z1, z2, u, v, _ = case_inputs(2, 20, 30, 3, 5, torch.float64, 11)
    z2_nc = z2.transpose(1, 2).contiguous().transpose(1, 2)
    v_nc = v.transpose(1, 2).contiguous().transpose(1, 2)
    assert not z2_nc.is_contiguous() and not v_nc.is_contiguous()
    k, _, _ = profile_ref(sq_dist(z1, z2), "matern52")
    got = cpu_fused.kv_matmul(z1, z2_nc, v_nc.float(), "matern52")
    assert got.dtype == torch.float64  # computed in z1's dtype
    check(got, k @ v.float().double(), k @ v.abs(), torch.float64, "kv non-contiguous")


# ----- 2. the operator -------------------------------------------------------------------------
def _kernel(name, dtype):
    """(kernel in dtype, input dimension) with non-default hyperparameters."""
    if name == "rbf_ard":
        kernel, d = Scale(RBF(ard_dims=3, lengthscale=0.9), outputscale=1.7), 3
        kernel.base.lengthscale = torch.tensor([[0.6, 1.3, 0.9]])
    elif name == "matern12":
        kernel, d = Scale(Matern(nu=0.5, ard_dims=2, lengthscale=1.2), outputscale=0.8), 2
    elif name == "matern32_active":
        kernel, d = Scale(Matern(nu=1.5, ard_dims=2, active_dims=[0, 2], lengthscale=0.7), outputscale=1.3), 4
    elif name == "matern52_bare":
        kernel, d = Matern(nu=2.5, ard_dims=3, lengthscale=1.1), 3
    elif name == "rq":
        kernel, d = Scale(RQ(ard_dims=2, alpha=0.7, lengthscale=0.8), outputscale=2.1), 2
    elif name == "rq_bare":
        kernel, d = RQ(alpha=1.9, lengthscale=0.6), 3
    elif name == "rbf_batch":
        kernel, d = Scale(RBF(ard_dims=3, batch_shape=(2,), lengthscale=1.0)), 3
        kernel.base.lengthscale = torch.tensor([[[0.7, 1.1, 1.4]], [[1.6, 0.5, 0.9]]])
        kernel.outputscale = torch.tensor([0.6, 1.8])
    elif name == "rq_batch":
        kernel, d = Scale(RQ(batch_shape=(2,), lengthscale=1.0)), 2
        kernel.base.lengthscale = torch.tensor([[[0.7]], [[1.3]]])
        kernel.base.alpha = torch.tensor([0.5, 2.5])
        kernel.outputscale = torch.tensor([1.2, 0.4])
    else:
        raise AssertionError(name)
    return kernel.to(dtype), d


OPERATOR_KERNELS = ("rbf_ard", "matern12", "matern32_active", "matern52_bare", "rq", "rq_bare",
                    "rbf_batch", "rq_batch")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", ["symmetric", "rectangular", "batched_inputs"])
@pytest.mark.parametrize("inputs_grad", [False, True], ids=["params", "params+x"])
@pytest.mark.parametrize("name", OPERATOR_KERNELS)
def test_operator_matches_dense_autograd(name, inputs_grad, shape, dtype):
    """KernelOperator(backend="cpu"): matmul against kernel(x1, x2) @ rhs and bilinear_grad against
    autograd of sum(K * (left @ right^T)) for every parameter (raw lengthscales, outputscale, RQ
    alpha) and the inputs that require grad, all in float64."""
    kernel, d = _kernel(name, dtype)
    n1, n2, t = 70, 90, 4
    seed = 7 * OPERATOR_KERNELS.index(name) + 3 * inputs_grad
    lead = (2,) if shape == "batched_inputs" else ()
    x1 = rand(*lead, n1, d, seed=seed, dtype=dtype).requires_grad_(inputs_grad)
    x2 = None if shape == "symmetric" else rand(*lead, n2, d, seed=seed + 1, dtype=dtype).requires_grad_(inputs_grad)
    cols = n1 if x2 is None else n2
    op = KernelOperator(kernel, x1, x2, backend="cpu")
    assert op.backend == "cpu"
    batch = op.shape[:-2]
    rhs = rand(*batch, cols, t, seed=seed + 2, dtype=dtype)
    left = rand(*batch, n1, t, seed=seed + 3, dtype=dtype)
    right = rand(*batch, cols, t, seed=seed + 4, dtype=dtype)

    ref_kernel = copy.deepcopy(kernel).double()
    xs = [x1.detach().double().requires_grad_(inputs_grad)]
    if x2 is not None:
        xs.append(x2.detach().double().requires_grad_(inputs_grad))
    kd = ref_kernel(xs[0], xs[1] if x2 is not None else None)
    assert kd.shape == op.shape

    got = op.matmul(rhs)
    with torch.no_grad():
        check(got, kd @ rhs.double(), kd.abs() @ rhs.double().abs(), dtype, "matmul")

    weights = left.double() @ right.double().transpose(-1, -2)
    targets = [p for p in ref_kernel.parameters() if p.requires_grad] + [x for x in xs if x.requires_grad]
    refs = torch.autograd.grad((kd * weights).sum(), targets, retain_graph=True)
    # magnitudes: the same gradients with |W| and |dK| would bound the sums; use autograd of
    # sum(|W| K) (positive weights: no cancellation across entries) as the scale
    mags = torch.autograd.grad((kd * weights.abs()).sum(), targets)
    grads = op.bilinear_grad(left, right)
    assert len(grads) == len(targets) == len(op.grad_inputs())
    for i, (g, r, m) in enumerate(zip(grads, refs, mags)):
        assert g.shape == r.shape
        scale = torch.maximum(r.abs().max(), m.abs().max())
        check(g, r, scale.reshape(1), dtype, f"bilinear_grad[{i}] {tuple(r.shape)}")


def test_operator_matern12_symmetric_with_duplicates_in_params():
    """Duplicate points in K(x, x) do not spoil the parameter gradients (r = 0 contributes
    nothing to the lengthscale's gradient; dk/dr2 is taken as 0 there)."""
    kernel = Scale(Matern(nu=0.5, lengthscale=0.9), outputscale=1.4).double()
    x = rand(40, 2, seed=3)
    x = torch.cat([x, x[:5]])  # five duplicates
    left, right = rand(45, 3, seed=4), rand(45, 3, seed=5)
    op = KernelOperator(kernel, x, backend="cpu")
    grads = op.bilinear_grad(left, right)
    ref_kernel = copy.deepcopy(kernel)
    refs = torch.autograd.grad((ref_kernel(x) * (left @ right.T)).sum(), list(ref_kernel.parameters()))
    for g, r in zip(grads, refs):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12 * float(r.abs().max()))


def test_fused_matmul_backend_cpu_matches_dense():
    """fused_matmul(..., backend="cpu") directly, symmetric and rectangular, returning rhs's dtype."""
    kernel = Scale(RQ(ard_dims=2, alpha=1.4)).double()
    x1, x2, rhs = rand(50, 2, seed=1), rand(60, 2, seed=2), rand(60, 2, seed=3)
    with torch.no_grad():
        for a, b, r in ((x1, x2, rhs), (x2, None, rhs)):
            k = kernel(a, b)
            got = fused_matmul(kernel, a, b, r, backend="cpu")
            check(got, k @ r, k.abs() @ r.abs(), torch.float64, "fused_matmul")
        got = fused_matmul(kernel, x1, x2, rhs.float(), backend="cpu")
        assert got.dtype == torch.float32


def test_auto_picks_cpu_past_the_budget_and_dense_within():
    kernel = Scale(RBF()).double()
    x = rand(30, 2, seed=9)
    assert KernelOperator(kernel, x, backend="auto", memory_budget=0).backend == "cpu"
    assert KernelOperator(kernel, x, backend="auto").backend == "dense"
    assert KernelOperator(kernel.float(), x.float(), backend="auto", memory_budget=0).backend == "cpu"
    assert cpu_ready(kernel, x) and cpu_ready(kernel, x, x)
    assert not cpu_ready(kernel, x, x.float())  # mixed dtypes
    assert not cpu_ready(kernel, x.half())
    assert not cpu_ready(Scale(RBF()) + Scale(RBF()), x)  # not a fused kernel
    sums = (Scale(RBF()) + Scale(Matern())).double()
    assert KernelOperator(sums, x, backend="cpu").backend == "blocked"


# ----- 3. a model on the fused CPU path -------------------------------------------------------
def _model(x, y, **solver):
    kernel = Scale(RQ(ard_dims=2, alpha=1.3, lengthscale=0.7), outputscale=1.5).double()
    cg = fg.CG(probes=6, tol=1e-10, eval_tol=1e-10, max_iters=500, **solver)
    return fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=0.05), solver=cg)


def test_exact_gp_on_the_cpu_backend_matches_dense_and_blocked():
    """ExactGP with CG past its memory budget runs on "cpu": its mll, the mll's gradients and the
    posterior mean agree with the dense and blocked backends (same probes, float64)."""
    x = rand(200, 2, seed=21)
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1]) + 0.1 * rand(200, seed=22)
    xt = rand(25, 2, seed=23)
    results = {}
    for label, solver in (("cpu", dict(memory_budget=0)), ("dense", dict(backend="dense")),
                          ("blocked", dict(backend="blocked"))):
        model = _model(x, y, **solver)
        params = [p for p in model.parameters() if p.requires_grad]
        mll = model.mll(generator=torch.Generator().manual_seed(5))
        assert model.diagnostics["backend"] == label
        grads = torch.autograd.grad(mll.sum(), params)
        model.eval()
        with torch.no_grad():
            mean = model.posterior(xt).mean
        results[label] = (mll.detach(), grads, mean)
    mll, grads, mean = results["cpu"]
    for label in ("dense", "blocked"):
        mll_r, grads_r, mean_r = results[label]
        torch.testing.assert_close(mll, mll_r, rtol=1e-9, atol=1e-9)
        assert len(grads) == len(grads_r) >= 4
        for g, r in zip(grads, grads_r):
            torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-9 * float(r.abs().max()) + 1e-12)
        torch.testing.assert_close(mean, mean_r, rtol=1e-8, atol=1e-9)


# ----- 4. without a compiler ------------------------------------------------------------------
def test_backends_fall_back_to_blocked_without_the_library(monkeypatch):
    """cpu_native.library() returning None (no compiler): "cpu" and "auto" past the budget resolve
    to "blocked", results stay right, the kernels themselves say why they cannot run."""
    monkeypatch.setattr(cpu_native, "library", lambda: None)
    monkeypatch.setattr(cpu_native, "_failure", ["no C compiler found (test)"])
    assert not cpu_fused.available()
    kernel = Scale(Matern(nu=1.5, ard_dims=2)).double()
    x, x2 = rand(40, 2, seed=31), rand(30, 2, seed=32)
    assert not cpu_ready(kernel, x)
    rhs = rand(30, 3, seed=33)
    for backend, budget in (("cpu", None), ("auto", 0)):
        op = KernelOperator(kernel, x, x2, backend=backend, memory_budget=budget)
        assert op.backend == "blocked"
        with torch.no_grad():
            k = kernel(x, x2)
        check(op.matmul(rhs), k @ rhs, k.abs() @ rhs.abs(), torch.float64, f"{backend} fallback matmul")
    assert choose_backend("cpu", 10, 10, torch.float64, native=cpu_fused.available()) == "blocked"
    with pytest.raises(RuntimeError, match="no C compiler found"):
        cpu_fused.kv_matmul(x[None], x2[None], rhs[None], "rbf")

    y = torch.sin(x.sum(-1))
    model = fg.ExactGP(x, y, Scale(RBF()).double(), solver=fg.CG(memory_budget=0, probes=4))
    model.mll()
    assert model.diagnostics["backend"] == "blocked"


def test_fallback_when_available_is_false(monkeypatch):
    """cpu_ready asks cpu_fused.available() at call time: patching it alone is enough."""
    monkeypatch.setattr(cpu_fused, "available", lambda: False)
    kernel = Scale(RBF()).double()
    x = rand(25, 2, seed=41)
    assert KernelOperator(kernel, x, backend="cpu").backend == "blocked"
    assert KernelOperator(kernel, x, backend="auto", memory_budget=0).backend == "blocked"


def test_unavailable_reason_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_native, "_failure", [])
    monkeypatch.setattr(cpu_native, "_compiler", lambda: None)
    assert cpu_native.unavailable_reason() is None
    assert cpu_native.library.__wrapped__() is None
    assert "no C compiler found" in cpu_native.unavailable_reason()
    assert not (tmp_path / "flashgp").exists()


def use_compiler(monkeypatch, tmp_path, name: str, script: str):
    """CC set to an executable file ``name`` holding ``script``, the build cache in tmp_path and
    no failure recorded yet; returns the file's path."""
    path = tmp_path / name
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CC", str(path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_native, "_failure", [])
    return path


def test_unavailable_reason_with_a_failing_compiler(monkeypatch, tmp_path):
    """CC naming a compiler that fails: library() gives None, the reason quotes its complaint,
    and no partial build is left in the cache folder."""
    fake = use_compiler(monkeypatch, tmp_path, "fakecc",
                        "#!/bin/sh\necho 'fakecc: cannot compile anything' >&2\nexit 1\n")
    assert cpu_native._compiler() == str(fake)
    assert cpu_native.library.__wrapped__() is None
    reason = cpu_native.unavailable_reason()
    assert "compiling cpu_kernels.c" in reason and "fakecc: cannot compile anything" in reason
    assert list((tmp_path / "cache" / "flashgp").iterdir()) == []  # temporary files removed


def test_cc_naming_a_missing_program_means_no_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert not cpu_native._compiler()


def test_fresh_build_in_an_empty_cache(monkeypatch, tmp_path):
    """library() compiles into $XDG_CACHE_HOME/flashgp when nothing is cached, and the new build
    computes what the cached one does."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_native, "_failure", [])
    lib = cpu_native.library.__wrapped__()
    assert lib is not None, cpu_native.unavailable_reason()
    built = list((tmp_path / "flashgp").iterdir())
    assert len(built) == 1 and built[0].name.startswith("cpu_kernels_") and built[0].suffix == ".so"
    assert lib.flashgp_cpu_abi() == cpu_native.ABI
    z1, z2, _, v, _ = case_inputs(1, 9, 13, 2, 3, torch.float64, 51)
    expected = cpu_fused.kv_matmul(z1, z2, v, "rbf")
    monkeypatch.setattr(cpu_native, "library", lambda: lib)
    torch.testing.assert_close(cpu_fused.kv_matmul(z1, z2, v, "rbf"), expected, rtol=0, atol=0)


# ----- 5. bad input ---------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    z1, z2, u, v, alpha = case_inputs(2, 6, 7, 3, 2, torch.float64, 61)
    with pytest.raises(ValueError, match="profile: expected one of"):
        cpu_fused.kv_matmul(z1, z2, v, "periodic")
    with pytest.raises(ValueError, match="profile"):
        cpu_fused.kernel_tile(z1, z2, "matern72")
    with pytest.raises(ValueError, match="alpha: the rq profile needs alpha"):
        cpu_fused.kv_matmul(z1, z2, v, "rq")
    with pytest.raises(ValueError, match="alpha"):
        cpu_fused.row_grad(z1, z2, u, v, "rq")
    with pytest.raises(ValueError, match="^v: expected"):
        cpu_fused.kv_matmul(z1, z2, v[:, :-1], "rbf")
    with pytest.raises(ValueError, match="^v: expected"):
        cpu_fused.kv_matmul(z1, z2, v[0], "rbf")
    with pytest.raises(ValueError, match="^v: expected u"):
        cpu_fused.row_grad(z1, z2, u[:, :-1], v, "rbf")
    with pytest.raises(ValueError, match="^v: expected u"):
        cpu_fused.row_grad(z1, z2, u, v[..., :1], "rbf")
    with pytest.raises(ValueError, match="^z1, z2: expected"):
        cpu_fused.kv_matmul(z1, z2[..., :2], v, "rbf")
    with pytest.raises(ValueError, match="^z1, z2: expected"):
        cpu_fused.kv_matmul(z1[0], z2[0], v, "rbf")
    with pytest.raises(ValueError, match="^z1, z2: expected"):
        cpu_fused.kv_matmul(z1[:1], z2, v, "rbf")
    with pytest.raises(ValueError, match="^z1: expected float32 or float64"):
        cpu_fused.kv_matmul(z1.half(), z2.half(), v.half(), "rbf")
    with pytest.raises(ValueError, match="^z1: expected float32 or float64"):
        cpu_fused.kernel_tile(z1.long(), z2.long(), "rbf")
    with pytest.raises(ValueError, match="^out: expected"):
        cpu_fused.kernel_tile(z1, z2, "rbf", out=torch.empty(2, 6, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="^out: expected"):
        cpu_fused.kernel_tile(z1, z2, "rbf", out=torch.empty(2, 6, 7))
    with pytest.raises(ValueError, match="^out: expected"):
        cpu_fused.kernel_tile(z1, z2, "rbf", out=torch.empty(2, 7, 6, dtype=torch.float64).transpose(1, 2))
    with pytest.raises(ValueError, match="backend: expected"):
        fused_matmul(RBF().double(), z1[0], None, v[0, :6], backend="cuda-cpu")
    with pytest.raises(ValueError, match="kernel:"):
        fused_matmul((RBF() + RBF()).double(), z1[0], None, v[0, :6], backend="cpu")


def test_non_cpu_tensors_are_refused_without_cuda():
    """Tensors on another device (meta here, so that no GPU is needed) are refused before any
    pointer reaches the C code."""
    z1, z2, u, v, _ = case_inputs(1, 4, 5, 2, 2, torch.float64, 71)
    meta = z2.to("meta")
    with pytest.raises(ValueError, match="^z1, z2: the fused CPU kernels need CPU tensors"):
        cpu_fused.kv_matmul(z1, meta, v, "rbf")
    with pytest.raises(ValueError, match="^z1, z2: the fused CPU kernels need CPU tensors"):
        cpu_fused.kernel_tile(z1.to("meta"), z2, "rbf")
    with pytest.raises(ValueError, match="^z1, z2: the fused CPU kernels need CPU tensors"):
        cpu_fused.row_grad(z1, meta, u, v, "rbf")
    assert not cpu_ready(Scale(RBF()).double(), z1[0].to("meta"))
    assert not cpu_ready(Scale(RBF()).double(), z1[0], z2[0].to("meta"))


# ----- 6. thread counts -----------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["matern12", "rq"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_results_do_not_depend_on_the_thread_count(profile, dtype):
    """Rows are split into chunks, each summed by one thread in a fixed order: one thread and two
    give the same bits for K @ V and the gradient's row sums (and K @ V through BLAS agrees to
    rounding)."""
    z1, z2, u, v, alpha = case_inputs(3, 150, 170, 3, 11, dtype, 81)
    v_wide = rand(3, 170, 80, seed=82, dtype=dtype)
    a = alpha if profile == "rq" else None
    before = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert torch.get_num_threads() == threads
            results[threads] = (cpu_fused.kv_matmul(z1, z2, v, profile, a),
                                cpu_fused.kernel_tile(z1, z2, profile, a),
                                *cpu_fused.row_grad(z1, z2, u, v, profile, a)[:3],
                                cpu_fused.kv_matmul(z1, z2, v_wide, profile, a))
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    *exact_one, wide_one = results[1]
    *exact_two, wide_two = results[2]
    for one, two in zip(exact_one, exact_two):
        assert torch.equal(one, two)
    torch.testing.assert_close(wide_one, wide_two, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * float(wide_one.abs().max()))


def test_more_threads_than_work_items():
    """torch threads beyond the number of row chunks (B = 1, n1 = 3): still right."""
    z1, z2, u, v, _ = case_inputs(1, 3, 40, 2, 2, torch.float64, 91)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        got = cpu_fused.kv_matmul(z1, z2, v, "matern32")
    finally:
        torch.set_num_threads(before)
    k, _, _ = profile_ref(sq_dist(z1, z2), "matern32")
    check(got, k @ v, k.abs() @ v.abs(), torch.float64, "kv with 8 threads")


def test_unexecutable_compiler_means_unavailable(monkeypatch, tmp_path):
    """A CC that is found but cannot run (no shebang: exec format error) should leave the library
    unavailable with a reason, like a compiler that fails, so that "auto" can fall back."""
    use_compiler(monkeypatch, tmp_path, "badcc", "not a program\n")
    assert cpu_native.library.__wrapped__() is None
    assert "badcc" in cpu_native.unavailable_reason()


def test_cg_backend_cpu_by_name():
    """fg.CG(backend="cpu") runs the training operator on the fused CPU kernels at any size."""
    x = rand(60, 2, seed=101)
    model = fg.ExactGP(x, torch.sin(x.sum(-1)), Scale(RBF()).double(), solver=fg.CG(backend="cpu", probes=4))
    model.mll()
    assert model.diagnostics["backend"] == "cpu"


# ----- the symmetric kernels: each pair of points once ------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("profile", PROFILES)
def test_symmetric_products_and_gradients_match_references(profile, dtype):
    """sym_kv_matmul = K(z, z) v and sym_row_grad = row_grad(z, z, [u w], [w u]) (a symmetric W),
    for n crossing several 32-row chunks and a partial last one, B = 2, t = 1 and 7."""
    z = rand(2, 150, 3, seed=201, dtype=dtype)
    alpha = torch.tensor([0.7, 2.5], dtype=dtype) if profile == "rq" else None
    k, dk, da = profile_ref(sq_dist(z, z), profile, alpha)
    for t in (1, 7):
        v = rand(2, 150, t, seed=202 + t, dtype=dtype)
        got = cpu_fused.sym_kv_matmul(z, v, profile, alpha)
        check(got, k @ v.double(), k.abs() @ v.double().abs(), dtype, f"sym kv t={t}")
        u, w = rand(2, 150, t, seed=210 + t, dtype=dtype), rand(2, 150, t, seed=220 + t, dtype=dtype)
        uw, wu = torch.cat([u, w], -1), torch.cat([w, u], -1)
        weights = uw.double() @ wu.double().transpose(1, 2)
        h, hz, wk, wda = cpu_fused.sym_row_grad(z, uw, wu, profile, alpha)
        hmat = weights * dk
        check(h, hmat.sum(-1), hmat.abs().sum(-1), dtype, "sym h")
        check(hz, hmat @ z.double(), hmat.abs() @ z.double().abs(), dtype, "sym hz")
        check(wk, (weights * k).sum(-1), (weights * k).abs().sum(-1), dtype, "sym wk")
        if profile == "rq":
            check(wda, (weights * da).sum(-1), (weights * da).abs().sum(-1), dtype, "sym wda")
        else:
            assert wda is None


def test_symmetric_kernels_fall_back_when_their_scratch_is_too_large(monkeypatch):
    """Past SYMMETRIC_SCRATCH_BYTES the rectangular kernels run: same results to rounding."""
    z, v = rand(1, 90, 2, seed=230), rand(1, 90, 3, seed=231)
    both = torch.cat([v, v.flip(-1)], -1)
    sym = cpu_fused.sym_kv_matmul(z, v, "matern52"), cpu_fused.sym_row_grad(z, both, both.flip(-1), "rbf")
    monkeypatch.setattr(cpu_fused, "SYMMETRIC_SCRATCH_BYTES", 0)
    rect = cpu_fused.sym_kv_matmul(z, v, "matern52"), cpu_fused.sym_row_grad(z, both, both.flip(-1), "rbf")
    torch.testing.assert_close(sym[0], rect[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(sym[1][:3], rect[1][:3]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="u, v"):
        cpu_fused.sym_row_grad(z, v, v[:, :50], "rbf")
    with pytest.raises(ValueError, match=r"\bv\b"):
        cpu_fused.sym_kv_matmul(z, v[:, :50], "rbf")



def test_symmetric_kernels_do_not_depend_on_the_thread_count():
    """The symmetric kernels' column sums go to fixed slots, each filled in a fixed order: 1, 2
    and 3 threads give bit-identical products and gradients."""
    z, v, u = rand(2, 300, 3, seed=260), rand(2, 300, 5, seed=261), rand(2, 300, 4, seed=262)
    w = torch.cat([u, u.flip(-1)], -1)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append((cpu_fused.sym_kv_matmul(z, v, "matern52"),
                            *cpu_fused.sym_row_grad(z, w, w.flip(-1), "rbf")[:3]))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
