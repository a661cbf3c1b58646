# Tests for fg.MultitaskGP (ICM and LMC, grid and heterotopic data) against dense float64 references
# built by hand from the model's own parameters: the mll and its gradients (the Kronecker
# eigendecomposition path, dense Cholesky, CG), posteriors (mean, variance, cross-task covariance,
# samples; Cholesky, CG and LOVE), predictions with per-task noise, files, fits, checkpointed fits
# and the flashgp.testing model contract.
import copy
import math

import pytest
import torch

import flashgp as fg
from multitask_helpers import correlated_tasks, gen
from flashgp.distributions import multitask as mt_dist
from flashgp.models import multitask as mt_model
from flashgp.kernels import LMC, RBF, Matern
from flashgp.likelihoods import Gaussian
from flashgp.testing import check_model

F64 = torch.float64
N, T, D = 12, 3, 2
MEAN_TOL, VAR_RTOL = 1e-8, 1e-7
# CG configurations at round-off tolerances; a full-rank pivoted Cholesky makes the stochastic log
# determinant exact (P = K_hat), None leaves it to the probes
CG_EXACT = dict(tol=1e-10, eval_tol=1e-10, max_iters=1000, variance_tol=None)
SOLVERS = {
    "cholesky": lambda: fg.Cholesky(),
    "cg": lambda: fg.CG(**CG_EXACT, probes=8, precond=fg.PivotedCholesky(rank=N * T)),
    "love": lambda: fg.CG(**CG_EXACT, probes=8, precond=fg.PivotedCholesky(rank=N * T), exact_var_max=0,
                          root_rank=200),
}


def data(n=N, seed=0):
    """x (n, 2) on [0, 2]^2 and y (n, 3): three correlated smooth functions plus noise."""
    return correlated_tasks(n, seed)


def heterotopic(n=20, seed=1):
    """x (n, 2), y (n,) and a task per row (every task present)."""
    x, y = data(n, seed)
    tasks = torch.arange(n) % T
    return x, y[torch.arange(n), tasks], tasks


def randomize(model, seed=5):
    """Set every parameter (float64, away from the data-chosen start) for sharper comparisons."""
    g = gen(seed)
    members = model.kernel.members if isinstance(model.kernel, LMC) else [model.kernel]
    with torch.no_grad():
        for q, member in enumerate(members):
            member.task_factor.copy_(torch.randn(member.task_factor.shape, generator=g, dtype=F64) * 0.7)
            member.task_variance = torch.rand(T, generator=g, dtype=F64) * 0.3 + 0.1
            member.base.lengthscale = (torch.rand(member.base.lengthscale.shape, generator=g, dtype=F64) + 0.4) * (q + 1)
    noise = torch.tensor([0.05, 0.12, 0.02], dtype=F64)
    model.likelihood.noise = noise if model.likelihood.noise.dim() else noise[0]
    model.mean.base.constant = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    return model


def grid_model(solver="cholesky", kernel=None, rank=2, likelihood=None, n=N):
    x, y = data(n)
    kernel = Matern(nu=2.5, ard_dims=D) if kernel is None else kernel
    return randomize(fg.MultitaskGP(x, y, kernel, rank=rank, likelihood=likelihood, solver=SOLVERS[solver]()))


def hetero_model(solver="cholesky", kernel=None, rank=2):
    x, y, tasks = heterotopic()
    kernel = Matern(nu=2.5, ard_dims=D) if kernel is None else kernel
    return randomize(fg.MultitaskGP(x, y, kernel, rank=rank, task_index=tasks, solver=SOLVERS[solver]()))


def lmc_model(solver="cholesky", layout="grid"):
    kernels = [Matern(nu=2.5, ard_dims=D), RBF()]
    return hetero_model(solver, kernels, rank=1) if layout == "heterotopic" else grid_model(solver, kernels, rank=1)


def task_rows(x, tasks):
    return torch.cat([x, tasks.to(F64).unsqueeze(-1)], -1)


def test_grid(x):
    """Task-major inputs (t m, d + 1), built here (not by the library)."""
    return task_rows(x.repeat(T, 1), torch.arange(T).repeat_interleave(x.shape[0]))


test_grid.__test__ = False  # a helper, not a test


