# Accuracy of BBMM against float64 Cholesky references: the core inv_quad_logdet (values and
# gradients) and ExactGP with fg.CG (mll, gradients, posterior by CG solves and by LOVE).
import math
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, RQ, Linear, Matern, Scale
from flashgp.linalg import inv_quad_logdet, pivoted_cholesky_preconditioner
from flashgp.operators import AddedDiag, KernelOperator

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel(a, b):
    """Relative error of a w.r.t. the reference b, in the 2-norm over all entries."""
    return float((a.detach() - b.detach()).norm() / b.detach().norm())


def rel_scalar(a, b):
    """|a - b| / |b| for scalars (0-d tensors)."""
    return abs(float((a.detach() - b.detach()) / b.detach()))


def flat(tensors):
    return torch.cat([t.detach().flatten() for t in tensors])


# ================================================================================================
# inv_quad_logdet: the BBMM core, n = 300
# ================================================================================================

N_CORE = 300
CORE_KERNELS = {
    "rbf": lambda: Scale(RBF(ard_dims=2)),
    "matern15": lambda: Scale(Matern(nu=1.5, ard_dims=2)),
    "sum": lambda: Scale(RBF()) + Linear(),  # generic (autograd) gradient path
}


def core_problem(kind, batch=(), seed=0, x_grad=True, n=N_CORE):
    """x (*batch, n, 2) on [0, 4]^2, a kernel with set hyperparameters, noise and rhs, all float64."""
    g = gen(seed)
    x = (torch.rand(*batch, n, 2, generator=g, dtype=F64) * 4).requires_grad_(x_grad)
    kernel = CORE_KERNELS[kind]().double()
    first = kernel.kernels[0] if kind == "sum" else kernel
    first.outputscale = 1.5
    first.base.lengthscale = [0.7, 1.1] if first.base.ard_dims else 0.9
    if kind == "sum":
        kernel.kernels[1].variance = 0.2
    noise = torch.full((*batch, n), 0.1, dtype=F64).requires_grad_(True)
    rhs = torch.randn(*batch, n, generator=g, dtype=F64).requires_grad_(True)
    return x, kernel, noise, rhs


def cholesky_reference(x, kernel, noise, rhs):
    """(rhs^T K^-1 rhs, log det K) with K = kernel(x) + diag(noise), by a dense float64 Cholesky."""
    k_hat = kernel(x) + torch.diag_embed(noise)
    chol = torch.linalg.cholesky(k_hat)
    inv_quad = (torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1) * rhs).sum(-1)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return inv_quad, logdet


def bbmm(x, kernel, noise, rhs, rank=50, probes=200, tol=1e-10, seed=1, info=None, **kwargs):
    kernel_op = KernelOperator(kernel, x)
    precond = pivoted_cholesky_preconditioner(kernel_op, noise.detach(), rank) if rank else None
    return inv_quad_logdet(AddedDiag(kernel_op, noise), rhs, precond, probes=probes, tol=tol,
                           lanczos_iters=50, generator=gen(seed), info=info, **kwargs)


@pytest.mark.parametrize("kind", list(CORE_KERNELS))
@pytest.mark.parametrize("batch", [(), (2,)])
def test_forward_matches_cholesky(kind, batch):
    x, kernel, noise, rhs = core_problem(kind, batch)
    ref_iq, ref_ld = cholesky_reference(x, kernel, noise, rhs)
    info = {}
    iq, ld = bbmm(x, kernel, noise, rhs, rank=50, probes=50, info=info)
    assert iq.shape == ld.shape == batch
    torch.testing.assert_close(iq.detach(), ref_iq.detach(), rtol=1e-8, atol=0)
    # log det: within 1% (in practice ~0.1%) with a rank-50 preconditioner and 50 probes
    assert float(((ld - ref_ld) / ref_ld).detach().abs().max()) < 0.01
    assert info["converged"] and info["residual"] < 1e-9 and info["iterations"] >= 1


