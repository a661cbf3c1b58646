# Tests for fg.IterGP (the computation-aware posterior, Wenger et al. 2022) and
# flashgp.linalg.itergp: the exact posterior at a full budget, the projection C_i against its
# dense formula, the variance decomposition, the RKHS bound (Theorem 2), budgets, files, errors.
import math

import pytest
import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale
from flashgp.likelihoods import Gaussian
from flashgp.linalg.itergp import itergp_solve, projected_precision_dense
from flashgp.means import Zero
from flashgp.models.itergp import IterGPPosterior
from flashgp.testing import check_model, exact_gp_loss_reference, exact_gp_posterior_reference

F64 = torch.float64
POLICIES = ("cg", "cholesky", "pivoted")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def problem(n=40, d=2, m=15, seed=0, dtype=F64):
    """x (n, d), y (n,), test inputs (m, d): a smooth function plus noise 0.1 on [-2, 2]^d."""
    g = gen(seed)
    x = torch.rand(n, d, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, -1] + 0.1 * torch.randn(n, generator=g, dtype=F64)
    xt = torch.rand(m, d, generator=g, dtype=F64) * 4 - 2
    return x.to(dtype), y.to(dtype), xt.to(dtype)


def kernel(d=2, lengthscale=0.8):
    return Scale(Matern(nu=2.5, ard_dims=d, lengthscale=lengthscale), outputscale=1.3)


def pair(policy, budget, seed=0, noise=0.05, **kw):
    """(IterGP, ExactGP) with the same parameters (Cholesky), and the test inputs."""
    x, y, xt = problem(seed=seed, **kw)
    parts = lambda: dict(likelihood=Gaussian(noise=noise), solver=fg.Cholesky())  # noqa: E731
    exact = fg.ExactGP(x, y, kernel(x.shape[-1]), **parts())
    model = fg.IterGP(x, y, kernel(x.shape[-1]), policy=policy, budget=budget, **parts())
    model.load_state_dict(exact.state_dict())
    return model, exact, xt


def k_hat(model):
    x = model.train_x.double()
    return model.kernel(x).double() + torch.diag_embed(model.likelihood.noise_diag(x.shape[0]).double())


# ----- a full budget is the exact posterior -----------------------------------------------------