def dense_mll(model):
    """log N(y; m, K + diag(noise of each row's task)) / N from a dense Cholesky, differentiable."""
    x, y = model.train_x, model.train_y
    noise = model.likelihood.noise.expand(T)[x[:, -1].long()]
    k_hat = model.kernel(x) + torch.diag(noise)
    dist = torch.distributions.MultivariateNormal(model.mean(x), k_hat)
    return dist.log_prob(y) / y.shape[0]


def dense_posterior(model, inputs):
    """(mean, covariance) of the latent f at task-indexed inputs, dense float64."""
    with torch.no_grad():
        x = model.train_x
        k_hat = model.kernel(x) + torch.diag(model.likelihood.noise.expand(T)[x[:, -1].long()])
        cross = model.kernel(inputs, x)
        mean = model.mean(inputs) + cross @ torch.linalg.solve(k_hat, model.train_y - model.mean(x))
        return mean, model.kernel(inputs) - cross @ torch.linalg.solve(k_hat, cross.T)


def table(flat, m):
    return flat.reshape(T, m).T


def assert_grads_match(model, loss, reference, rtol=1e-8):
    """Gradients of ``loss`` and of ``reference`` for every parameter (relative to the largest)."""
    params = [p for p in model.parameters() if p.requires_grad and p.numel()]  # rank 0: W is (t, 0)
    got = torch.autograd.grad(loss, params, retain_graph=True)  # may share a graph with the reference
    want = torch.autograd.grad(reference, params)
    scale = max(float(w.abs().max()) for w in want)
    for p, a, b in zip(params, got, want):
        assert float((a - b).abs().max()) <= rtol * scale, (p.shape, float((a - b).abs().max()), scale)


# ----- the training objective ---------------------------------------------------------------------

@pytest.mark.parametrize("case", ["matern_rank2", "rbf_rank3", "rank0", "shared_noise"])
def test_grid_mll_on_the_eigen_path(case):
    """A grid with fg.Cholesky takes the Kronecker eigendecomposition path (structure "kronecker")
    and its mll and gradients equal the dense float64 MVN log density of the flattened data."""
    kernel, rank, likelihood = {"matern_rank2": (None, 2, None), "rbf_rank3": (RBF(ard_dims=D), 3, None),
                                "rank0": (None, 0, None), "shared_noise": (None, 1, Gaussian())}[case]
    model = grid_model(kernel=kernel, rank=rank, likelihood=likelihood)
    assert model.grid_points == N and model.num_train == N * T and model.input_dims == D
    mll = model.mll()
    assert model.diagnostics["structure"] == "kronecker" and model.diagnostics["path"] == "cholesky"
    ref = dense_mll(model)
    assert abs(float(mll.detach() - ref.detach())) < 1e-10
    assert_grads_match(model, mll, ref)


def test_rank_zero_is_independent_tasks():
    """rank 0: B = diag(v), and the mll is the sum of t single-output log densities (output scale
    v_a, noise d_a, constant mean c_a), each from its own dense Cholesky."""
    model = grid_model(rank=0)
    x, y = data()
    k = model.kernel.base(x).detach()
    total = 0.0
    for a in range(T):
        cov = model.kernel.task_variance[a].detach() * k + model.likelihood.noise[a].detach() * torch.eye(N, dtype=F64)
        total += torch.distributions.MultivariateNormal(model.mean.base.constant[a].detach().expand(N), cov).log_prob(y[:, a])
    assert abs(float(model.mll().detach()) - float(total) / (N * T)) < 1e-10


