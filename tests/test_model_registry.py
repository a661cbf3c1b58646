# Any registered GPModel trains, saves, loads and checkpoints: a second model class defined here
# (Bayesian linear regression with a dense Cholesky posterior) goes through fg.fit, fg.save/fg.load
# and an interrupted, resumed checkpointed fit; unregistered classes (an ExactGP subclass too)
# are refused with an error that names the registered models.
import json
import math
import zipfile

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import flashgp as fg
from flashgp.checkpoint import load_checkpoint_model, read_checkpoint
from flashgp.distributions import Posterior
from flashgp.errors import FitInterrupted
from flashgp.io import ENVELOPE_KEYS, model_config
from flashgp.kernels import RBF, Scale
from flashgp.likelihoods import Gaussian
from flashgp.models import GPModel, Prior
from flashgp.operators.dense import Dense
from flashgp.serialize import MODELS, likelihood_from_config, likelihood_to_config, register_model

F64 = torch.float64
NAME = "tests.BayesianLinear"


class BayesianLinear(GPModel):
    """f(x) = w . [x, 1] with w ~ N(0, prior_variance I) (p = d + 1 weights), y = f + N(0, noise).

    x (n, d) and y (n,) are the training data; everything is dense (n and p small). Its solver
    state is the number of loss evaluations so far (``evaluations``), which a checkpoint must
    carry for a resumed fit to end where an uninterrupted one does.
    """

    config_keys = frozenset({"likelihood", "bias"})

    def __init__(self, x, y, likelihood=None, bias: bool = True):
        super().__init__()
        self.bias = bias
        self.likelihood = Gaussian(noise=0.5, noise_floor=1e-6) if likelihood is None else likelihood
        self.raw_prior_variance = nn.Parameter(torch.zeros((), dtype=x.dtype))
        self.register_buffer("train_x", x)
        self.register_buffer("train_y", y)
        self.likelihood.to(dtype=x.dtype, device=x.device)
        self.evaluations = 0

    @property
    def prior_variance(self) -> torch.Tensor:
        return F.softplus(self.raw_prior_variance)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """(m, d) -> (m, p): the inputs, then a column of ones with ``bias``."""
        return torch.cat([x, torch.ones_like(x[:, :1])], -1) if self.bias else x

    def prior(self, x) -> Prior:
        phi = self._features(x)
        return Prior(torch.zeros(x.shape[0], dtype=x.dtype), Dense(self.prior_variance * phi @ phi.T))

    def loss(self, generator=None) -> torch.Tensor:
        """-log N(y | 0, s phi phi^T + noise I) / n by a dense Cholesky, shape ()."""
        self.evaluations += 1
        phi, y, n = self._features(self.train_x), self.train_y, self.num_train
        cov = self.prior_variance * phi @ phi.T + torch.diag(self.likelihood.noise_diag(n))
        chol = torch.linalg.cholesky(cov)
        white = torch.linalg.solve_triangular(chol, y.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2 * chol.diagonal().log().sum()
        self.diagnostics = {"path": "dense", "evaluations": self.evaluations}
        return 0.5 * (white.square().sum() + logdet + n * math.log(2 * math.pi)) / n

    def posterior(self, x) -> Posterior:
        """The weights' posterior N(A^-1 phi^T y / noise, A^-1), A = phi^T phi / noise + I / s,
        mapped to f at x (m, d): mean (m,), covariance (m, m)."""
        with torch.no_grad():
            phi, noise = self._features(self.train_x), self.likelihood.noise
            precision = phi.T @ phi / noise + torch.eye(phi.shape[-1], dtype=phi.dtype) / self.prior_variance
            chol = torch.linalg.cholesky(precision)
            weights = torch.cholesky_solve((phi.T @ self.train_y / noise).unsqueeze(-1), chol).squeeze(-1)
            test = self._features(x)
            root = torch.linalg.solve_triangular(chol, test.T, upper=False)  # (p, m)
            return Posterior(test @ weights, Dense(root.T @ root), diagnostics=self.diagnostics)

    def config(self) -> dict:
        return {"likelihood": likelihood_to_config(self.likelihood), "bias": self.bias}

    @classmethod
    def from_config(cls, config: dict, tensors: dict):
        return cls(tensors["train_x"], tensors["train_y"], likelihood_from_config(config["likelihood"]),
                   bias=config["bias"])

    def solver_state(self) -> dict:
        return {"evaluations": torch.tensor(self.evaluations)}

    def load_solver_state(self, state: dict) -> None:
        count = state.get("evaluations")
        self.evaluations = int(count) if isinstance(count, torch.Tensor) and count.numel() == 1 else 0


class UnregisteredExactGP(fg.ExactGP):
    pass


@pytest.fixture
def registered():
    """BayesianLinear registered under NAME for one test, unregistered after it."""
    register_model(NAME)(BayesianLinear)
    try:
        yield BayesianLinear
    finally:
        MODELS.pop(NAME, None)


def linear_model(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    y = 1.5 * x[:, 0] - 0.5 * x[:, 1] + 0.3 + 0.2 * torch.randn(n, generator=g, dtype=F64)
    return BayesianLinear(x, y)


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


X_TEST = torch.linspace(-2, 2, 9, dtype=F64).unsqueeze(-1).expand(9, 2).contiguous()


def test_fit_trains_any_gp_model():
    model = linear_model()
    history = fg.fit(model, lr=0.1, iters=30, progress=False)
    assert len(history) == 30 and history.loss[-1] < history.loss[0] - 0.1
    assert history.loss[0] == pytest.approx(float(linear_model().loss().detach()), rel=1e-12)  # per point
    assert history.diagnostics[-1]["path"] == "dense"
    torch.testing.assert_close(model.predict(X_TEST).mean, 1.5 * X_TEST[:, 0] - 0.5 * X_TEST[:, 1] + 0.3,
                               atol=0.3, rtol=0)


def test_save_and_load_round_trip(registered, tmp_path):
    model = linear_model()
    fg.fit(model, lr=0.1, iters=10, progress=False)
    model.likelihood.raw_noise.requires_grad_(False)
    fg.save(model, tmp_path / "m.fgp")
    with zipfile.ZipFile(tmp_path / "m.fgp") as archive:
        config = json.loads(archive.read("config.json"))
    assert config["model"] == NAME and set(config) == ENVELOPE_KEYS | BayesianLinear.config_keys
    assert config["frozen"] == ["likelihood.raw_noise"] and config == model_config(model)
    loaded = fg.load(tmp_path / "m.fgp")
    assert type(loaded) is BayesianLinear and not loaded.likelihood.raw_noise.requires_grad
    a, b = model.predict(X_TEST), loaded.predict(X_TEST)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.variance, b.variance)
    assert torch.equal(model.loss(), loaded.loss())


def test_an_interrupted_checkpointed_fit_resumes_to_the_uninterrupted_end(registered, tmp_path):
    kwargs = dict(optimizer="adam", lr=0.1, iters=9, progress=False)
    reference = linear_model()
    expected = fg.fit(reference, **kwargs)

    def stop_at_five(step, loss, model):
        if step == 4:  # after five completed steps
            raise KeyboardInterrupt

    path = tmp_path / "run.ckpt"
    with pytest.raises(FitInterrupted) as info:
        fg.fit(linear_model(), checkpoint=path, checkpoint_every=2, callback=stop_at_five, **kwargs)
    assert info.value.step == 5 and read_checkpoint(path).step == 5
    assert int(read_checkpoint(path).snapshot().solver_state["evaluations"]) == 5
    assert type(load_checkpoint_model(path)) is BayesianLinear

    resumed = linear_model()
    history = fg.fit(resumed, checkpoint=path, resume=True, **kwargs)
    assert history.start_step == 5 and history.loss == expected.loss
    for name, value in params_of(reference).items():
        assert torch.equal(params_of(resumed)[name], value), name
    assert resumed.evaluations == reference.evaluations == 9  # the solver state came back
    assert torch.equal(load_checkpoint_model(path).predict(X_TEST).mean, reference.predict(X_TEST).mean)


def test_unregistered_models_are_refused(tmp_path):
    x = torch.rand(10, 1, dtype=F64)
    sub = UnregisteredExactGP(x, x[:, 0], Scale(RBF()))
    for model in (sub, linear_model()):  # BayesianLinear is not registered outside the fixture
        with pytest.raises(TypeError, match=r"^model: expected a registered flashgp model \(.*ExactGP.*\), "
                                            rf"got .*{type(model).__qualname__}.*register_model"):
            fg.save(model, tmp_path / "m.fgp")
        with pytest.raises(TypeError, match=r"^checkpoint: .*registered"):
            fg.fit(model, iters=1, progress=False, checkpoint=tmp_path / "c.ckpt")
    assert list(tmp_path.iterdir()) == []
    fg.fit(sub, iters=1, progress=False)  # training needs no registration
    with pytest.raises(TypeError, match=r"^model: expected a flashgp model"):
        fg.fit(nn.Linear(2, 1), progress=False)


def test_a_file_of_a_model_no_longer_registered_is_refused(registered, tmp_path):
    fg.save(linear_model(), tmp_path / "m.fgp")
    MODELS.pop(NAME)
    with pytest.raises(fg.ModelFileError, match=rf"unknown model type '{NAME}'"):
        fg.load(tmp_path / "m.fgp")


def test_the_exact_gp_file_keeps_its_keys_and_version(tmp_path):
    x = torch.rand(10, 1, dtype=F64)
    fg.save(fg.ExactGP(x, x[:, 0], Scale(RBF())), tmp_path / "m.fgp")
    with zipfile.ZipFile(tmp_path / "m.fgp") as archive:
        config = json.loads(archive.read("config.json"))
    assert list(config) == ["format", "format_version", "flashgp_version", "model", "dtype", "kernel",
                            "likelihood", "mean", "solver", "frozen"]
    assert config["format_version"] == 1 and config["model"] == "ExactGP"


def test_a_config_without_its_declared_keys_is_refused(registered, tmp_path, monkeypatch):
    model = linear_model()
    monkeypatch.setattr(BayesianLinear, "config", lambda self: {"likelihood": {}})
    with pytest.raises(TypeError, match=r"config\(\) gave \['likelihood'\]; expected .*'bias'"):
        fg.save(model, tmp_path / "m.fgp")
