# flashgp.botorch.FlashGPModel against BoTorch's SingleTaskGP at identical hyperparameters:
# posteriors (with and without Normalize/Standardize, batches of test sets, noise, transforms),
# qLogEI values and gradients, optimize_acqf, conditioning and fantasies, and fitting.
import math

import pytest
import torch

botorch = pytest.importorskip("botorch")

import flashgp as fg  # noqa: E402
from botorch.acquisition import qLogExpectedImprovement  # noqa: E402
from botorch.acquisition.objective import ScalarizedPosteriorTransform  # noqa: E402
from botorch.models import SingleTaskGP  # noqa: E402
from botorch.models.transforms import Normalize, Standardize  # noqa: E402
from botorch.optim import optimize_acqf  # noqa: E402
from botorch.sampling import SobolQMCNormalSampler  # noqa: E402
from flashgp.botorch import FlashGPModel, lengthscale_prior_mode  # noqa: E402

F64 = torch.float64
LENGTHSCALES = [0.35, 0.6, 0.9]
NOISE, CONSTANT = 0.02, 0.15


def problem(n=14, d=3, seed=0, batch=()):
    """Inputs on [-1, 3]^d (so Normalize has work to do), y = a smooth function plus noise, (n, 1)."""
    g = torch.Generator().manual_seed(seed)
    X = 4 * torch.rand(*batch, n, d, generator=g, dtype=F64) - 1
    Y = torch.sin(X).sum(-1, keepdim=True) + 0.05 * torch.randn(*batch, n, 1, generator=g, dtype=F64)
    return X, Y


def pair(X, Y, Yvar=None, transforms=True):
    """(FlashGPModel, SingleTaskGP) on the same data with the same hyperparameters (per output,
    different ones, when Y has several columns)."""
    d, m = X.shape[-1], Y.shape[-1]
    extra = {} if transforms else {"outcome_transform": None}
    ours = FlashGPModel(X, Y, Yvar, input_transform=Normalize(d) if transforms else None, **extra)
    theirs = SingleTaskGP(X, Y, Yvar, input_transform=Normalize(d) if transforms else None, **extra)
    gp = ours.flashgp_model
    scale = torch.arange(1, m + 1, dtype=F64) if m > 1 else torch.tensor(1.0, dtype=F64)  # () or (m,)
    lengthscale = torch.tensor(LENGTHSCALES[:d], dtype=F64) * (1 + 0.3 * scale[..., None, None])
    lengthscale = lengthscale.expand(gp.kernel.lengthscale.shape)
    gp.kernel.lengthscale = lengthscale
    gp.mean.constant = CONSTANT * scale
    with torch.no_grad():
        theirs.covar_module.lengthscale = lengthscale
        theirs.mean_module.constant.copy_(CONSTANT * scale)
        if Yvar is None:
            gp.likelihood.noise = NOISE * scale
            theirs.likelihood.noise = (NOISE * scale).unsqueeze(-1).expand(theirs.likelihood.noise.shape)
    return ours, theirs


def assert_same_posterior(a, b, rtol=1e-8, atol=1e-9):
    """Equal means, variances and covariances. atol: GPyTorch's variances differ from a direct
    float64 Cholesky solve by up to ~1e-10 here (flashgp's by ~1e-16)."""
    assert a.mean.shape == b.mean.shape
    torch.testing.assert_close(a.mean, b.mean, rtol=rtol, atol=atol)
    torch.testing.assert_close(a.variance, b.variance, rtol=rtol, atol=atol)
    torch.testing.assert_close(a.distribution.covariance_matrix, b.distribution.covariance_matrix,
                               rtol=rtol, atol=atol)


