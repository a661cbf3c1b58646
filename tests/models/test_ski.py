# SKI / KISS-GP (fg.kernels.Interpolated): the kernel against W K_UU W^T written out densely, which
# structure each base kernel gets, convergence to the exact kernel, mll and gradients as the grid
# grows (float64, n = 2,000), the BBMM path against the SKI Cholesky, training, LOVE variances,
# files, preconditioners, a grid no dense matrix could hold, GPyTorch's GridInterpolationKernel,
# and every refusal.
import math
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, RQ, Interpolated, Linear, Matern, Periodic, Scale
from flashgp.operators import InterpolatedOperator, Kronecker, Toeplitz
from flashgp.operators.interpolation import cubic_kernel

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def data(n, d, seed=0, noise=0.1):
    g = gen(seed)
    x = torch.rand(n, d, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, -1]) + noise * torch.randn(n, generator=g, dtype=F64)
    return x, y


def dense_ski(kernel, x1, x2):
    """W1 K_UU W2^T with K_UU the base kernel at the explicit grid points and W from Keys' kernel."""
    spec = kernel.grid(x1, x2)
    axes = [s + h * torch.arange(g, dtype=F64) for s, h, g in zip(spec.start, spec.spacing, spec.shape)]
    grid = torch.cartesian_prod(*axes).reshape(-1, len(axes))

    def weights(x):
        out = None
        for k, axis in enumerate(axes):
            w = cubic_kernel((x[:, k:k + 1] - axis) / spec.spacing[k])
            out = w if out is None else (out.unsqueeze(-1) * w.unsqueeze(-2)).flatten(-2)
        return out
    return weights(x1) @ kernel.base(grid, grid) @ weights(x2).T


def with_values(kernel, lengthscale=0.6, outputscale=1.3):
    with torch.no_grad():
        for module in kernel.modules():
            if hasattr(module, "raw_lengthscale"):
                module.lengthscale = lengthscale
            if isinstance(module, Scale):
                module.outputscale = outputscale
    return kernel.double()


def copy_hyperparameters(source, target):
    """The exact model's parameters into the SKI model (kernel.* -> kernel.base.*)."""
    state = target.state_dict()
    for key, value in source.state_dict().items():
        state[key.replace("kernel.", "kernel.base.", 1) if key.startswith("kernel.") else key] = value
    target.load_state_dict(state)


# ----- the kernel ------------------------------------------------------------------------------

BASES = {  # name -> (base, d, grid size, the structure of K_UU)
    "rbf_1d": (lambda: Scale(RBF()), 1, 25, "Toeplitz"),
    "matern_1d": (lambda: Matern(nu=1.5), 1, 25, "Toeplitz"),
    "rbf_ard_2d": (lambda: Scale(RBF(ard_dims=2)), 2, (12, 15), "Kronecker"),
    "product_of_1d_2d": (lambda: Scale(Matern(nu=0.5, active_dims=[0]) * RQ(active_dims=[1])), 2, 12, "Kronecker"),
    "matern_2d": (lambda: Scale(Matern(nu=2.5, ard_dims=2)), 2, 12, "Toeplitz"),
    "sum_2d": (lambda: RBF() + Periodic(), 2, 10, "Toeplitz"),
    "rbf_3d": (lambda: Scale(RBF(ard_dims=3)), 3, 8, "Kronecker"),
    "rq_3d": (lambda: RQ(), 3, 8, "Toeplitz"),
}