def test_logdet_without_preconditioner():
    x, kernel, noise, rhs = core_problem("rbf")
    ref_iq, ref_ld = cholesky_reference(x, kernel, noise, rhs)
    iq, ld = bbmm(x, kernel, noise, rhs, rank=0, probes=200)
    torch.testing.assert_close(iq.detach(), ref_iq.detach(), rtol=1e-8, atol=0)
    assert rel_scalar(ld, ref_ld) < 0.01


def test_preconditioner_makes_logdet_more_accurate():
    # same probe count: the pivoted-Cholesky preconditioner cuts the error of the estimate
    x, kernel, noise, rhs = core_problem("matern15", seed=2)
    _, ref_ld = cholesky_reference(x, kernel, noise, rhs)
    err = {rank: [abs(float((bbmm(x, kernel, noise, rhs, rank=rank, probes=20, seed=s)[1] - ref_ld).detach()))
                  for s in range(4)] for rank in (0, 100)}
    assert sum(err[100]) < 0.5 * sum(err[0])


def _weighted_grads(iq, ld, inputs, w_iq, w_ld):
    return torch.autograd.grad((w_iq * iq + w_ld * ld).sum(), inputs, allow_unused=True)


@pytest.mark.parametrize("kind", list(CORE_KERNELS))
@pytest.mark.parametrize("batch", [(), (2,)])
def test_gradients_match_cholesky(kind, batch):
    x, kernel, noise, rhs = core_problem(kind, batch, seed=3)
    params = list(kernel.parameters())
    inputs = [*params, noise, rhs, x]
    ref = _weighted_grads(*cholesky_reference(x, kernel, noise, rhs), inputs, 1.0, 1.0)
    got = _weighted_grads(*bbmm(x, kernel, noise, rhs, rank=50, probes=200), inputs, 1.0, 1.0)
    k = len(params)
    # tight CG tolerance and 200 probes: kernel hyperparameters and the noise diagonal within 5%
    # (observed <= 1.5%); the rhs gradient 2 K^-1 rhs is a solve, exact to the CG tolerance;
    # x gets one Hutchinson estimate per coordinate (n*d of them), so 15% (observed <= 8.5%)
    assert rel(flat(got[:k]), flat(ref[:k])) < 0.05
    assert rel(got[k], ref[k]) < 0.05
    assert rel(got[k + 1], ref[k + 1]) < 1e-8
    assert rel(got[k + 2], ref[k + 2]) < 0.15
    for g, r in zip(got, ref):
        assert g.shape == r.shape


@pytest.mark.parametrize("kind", ["rbf", "sum"])
def test_inv_quad_gradient_is_exact(kind):
    # with no weight on log det the backward pass uses only the solve: no probe noise at all
    x, kernel, noise, rhs = core_problem(kind, seed=4)
    inputs = [*kernel.parameters(), noise, rhs, x]
    ref = _weighted_grads(*cholesky_reference(x, kernel, noise, rhs), inputs, 0.7, 0.0)
    got = _weighted_grads(*bbmm(x, kernel, noise, rhs, probes=5), inputs, 0.7, 0.0)
    for g, r in zip(got, ref):
        assert rel(g, r) < 1e-7


def test_logdet_gradient_weight_is_applied():
    # the log det gradient scales with its incoming gradient (and the inv quad's does not leak in)
    x, kernel, noise, rhs = core_problem("rbf", seed=5)
    params = list(kernel.parameters())
    inputs = [*params, noise]
    one = _weighted_grads(*bbmm(x, kernel, noise, rhs), inputs, 0.0, 1.0)
    three = _weighted_grads(*bbmm(x, kernel, noise, rhs), inputs, 0.0, -3.0)
    for a, b in zip(one, three):
        torch.testing.assert_close(b, -3.0 * a, rtol=1e-9, atol=1e-12)
    ref = _weighted_grads(*cholesky_reference(x, kernel, noise, rhs), inputs, 0.0, 1.0)
    k = len(params)
    # diag(K^-1) alone (the noise gradient of log det) is a per-entry Hutchinson estimate: 15%
    assert rel(flat(one[:k]), flat(ref[:k])) < 0.05
    assert rel(one[k], ref[k]) < 0.15


