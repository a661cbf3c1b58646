# Tests for flashgp.linalg.kronecker_eigen (K_hat = B ⊗ K_x + diag(d) ⊗ I by the eigendecompositions
# of B and K_x) and the exact engine's use of it (engines.cholesky.kronecker_parts, KroneckerSystem):
# inv_quad, log det and every closed-form gradient against autograd through a dense float64
# Cholesky of the n t x n t matrix (1e-8 relative), including a smooth kernel whose K_x has many
# nearly equal, tiny (and round-off negative) eigenvalues; solve / whiten identities.
import pytest
import torch

import flashgp as fg
from flashgp.engines.cholesky import CholeskyEngine, KroneckerSystem, kronecker_parts
from flashgp.errors import NotPSDError
from flashgp.kernels import LMC, RBF, Matern, Multitask
from flashgp.linalg.kronecker_eigen import KroneckerEigen, KroneckerInvQuadLogdet

F64 = torch.float64
RTOL = 1e-8


def gen(seed):
    return torch.Generator().manual_seed(seed)


def relative(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


def num(value):
    return float(value.detach())


def problem(case, seed=0):
    """(K_x (n, n), B (t, t), noise (t,), resid (n t,)) float64 leaves that require grad."""
    g = gen(seed)
    if case == "smooth":  # RBF, lengthscale 3 on [0, 1]: K_x numerically of rank ~10 out of 80
        n, t, x = 80, 3, torch.rand(80, 1, generator=g, dtype=F64)
        base = RBF().double()
        base.lengthscale = torch.tensor(3.0, dtype=F64)
        noise = torch.tensor([0.004, 0.01, 0.002], dtype=F64)
    else:
        n, t, x = 20, 4, torch.rand(20, 2, generator=g, dtype=F64) * 2
        base = Matern(nu=2.5, ard_dims=2).double()
        base.lengthscale = torch.tensor([[0.6, 0.9]], dtype=F64)
        noise = {"matern": torch.tensor([0.05, 0.2, 0.1, 0.03], dtype=F64),
                 "unequal_noise": torch.tensor([1e-5, 2.0, 0.01, 0.3], dtype=F64)}[case]
    w = torch.randn(t, 2, generator=g, dtype=F64)
    b = w @ w.T + torch.diag(torch.rand(t, generator=g, dtype=F64) * 0.3 + 0.05)
    resid = torch.randn(n * t, generator=g, dtype=F64)
    return [v.detach().clone().requires_grad_() for v in (base(x), b, noise, resid)]


def dense_k_hat(kx, b, noise):
    n = kx.shape[-1]
    return torch.kron(b, kx) + torch.kron(torch.diag(noise), torch.eye(n, dtype=F64))


def dense_inv_quad_logdet(kx, b, noise, resid):
    chol = torch.linalg.cholesky(dense_k_hat(kx, b, noise))
    alpha = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)
    return (resid * alpha).sum(), 2 * chol.diagonal().log().sum()


@pytest.mark.parametrize("case", ["matern", "unequal_noise", "smooth"])
def test_values_and_all_gradients_match_dense_cholesky(case):
    """inv_quad, log det and the gradients for K_x, B, d and r (with unequal upstream weights on
    the two outputs) equal autograd through a dense Cholesky of B ⊗ K_x + D ⊗ I to 1e-8; for the
    smooth kernel (eigenvalues clamped at 0) the gradients are finite too."""
    inputs = problem(case)
    quad, logdet = KroneckerInvQuadLogdet.apply(*inputs)
    ref_quad, ref_logdet = dense_inv_quad_logdet(*inputs)
    assert abs(num(quad - ref_quad)) <= RTOL * abs(num(ref_quad))
    assert abs(num(logdet - ref_logdet)) <= RTOL * max(1.0, abs(num(ref_logdet)))
    grads = torch.autograd.grad(0.7 * quad - 1.3 * logdet, inputs)
    expected = torch.autograd.grad(0.7 * ref_quad - 1.3 * ref_logdet, inputs)
    for name, got, want in zip(("K_x", "B", "noise", "resid"), grads, expected):
        assert bool(torch.isfinite(got).all()), name
        assert relative(got, want) < RTOL, (name, relative(got, want))
    if case == "smooth":
        assert KroneckerEigen.build(*inputs[:3]).clamped > 0  # the round-off case is exercised


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0)], ids=["inv_quad_only", "logdet_only"])
def test_each_output_alone(weights):
    """The gradients of inv_quad alone and of log det alone (one upstream weight zero)."""
    inputs = problem("matern", seed=3)
    quad, logdet = KroneckerInvQuadLogdet.apply(*inputs)
    ref_quad, ref_logdet = dense_inv_quad_logdet(*inputs)
    grads = torch.autograd.grad(weights[0] * quad + weights[1] * logdet, inputs, allow_unused=True)
    expected = torch.autograd.grad(weights[0] * ref_quad + weights[1] * ref_logdet, inputs, allow_unused=True)
    for got, want in zip(grads, expected):
        want = torch.zeros_like(got) if want is None else want
        assert float((got - want).abs().max()) <= RTOL * max(1.0, float(want.abs().max()))