@pytest.mark.parametrize("build", ["grid", "heterotopic", "lmc_grid", "lmc_heterotopic"])
def test_cg_mll_matches_dense(build):
    """CG with a full-rank pivoted Cholesky preconditioner: the mll equals the dense reference to
    1e-8 nats per point (Kronecker, TaskBlocks and LMC sum operators); without a preconditioner the
    solve part inv_quad and its gradients (exact bilinear gradients of the operator) still do (the
    log determinant is then a probe estimate)."""
    make = {"grid": lambda s: grid_model(s), "heterotopic": lambda s: hetero_model(s),
            "lmc_grid": lambda s: lmc_model(s), "lmc_heterotopic": lambda s: lmc_model(s, "heterotopic")}[build]
    model = make("cg")
    mll = model.mll(generator=gen(0))
    assert model.diagnostics["path"] == "cg"
    assert abs(float(mll.detach() - dense_mll(model).detach())) < 1e-8
    plain = make("cholesky")
    engine = fg.CG(tol=1e-10, max_iters=1000, probes=32, precond=None).engine()
    resid = plain.train_y - plain.mean(plain.train_x)
    noise = plain.train_noise()
    quad, _, _ = engine.inv_quad_logdet(plain.kernel, plain.train_x, noise, resid, generator=gen(1))
    k_hat = plain.kernel(plain.train_x) + torch.diag(noise)
    ref_quad = resid @ torch.linalg.solve(k_hat, resid)
    assert abs(float((quad - ref_quad).detach())) < 1e-8 * float(ref_quad.detach())
    assert_grads_match(plain, quad, ref_quad, rtol=1e-7)


@pytest.mark.parametrize("build", ["heterotopic", "lmc_grid", "lmc_heterotopic"])
def test_dense_cholesky_mll_and_gradients(build):
    """Heterotopic data and LMCs have no Kronecker factors: the dense Cholesky path, mll and all
    gradients (W, v, lengthscales, per-task noise and means) equal the dense reference."""
    model = {"heterotopic": hetero_model, "lmc_grid": lmc_model,
             "lmc_heterotopic": lambda: lmc_model(layout="heterotopic")}[build]()
    assert model.grid_points is None if "heterotopic" in build else model.grid_points == N
    mll = model.mll()
    assert "structure" not in model.diagnostics
    ref = dense_mll(model)
    assert abs(float((mll - ref).detach())) < 1e-10
    assert_grads_match(model, mll, ref)


def test_cg_gradients_are_close_with_many_probes():
    """On the CG path the gradient of the log determinant is a probe estimate: with 200 probes it
    is within 10% (of the largest entry) of the dense reference's."""
    model = grid_model()
    model.solver = fg.CG(tol=1e-10, max_iters=1000, probes=200, precond=fg.PivotedCholesky(rank=N * T))
    assert_grads_match(model, model.mll(generator=gen(3)), dense_mll(model), rtol=0.1)


def test_auto_decides_by_grid_points():
    """fg.Auto(max_cholesky_n) counts the n points on a grid (eigen path) and the N rows otherwise."""
    x, y = data(20)
    grid = fg.MultitaskGP(x, y, Matern(nu=2.5), solver=fg.Auto(max_cholesky_n=30))
    grid.mll()
    assert grid.diagnostics["path"] == "cholesky" and grid.diagnostics["structure"] == "kronecker"
    xh, yh, tasks = heterotopic(40)
    rows = fg.MultitaskGP(xh, yh, Matern(nu=2.5), task_index=tasks,
                          solver=fg.Auto(max_cholesky_n=30, cg=fg.CG(probes=4)))
    rows.mll(generator=gen(0))
    assert rows.diagnostics["path"] == "cg"


