# DirichletGP (Milios et al. 2018): the transformed targets and noise, training, class
# probabilities, files and the model contract, and its errors.
import math

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Matern, Scale
from flashgp.models.dirichlet import dirichlet_targets
from flashgp.testing import check_model, exact_gp_loss_reference, exact_gp_posterior_reference

F64 = torch.float64


def blobs(n, classes, seed=0, spread=0.6):
    """x (n, 2): points around ``classes`` centres on a circle of radius 2; labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    angle = 2 * math.pi * labels.to(F64) / classes
    centres = torch.stack([2 * angle.cos(), 2 * angle.sin()], -1)
    return centres + spread * torch.randn(n, 2, generator=g, dtype=F64), labels


def accuracy(model, x, labels):
    gen = torch.Generator().manual_seed(0)
    return float((model.predict_labels(x, generator=gen) == labels).to(F64).mean())


# ----- the transform ------------------------------------------------------------------------------

@pytest.mark.parametrize("epsilon", [0.01, 0.3])
def test_targets_and_noise_are_the_formulas(epsilon):
    x, _ = blobs(5, 3)
    labels = torch.tensor([0, 2, 1, 2, 0])
    model = fg.DirichletGP(x, labels, Scale(RBF(ard_dims=2)), alpha_epsilon=epsilon)
    alpha = torch.full((3, 5), epsilon, dtype=F64)
    alpha[labels, torch.arange(5)] += 1
    noise = torch.log(1 / alpha + 1)
    assert model.num_classes == 3 and model.alpha_epsilon == epsilon
    assert torch.allclose(model.likelihood.noise, noise, rtol=1e-14, atol=0)
    assert torch.allclose(model.train_y, torch.log(alpha) - noise / 2, rtol=1e-14, atol=1e-15)
    assert model.train_x.shape == (3, 5, 2) and torch.equal(model.train_x[1], x)
    assert torch.equal(model.train_labels, labels)
    assert isinstance(model.likelihood, fg.likelihoods.FixedNoise)
    targets, variances = dirichlet_targets(labels, 3, epsilon)
    assert torch.equal(targets, model.train_y) and torch.equal(variances, model.likelihood.noise)


def test_num_classes_may_exceed_the_labels():
    x, labels = blobs(12, 2)
    model = fg.DirichletGP(x, labels, Scale(RBF()), num_classes=4)
    assert model.num_classes == 4 and model.train_y.shape == (4, 12)
    assert model.predict_proba(x[:3]).shape == (3, 4)


def test_kernel_batched_per_class_keeping_given_values():
    x, labels = blobs(30, 3)
    kernel = Scale(Matern(nu=1.5, lengthscale=0.3, ard_dims=2))
    model = fg.DirichletGP(x, labels, kernel)
    assert model.kernel is not kernel and model.kernel.batch_shape == (3,) and kernel.batch_shape == ()
    assert torch.allclose(model.kernel.base.lengthscale, torch.full((3, 1, 2), 0.3, dtype=F64), rtol=1e-15)
    var = model.train_y.var(-1, unbiased=False)  # the output scale was not given: chosen per class
    assert torch.allclose(model.kernel.outputscale, var)
    assert torch.allclose(model.mean.constant, model.train_y.mean(-1))
    batched = Scale(RBF(ard_dims=2, batch_shape=(3,)), outputscale=2.0)
    assert fg.DirichletGP(x, labels, batched).kernel is batched


def test_set_train_data_derives_targets_again():
    x, labels = blobs(20, 3)
    model = fg.DirichletGP(x, labels, Scale(RBF()))
    x2, labels2 = blobs(14, 3, seed=1)
    model.set_train_data(x2, labels2)
    targets, noise = dirichlet_targets(labels2, 3, 0.01)
    assert torch.equal(model.train_y, targets) and torch.equal(model.likelihood.noise, noise)
    assert model.train_x.shape == (3, 14, 2) and torch.equal(model.train_labels, labels2)
    with pytest.raises(ValueError, match="labels"):
        model.set_train_data(x2, labels2 + 1)  # class 3 of 3
    assert torch.equal(model.train_labels, labels2) and model.likelihood.noise.shape == (3, 14)


# ----- training and probabilities ------------------------------------------------------------------

@pytest.mark.parametrize("classes", [2, 3])
def test_training_improves_accuracy(classes):
    x, labels = blobs(120, classes)
    test_x, test_labels = blobs(300, classes, seed=1)
    # a lengthscale far too short: the posterior falls back to the prior mean between points
    model = fg.DirichletGP(x, labels, Scale(RBF(lengthscale=0.02)), solver=fg.Cholesky())
    before, loss_before = accuracy(model, test_x, test_labels), float(model.loss().sum().detach())
    fg.fit(model, lr=0.1, iters=60, progress=False, seed=0)
    after, loss_after = accuracy(model, test_x, test_labels), float(model.loss().sum().detach())
    assert loss_after < loss_before
    assert after > before + 0.2 and after > 0.9, (before, after)


def test_predict_proba_rows_sum_to_one_and_are_reproducible():
    x, labels = blobs(60, 3)
    model = fg.DirichletGP(x, labels, Scale(RBF()))
    test_x, _ = blobs(40, 3, seed=2)
    proba = model.predict_proba(test_x, samples=64, generator=torch.Generator().manual_seed(3))
    assert proba.shape == (40, 3) and proba.dtype == F64 and bool((proba >= 0).all())
    assert torch.allclose(proba.sum(-1), torch.ones(40, dtype=F64), atol=1e-12)
    again = model.predict_proba(test_x, samples=64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(proba, again)
    # common random numbers: a point's probabilities do not depend on the other test points
    part = model.predict_proba(test_x[5:9], samples=64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(part, proba[5:9], rtol=1e-12, atol=1e-14)
    log_p = model.predict_log_proba(test_x, samples=64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(log_p.exp(), proba)
    labels_hat = model.predict_labels(test_x, samples=64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(labels_hat, proba.argmax(-1))


def test_predict_proba_is_the_expected_softmax():
    """Against E[softmax(f)] by many more independent draws from the posterior marginals."""
    x, labels = blobs(40, 3)
    model = fg.DirichletGP(x, labels, Scale(RBF()))
    test_x, _ = blobs(6, 3, seed=4)
    post = model.posterior(test_x)
    g = torch.Generator().manual_seed(0)
    f = post.mean + post.variance.sqrt() * torch.randn(200_000, 3, 6, generator=g, dtype=F64)
    reference = torch.softmax(f, dim=1).mean(0).T
    proba = model.predict_proba(test_x, samples=20_000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(proba, reference, atol=0.01)


def test_save_load_gives_identical_probabilities(tmp_path):
    x, labels = blobs(50, 3)
    model = fg.DirichletGP(x, labels, Scale(Matern(nu=2.5, ard_dims=2)), alpha_epsilon=0.05)
    fg.fit(model, lr=0.1, iters=5, progress=False, seed=0)
    fg.save(model, tmp_path / "d.fgp")
    back = fg.load(tmp_path / "d.fgp")
    assert type(back) is fg.DirichletGP and back.config() == model.config()
    test_x, _ = blobs(20, 3, seed=5)
    p1 = model.predict_proba(test_x, generator=torch.Generator().manual_seed(7))
    p2 = back.predict_proba(test_x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(p1, p2)


def test_cg_solver_agrees_with_cholesky():
    x, labels = blobs(80, 2)
    test_x, _ = blobs(30, 2, seed=6)
    exact = fg.DirichletGP(x, labels, Scale(RBF()), solver=fg.Cholesky())
    cg = fg.DirichletGP(x, labels, Scale(RBF()), solver=fg.CG(tol=1e-8, max_iters=500, probes=64))
    p1 = exact.predict_proba(test_x, generator=torch.Generator().manual_seed(0))
    p2 = cg.predict_proba(test_x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(p1, p2, atol=1e-4)


# ----- the model contract -------------------------------------------------------------------------

def test_contract_cholesky(tmp_path):
    x, labels = blobs(40, 3)
    test_x, _ = blobs(9, 3, seed=1)
    check_model(lambda: fg.DirichletGP(x, labels, Scale(Matern(nu=2.5, ard_dims=2)), solver=fg.Cholesky()),
                test_x, loss_reference=exact_gp_loss_reference, posterior_reference=exact_gp_posterior_reference,
                loss_atol=1e-9, grad_rtol=1e-6, mean_atol=1e-8, var_rtol=1e-6, tmp_dir=tmp_path,
                name="DirichletGP")


# ----- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, num_classes, match", [
    (torch.zeros(10, dtype=torch.long), None, "at least 2 distinct classes"),
    (torch.ones(10, dtype=torch.long), 3, "at least 2 distinct classes"),
    (torch.linspace(0, 1, 10), None, "non-integer"),
    (torch.tensor([0, 1] * 4 + [2, -1]), None, "0..2"),
    (torch.tensor([0, 1] * 4 + [2, 3]), 3, "0..2"),
    (torch.tensor([0, 1] * 5, dtype=torch.bool), None, "dtype"),
    (torch.tensor([0, 1] * 4), None, "shape"),
    ("ab", None, "labels"),
])
def test_bad_labels(labels, num_classes, match):
    x, _ = blobs(10, 2)
    with pytest.raises(ValueError, match=match) as info:
        fg.DirichletGP(x, labels, Scale(RBF()), num_classes=num_classes)
    assert "labels" in str(info.value)


def test_integral_float_labels_accepted():
    x, labels = blobs(10, 2)
    model = fg.DirichletGP(x, labels.to(F64), Scale(RBF()))
    assert model.train_labels.dtype == torch.int64 and torch.equal(model.train_labels, labels)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=1), "num_classes"), (dict(num_classes=2.0), "num_classes"),
    (dict(alpha_epsilon=0.0), "alpha_epsilon"), (dict(alpha_epsilon=float("inf")), "alpha_epsilon"),
])
def test_bad_settings(kwargs, match):
    x, labels = blobs(10, 2)
    with pytest.raises(ValueError, match=match):
        fg.DirichletGP(x, labels, Scale(RBF()), **kwargs)


def test_bad_inputs_and_kernels():
    x, labels = blobs(10, 2)
    with pytest.raises(ValueError, match="x: expected shape"):
        fg.DirichletGP(x.expand(2, 10, 2), labels, Scale(RBF()))
    with pytest.raises(ValueError, match="batch_shape"):
        fg.DirichletGP(x, labels, Scale(RBF(batch_shape=(3,))))
    with pytest.raises(TypeError, match="kernel"):
        fg.DirichletGP(x, labels, "rbf")
    model = fg.DirichletGP(x, labels, Scale(RBF()))
    with pytest.raises(ValueError, match="samples"):
        model.predict_proba(x, samples=0)
    with pytest.raises(ValueError, match="x: expected shape"):
        model.predict_proba(torch.ones(3, 3, dtype=F64))