def test_smooth_kernel_hyperparameter_gradients_stay_finite():
    """Through K_x = RBF(x) and B = W Wᵀ + diag(v) (n = 80, lengthscale 3: many nearly equal tiny
    eigenvalues), the gradients for the lengthscale, W, v and the noise are finite and equal the
    dense Cholesky's; differentiating eigh itself would divide by the eigenvalue gaps."""
    g = gen(4)
    n, t = 80, 3
    x = torch.rand(n, 1, generator=g, dtype=F64)
    log_ls = torch.tensor(3.0, dtype=F64).log().requires_grad_()
    w = torch.randn(t, 2, generator=g, dtype=F64, requires_grad=True)
    v = torch.full((t,), 0.1, dtype=F64, requires_grad=True)
    noise = torch.tensor([0.01, 0.02, 0.005], dtype=F64, requires_grad=True)
    y = torch.randn(n * t, generator=g, dtype=F64)

    def parts():
        kx = torch.exp(-0.5 * (x - x.T).square() / log_ls.exp() ** 2)
        return kx, w @ w.T + torch.diag(v), noise, y

    params = (log_ls, w, v, noise)
    quad, logdet = KroneckerInvQuadLogdet.apply(*parts())
    ref_quad, ref_logdet = dense_inv_quad_logdet(*parts())
    grads = torch.autograd.grad(quad + logdet, params)
    expected = torch.autograd.grad(ref_quad + ref_logdet, params)
    for got, want in zip(grads, expected):
        assert bool(torch.isfinite(got).all())
        assert relative(got, want) < RTOL


@pytest.mark.parametrize("case", ["matern", "unequal_noise", "smooth"])
def test_solve_whiten_and_logdet_identities(case):
    """solve(R) = K_hat^-1 R; whiten(R)ᵀ whiten(S) = Rᵀ K_hat^-1 S; K_hat solve(R) = R; logdet
    equals slogdet; the factors have the documented shapes."""
    kx, b, noise, _ = (v.detach() for v in problem(case, seed=1))
    t, n = b.shape[0], kx.shape[0]
    eig = KroneckerEigen.build(kx, b, noise)
    assert eig.shape == (t, n) and eig.p.shape == (t, t) and eig.q.shape == (n, n) and eig.s.shape == (t, n)
    k_hat = dense_k_hat(kx, b, noise)
    g = gen(2)
    r, s = torch.randn(n * t, 3, generator=g, dtype=F64), torch.randn(n * t, 2, generator=g, dtype=F64)
    solved = eig.solve(r)
    assert relative(solved, torch.linalg.solve(k_hat, r)) < RTOL
    assert relative(k_hat @ solved, r) < RTOL
    assert relative(eig.whiten(r).T @ eig.whiten(s), r.T @ torch.linalg.solve(k_hat, s)) < RTOL
    assert abs(float(eig.logdet() - torch.linalg.slogdet(k_hat)[1])) < RTOL * max(1.0, float(eig.logdet().abs()))
    assert relative(eig.unrotate(eig.rotate(r)), torch.kron(torch.diag(1 / noise), torch.eye(n, dtype=F64)) @ r) < RTOL


def test_one_task_is_a_plain_gp():
    """t = 1: K_hat = b K_x + d I, the same numbers as a scaled single-output problem."""
    kx, _, _, _ = (v.detach() for v in problem("matern"))
    b, noise = torch.tensor([[1.7]], dtype=F64), torch.tensor([0.05], dtype=F64)
    r = torch.randn(kx.shape[0], generator=gen(5), dtype=F64)
    quad, logdet = KroneckerInvQuadLogdet.apply(kx, b, noise, r)
    k_hat = 1.7 * kx + 0.05 * torch.eye(kx.shape[0], dtype=F64)
    assert abs(num(quad - r @ torch.linalg.solve(k_hat, r))) < RTOL * num(quad)
    assert abs(num(logdet - torch.logdet(k_hat))) < RTOL * abs(num(logdet))


# ----- the exact engine ---------------------------------------------------------------------------

def grid_problem(n=10, t=3, seed=0):
    """(Multitask kernel, task-major grid (n t, 3), per-row noise constant within each task, resid)."""
    g = gen(seed)
    kernel = Multitask(Matern(nu=1.5, ard_dims=2), t, 2).double()
    kernel.base.lengthscale = torch.tensor([[0.5, 0.8]], dtype=F64)
    pts = torch.rand(n, 2, generator=g, dtype=F64)
    x = torch.cat([pts.repeat(t, 1), torch.arange(t).repeat_interleave(n).to(F64).unsqueeze(-1)], -1)
    noise = torch.tensor([0.1, 0.02, 0.3], dtype=F64)[:t].repeat_interleave(n)
    return kernel, x, noise, torch.randn(n * t, generator=g, dtype=F64)