def test_logdet_gradient_has_no_bias():
    # many probes on a small problem: the stochastic trace estimate must converge to the exact
    # gradient (a wrong probe normalization or whitening shows up as a bias of several percent);
    # observed <= 0.9% with 3000 probes, tolerance 2.5%
    x, kernel, noise, rhs = core_problem("rbf", seed=8, n=80)
    params = list(kernel.parameters())
    inputs = [*params, noise]
    ref = _weighted_grads(*cholesky_reference(x, kernel, noise, rhs), inputs, 0.0, 1.0)
    got = _weighted_grads(*bbmm(x, kernel, noise, rhs, rank=10, probes=3000), inputs, 0.0, 1.0)
    assert rel(flat(got[:2]), flat(ref[:2])) < 0.025
    assert rel(got[2].sum(), ref[2].sum()) < 0.025  # tr(K^-1): the gradient for a scalar noise


def test_deterministic_given_a_generator():
    x, kernel, noise, rhs = core_problem("matern15", seed=6)
    a = bbmm(x, kernel, noise, rhs, probes=10, seed=11)
    b = bbmm(x, kernel, noise, rhs, probes=10, seed=11)
    c = bbmm(x, kernel, noise, rhs, probes=10, seed=12)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_backward_releases_the_operator():
    """After its backward pass the result no longer holds the operator (a dense backend's n x n
    matrix), although the loss tensor lives on, as in a training loop that keeps the last loss
    while the next step builds its operator; a second backward says so."""
    import gc
    import weakref
    x = torch.rand(40, 2, dtype=F64, generator=gen(3))
    kernel = Scale(RBF()).double()
    kernel_op = KernelOperator(kernel, x, backend="dense")
    held = weakref.ref(kernel_op._dense)
    inv_quad, logdet = inv_quad_logdet(AddedDiag(kernel_op, torch.full((40,), 0.1, dtype=F64)),
                                       torch.randn(40, dtype=F64, generator=gen(4)), probes=4)
    del kernel_op
    loss = inv_quad + logdet
    loss.backward(retain_graph=True)
    gc.collect()
    assert held() is None and all(p.grad is not None for p in kernel.parameters())
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()


def test_no_convergence_warns_and_reports():
    x, kernel, noise, rhs = core_problem("matern15", seed=7)
    info = {}
    with pytest.warns(fg.NumericalWarning) as record:
        iq, ld = bbmm(x, kernel, noise, rhs, rank=0, probes=4, tol=1e-10, max_iters=3, info=info)
    assert any("residual" in str(w.message) for w in record)
    assert not info["converged"] and info["iterations"] == 3
    assert torch.isfinite(iq).all() and torch.isfinite(ld).all()


# ================================================================================================
# ExactGP with fg.CG vs fg.Cholesky (random problems, n = 2000)
# ================================================================================================

N_GP, D_GP, M_TEST = 2000, 3, 100
# The BBMM settings the accuracy targets are stated for: CG tolerance 0.01, 20 probes and a
# rank-200 pivoted-Cholesky preconditioner. Over six probe seeds the observed worst errors are
# mll 0.34%, gradient 3.2%, posterior mean 0.03%, variance 0.7% (targets 1%, 10%, 1%, 5%).
ACCURATE_CG = fg.CG(tol=0.01, probes=20, precond=fg.PivotedCholesky(200))
GP_KERNELS = {
    "rbf": lambda: RBF(ard_dims=D_GP),
    "matern": lambda: Matern(nu=2.5, ard_dims=D_GP),
    "rq": lambda: RQ(ard_dims=D_GP),
}