@pytest.mark.parametrize("name", list(BASES))
def test_kernel_matches_the_dense_definition(name):
    make, d, grid, structure = BASES[name]
    kernel = with_values(Interpolated(make(), grid_size=grid))
    x1, _ = data(30, d)
    x2 = data(9, d, seed=1)[0] * 0.9
    kernel.grid(x1, x2)  # fixed from both
    op = kernel.operator(x1)
    assert type(op.grid).__name__ == structure
    if structure == "Toeplitz" and d > 1:
        assert op.grid.levels == d  # multi-level: exact for any stationary kernel
    ref = dense_ski(kernel, x1, x1)
    assert torch.allclose(kernel(x1, x1), ref, rtol=0, atol=1e-12)
    assert torch.allclose(kernel(x1, x2), dense_ski(kernel, x1, x2), rtol=0, atol=1e-12)
    assert torch.allclose(kernel.diag(x1), ref.diagonal(), rtol=0, atol=1e-12)
    assert torch.allclose(op.diagonal(), ref.diagonal(), rtol=0, atol=1e-12)
    assert torch.allclose(op.matmul(torch.ones(30, dtype=F64)), ref.sum(-1), rtol=0, atol=1e-11)


def test_dense_kernel_is_differentiable():
    """The dense matrix and the diagonal carry gradients to the base kernel's parameters (the
    Cholesky path differentiates them)."""
    kernel = with_values(Interpolated(Scale(RBF(ard_dims=2)), grid_size=10))
    x, _ = data(20, 2)
    kernel.grid(x)
    params = tuple(kernel.parameters())
    grads = torch.autograd.grad(kernel(x).sum() + kernel.diag(x).sum(), params)
    reference = dense_ski(kernel, x, x)
    expected = torch.autograd.grad(reference.sum() + reference.diagonal().sum(), params)
    for g, e in zip(grads, expected):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d,make", [(1, lambda: Scale(RBF())), (2, lambda: Scale(Matern(nu=2.5)))])
def test_kernel_converges_to_the_base_kernel(d, make):
    x, _ = data(200, d)
    errors = []
    for size in (10, 20, 40):
        kernel = with_values(Interpolated(make(), grid_size=size))
        errors.append(float((kernel(x) - kernel.base(x)).detach().abs().max()))
    assert errors[0] > 4 * errors[1] > 16 * errors[2] > 0, errors


# ----- mll and gradients: convergence to the exact GP, BBMM against the SKI Cholesky --------------

def mll_and_grads(model):
    model.zero_grad()
    value = model.mll()
    value.backward()
    return float(value.detach()), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("d,make,sizes", [(1, lambda: Scale(RBF()), (20, 40, 80, 160)),
                                          (2, lambda: Scale(RBF(ard_dims=2)), (10, 20, 40))],
                         ids=["1d", "2d"])
def test_mll_and_gradient_converge_to_the_exact_gp(d, make, sizes):
    """n = 2,000 float64, the same hyperparameters: |mll_SKI - mll_exact| (per point) and the
    gradient's relative error shrink as the grid grows (dense Cholesky of W K_UU W^T, no CG noise).
    Measured: 1-D 4.8e-4, 1.6e-5, 3.7e-6, 5.1e-8 and 0.38, 1.0e-2, 1.8e-3, 1.3e-4; 2-D 5.6e-3,
    1.2e-3, 4.1e-5 and 4.0, 7.3e-2, 2.7e-3."""
    x, y = data(2000, d)
    exact = fg.ExactGP(x, y, make(), solver=fg.Cholesky())
    value, grads = mll_and_grads(exact)
    scale = max(float(g.abs().max()) for g in grads)
    mll_errors, grad_errors = [], []
    for size in sizes:
        ski = fg.ExactGP(x, y, Interpolated(make(), grid_size=size), solver=fg.Cholesky())
        copy_hyperparameters(exact, ski)
        ski_value, ski_grads = mll_and_grads(ski)
        mll_errors.append(abs(ski_value - value))
        grad_errors.append(max(float((a - b).abs().max()) for a, b in zip(ski_grads, grads)) / scale)
    assert all(a > b for a, b in zip(mll_errors, mll_errors[1:])), mll_errors
    assert all(a > b for a, b in zip(grad_errors, grad_errors[1:])), grad_errors
    assert mll_errors[-1] < 1e-4 and grad_errors[-1] < 1e-2, (mll_errors, grad_errors)