@pytest.mark.parametrize("transforms", [False, True])
@pytest.mark.parametrize("shape", [(4,), (3, 2), (2, 3, 2)], ids=["q", "b-q", "b1-b2-q"])
def test_posterior_matches_singletaskgp(transforms, shape):
    X, Y = problem()
    ours, theirs = pair(X, Y, transforms=transforms)
    test = 4 * torch.rand(*shape, 3, dtype=F64) - 1
    assert_same_posterior(ours.posterior(test), theirs.posterior(test))
    assert_same_posterior(ours.posterior(test, observation_noise=True),
                          theirs.posterior(test, observation_noise=True))
    noise = torch.full((*shape, 1), 0.3, dtype=F64)
    assert_same_posterior(ours.posterior(test, observation_noise=noise),
                          theirs.posterior(test, observation_noise=noise))


def test_fixed_noise_and_batched_training_data_match():
    X, Y = problem(batch=(2,))
    Yvar = torch.full_like(Y, 0.01)
    ours, theirs = pair(X, Y, Yvar)
    assert ours.batch_shape == theirs.batch_shape == torch.Size([2])
    for shape in [(4,), (2, 4), (5, 2, 4)]:  # q points; the model's batch; a batch beyond it
        test = torch.rand(*shape, 3, dtype=F64)
        assert_same_posterior(ours.posterior(test), theirs.posterior(test))
        assert_same_posterior(ours.posterior(test, observation_noise=True),
                              theirs.posterior(test, observation_noise=True))


def test_defaults_are_singletaskgp_defaults():
    X, Y = problem(d=3)
    model = FlashGPModel(X, Y, input_transform=Normalize(3))
    gp = model.flashgp_model
    torch.testing.assert_close(gp.kernel.lengthscale, torch.full((1, 3), lengthscale_prior_mode(3), dtype=F64))
    torch.testing.assert_close(gp.likelihood.noise, torch.tensor(math.exp(-5.0), dtype=F64))
    assert gp.likelihood.noise_floor == 1e-4 and float(gp.mean.constant) == 0.0
    assert isinstance(model.outcome_transform, Standardize) and model.num_outputs == 1
    torch.testing.assert_close(gp.train_y.mean(), torch.tensor(0.0, dtype=F64), atol=1e-12, rtol=0)
    assert float(gp.train_x.min()) == 0.0 and float(gp.train_x.max()) == 1.0  # Normalize's learned bounds
    priors = {(path, name): prior for path, name, prior, _ in fg.priors.attached(gp)}
    assert priors == {("kernel", "lengthscale"): fg.priors.botorch_defaults(3)["lengthscale"],
                      ("likelihood", "noise"): fg.priors.botorch_defaults(3)["noise"]}