def gp_data(n, d, seed, dtype=F64):
    """A smooth function of d inputs on [-1, 1]^d plus noise, standardized; test points too.

    Drawn in float64 and then cast, so every dtype gets the same data."""
    g = gen(seed)
    x = torch.rand(n, d, generator=g, dtype=F64) * 2 - 1
    f = torch.sin(3 * x[:, 0]) + torch.cos(2 * x[:, 1]) * x[:, -1]
    y = f + 0.1 * torch.randn(n, generator=g, dtype=F64)
    y = (y - y.mean()) / y.std()
    x_test = torch.rand(M_TEST, d, generator=g, dtype=F64) * 2.2 - 1.1
    return x.to(dtype), y.to(dtype), x_test.to(dtype)


def gp_model(kind, n=N_GP, d=D_GP, seed=0, solver=None, dtype=F64):
    x, y, x_test = gp_data(n, d, seed, dtype)
    base = {"rbf": RBF, "matern": lambda **kw: Matern(nu=2.5, **kw), "rq": RQ}[kind](ard_dims=d)
    model = fg.ExactGP(x, y, Scale(base), solver=solver)
    base.lengthscale = torch.linspace(0.8, 1.2, d, dtype=dtype)
    model.kernel.outputscale = 1.3
    model.likelihood.noise = 0.05
    model.mean.constant = 0.1
    return model, x_test


def dense_reference(model, x_test):
    """Hand-written float64 GP: mll / n with its gradient, posterior mean and variance."""
    x, y = model.train_x.double(), model.train_y.double()
    n = x.shape[-2]
    params = list(model.parameters())
    k_hat = model.kernel(x).double() + model.likelihood.noise.double() * torch.eye(n, dtype=F64)
    resid = y - model.mean(x).double()
    chol = torch.linalg.cholesky(k_hat)
    alpha = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)
    mll = -0.5 * (resid @ alpha + 2 * chol.diagonal().log().sum() + n * math.log(2 * math.pi)) / n
    grads = torch.autograd.grad(mll, params)
    with torch.no_grad():
        cross = model.kernel(x_test, x).double()
        mean = model.mean(x_test).double() + cross @ alpha.detach()
        white = torch.linalg.solve_triangular(chol.detach(), cross.T, upper=False)
        var = model.kernel.diag(x_test).double() - white.square().sum(0)
        cov = model.kernel(x_test).double() - white.T @ white
    return {"mll": mll.detach(), "grads": flat(grads), "mean": mean, "var": var, "cov": cov}


@pytest.fixture(scope="module", params=list(GP_KERNELS))
def gp_case(request):
    torch.manual_seed(0)
    model, x_test = gp_model(request.param, solver=fg.Cholesky())
    return request.param, model, x_test, dense_reference(model, x_test)


def test_cholesky_path_matches_dense_reference(gp_case):
    # (gradients of the Cholesky path are checked at small n in test_exact_gp.py)
    _, model, x_test, ref = gp_case
    model.solver = fg.Cholesky()
    with torch.no_grad():
        mll = model.mll()
    assert model.diagnostics["path"] == "cholesky"
    torch.testing.assert_close(mll, ref["mll"], rtol=1e-10, atol=0)
    post = model.posterior(x_test)
    assert rel(post.mean, ref["mean"]) < 1e-9 and rel(post.variance, ref["var"]) < 1e-7


def test_cg_mll_and_gradient(gp_case):
    _, model, _, ref = gp_case
    model.solver = ACCURATE_CG
    mll = model.mll(generator=gen(0))
    grads = torch.autograd.grad(mll, list(model.parameters()))
    diag = model.diagnostics
    assert diag["path"] == "cg" and diag["converged"] and 0 < diag["precond_rank"] <= 200
    assert rel_scalar(mll, ref["mll"]) < 0.01
    assert rel(flat(grads), ref["grads"]) < 0.10