def test_bbmm_mll_and_gradient_match_the_ski_cholesky():
    """The CG path (mBCG + SLQ, bilinear gradients through K_UU's generators) against the dense
    Cholesky of the same SKI kernel, n = 2,000, 2-D Kronecker grid."""
    x, y = data(2000, 2)
    cholesky = fg.ExactGP(x, y, Interpolated(Scale(RBF(ard_dims=2)), grid_size=30), solver=fg.Cholesky())
    value, grads = mll_and_grads(cholesky)
    cg = fg.ExactGP(x, y, Interpolated(Scale(RBF(ard_dims=2)), grid_size=30),
                    solver=fg.CG(tol=1e-6, probes=64, precond=fg.PivotedCholesky(rank=30)))
    cg.load_state_dict(cholesky.state_dict())
    torch.manual_seed(1)
    cg_value, cg_grads = mll_and_grads(cg)
    assert cg.diagnostics["backend"] == "ski" and cg.diagnostics["precision"] == "float64"
    assert abs(cg_value - value) < 5e-3, (cg_value, value)
    for a, b in zip(cg_grads, grads):
        assert float((a - b).abs().max()) < 0.05 * max(float(b.abs().max()), 0.1), (a, b)


# ----- the model: training, predictions, LOVE, files ------------------------------------------------

def fitted_model(n=600, d=1, size=100, seed=0, **cg):
    x, y = data(n, d, seed=seed)
    settings = dict(precond=fg.PivotedCholesky(rank=20), variance_tol=None, exact_var_max=0, root_rank=100)
    model = fg.ExactGP(x, y, Interpolated(Scale(RBF()), grid_size=size), solver=fg.CG(**{**settings, **cg}))
    fg.fit(model, iters=5, lr=0.1, progress=False)
    return model