# ----- posteriors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("layout", ["grid", "grid-solver", "heterotopic", "lmc"])
def test_posterior_every_task(layout, solver, monkeypatch):
    """posterior(x) for all tasks: mean and variance (m, t), task_covariance() (m, t, t) equal the
    dense float64 posterior of the task-major test grid. A grid predicts by the Kronecker
    eigendecompositions whatever the solver ("grid"); beyond KRONECKER_PREDICT_MAX points by the
    solver's own path ("grid-solver": eigen path, CG solves, LOVE)."""
    if layout == "grid-solver":
        monkeypatch.setattr(mt_model, "KRONECKER_PREDICT_MAX", 0)
    model = {"grid-solver": grid_model, "grid": grid_model, "heterotopic": hetero_model, "lmc": lmc_model}[layout](solver)
    xs = torch.rand(5, D, generator=gen(7), dtype=F64) * 2.4 - 0.2
    post = model.posterior(xs)
    assert isinstance(post, mt_dist.MultitaskPosterior)
    mean, cov = dense_posterior(model, test_grid(xs))
    assert post.mean.shape == post.variance.shape == (5, T)
    torch.testing.assert_close(post.mean, table(mean, 5), rtol=0, atol=MEAN_TOL)
    torch.testing.assert_close(post.variance, table(cov.diagonal(), 5), rtol=VAR_RTOL, atol=1e-12)
    blocks = cov.reshape(T, 5, T, 5).diagonal(dim1=1, dim2=3).permute(2, 0, 1)  # [i, a, b]
    torch.testing.assert_close(post.task_covariance(), blocks, rtol=VAR_RTOL, atol=1e-11)
    expected_method = {"cholesky": "cholesky", "cg": "cg", "love": "lanczos"}[solver]
    assert model.diagnostics["variance_method"] == ("kronecker" if layout == "grid" else expected_method)
    if layout == "grid" or (layout == "grid-solver" and solver == "cholesky"):
        assert model.diagnostics["structure"] == "kronecker"


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_posterior_with_task_index(solver):
    """posterior(x, task_index) gives one task per test row (a plain Posterior over m rows) equal
    to the dense posterior at those task-indexed inputs; predict adds each row's task noise."""
    model = hetero_model(solver)
    xs = torch.rand(7, D, generator=gen(8), dtype=F64) * 2
    tasks = torch.tensor([2, 0, 1, 1, 0, 2, 2])
    post = model.posterior(xs, task_index=tasks)
    mean, cov = dense_posterior(model, task_rows(xs, tasks))
    assert post.mean.shape == (7,)
    torch.testing.assert_close(post.mean, mean, rtol=0, atol=MEAN_TOL)
    torch.testing.assert_close(post.variance, cov.diagonal(), rtol=VAR_RTOL, atol=1e-12)
    pred = model.predict(xs, task_index=tasks.tolist())
    torch.testing.assert_close(pred.variance, cov.diagonal() + model.likelihood.noise.detach()[tasks],
                               rtol=VAR_RTOL, atol=1e-12)


@pytest.mark.parametrize("layout", ["grid", "heterotopic"])
def test_predict_adds_each_tasks_noise(layout):
    """predict(x): the posterior mean; variances plus noise d_a in column a; task_covariance()
    plus diag(d); log_prob the sum of the marginal normal log densities; confidence_region."""
    model = grid_model() if layout == "grid" else hetero_model()
    xs = torch.rand(4, D, generator=gen(9), dtype=F64) * 2
    post, pred = model.posterior(xs), model.predict(xs)
    noise = model.likelihood.noise.detach()
    torch.testing.assert_close(pred.mean, post.mean, rtol=0, atol=1e-14)
    torch.testing.assert_close(pred.variance, post.variance + noise, rtol=1e-13, atol=0)
    torch.testing.assert_close(pred.task_covariance(), post.task_covariance() + torch.diag(noise), rtol=1e-13,
                               atol=1e-15)
    y = torch.randn(4, T, generator=gen(1), dtype=F64)
    expected = torch.distributions.Normal(pred.mean, pred.variance.sqrt()).log_prob(y).sum()
    torch.testing.assert_close(pred.log_prob(y), expected, rtol=1e-12, atol=0)
    lower, upper = pred.confidence_region(0.95)
    torch.testing.assert_close(upper - pred.mean, 1.959963984540054 * pred.stddev, rtol=1e-12, atol=0)
    assert lower.shape == (4, T)


def test_task_covariance_in_chunks(monkeypatch):
    """task_covariance() gathers rows in chunks of test points; tiny chunks give the same result."""
    model = grid_model()
    xs = torch.rand(6, D, generator=gen(2), dtype=F64)
    whole = model.posterior(xs).task_covariance()
    monkeypatch.setattr(mt_dist, "TASK_COVARIANCE_ENTRIES", 2 * T * T * 6)  # chunks of 2 points
    torch.testing.assert_close(model.posterior(xs).task_covariance(), whole, rtol=0, atol=1e-15)