def test_cg_posterior_exact_variances(gp_case):
    _, model, x_test, ref = gp_case
    model.solver = ACCURATE_CG
    post = model.posterior(x_test)  # M_TEST <= exact_var_max: variances by CG solves
    assert model.diagnostics["path"] == "cg" and model.diagnostics["variance_method"] == "cg"
    assert rel(post.mean, ref["mean"]) < 1e-2
    assert rel(post.variance, ref["var"]) < 5e-2
    assert bool((post.variance >= 0).all())
    # the full covariance: entrywise within 5% of the largest variance (the posterior covariance
    # is nearly diagonal, so a Frobenius-relative measure would be dominated by tiny off-diagonal
    # entries whose CG error, ~eval_tol * |k_*|^2 / noise, is absolute rather than relative)
    cov_err = (post.covariance.to_dense() - ref["cov"]).abs().max()
    assert float(cov_err) < 0.05 * float(ref["var"].max())


def test_default_cg_mll_is_close(gp_case):
    # the default training settings (tol 1, 10 probes, rank 100) stay within a few percent
    _, model, _, ref = gp_case
    model.solver = fg.CG()
    mll = model.mll(generator=gen(1))
    assert rel_scalar(mll, ref["mll"]) < 0.03


def test_love_variances_easier_problem():
    # LOVE (Lanczos root of K_hat^-1, exact_var_max=0) on an easier problem (n=1000, d=2, Matern
    # 5/2, root rank 100): observed 0.26% relative error, tolerance 2%. Q T^-1 Q^T <= K_hat^-1 in
    # the PSD order, so LOVE variances are upper bounds of the exact ones, and never negative.
    model, x_test = gp_model("matern", n=1000, d=2, seed=3, solver=fg.Cholesky())
    ref = dense_reference(model, x_test)
    model.solver = fg.CG(tol=0.01, probes=20, precond=fg.PivotedCholesky(100), exact_var_max=0,
                         root_rank=100, variance_tol=None)  # LOVE alone, uncertified
    post = model.posterior(x_test)
    assert model.diagnostics["variance_method"] == "lanczos"
    assert rel(post.mean, ref["mean"]) < 1e-2
    assert rel(post.variance, ref["var"]) < 2e-2
    assert rel(post.covariance.to_dense(), ref["cov"]) < 2e-2
    assert bool((post.variance >= ref["var"] - 1e-9).all())
    assert bool((post.variance > 0).all()) and model.diagnostics["variance_clamped"] == 0


def test_love_variances_hard_problem_are_not_negative():
    # a harder problem (n=2000, d=3, low root rank): LOVE is loose but must stay a valid bound
    model, x_test = gp_model("matern", seed=4, solver=fg.Cholesky())
    ref = dense_reference(model, x_test)
    model.solver = fg.CG(tol=0.01, exact_var_max=0, root_rank=50, variance_tol=None)  # LOVE alone
    with pytest.warns(fg.NumericalWarning, match="have not converged"):
        post = model.posterior(x_test)  # and it says so (see the test below)
    variance = post.variance
    assert model.diagnostics["variance_method"] == "lanczos"
    assert model.diagnostics["variance_root_change"] > 0.1
    assert model.diagnostics["variance_clamped"] == 0
    assert bool((variance >= ref["var"] - 1e-9).all())
    # the latent variance can never exceed the prior variance
    assert bool((post.variance <= model.kernel.diag(x_test).detach() + 1e-9).all())