def test_training_predictions_love_and_files(tmp_path):
    model = fitted_model()
    assert model.diagnostics["backend"] == "ski"
    bounds = model.kernel.grid_bounds
    assert bounds is not None and bounds.shape == (1, 2)
    x_test = torch.linspace(-1.9, 1.9, 50, dtype=F64).unsqueeze(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short Lanczos root may warn that it has not converged
        post = model.posterior(x_test)
    assert model.diagnostics["variance_method"] == "lanczos"
    # against the SKI kernel solved exactly (dense Cholesky of W K_UU W^T + noise)
    exact = fg.ExactGP(model.train_x, model.train_y, Interpolated(Scale(RBF()), grid_size=100),
                       solver=fg.Cholesky())
    exact.load_state_dict(model.state_dict())
    reference = exact.posterior(x_test)
    assert float((post.mean - reference.mean).abs().max()) < 1e-3
    assert float(((post.variance - reference.variance) / reference.variance).abs().max()) < 0.05
    assert bool((post.variance >= reference.variance * (1 - 1e-6)).all())  # LOVE: upper bounds
    path = tmp_path / "ski.fgp"
    fg.save(model, path)
    loaded = fg.load(path)
    assert isinstance(loaded.kernel, Interpolated) and torch.equal(loaded.kernel.grid_bounds, bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = loaded.posterior(x_test)
    assert torch.allclose(again.mean, post.mean, rtol=0, atol=1e-12)
    assert torch.allclose(again.variance, post.variance, rtol=1e-10, atol=1e-14)


def test_certified_and_cg_variances():
    model = fitted_model(n=300, variance_tol=0.01, exact_var_max=1024)
    x_test = torch.linspace(-1.5, 1.5, 7, dtype=F64).unsqueeze(-1)
    exact = fg.ExactGP(model.train_x, model.train_y, Interpolated(Scale(RBF()), grid_size=100),
                       solver=fg.Cholesky())
    exact.load_state_dict(model.state_dict())
    post, reference = model.posterior(x_test), exact.posterior(x_test)
    assert model.diagnostics["variance_method"] == "cg"
    assert float(((post.variance - reference.variance) / reference.variance).abs().max()) < 0.011
    prior = model.prior(x_test).covariance
    assert isinstance(prior, InterpolatedOperator)
    assert torch.allclose(prior.to_dense(), exact.kernel(x_test), atol=1e-12)


def test_grid_fixed_at_the_first_covariance_kept_in_the_state(tmp_path):
    """grid_bounds=None: the first covariance (the first mll) fixes the grid from the training
    inputs, widened by 2 spacings; it travels in the state dict (files), the configuration keeps
    None (a resumed fit recomputes the same grid); given bounds are part of the configuration."""
    kernel = Interpolated(Scale(RBF()), grid_size=[50])
    x, y = data(100, 1)
    model = fg.ExactGP(x, y, kernel, solver=fg.CG())
    assert kernel.grid_bounds is None  # the model's input checks (diagonals) did not fix it
    model.mll()
    low, high = kernel.grid_bounds[0].tolist()
    h = (high - low) / (50 - 3)
    assert low == pytest.approx(float(x.min()) - 2 * h) and high == pytest.approx(float(x.max()) + 2 * h)
    assert model.config()["kernel"]["args"] == {"grid_size": [50], "grid_bounds": None}
    fg.save(model, tmp_path / "m.fgp")
    assert torch.equal(fg.load(tmp_path / "m.fgp").kernel.grid_bounds, kernel.grid_bounds)
    fresh = fg.ExactGP(x, y, Interpolated(Scale(RBF()), grid_size=[50]), solver=fg.CG())
    fresh.load_state_dict(model.state_dict())  # an unset grid takes the state's
    assert torch.equal(fresh.kernel.grid_bounds, kernel.grid_bounds)
    given = Interpolated(Scale(RBF()), grid_size=[50], grid_bounds=[(low, high)])
    config = fg.serialize.kernel_to_config(given)
    assert config["args"] == {"grid_size": [50], "grid_bounds": [[low, high]]}
    assert torch.equal(fg.serialize.kernel_from_config(config).grid_bounds, given.grid_bounds)
    with pytest.raises(ValueError, match="outside the interpolation grid"):
        model.set_train_data(x * 2, y)  # the grid is fixed: new data must lie in it


@pytest.mark.parametrize("precond", ["pivoted_cholesky", "rpcholesky", "nystrom", "none"])
def test_preconditioners_that_need_only_products_and_rows(precond):
    config = {"pivoted_cholesky": fg.PivotedCholesky(rank=10), "rpcholesky": fg.RPCholesky(rank=10),
              "nystrom": fg.Nystrom(rank=10), "none": None}[precond]
    x, y = data(300, 2)
    model = fg.ExactGP(x, y, Interpolated(Scale(Matern(nu=1.5)), grid_size=20), solver=fg.CG(precond=config))
    value = model.mll()
    value.backward()
    assert torch.isfinite(value) and model.diagnostics["backend"] == "ski"


@pytest.mark.parametrize("precond", [fg.Vecchia(neighbors=8), fg.PivotedCholesky(rank=10, block_size=16)],
                         ids=["vecchia", "blocks"])
def test_preconditioners_that_need_kernel_blocks_are_refused(precond):
    x, y = data(200, 1)
    model = fg.ExactGP(x, y, Interpolated(Scale(RBF()), grid_size=40), solver=fg.CG(precond=precond))
    with pytest.raises(TypeError, match="needs a KernelOperator, got InterpolatedOperator"):
        model.mll()


def test_no_grid_sized_matrix_is_formed(monkeypatch):
    """A 1-D grid of 2^18 points (G x G float64: 550 GB) trains and predicts: nothing forms it."""
    def refuse(self, *args):
        raise AssertionError("a dense grid matrix was formed")
    monkeypatch.setattr(Toeplitz, "to_dense", refuse)
    monkeypatch.setattr(Kronecker, "to_dense", refuse)
    x, y = data(500, 1)
    model = fg.ExactGP(x, y, Interpolated(Scale(RBF()), grid_size=1 << 18),
                       solver=fg.CG(precond=fg.PivotedCholesky(rank=5), variance_tol=None, exact_var_max=0,
                                    root_rank=20, max_iters=200))
    value = model.mll()
    value.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = model.posterior(torch.linspace(-1.5, 1.5, 20, dtype=F64).unsqueeze(-1))
    assert torch.isfinite(value) and torch.isfinite(post.mean).all() and bool((post.variance > 0).all())


# ----- GPyTorch's GridInterpolationKernel ------------------------------------------------------------

@pytest.mark.parametrize("d,size", [(1, 40), (2, 20), (3, 10)])
def test_kernel_matrix_matches_gpytorch(d, size):
    """flashgp's W K_UU W^T equals GPyTorch 1.15.2's GridInterpolationKernel(RBFKernel()) on the
    same grid (GPyTorch's set to flashgp's float64 points: its own is made in float32) to round-off.
    A shared lengthscale: with RBFKernel(ard_num_dims=2) GPyTorch 1.15.2 applies the lengthscales in
    reverse dimension order (its matrix equals flashgp's with the lengthscales swapped)."""
    gpytorch = pytest.importorskip("gpytorch")
    kernel = Interpolated(RBF(), grid_size=size, grid_bounds=[(-2.0, 2.0)] * d).double()
    x1, _ = data(60, d)
    x2 = data(11, d, seed=1)[0]
    spec = kernel.grid(x1)
    points = [s + h * torch.arange(g, dtype=F64) for s, h, g in zip(spec.start, spec.spacing, spec.shape)]
    theirs = gpytorch.kernels.GridInterpolationKernel(gpytorch.kernels.RBFKernel(), grid_size=size, num_dims=d,
                                                      grid_bounds=[(-2.0, 2.0)] * d).double()
    theirs.update_grid(points)
    theirs.base_kernel.lengthscale = torch.tensor(0.45, dtype=F64)
    with torch.no_grad():
        kernel.base.lengthscale = 0.45
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs_k, theirs_cross = theirs(x1, x1).to_dense(), theirs(x1, x2).to_dense()
        assert torch.allclose(kernel(x1, x1), theirs_k, rtol=0, atol=1e-13)
        assert torch.allclose(kernel(x1, x2), theirs_cross, rtol=0, atol=1e-13)


# ----- refusals ----------------------------------------------------------------------------------

def test_bad_arguments():
    with pytest.raises(TypeError, match="base: expected a flashgp kernel"):
        Interpolated("rbf", grid_size=10)
    with pytest.raises(TypeError, match="translation-invariant kernel .* got Linear"):
        Interpolated(Linear(), grid_size=10)
    with pytest.raises(TypeError, match="an Interpolated kernel cannot contain another"):
        Interpolated(Scale(Interpolated(RBF(), grid_size=10)), grid_size=10)
    for bad in (3, 0, 2.5, True, "10", [10, 10, 10, 10], [10, 3]):
        with pytest.raises((TypeError, ValueError), match="grid_size: expected"):
            Interpolated(RBF(), grid_size=bad)
    for bad in ([(1.0, 0.0)], [(0.0, float("inf"))], [(0.0, 1.0, 2.0)], "bounds", [(0, 1)] * 4):
        with pytest.raises(ValueError, match="grid_bounds: expected"):
            Interpolated(RBF(), grid_size=10, grid_bounds=bad)
    with pytest.raises(ValueError, match="grid_bounds: 2 .* pairs but grid_size has 1"):
        Interpolated(RBF(), grid_size=[10], grid_bounds=[(0, 1), (0, 1)])
    assert Interpolated(RBF(), grid_size=10, grid_bounds=(0, 1)).grid_bounds.shape == (1, 2)


def test_bad_inputs():
    kernel = Interpolated(RBF(), grid_size=8)
    with pytest.raises(ValueError, match="supports inputs of 1 to 3 columns .* got 4.*SKIP"):
        kernel(torch.rand(5, 4, dtype=F64))
    with pytest.raises(ValueError, match="grid_size: 2 sizes for inputs of 1 columns"):
        Interpolated(RBF(), grid_size=[8, 8])(torch.rand(5, 1, dtype=F64))
    with pytest.raises(ValueError, match="does not differentiate with respect to its inputs"):
        kernel.operator(torch.rand(5, 1, dtype=F64, requires_grad=True))
    with pytest.raises(ValueError, match="NaN or infinite"):
        kernel.operator(torch.tensor([[0.0], [float("nan")]], dtype=F64))
    fixed = Interpolated(RBF(), grid_size=8, grid_bounds=[(0.0, 1.0)])
    with pytest.raises(ValueError, match=r"outside the interpolation grid in dimension 0 .* pass grid_bounds"):
        fixed.operator(torch.tensor([[0.5], [1.2]], dtype=F64))


def test_interpolated_inside_another_kernel():
    """Scale(Interpolated(...)) evaluates densely (Cholesky) but is refused on the CG path, which
    would lose the structure; the message names the form that works."""
    x, y = data(100, 1)
    kernel = Scale(Interpolated(RBF(), grid_size=30))
    dense = fg.ExactGP(x, y, kernel, solver=fg.Cholesky())
    assert torch.isfinite(dense.mll())
    cg = fg.ExactGP(x, y, Scale(Interpolated(RBF(), grid_size=30)), solver=fg.CG())
    with pytest.raises(TypeError, match=r"Interpolated \(at kernel.base\) .* Interpolated\(Scale\(RBF\(\)\)"):
        cg.mll()


def test_float32_model():
    x, y = data(400, 1)
    model = fg.ExactGP(x.float(), y.float(), Interpolated(Scale(RBF()), grid_size=60),
                       solver=fg.CG(precond=fg.PivotedCholesky(rank=10), variance_tol=None))
    value = model.mll()
    reference = fg.ExactGP(x, y, Interpolated(Scale(RBF()), grid_size=60), solver=fg.Cholesky())
    reference.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    assert model.kernel.grid_bounds.dtype == torch.float32 and model.diagnostics["precision"] == "float32"
    assert abs(float(value) - float(reference.mll())) < 0.05
    assert math.isfinite(float(model.posterior(x[:10].float()).mean.sum()))


@pytest.mark.parametrize("kernel_batch", [(), (2,)], ids=["shared_kernel", "batch_kernel"])
def test_batch_of_gps(kernel_batch):
    """x (2, n, 1): one grid for both; the CG mll and predictions against the SKI Cholesky."""
    x = torch.rand(2, 200, 1, generator=gen(3), dtype=F64) * 4 - 2
    y = torch.sin(2 * x[..., 0]) + 0.1 * torch.randn(2, 200, generator=gen(4), dtype=F64)
    make = lambda solver: fg.ExactGP(x, y, Interpolated(Scale(RBF(batch_shape=kernel_batch)), grid_size=50),
                                     solver=solver)
    cg = make(fg.CG(tol=1e-6, probes=64, variance_tol=None, exact_var_max=100))
    value = cg.mll()
    cholesky = make(fg.Cholesky())
    cholesky.load_state_dict(cg.state_dict())
    assert torch.allclose(value, cholesky.mll(), atol=5e-3)
    x_test = torch.linspace(-1.5, 1.5, 5, dtype=F64).unsqueeze(-1).expand(2, 5, 1)
    post, reference = cg.posterior(x_test), cholesky.posterior(x_test)
    assert torch.allclose(post.mean, reference.mean, atol=1e-4)
    assert torch.allclose(post.variance, reference.variance, rtol=1e-3)
