# Tests for fg.fit: Adam and L-BFGS lower the loss, the history and callbacks, determinism,
# stopping on a non-finite loss, argument checks, and an end-to-end fit on UCI concrete.
import math
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Matern, Scale

F64 = torch.float64


def small_model(n=100, seed=0, solver=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=F64)
    return fg.ExactGP(x, y, Scale(RBF(ard_dims=2)), solver=solver or fg.Cholesky())


def loss_of(model):
    with torch.no_grad():
        return float(-model.mll(generator=torch.Generator().manual_seed(0)).sum())


@pytest.mark.parametrize("optimizer,lr,iters", [("adam", 0.1, 30), ("lbfgs", 1.0, 5)])
@pytest.mark.parametrize("solver", [fg.Cholesky(), fg.CG(tol=0.01, probes=10, precond=fg.PivotedCholesky(30))],
                         ids=["cholesky", "cg"])
def test_fit_decreases_loss(optimizer, lr, iters, solver):
    model = small_model(solver=solver)
    before = loss_of(model)
    history = fg.fit(model, optimizer=optimizer, lr=lr, iters=iters, progress=False)
    after = loss_of(model)
    assert isinstance(history, fg.History) and len(history) == iters
    assert after < before - 0.1  # a real improvement (the initial loss is ~1.1 per point)
    assert history.loss[-1] < history.loss[0]
    assert history.stopped_early is None
    assert all(math.isfinite(v) for v in history.loss)


def test_fit_finds_the_optimum_of_a_known_problem():
    # data drawn from a GP with known hyperparameters: L-BFGS reaches a stationary point of the
    # mll (the sample MLE: lengthscale 0.98 here), near the truth where it is well identified
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 1, generator=g, dtype=F64) * 10
    kernel = Scale(RBF()).double()
    kernel.base.lengthscale, kernel.outputscale = 0.8, 2.0
    with torch.no_grad():
        cov = kernel(x) + 0.01 * torch.eye(300, dtype=F64)
    y = torch.linalg.cholesky(cov) @ torch.randn(300, generator=g, dtype=F64)
    model = fg.ExactGP(x, y, Scale(RBF()), mean=fg.means.Zero(), solver=fg.Cholesky())
    fg.fit(model, optimizer="lbfgs", lr=1.0, iters=10, progress=False)
    assert 0.6 < float(model.kernel.base.lengthscale.detach()) < 1.2
    assert abs(float(model.likelihood.noise.detach()) - 0.01) < 0.005
    # at the optimum the gradient vanishes
    model.zero_grad()
    model.mll().backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float(grad.abs().max()) < 1e-3


def test_history_fields():
    model = small_model(solver=fg.CG(tol=0.01, precond=fg.PivotedCholesky(20)))
    history = fg.fit(model, iters=4, progress=False)
    assert len(history.loss) == len(history.step_seconds) == len(history.diagnostics) == 4
    assert all(isinstance(v, float) for v in history.loss)
    assert all(s > 0 for s in history.step_seconds)
    for d in history.diagnostics:
        assert d["path"] == "cg" and {"cg_iterations", "residual", "jitter", "seconds"} <= set(d)
    # the recorded diagnostics are copies, not the model's live dict
    assert history.diagnostics[0] is not model.diagnostics


def test_history_loss_is_the_negative_mll_per_point():
    model = small_model()
    first = loss_of(model)
    history = fg.fit(model, optimizer="adam", lr=0.05, iters=2, progress=False)
    assert history.loss[0] == pytest.approx(first, rel=1e-12)


def test_callback_called_every_step():
    model = small_model()
    calls = []
    history = fg.fit(model, iters=5, progress=False,
                     callback=lambda step, loss, m: calls.append((step, loss, m)))
    assert [c[0] for c in calls] == list(range(5))
    assert [c[1] for c in calls] == history.loss
    assert all(c[2] is model for c in calls)


def test_zero_iterations_changes_nothing():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = fg.fit(model, iters=0, progress=False)
    assert len(history) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_progress_bar_runs(capsys):
    fg.fit(small_model(n=30), iters=2, progress=True)
    assert "fit" in capsys.readouterr().err


@pytest.mark.parametrize("solver", [fg.Cholesky(), fg.CG(tol=0.01, probes=10, precond=fg.PivotedCholesky(30))],
                         ids=["cholesky", "cg"])