def test_joint_samples():
    """sample(s) is (s, m, t); samples from one generator repeat; their mean and covariance across
    points and tasks approach the posterior's (4,000 samples; 6 standard errors)."""
    model = grid_model()
    xs = torch.rand(3, D, generator=gen(4), dtype=F64) * 2
    post = model.posterior(xs)
    draws = post.sample(4000, generator=gen(0))
    assert draws.shape == (4000, 3, T)
    torch.testing.assert_close(post.sample(2, generator=gen(5)), post.sample(2, generator=gen(5)), rtol=0, atol=0)
    _, cov = dense_posterior(model, test_grid(xs))
    flat = draws.transpose(1, 2).reshape(4000, -1)  # task-major, like cov
    scale = float(cov.diagonal().max())
    assert float((flat.mean(0) - post.mean.T.reshape(-1)).abs().max()) < 6 * math.sqrt(scale / 4000)
    assert float((torch.cov(flat.T) - cov).abs().max()) < 6 * math.sqrt(2 / 4000) * scale


# ----- data handling -------------------------------------------------------------------------------

def test_nan_targets_become_heterotopic_rows():
    """y with NaN entries: the observed entries become task-indexed rows (grid_points None) and the
    mll equals the dense reference on the observed entries only."""
    x, y = data()
    y[2, 1] = y[5, 0] = y[9, 2] = float("nan")
    model = randomize(fg.MultitaskGP(x, y, Matern(nu=2.5, ard_dims=D), rank=2, solver=fg.Cholesky()))
    assert model.grid_points is None and model.num_train == N * T - 3
    keep = ~torch.isnan(y.T.reshape(-1))
    torch.testing.assert_close(model.train_y, y.T.reshape(-1)[keep])
    assert abs(float((model.mll() - dense_mll(model)).detach())) < 1e-10