def test_love_root_change_tracks_the_variance_error():
    # root_change (how much the second half of the Lanczos vectors lowered the variances of y*)
    # falls with the error it cannot see: measured on this problem at root ranks 25-400 it was
    # 0.81 / 0.52 / 0.25 / 0.063 / 0.0085 against median excesses of 1.05 / 0.33 / 0.072 /
    # 0.0091 / 0.0006 over the exact variance of y*
    model, x_test = gp_model("matern", seed=4, solver=fg.Cholesky())
    ref = dense_reference(model, x_test)
    noise = model.likelihood.noise.detach()
    changes, excesses = [], []
    for rank in (25, 100, 400):
        model.solver = fg.CG(tol=0.01, exact_var_max=0, root_rank=rank)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fg.NumericalWarning)
            post = model.posterior(x_test)
        changes.append(model.diagnostics["variance_root_change"])
        excesses.append(float(((post.variance - ref["var"]) / (ref["var"] + noise)).median()))
    assert changes[0] > changes[1] > changes[2] and excesses[0] > excesses[1] > excesses[2]
    assert changes[1] > excesses[1] and changes[2] > excesses[2]  # above it once it is small
    assert changes[0] > 0.5 and changes[2] < 0.02 and excesses[2] < 0.005
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.NumericalWarning)  # converged: no warning
        model.posterior(x_test)


def test_love_root_of_one_vector_bounds_the_variance():
    # root_rank = 1 (no first half to compare with): the variances are upper bounds, and the
    # root change is the whole downdate of the one vector
    model, x_test = gp_model("matern", seed=4, solver=fg.Cholesky())
    ref = dense_reference(model, x_test)
    model.solver = fg.CG(tol=0.01, exact_var_max=0, root_rank=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fg.NumericalWarning)
        post = model.posterior(x_test)
    assert bool((post.variance >= ref["var"] - 1e-9).all())
    left = post.covariance.left
    y_var = (model.kernel.diag(x_test).detach() - left.square().sum(-1)) + model.likelihood.noise.detach()
    assert model.diagnostics["variance_root_change"] == pytest.approx(
        float((left.square().sum(-1) / y_var).median()), rel=1e-6)


def test_love_root_of_all_n_dimensions_is_complete():
    # root_rank >= n: the Lanczos root spans everything, its variances are exact, nothing warns
    model, x_test = gp_model("matern", n=60, d=2, seed=5, solver=fg.Cholesky())
    ref = dense_reference(model, x_test)
    model.solver = fg.CG(tol=0.01, eval_tol=1e-8, exact_var_max=0, root_rank=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.NumericalWarning)
        post = model.posterior(x_test)
    assert model.diagnostics["variance_root_change"] == 0.0
    assert rel(post.variance, ref["var"]) < 1e-4


def test_cg_float32_against_float64_cholesky():
    # float32 data (the GPU setting) on the CG path vs the float64 Cholesky reference
    model64, x_test = gp_model("rbf", seed=5, solver=fg.Cholesky())
    ref = dense_reference(model64, x_test)
    model, x_test32 = gp_model("rbf", seed=5, solver=ACCURATE_CG, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fg.NumericalWarning)
        mll = model.mll(generator=gen(0))
        post = model.posterior(x_test32)
    assert mll.dtype == torch.float32
    assert rel_scalar(mll.double(), ref["mll"]) < 0.01
    assert rel(post.mean.double(), ref["mean"]) < 1e-2
    assert rel(post.variance.double(), ref["var"]) < 5e-2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["matern", "rq"])
def test_cg_large_blocked(kind):
    # n = 4000 on the blocked backend (the large-n code path), same accuracy targets
    n = 4000
    model, x_test = gp_model(kind, n=n, seed=6, solver=fg.Cholesky())
    ref = dense_reference(model, x_test)
    model.solver = fg.CG(tol=0.01, probes=20, precond=fg.PivotedCholesky(200), backend="blocked")
    mll = model.mll(generator=gen(0))
    grads = torch.autograd.grad(mll, list(model.parameters()))
    assert model.diagnostics["backend"] == "blocked"
    assert rel_scalar(mll, ref["mll"]) < 0.01
    assert rel(flat(grads), ref["grads"]) < 0.10
    post = model.posterior(x_test)
    assert rel(post.mean, ref["mean"]) < 1e-2 and rel(post.variance, ref["var"]) < 5e-2