@pytest.mark.parametrize("policy", POLICIES)
def test_full_budget_is_the_exact_posterior(policy):
    model, exact, xt = pair(policy, 40)
    post, ref = model.posterior(xt), exact.posterior(xt)
    assert isinstance(post, IterGPPosterior)
    assert model.diagnostics["iterations"] == 40 and model.diagnostics["stopped"] == "complete"
    torch.testing.assert_close(post.mean, ref.mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(post.covariance.to_dense(), ref.covariance.to_dense(), rtol=0, atol=1e-8)
    assert float(post.computational_variance.max()) < 1e-8
    # the bound's round-off allowance covers the mean's round-off where nothing is left to compute
    assert bool(((post.mean - post.exact_mean).abs() <= post.mean_error_bound).all())


@pytest.mark.parametrize("policy", POLICIES)
def test_budget_beyond_n_takes_n_actions(policy):
    model, exact, xt = pair(policy, 500)
    torch.testing.assert_close(model.posterior(xt).mean, exact.posterior(xt).mean, rtol=0, atol=1e-8)
    assert model.diagnostics["iterations"] == 40


@pytest.mark.parametrize("noise", [1e-2, 1e-4, 1e-6])
def test_full_cg_budget_is_exact_on_ill_conditioned_systems(noise):
    """CG residual actions give way to pivoted unit vectors at round-off: C_n = K_hat^{-1}."""
    g = gen(3)
    n = 80
    x = torch.randn(n, 2, generator=g, dtype=F64)
    K = torch.exp(-0.5 * torch.cdist(x, x) ** 2) + noise * torch.eye(n, dtype=F64)
    b = torch.randn(n, generator=g, dtype=F64)
    inv = torch.linalg.inv(K)
    result = itergp_solve(lambda v: K @ v, lambda k: K[:, k], K.diagonal(), b, "cg", n)
    assert result.stopped == "complete" and result.iterations == n
    C = result.factor @ result.factor.T
    assert float((C - inv).abs().max() / inv.abs().max()) < 1e-7
    gram = result.factor.T @ K @ result.factor
    assert float((gram - torch.eye(n, dtype=F64)).abs().max()) < 1e-7


# ----- C_i against its dense formula --------------------------------------------------------------

@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("i", [1, 7, 25])
def test_projection_matches_dense_formula(policy, i):
    """C_i = S (S^T K_hat S)^{-1} S^T for the actions taken; mean and covariance from it."""
    model, _, xt = pair(policy, i)
    post = model.posterior(xt)
    state = model._prediction.state
    assert state.actions.shape == (40, i) and state.iterations == i
    Kh = k_hat(model)
    C = projected_precision_dense(Kh, state.actions)
    torch.testing.assert_close(state.factor @ state.factor.T, C, rtol=0, atol=1e-9)
    x, y = model.train_x, model.train_y
    cross = model.kernel(xt, x)
    mean = model.mean(xt) + cross @ C @ (y - model.mean(x))
    cov = model.kernel(xt) - cross @ C @ cross.T
    torch.testing.assert_close(post.mean, mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(post.covariance.to_dense(), cov, rtol=0, atol=1e-9)


def test_cholesky_policy_is_the_subset_posterior_and_takes_an_order():
    """Unit vectors at the first i points: the posterior mean of those points alone; ``order``
    picks them."""
    order = [5, 17, 2, 33, 8]
    model, _, xt = pair("cholesky", 5)
    model.order = order
    x, y = model.train_x, model.train_y
    subset = fg.ExactGP(x[order], y[order], kernel(), likelihood=Gaussian(noise=0.05), solver=fg.Cholesky())
    subset.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("train_x", "train_y",
                                                                                        "policy_order")},
                           strict=False)
    post, ref = model.posterior(xt), subset.posterior(xt)
    torch.testing.assert_close(post.mean, ref.mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(post.variance, ref.variance, rtol=0, atol=1e-9)
    assert model._prediction.state.pivots.tolist() == order


def test_pivoted_policy_takes_the_greedy_pivots():
    model, _, xt = pair("pivoted", 6)
    model.posterior(xt)
    Kh = k_hat(model)
    pivots, residual = [], Kh.clone()
    for _ in range(6):  # greedy pivoted Cholesky by hand: the largest Schur-complement diagonal
        k = int(torch.where(torch.isin(torch.arange(40), torch.tensor(pivots, dtype=torch.long)), -math.inf,
                            residual.diagonal()).argmax())
        pivots.append(k)
        col = residual[:, k] / residual[k, k].sqrt()
        residual = residual - torch.outer(col, col)
    assert model._prediction.state.pivots.tolist() == pivots


# ----- the decomposition ----------------------------------------------------------------------------

@pytest.mark.parametrize("policy", POLICIES)
def test_combined_is_mathematical_plus_computational_and_shrinks_with_i(policy):
    previous = None
    for i in (1, 3, 10, 20, 40):
        model, exact, xt = pair(policy, i, seed=1)
        post = model.posterior(xt)
        ref = exact.posterior(xt)
        torch.testing.assert_close(post.mathematical_variance, ref.variance, rtol=0, atol=1e-12)
        torch.testing.assert_close(post.exact_mean, ref.mean, rtol=0, atol=1e-12)
        comp = post.computational_variance
        assert bool((comp >= 0).all())
        torch.testing.assert_close(post.variance, post.mathematical_variance + comp, rtol=0, atol=1e-12)
        # the computational part directly: K(x, X) (K_hat^{-1} - C_i) K(X, x)
        state = model._prediction.state
        cross = model.kernel(xt, model.train_x)
        direct = (cross @ torch.linalg.solve(k_hat(model), cross.T)).diagonal() - (cross @ state.factor).square().sum(-1)
        torch.testing.assert_close(comp, direct.clamp_min(0), rtol=0, atol=1e-10)
        if previous is not None:
            assert bool((comp <= previous + 1e-12).all()), f"computational variance grew at i={i}"
        previous = comp
    assert float(previous.max()) < 1e-8


def test_combined_variance_never_below_the_exact_one_and_predict_adds_noise():
    model, exact, xt = pair("cg", 5)
    post = model.posterior(xt)
    assert bool((post.variance >= exact.posterior(xt).variance - 1e-12).all())
    pred = model.predict(xt)
    torch.testing.assert_close(pred.variance, post.variance + 0.05, rtol=1e-12, atol=0)


# ----- the RKHS bound (Wenger et al. 2022, Theorem 2) --------------------------------------------

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("policy", POLICIES)
def test_rkhs_bound(seed, policy):
    """g = sum_j a_j k_sigma(., z_j) in the RKHS of the latent-plus-noise kernel, data y = g(X):
    |g(x) - mean_i(x)| <= sqrt(var_i(x) + sigma^2) ||g|| (Theorem 2, x not a training input) and
    |mean_i(x) - mean_exact(x)| <= sqrt(computational variance(x)) ||g||, attained by the worst g
    (for the unit-vector policies, whose actions do not depend on the data)."""
    g = gen(100 + seed)
    n, d, sigma2 = 30, 2, 0.02 + 0.2 * float(torch.rand(1, generator=g))
    x = torch.rand(n, d, generator=g, dtype=F64) * 4 - 2
    z = torch.rand(12, d, generator=g, dtype=F64) * 4 - 2  # centers, not training or test inputs
    xt = torch.rand(25, d, generator=g, dtype=F64) * 4 - 2
    a = torch.randn(12, generator=g, dtype=F64)
    k = kernel(d, lengthscale=0.5 + float(torch.rand(1, generator=g))).to(F64)
    with torch.no_grad():
        norm = float(a @ (k(z) + sigma2 * torch.eye(12, dtype=F64)) @ a) ** 0.5  # ||g|| in H_{k_sigma}
        y = k(x, z) @ a
        truth = k(xt, z) @ a
    i = int(torch.randint(1, 20, (1,), generator=g))
    model = fg.IterGP(x, y, k, likelihood=Gaussian(noise=sigma2), mean=Zero(), policy=policy, budget=i,
                      solver=fg.Cholesky())
    post = model.posterior(xt)
    slack = 1e-10
    assert bool(((truth - post.mean).abs() <= (post.variance + sigma2).sqrt() * norm + slack).all())
    error = (post.mean - post.exact_mean).abs()
    assert bool((error <= post.computational_variance.sqrt() * norm + slack).all())
    assert bool((error <= post.mean_error_bound + slack).all())  # the smallest-norm g through the data
    assert bool((post.mean_error_bound <= post.computational_variance.sqrt() * norm + slack).all())
    if policy == "cg":  # its actions depend on the data: the worst g below would change C_i
        return
    # the worst g for test point 0 (actions independent of the data): h = sum_j w_j k_sigma(., x_j), w = (K_hat^{-1} - C_i) k(X, x0)
    Kh = k_hat(model)
    C = model._prediction.state.apply(torch.eye(n, dtype=F64))
    w = (torch.linalg.inv(Kh) - C) @ k(x, xt[:1]).detach().squeeze(-1)
    h_norm = float((w @ Kh @ w).detach()) ** 0.5
    worst = fg.IterGP(x, Kh @ w / h_norm, k, likelihood=Gaussian(noise=sigma2), mean=Zero(), policy=policy,
                      budget=i, solver=fg.Cholesky())
    wpost = worst.posterior(xt[:1])
    gap = float((wpost.mean - wpost.exact_mean).abs())
    assert gap == pytest.approx(float(wpost.computational_variance.sqrt()), rel=1e-6, abs=1e-9)


# ----- budgets ------------------------------------------------------------------------------------

def test_budget_in_seconds_stops():
    x, y, xt = problem(n=1500, seed=4)
    model = fg.IterGP(x, y, kernel(), likelihood=Gaussian(noise=1e-4), policy="cg", budget={"seconds": 0.01},
                      solver=fg.Cholesky())
    model.posterior(xt)
    info = model.diagnostics
    assert info["stopped"] == "seconds" and 1 <= info["iterations"] < 1500
    assert info["itergp_seconds"] < 2.0
    model.budget = {"iterations": 3, "seconds": 100.0}  # whichever comes first; a new budget rebuilds
    model.posterior(xt)
    assert model.diagnostics["iterations"] == 3 and model.diagnostics["stopped"] == "budget"


def test_assigning_policy_or_budget_rebuilds_the_posterior():
    model, _, xt = pair("cg", 5)
    first = model.posterior(xt).variance
    model.budget = 40
    assert model.budget == {"iterations": 40, "seconds": None}
    second = model.posterior(xt).variance
    assert model.diagnostics["iterations"] == 40 and bool((second <= first + 1e-12).all())
    model.policy = "pivoted"
    model.budget = 3
    model.posterior(xt)
    assert model.diagnostics["policy"] == "pivoted" and model.diagnostics["iterations"] == 3


# ----- training, files, the model contract --------------------------------------------------------

def test_fit_save_load_same_posterior(tmp_path):
    x, y, xt = problem(seed=5)
    model = fg.IterGP(x, y, kernel(), policy="cholesky", budget=12, order=list(range(39, 19, -1)))
    fg.fit(model, iters=5, lr=0.05, progress=False)
    post = model.posterior(xt)
    fg.save(model, tmp_path / "itergp.fgp")
    loaded = fg.load(tmp_path / "itergp.fgp")
    assert type(loaded) is fg.IterGP and loaded.config() == model.config()
    assert loaded.policy == "cholesky" and loaded.budget == {"iterations": 12, "seconds": None}
    assert loaded.order.tolist() == list(range(39, 19, -1))
    again = loaded.posterior(xt)
    torch.testing.assert_close(again.mean, post.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(again.variance, post.variance, rtol=0, atol=1e-12)


def test_loss_is_the_exact_gps():
    model, exact, _ = pair("cg", 3)
    torch.testing.assert_close(model.loss(), exact.loss(), rtol=1e-12, atol=0)


def _subset_reference(i):
    """IterGP("cholesky", budget i): the posterior of the first i points (float64, dense)."""
    def reference(model, x):
        sub = fg.ExactGP(model.train_x[:i], model.train_y[:i], model.kernel, likelihood=model.likelihood,
                         mean=model.mean, solver=fg.Cholesky())
        return exact_gp_posterior_reference(sub, x)
    return reference


@pytest.mark.parametrize("budget", [40, 9])
def test_model_contract(budget, tmp_path):
    """flashgp.testing.check_model: loss (the ExactGP's), posterior (exact at i = n; the first
    i points' posterior for the cholesky policy at i < n), prior, config, files, resumed fits."""
    x, y, xt = problem(seed=6)
    policy = "cg" if budget == 40 else "cholesky"
    reference = exact_gp_posterior_reference if budget == 40 else _subset_reference(budget)
    check_model(lambda: fg.IterGP(x, y, kernel(), policy=policy, budget=budget, solver=fg.Cholesky()), xt,
                loss_reference=exact_gp_loss_reference, posterior_reference=reference, tmp_dir=tmp_path,
                mean_atol=1e-8, var_rtol=1e-7, name=f"IterGP({policy}, {budget})")


def test_float32_data():
    x, y, xt = problem(seed=7)
    m64 = fg.IterGP(x, y, kernel(), policy="cg", budget=15, likelihood=Gaussian(noise=0.05))
    m32 = fg.IterGP(x.float(), y.float(), kernel(), policy="cg", budget=15, likelihood=Gaussian(noise=0.05))
    m32.load_state_dict(m64.state_dict())
    p32, p64 = m32.posterior(xt.float()), m64.posterior(xt)
    assert p32.mean.dtype == torch.float32 and p32.computational_variance.dtype == torch.float32
    # float32 parameters and data (as ExactGP's float32 contract: 1e-4 of the float64 posterior)
    torch.testing.assert_close(p32.mean.double(), p64.mean, rtol=0, atol=1e-3)
    torch.testing.assert_close(p32.variance.double(), p64.variance, rtol=0, atol=1e-3)
    torch.testing.assert_close(p32.computational_variance.double(), p64.computational_variance, rtol=0, atol=1e-3)


def test_differentiable_posterior_and_test_sets():
    model, _, xt = pair("cg", 10)
    plain = model.posterior(xt)
    xg = xt.clone().requires_grad_(True)
    post = model.posterior(xg)
    assert isinstance(post, IterGPPosterior)
    torch.testing.assert_close(post.mean, plain.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(post.variance, plain.variance, rtol=0, atol=1e-12)
    (post.mean.sum() + post.variance.sum()).backward()
    assert xg.grad is not None and bool(torch.isfinite(xg.grad).all())
    torch.testing.assert_close(post.computational_variance, plain.computational_variance, rtol=0, atol=1e-12)
    sets = model.posterior(torch.stack([xt[:5], xt[5:10]]))
    torch.testing.assert_close(sets.mean, plain.mean[:10].reshape(2, 5), rtol=0, atol=1e-12)
    torch.testing.assert_close(sets.computational_variance, plain.computational_variance[:10].reshape(2, 5),
                               rtol=0, atol=1e-12)


def test_cg_solver_gives_the_mathematical_part():
    x, y, xt = problem(seed=8)
    model = fg.IterGP(x, y, kernel(), policy="pivoted", budget=10, solver=fg.CG(eval_tol=1e-10, max_iters=500))
    exact = fg.ExactGP(x, y, kernel(), solver=fg.Cholesky())
    exact.load_state_dict(model.state_dict())
    post = model.posterior(xt)
    torch.testing.assert_close(post.exact_mean, exact.posterior(xt).mean, rtol=0, atol=1e-6)


# ----- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(policy="lanczos"), "policy: expected one of"),
    (dict(policy=None), "policy: expected one of"),
    (dict(budget=0), "budget: iterations must be a positive int"),
    (dict(budget=True), "budget: expected"),
    (dict(budget=2.5), "budget: expected"),
    (dict(budget={"secs": 1}), "budget: expected"),
    (dict(budget={}), "budget: expected"),
    (dict(budget={"seconds": -1}), "budget: seconds must be a positive finite number"),
    (dict(budget={"seconds": math.inf}), "budget: seconds must be a positive finite number"),
    (dict(order=[1, 2]), "order: only the 'cholesky' policy"),
    (dict(policy="cholesky", order=[0, 40]), r"order: expected indices in \[0, 40\)"),
    (dict(policy="cholesky", order=[1, 1]), "order: expected distinct indices"),
    (dict(policy="cholesky", order=torch.tensor([0.5])), "order: expected integer indices"),
])
def test_bad_arguments(kwargs, match):
    x, y, _ = problem()
    with pytest.raises(ValueError, match=match):
        fg.IterGP(x, y, kernel(), **kwargs)


def test_bad_assignments_and_batched_data():
    x, y, _ = problem()
    model = fg.IterGP(x, y, kernel())
    with pytest.raises(ValueError, match="budget: iterations must be a positive int"):
        model.budget = -3
    with pytest.raises(ValueError, match="policy: expected one of"):
        model.policy = "random"
    with pytest.raises(ValueError, match="order: only the 'cholesky' policy"):
        model.order = [0]
    with pytest.raises(ValueError, match=r"x: IterGP takes unbatched data"):
        fg.IterGP(x.expand(2, *x.shape), y.expand(2, *y.shape), kernel())
    with pytest.raises(TypeError, match="kernel: expected"):
        fg.IterGP(x, y, "rbf")


def test_itergp_solve_arguments():
    K = torch.eye(4, dtype=F64) * 2
    b = torch.ones(4, dtype=F64)
    solve = lambda **kw: itergp_solve(lambda v: K @ v, lambda k: K[:, k], K.diagonal(), b, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="policy: expected one of"):
        solve(policy="qr")
    with pytest.raises(ValueError, match="iterations: expected a positive int"):
        solve(iterations=0)
    with pytest.raises(ValueError, match="seconds: expected a positive finite number"):
        solve(seconds=0)
    with pytest.raises(ValueError, match="rhs: expected a tensor of shape"):
        itergp_solve(lambda v: v, lambda k: K[:, k], K.diagonal(), b.reshape(2, 2))
    # a zero right-hand side: CG has no residual to act on, pivoted unit vectors replace it
    result = itergp_solve(lambda v: K @ v, lambda k: K[:, k], K.diagonal(), torch.zeros(4, dtype=F64), "cg", 4)
    assert result.iterations == 4 and result.replaced == 4
    torch.testing.assert_close(result.apply(torch.eye(4, dtype=F64)), torch.eye(4, dtype=F64) / 2)


def test_preconditioned_cg_actions():
    g = gen(9)
    n = 50
    x = torch.randn(n, 3, generator=g, dtype=F64)
    K = torch.exp(-0.5 * torch.cdist(x, x) ** 2) + 0.01 * torch.eye(n, dtype=F64)
    b = torch.randn(n, generator=g, dtype=F64)
    jacobi = K.diagonal().reciprocal()
    result = itergp_solve(lambda v: K @ v, lambda k: K[:, k], K.diagonal(), b, "cg", n, precond=lambda v: jacobi * v)
    torch.testing.assert_close(result.solution, torch.linalg.solve(K, b), rtol=0, atol=1e-8)
    # the iterates are textbook preconditioned CG's
    v, r = torch.zeros(n, dtype=F64), b.clone()
    z = jacobi * r
    p = z.clone()
    for i in range(1, 7):
        kp = K @ p
        step = (r @ z) / (p @ kp)
        v, r_next = v + step * p, r - step * kp
        z_next = jacobi * r_next
        p, r, z = z_next + (r_next @ z_next) / (r @ z) * p, r_next, z_next
        it = itergp_solve(lambda u: K @ u, lambda k: K[:, k], K.diagonal(), b, "cg", i, precond=lambda u: jacobi * u)
        torch.testing.assert_close(it.solution, v, rtol=1e-10, atol=1e-12)
    part = itergp_solve(lambda v: K @ v, lambda k: K[:, k], K.diagonal(), b, "cg", 8, precond=lambda v: jacobi * v)
    torch.testing.assert_close(part.factor @ part.factor.T, projected_precision_dense(K, part.actions),
                               rtol=0, atol=1e-9)


# ----- preconditioned CG actions in the model --------------------------------------------------------

def test_preconditioned_cg_policy(tmp_path):
    """precond=fg.PivotedCholesky(rank=k): actions P^{-1} r; C_i is still the projection onto them,
    i = n is exact, and the file keeps the preconditioner."""
    x, y, xt = problem(n=60, seed=11)
    parts = lambda: dict(likelihood=Gaussian(noise=1e-3), solver=fg.Cholesky())  # noqa: E731
    exact = fg.ExactGP(x, y, kernel(), **parts())
    ref = exact.posterior(xt)
    errors = {}
    for precond in (None, fg.PivotedCholesky(rank=10)):
        model = fg.IterGP(x, y, kernel(), policy="cg", budget=8, precond=precond, **parts())
        model.load_state_dict(exact.state_dict())
        post = model.posterior(xt)
        state = model._prediction.state
        torch.testing.assert_close(state.factor @ state.factor.T, projected_precision_dense(k_hat(model), state.actions),
                                   rtol=0, atol=1e-8)
        errors[precond is None] = float((post.mean - ref.mean).abs().max())
        model.budget = 60
        full = model.posterior(xt)
        torch.testing.assert_close(full.mean, ref.mean, rtol=0, atol=1e-8)
        torch.testing.assert_close(full.variance, ref.variance, rtol=0, atol=1e-8)
    assert model.diagnostics["precond"] == fg.PivotedCholesky(rank=10).kind
    assert errors[False] != errors[True]  # other actions (not necessarily a better mean at i = 8)
    fg.save(model, tmp_path / "pcg.fgp")
    loaded = fg.load(tmp_path / "pcg.fgp")
    assert loaded.precond == model.precond and loaded.config() == model.config()
    torch.testing.assert_close(loaded.posterior(xt).mean, full.mean, rtol=0, atol=1e-12)


def test_precond_arguments():
    x, y, _ = problem()
    with pytest.raises(TypeError, match="precond: expected None or a preconditioner configuration"):
        fg.IterGP(x, y, kernel(), precond="jacobi")
    with pytest.raises(ValueError, match="precond: only the 'cg' policy takes a preconditioner"):
        fg.IterGP(x, y, kernel(), policy="pivoted", precond=fg.PivotedCholesky(rank=5))