def test_lbfgs_is_deterministic(solver):
    runs = []
    for _ in range(2):
        model = small_model(seed=2, solver=solver)
        history = fg.fit(model, optimizer="lbfgs", lr=1.0, iters=3, progress=False)
        runs.append((history.loss, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)


def test_adam_with_seed_is_reproducible():
    solver = fg.CG(tol=0.01, probes=5, precond=fg.PivotedCholesky(10))
    losses = [fg.fit(small_model(solver=solver), iters=3, seed=7, progress=False).loss for _ in range(2)]
    assert losses[0] == losses[1]


class NaNAt:
    """Wraps model.mll so that call number ``at`` returns NaN; records the parameters then."""

    def __init__(self, model, at):
        self.model, self.at, self.calls, self.params_at_nan = model, at, 0, None
        self.mll = model.mll

    def __call__(self, *args, **kwargs):
        out = self.mll(*args, **kwargs)
        self.calls += 1
        if self.calls == self.at:
            self.params_at_nan = [p.detach().clone() for p in self.model.parameters()]
            return out * float("nan")
        return out


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_non_finite_loss_stops_without_applying_the_step(optimizer, monkeypatch):
    model = small_model()
    # adam evaluates once per step: NaN at step 3; lbfgs: NaN at the first evaluation of step 0
    wrapper = NaNAt(model, at=4 if optimizer == "adam" else 1)
    monkeypatch.setattr(model, "mll", wrapper)
    calls = []
    with pytest.warns(fg.NumericalWarning, match="not finite"):
        history = fg.fit(model, optimizer=optimizer, iters=10, progress=False,
                         callback=lambda *a: calls.append(a[0]))
    assert wrapper.params_at_nan is not None
    expected_steps = 3 if optimizer == "adam" else 0
    assert len(history) == expected_steps and len(calls) == expected_steps
    assert history.stopped_early and "step" in history.stopped_early
    for p, q in zip(model.parameters(), wrapper.params_at_nan):
        assert torch.equal(p.detach(), q)  # the step was not applied
        assert torch.isfinite(p).all()


class NotPSDAt:
    """Wraps model.mll: raises NotPSDError on the given calls (1-based), else delegates."""

    def __init__(self, model, calls):
        self.inner, self.calls, self.count = model.mll, set(calls), 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        if self.count in self.calls:
            raise fg.NotPSDError("the kernel matrix has NaN or infinite entries (test)")
        return self.inner(*args, **kwargs)


def test_lbfgs_rejects_unfactorable_trial_points_and_continues(monkeypatch):
    model = small_model()
    start = loss_of(model)
    monkeypatch.setattr(model, "mll", NotPSDAt(model, calls={3}))  # inside step 0's line search
    with pytest.warns(fg.NumericalWarning, match="trial point rejected"):
        history = fg.fit(model, optimizer="lbfgs", lr=1.0, iters=2, progress=False)
    assert len(history) == 2 and history.stopped_early is None
    assert history.loss[-1] < start and all(torch.isfinite(p).all() for p in model.parameters())


def test_adam_stops_cleanly_when_the_kernel_cannot_be_factored(monkeypatch):
    model = small_model()
    monkeypatch.setattr(model, "mll", NotPSDAt(model, calls={3}))
    with pytest.warns(fg.NumericalWarning, match="fit stopped at step 2"):
        history = fg.fit(model, optimizer="adam", iters=5, progress=False)
    assert len(history) == 2 and "NaN or infinite" in history.stopped_early


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(optimizer="sgd"), ValueError, "optimizer"),
    (dict(optimizer="Adam"), ValueError, "optimizer"),
    (dict(lr=-1), ValueError, "lr"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr=float("inf")), ValueError, "lr"),
    (dict(lr="0.1"), ValueError, "lr"),
    (dict(iters=-1), ValueError, "iters"),
    (dict(iters=2.5), ValueError, "iters"),
    (dict(iters=True), ValueError, "iters"),
])
def test_bad_arguments(kwargs, exc, match):
    model = small_model(n=20)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(exc, match=rf"\b{match}\b"):
        fg.fit(model, progress=False, **kwargs)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p.detach(), q)


def test_model_without_mll_is_a_type_error():
    with pytest.raises(TypeError, match=r"\bmodel\b"):
        fg.fit(torch.nn.Linear(2, 1), progress=False)


# ----- end to end: UCI concrete, against GPyTorch with the same settings --------------------------

CONCRETE_ITERS, CONCRETE_LR = 30, 0.1
INIT = math.log(2.0)  # softplus(0): GPyTorch's default for lengthscale, outputscale and noise


def concrete_rmse_flashgp(ds):
    kernel = Scale(Matern(nu=2.5, ard_dims=ds.d))
    model = fg.ExactGP(ds.x_train, ds.y_train, kernel, solver=fg.Cholesky())
    kernel.base.lengthscale, kernel.outputscale = INIT, INIT
    model.likelihood.noise, model.mean.constant = INIT, 0.0
    history = fg.fit(model, optimizer="adam", lr=CONCRETE_LR, iters=CONCRETE_ITERS, progress=False)
    pred = model.predict(ds.x_test)
    return float((pred.mean - ds.y_test).pow(2).mean().sqrt()), history


def concrete_rmse_gpytorch(ds):
    gpytorch = pytest.importorskip("gpytorch")

    class Model(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=ds.d))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = Model(ds.x_train, ds.y_train, likelihood).double()
    model.train()
    likelihood.train()
    opt = torch.optim.Adam(model.parameters(), lr=CONCRETE_LR)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    with gpytorch.settings.max_cholesky_size(10**6):
        for _ in range(CONCRETE_ITERS):
            opt.zero_grad()
            (-mll(model(ds.x_train), ds.y_train)).backward()
            opt.step()
        model.eval()
        likelihood.eval()
        with torch.no_grad():
            pred = likelihood(model(ds.x_test))
    return float((pred.mean - ds.y_test).pow(2).mean().sqrt())


@pytest.fixture(scope="module")
def concrete():
    from flashgp.datasets import load_uci
    return load_uci("concrete", standardize=True)


def test_concrete_end_to_end(concrete):
    assert concrete.d == 8 and concrete.n_train > 900
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.NumericalWarning)
        rmse, history = concrete_rmse_flashgp(concrete)
    assert history.loss[-1] < history.loss[0] - 0.5
    assert rmse < 0.35  # standardized target: a predict-the-mean model scores ~1
    gp_rmse = concrete_rmse_gpytorch(concrete)  # skips here if GPyTorch is missing
    assert abs(rmse - gp_rmse) / gp_rmse < 0.05