def test_engine_takes_the_kronecker_path_and_matches_dense():
    """CholeskyEngine.inv_quad_logdet on a grid with per-task noise: structure "kronecker", values
    and gradients (for every kernel parameter) equal those of the dense Cholesky path, which the
    engine takes when the noise varies within a task."""
    kernel, x, noise, r = grid_problem()
    engine = fg.Cholesky().engine()
    quad, logdet, info = engine.inv_quad_logdet(kernel, x, noise, r)
    assert info.as_dict()["structure"] == "kronecker"
    params = list(kernel.parameters())
    grads = torch.autograd.grad(quad + logdet, params)
    bumped = noise.clone()
    bumped[0] *= 1 + 1e-13  # not constant within task 0 any more (the same K_hat to 1e-13)
    assert kronecker_parts(kernel, x, bumped) is None
    ref_quad, ref_logdet, ref_info = engine.inv_quad_logdet(kernel, x, bumped, r)
    assert "structure" not in ref_info.as_dict()
    expected = torch.autograd.grad(ref_quad + ref_logdet, params)
    assert abs(num(quad - ref_quad)) < RTOL * num(ref_quad)
    assert abs(num(logdet - ref_logdet)) < RTOL * abs(num(ref_logdet))
    for got, want in zip(grads, expected):
        assert relative(got, want) < RTOL


def test_kronecker_parts_only_for_grids_with_per_task_noise():
    """kronecker_parts: (K_x, B, d) for a Multitask kernel on a grid; None for heterotopic rows,
    an LMC (no exact factors) and a batched noise."""
    kernel, x, noise, _ = grid_problem()
    kx, b, d = kronecker_parts(kernel, x, noise)
    assert kx.shape == (10, 10) and b.shape == (3, 3) and d.tolist() == [0.1, 0.02, 0.3]
    assert kronecker_parts(kernel, x[torch.randperm(30, generator=gen(1))], noise) is None
    assert kronecker_parts(LMC(kernel), x, noise) is None
    assert kronecker_parts(kernel, x, noise.unsqueeze(0)) is None


def test_system_solve_and_whiten_match_dense():
    """engine.system on a grid is a KroneckerSystem whose solve and whiten match the dense K_hat,
    reporting the eigenvalues clamped."""
    kernel, x, noise, r = grid_problem()
    system = fg.Cholesky().engine().system(kernel, x, noise)
    assert isinstance(system, KroneckerSystem) and system.info.as_dict()["structure"] == "kronecker"
    with torch.no_grad():
        k_hat = kernel(x) + torch.diag(noise)
    rhs = torch.stack([r, r.flip(0)], -1)
    assert relative(system.solve(rhs), torch.linalg.solve(k_hat, rhs)) < RTOL
    white = system.whiten(rhs)
    assert relative(white.T @ white, rhs.T @ torch.linalg.solve(k_hat, rhs)) < RTOL


def test_training_record_reports_clamped_eigenvalues():
    """The training record's eigen_clamped equals the count KroneckerEigen.build clamps (as the
    prediction system's record does)."""
    noise = problem("smooth")[2].detach()
    n = 80
    kernel = Multitask(RBF(), 3, 2).double()
    kernel.base.lengthscale = torch.tensor(3.0, dtype=F64)
    pts = torch.rand(n, 1, generator=gen(0), dtype=F64)
    x = torch.cat([pts.repeat(3, 1), torch.arange(3).repeat_interleave(n).to(F64).unsqueeze(-1)], -1)
    row_noise = noise.repeat_interleave(n)
    engine = CholeskyEngine(fg.Cholesky())
    expected = engine.system(kernel, x, row_noise).info.eigen_clamped
    assert expected > 0
    _, _, info = engine.inv_quad_logdet(kernel, x, row_noise, torch.randn(3 * n, dtype=F64))
    assert info.as_dict()["eigen_clamped"] == expected


def test_non_finite_factors_raise_not_psd():
    """A NaN task variance (or kernel parameter) is refused with NotPSDError naming the part."""
    kernel, x, noise, r = grid_problem()
    with torch.no_grad():
        kernel.raw_task_variance[1] = float("nan")
    with pytest.raises(NotPSDError, match="task covariance"):
        fg.Cholesky().engine().inv_quad_logdet(kernel, x, noise, r)
    kernel, x, noise, r = grid_problem()
    with torch.no_grad():
        kernel.base.raw_lengthscale.fill_(float("nan"))
    with pytest.raises(NotPSDError, match="kernel matrix"):
        fg.Cholesky().engine().system(kernel, x, noise)