def test_posterior_transform_and_output_indices():
    X, Y = problem()
    ours, theirs = pair(X, Y)
    test = torch.rand(3, 2, 3, dtype=F64)
    transform = ScalarizedPosteriorTransform(weights=torch.tensor([2.0], dtype=F64), offset=1.0)
    a, b = ours.posterior(test, posterior_transform=transform), theirs.posterior(test, posterior_transform=transform)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(a.variance, b.variance, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(ours.posterior(test, output_indices=[0]).mean, ours.posterior(test).mean)
    with pytest.raises(ValueError, match="output_indices"):
        ours.posterior(test, output_indices=[1])


def test_eval_keeps_learned_input_bounds():
    """Normalize learns its bounds from train_X at construction; posteriors (eval mode) at
    inputs far outside them leave them alone, and train() / eval() keep the same data."""
    X, Y = problem()
    ours, theirs = pair(X, Y)
    bounds = ours.input_transform.bounds.clone()
    ours.posterior(10 * torch.ones(1, 3, dtype=F64))
    torch.testing.assert_close(ours.input_transform.bounds, bounds, rtol=0, atol=0)
    before = ours.flashgp_model.train_x
    ours.train()
    ours.eval()
    assert ours.flashgp_model.train_x is before
    test = torch.rand(5, 3, dtype=F64)
    assert_same_posterior(ours.posterior(test), theirs.posterior(test))


def test_bad_inputs_name_the_argument():
    X, Y = problem()
    with pytest.raises(ValueError, match="train_Y: expected at least one output"):
        FlashGPModel(X, Y[:, :0])
    with pytest.raises(ValueError, match="train_Y"):
        FlashGPModel(X, Y.squeeze(-1))
    with pytest.raises(ValueError, match="train_Yvar"):
        FlashGPModel(X, Y, torch.ones(3, 1, dtype=F64))
    with pytest.raises(TypeError, match="X"):
        FlashGPModel(X, Y).posterior([[0.0, 0.0, 0.0]])


def acquisition(model, Y):
    return qLogExpectedImprovement(model, best_f=Y.max(), sampler=SobolQMCNormalSampler(torch.Size([64]), seed=0))


@pytest.mark.parametrize("q", [1, 2])
def test_qlogei_values_and_gradients_match(q):
    X, Y = problem()
    ours, theirs = pair(X, Y)
    test = (4 * torch.rand(5, q, 3, dtype=F64) - 1)
    grads = []
    for model in (ours, theirs):
        x = test.clone().requires_grad_(True)
        value = acquisition(model, Y)(x)
        value.sum().backward()
        grads.append((value.detach(), x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-9)


def test_optimize_acqf_returns_a_candidate_in_bounds():
    X, Y = problem()
    ours, _ = pair(X, Y)
    bounds = torch.tensor([[-1.0] * 3, [3.0] * 3], dtype=F64)
    candidate, value = optimize_acqf(acquisition(ours, Y), bounds=bounds, q=2, num_restarts=2, raw_samples=16,
                                     options={"maxiter": 20})
    assert candidate.shape == (2, 3) and torch.isfinite(value)
    assert bool(((candidate >= bounds[0]) & (candidate <= bounds[1])).all())


@pytest.mark.parametrize("transforms", [False, True])
def test_condition_on_observations_matches(transforms):
    X, Y = problem()
    ours, theirs = pair(X, Y, transforms=transforms)
    test = 4 * torch.rand(4, 3, dtype=F64) - 1
    theirs.posterior(test)  # GPyTorch conditions through its prediction caches
    new_X, new_Y = 4 * torch.rand(2, 3, dtype=F64) - 1, torch.randn(2, 1, dtype=F64)
    a, b = ours.condition_on_observations(new_X, new_Y), theirs.condition_on_observations(new_X, new_Y)
    assert isinstance(a, FlashGPModel) and a.flashgp_model.num_train == 16 and ours.flashgp_model.num_train == 14
    assert_same_posterior(a.posterior(test), b.posterior(test), rtol=1e-7, atol=1e-10)


def test_fantasize_matches():
    X, Y = problem()
    ours, theirs = pair(X, Y)
    test = 4 * torch.rand(3, 3, dtype=F64) - 1
    theirs.posterior(test)
    at = 4 * torch.rand(2, 3, dtype=F64) - 1
    fantasies = [model.fantasize(at, SobolQMCNormalSampler(torch.Size([4]), seed=1)) for model in (ours, theirs)]
    assert fantasies[0].batch_shape == fantasies[1].batch_shape == torch.Size([4])
    assert_same_posterior(fantasies[0].posterior(test), fantasies[1].posterior(test), rtol=1e-7, atol=1e-10)


def test_fit_reaches_singletaskgp_objective():
    """fg.fit (L-BFGS) reaches the objective fit_gpytorch_mll reaches on SingleTaskGP (with its
    priors: both maximize the log posterior density when flashgp has priors), measured by
    GPyTorch's ExactMarginalLogLikelihood at each fitted model's hyperparameters."""
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood
    X, Y = problem(n=20)
    ours = FlashGPModel(X, Y, input_transform=Normalize(3))
    theirs = SingleTaskGP(X, Y, input_transform=Normalize(3))
    mll = ExactMarginalLogLikelihood(theirs.likelihood, theirs)
    fit_gpytorch_mll(mll)
    fg.fit(ours, optimizer="lbfgs", lr=1.0, iters=10, progress=False)

    def objective(lengthscale, noise, constant):
        with torch.no_grad():
            theirs.covar_module.lengthscale = lengthscale
            theirs.likelihood.noise = noise
            theirs.mean_module.constant.fill_(float(constant))
        theirs.train()
        with torch.no_grad():
            return float(mll(theirs(*theirs.train_inputs), theirs.train_targets))

    best = objective(theirs.covar_module.lengthscale.detach().clone(), theirs.likelihood.noise.detach().clone(),
                     theirs.mean_module.constant.detach().clone())
    gp = ours.flashgp_model
    reached = objective(gp.kernel.lengthscale.detach(), gp.likelihood.noise.detach(), gp.mean.constant.detach())
    assert reached >= best - 1e-4 * abs(best) - 1e-4, (reached, best)


def test_flashgp_model_saves_and_loads(tmp_path):
    X, Y = problem()
    ours, _ = pair(X, Y)
    fg.save(ours.flashgp_model, tmp_path / "gp.pt")
    loaded = fg.load(tmp_path / "gp.pt")
    test = torch.rand(4, 3, dtype=F64)
    torch.testing.assert_close(loaded.posterior(test).mean, ours.flashgp_model.posterior(test).mean)


def test_conditioning_batches_and_fixed_noise_match():
    """X (b, q, d) and Y (s, b, q, 1) give a (s, b) batch of models; a FixedNoise model takes the
    new points' noise (and fantasizes with its mean training noise), as SingleTaskGP does."""
    X, Y = problem()
    ours, theirs = pair(X, Y)
    test = 4 * torch.rand(3, 3, dtype=F64) - 1
    theirs.posterior(test)
    new_X, new_Y = 4 * torch.rand(2, 2, 3, dtype=F64) - 1, torch.randn(3, 2, 2, 1, dtype=F64)
    a, b = ours.condition_on_observations(new_X, new_Y), theirs.condition_on_observations(new_X, new_Y)
    assert a.batch_shape == b.batch_shape == torch.Size([3, 2])
    assert_same_posterior(a.posterior(test), b.posterior(test), rtol=1e-7, atol=1e-10)
    ours, theirs = pair(X, Y, torch.full_like(Y, 0.01))
    theirs.posterior(test)
    at = 4 * torch.rand(2, 3, dtype=F64) - 1
    noise = torch.full((2, 1), 0.05, dtype=F64)
    a = ours.condition_on_observations(at, Y[:2], noise=noise)
    b = theirs.condition_on_observations(at, Y[:2], noise=noise)
    assert_same_posterior(a.posterior(test), b.posterior(test), rtol=1e-7, atol=1e-10)
    fantasies = [model.fantasize(at, SobolQMCNormalSampler(torch.Size([3]), seed=2)) for model in (ours, theirs)]
    assert_same_posterior(fantasies[0].posterior(test), fantasies[1].posterior(test), rtol=1e-7, atol=1e-10)


def knowledge_gradients(points):
    """qKnowledgeGradient's values and gradients at ``points`` (b, 1 + 4, d) on both models."""
    from botorch.acquisition import qKnowledgeGradient
    X, Y = problem()
    out = []
    for model in pair(X, Y):
        x = points.clone().requires_grad_(True)
        value = qKnowledgeGradient(model, num_fantasies=4, sampler=SobolQMCNormalSampler(torch.Size([4]), seed=0))(x)
        value.sum().backward()
        out.append((value.detach(), x.grad))
    return out


def test_knowledge_gradient_matches():
    """qKnowledgeGradient fantasizes at the candidate, then evaluates the fantasy models'
    posteriors at the fantasy points (num_fantasies, b, 1, d): the values, and the gradients
    with respect to the fantasy points, equal SingleTaskGP's."""
    points = 4 * torch.rand(3, 1 + 4, 3, dtype=F64) - 1
    (ours, grad_ours), (theirs, grad_theirs) = knowledge_gradients(points)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad_ours[:, 1:], grad_theirs[:, 1:], rtol=1e-5, atol=1e-8)


def test_knowledge_gradient_gradient_at_the_candidate_matches():
    points = 4 * torch.rand(3, 1 + 4, 3, dtype=F64) - 1
    (_, grad_ours), (_, grad_theirs) = knowledge_gradients(points)
    torch.testing.assert_close(grad_ours[:, :1], grad_theirs[:, :1], rtol=1e-5, atol=1e-8)


def two_outputs(n=14, batch=()):
    X, Y = problem(n=n, batch=batch)
    return X, torch.cat([Y, torch.cos(X[..., :1]) - X[..., 1:2]], -1)


@pytest.mark.parametrize("shape", [(4,), (3, 2)], ids=["q", "b-q"])
def test_two_outputs_match_singletaskgp(shape):
    """m = 2 outputs: an ExactGP batch of two independent GPs, as SingleTaskGP batches them;
    posteriors (a MultitaskMultivariateNormal), noise, one output alone, qLogEI through a
    scalarization, conditioning and fantasies all equal SingleTaskGP's."""
    X, Y = two_outputs()
    ours, theirs = pair(X, Y)
    assert ours.num_outputs == 2 and ours.batch_shape == theirs.batch_shape == torch.Size([])
    test = 4 * torch.rand(*shape, 3, dtype=F64) - 1
    assert_same_posterior(ours.posterior(test), theirs.posterior(test))
    assert_same_posterior(ours.posterior(test, observation_noise=True), theirs.posterior(test, observation_noise=True))
    noise = torch.rand(*shape, 2, dtype=F64)
    assert_same_posterior(ours.posterior(test, observation_noise=noise),
                          theirs.posterior(test, observation_noise=noise))
    one = ours.posterior(test, output_indices=[1])
    torch.testing.assert_close(one.mean, ours.posterior(test).mean[..., 1:])
    torch.testing.assert_close(one.variance, ours.posterior(test).variance[..., 1:])
    transform = ScalarizedPosteriorTransform(weights=torch.tensor([1.0, 0.5], dtype=F64))
    grads = []
    for model in (ours, theirs):
        x = test.clone().requires_grad_(True)
        acqf = qLogExpectedImprovement(model, best_f=Y.sum(-1).max(), posterior_transform=transform,
                                       sampler=SobolQMCNormalSampler(torch.Size([32]), seed=0))
        value = acqf(x if len(shape) > 1 else x.unsqueeze(0))
        value.sum().backward()
        grads.append((value.detach(), x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-9)
    new_X, new_Y = 4 * torch.rand(2, 3, dtype=F64) - 1, torch.randn(2, 2, dtype=F64)
    a, b = ours.condition_on_observations(new_X, new_Y), theirs.condition_on_observations(new_X, new_Y)
    assert_same_posterior(a.posterior(test), b.posterior(test), rtol=1e-7, atol=1e-10)
    fantasies = [model.fantasize(new_X, SobolQMCNormalSampler(torch.Size([3]), seed=1)) for model in (ours, theirs)]
    assert fantasies[0].batch_shape == fantasies[1].batch_shape == torch.Size([3])
    assert_same_posterior(fantasies[0].posterior(test), fantasies[1].posterior(test), rtol=1e-7, atol=1e-10)


def test_two_outputs_with_fixed_noise_and_batches_match():
    X, Y = two_outputs(batch=(2,))
    Yvar = torch.full_like(Y, 0.01)
    ours, theirs = pair(X, Y, Yvar)
    assert ours.batch_shape == theirs.batch_shape == torch.Size([2])
    test = torch.rand(3, 2, 4, 3, dtype=F64)
    assert_same_posterior(ours.posterior(test), theirs.posterior(test))
    assert_same_posterior(ours.posterior(test, observation_noise=True), theirs.posterior(test, observation_noise=True))
    at = torch.rand(2, 2, 3, dtype=F64)
    fantasies = [model.fantasize(at, SobolQMCNormalSampler(torch.Size([3]), seed=1)) for model in (ours, theirs)]
    assert_same_posterior(fantasies[0].posterior(test[0]), fantasies[1].posterior(test[0]), rtol=1e-7, atol=1e-10)