def test_starting_values_come_from_the_data():
    """Values not given: each task's constant mean is its column mean, its noise floor + 0.1 of
    its variance, and B is close to the sample covariance (rank t)."""
    x, y = data(30)
    model = fg.MultitaskGP(x, y, Matern(nu=2.5), rank=T)
    torch.testing.assert_close(model.mean.base.constant.detach(), y.mean(0), rtol=1e-12, atol=1e-12)
    floor = model.likelihood.noise_floor
    torch.testing.assert_close(model.likelihood.noise.detach(), floor + 0.1 * y.var(0, correction=0),
                               rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(model.task_covariance.detach(), torch.cov(y.T), rtol=0.06, atol=0.06)


@pytest.mark.parametrize("build", ["grid", "heterotopic", "lmc_grid"])
def test_save_load_round_trip(build, tmp_path):
    """fg.save then fg.load: a MultitaskGP with the same layout, config and parameters whose mll and
    posterior (mean, variance, cross-task covariance) equal the original's."""
    model = {"grid": grid_model, "heterotopic": hetero_model, "lmc_grid": lmc_model}[build]()
    fg.save(model, tmp_path / "model.fgp")
    loaded = fg.load(tmp_path / "model.fgp")
    assert type(loaded) is fg.MultitaskGP and loaded.num_tasks == T and loaded.grid_points == model.grid_points
    assert loaded.config() == model.config()
    xs = torch.rand(4, D, generator=gen(3), dtype=F64)
    a, b = loaded.posterior(xs), model.posterior(xs)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.variance, b.variance, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(a.task_covariance(), b.task_covariance(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(loaded.mll(), model.mll(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("build", ["grid", "heterotopic"])
def test_fit_lowers_the_loss(build):
    """fg.fit (Adam, 15 steps) lowers the loss of a model started from the data's values and
    changes W, v, the lengthscales, the noise and the means."""
    if build == "grid":
        model = fg.MultitaskGP(*data(), Matern(nu=2.5, ard_dims=D), rank=1)
    else:
        x, y, tasks = heterotopic()
        model = fg.MultitaskGP(x, y, Matern(nu=2.5, ard_dims=D), task_index=tasks, rank=1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    history = fg.fit(model, optimizer="adam", lr=0.05, iters=15, progress=False, seed=0)
    assert history.loss[-1] < history.loss[0] - 1e-3
    for name, p in model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name


def test_checkpointed_fit_resumes_where_an_uninterrupted_fit_ends(tmp_path):
    """A checkpointed fit (heterotopic, CG with seeded probes) stopped by Ctrl-C after 4 of 8 steps
    and resumed into a fresh model ends at the parameters and losses of an uninterrupted fit."""
    solver = fg.CG(tol=0.01, probes=5, precond=fg.PivotedCholesky(5))
    x, y, tasks = heterotopic()

    def make():
        return fg.MultitaskGP(x, y, Matern(nu=2.5, ard_dims=D), task_index=tasks, rank=2, solver=solver)

    kwargs = dict(optimizer="adam", lr=0.1, iters=8, progress=False, seed=3)
    reference = make()
    expected = fg.fit(reference, **kwargs).loss
    path = tmp_path / "fit.ckpt"

    def ctrl_c(step, loss, model):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fg.fit(make(), checkpoint=path, checkpoint_every=2, callback=ctrl_c, **kwargs)
    resumed = make()
    history = fg.fit(resumed, checkpoint=path, resume=True, **kwargs)
    assert history.start_step == 4 and history.loss == pytest.approx(expected, rel=1e-9)
    ref = dict(reference.named_parameters())
    for name, p in resumed.named_parameters():
        torch.testing.assert_close(p, ref[name], rtol=1e-9, atol=1e-12)


def contract_posterior(model, x):
    mean, cov = dense_posterior(model, test_grid(x))
    return table(mean, x.shape[0]), table(cov.diagonal(), x.shape[0])


@pytest.mark.parametrize("build", ["grid", "heterotopic"])
def test_model_contract(build, tmp_path):
    """flashgp.testing.check_model with the dense multitask references: loss and gradients,
    posterior, config, files, checkpointed fits (Ctrl-C and crash) and solver state. (prior and
    predict are left out: prior(x) gives the m t values of every task at the m test points, and
    the contract's predict check expects one noise per test point, not an (m, t) table;
    test_prior_at_test_inputs checks prior.)"""
    make = grid_model if build == "grid" else hetero_model
    xs = torch.rand(5, D, generator=gen(6), dtype=F64) * 2
    check_model(make, xs, loss_reference=lambda m: -dense_mll(m), posterior_reference=contract_posterior,
                loss_atol=1e-10, grad_rtol=1e-8, mean_atol=MEAN_TOL, var_rtol=VAR_RTOL, var_atol=1e-12,
                skip=("prior", "predict"), tmp_dir=tmp_path, name=f"MultitaskGP({build})",
                fit_kwargs=dict(iters=5), interrupt_after=3, checkpoint_every=2)


def test_prior_at_test_inputs():
    """prior(x) takes the posterior's test inputs (m, d): every task's mean (task-major) and the
    kernel's structured operator on the test grid; with task_index one task per row."""
    model = grid_model()
    xs = torch.rand(4, D, generator=gen(2), dtype=F64)
    rows = model.prior(xs, task_index=torch.tensor([2, 0, 1, 2]))
    torch.testing.assert_close(rows.mean, torch.tensor([0.1, 0.3, -0.2, 0.1], dtype=F64))
    prior = model.prior(xs)
    torch.testing.assert_close(prior.mean, torch.tensor([0.3, -0.2, 0.1], dtype=F64).repeat_interleave(4))
    torch.testing.assert_close(prior.covariance.to_dense(), model.kernel(test_grid(xs)), rtol=1e-12, atol=1e-14)


def test_float32_data_on_the_eigen_path():
    """float32 data: float32 parameters and results; the eigen path factors in float64, so the mll
    and posterior are within float32 round-off of the float64 reference of a float64 copy."""
    x, y = data()
    model = fg.MultitaskGP(x.float(), y.float(), Matern(nu=2.5, ard_dims=D), rank=2, solver=fg.Cholesky())
    assert model.dtype == torch.float32
    mll = model.mll()
    assert mll.dtype == torch.float32 and model.diagnostics["structure"] == "kronecker"
    reference = copy.deepcopy(model).double()
    assert abs(float(mll.detach()) - float(dense_mll(reference).detach())) < 1e-5
    xs = torch.rand(4, D, generator=gen(1), dtype=F64)
    post = model.posterior(xs.float())
    mean, cov = dense_posterior(reference, test_grid(xs))
    assert post.mean.dtype == torch.float32
    torch.testing.assert_close(post.mean.double(), table(mean, 4), rtol=0, atol=1e-4)
    torch.testing.assert_close(post.variance.double(), table(cov.diagonal(), 4), rtol=1e-3, atol=1e-6)
