# SVGP against dense float64 references: the ELBO (Gaussian closed form, Bernoulli by a fine grid),
# the natural-gradient step that reaches SGPR's bound, unbiased minibatches, files, resumes, errors.
import math

import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Matern, Scale
from flashgp.likelihoods import Bernoulli, FixedNoise, Gaussian
from flashgp.testing import check_config, check_resume, check_save_load

F64 = torch.float64
N, D, M = 60, 2, 7


def data(n=N, seed=0, classes=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=g, dtype=F64) * 4 - 2
    f = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1]
    if classes:
        return x, (f + 0.3 * torch.randn(n, generator=g, dtype=F64) > 0).to(F64)
    return x, f + 0.1 * torch.randn(n, generator=g, dtype=F64)


def randomize_q(model, seed=1):
    """Random (valid) variational parameters, so that the reference is not at q = prior."""
    g = torch.Generator().manual_seed(seed)
    q = model.variational
    with torch.no_grad():
        for name, p in q.named_parameters():
            if name == "natural_matrix":
                a = torch.randn(p.shape, generator=g, dtype=F64) * 0.3
                p.copy_(-0.5 * (a @ a.transpose(-1, -2) + torch.eye(p.shape[-1], dtype=F64)))
            elif name == "variational_root":
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.3 + torch.eye(p.shape[-1], dtype=F64))
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5 + (name == "variational_std"))


def reference_marginals(model, x):
    """q(f)'s mean and variance at x from dense float64 algebra (no triangular tricks)."""
    k = model.kernel
    z = model.inducing_points.detach()
    kzz = k(z, z).detach() + model.diagnostics.get("jitter", 0.0) * torch.eye(z.shape[0], dtype=F64)
    kxz, kxx = k(x, z).detach(), k(x, diag=True).detach()
    mean_q, root, _ = (t.detach() for t in model.variational.moments())
    s = root @ root.T
    if model.whiten:
        chol = torch.linalg.cholesky(kzz)
        a = torch.linalg.solve(chol, kxz.T)  # L^{-1} K_zx
        mu = a.T @ mean_q
        var = kxx - (a * a).sum(0) + (a * (s @ a)).sum(0)
    else:
        b = torch.linalg.solve(kzz, kxz.T)  # K_zz^{-1} K_zx
        mu = b.T @ mean_q
        var = kxx - (kxz.T * b).sum(0) + (b * (s @ b)).sum(0)
    return model.mean(x).detach() + mu, var, mean_q, s, kzz


def reference_kl(model, mean_q, s, kzz):
    prior = torch.eye(kzz.shape[0], dtype=F64) if model.whiten else kzz
    q = torch.distributions.MultivariateNormal(mean_q, s)
    p = torch.distributions.MultivariateNormal(torch.zeros_like(mean_q), prior)
    return torch.distributions.kl_divergence(q, p)


def grid_expected_log_prob(likelihood, y, mu, var, points=20001):
    """E log p(y | f) under N(mu, var) by the trapezoid rule on +-12 standard deviations."""
    t = torch.linspace(-12, 12, points, dtype=F64)
    f = mu.unsqueeze(-1) + var.sqrt().unsqueeze(-1) * t
    w = torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    logp = likelihood.log_prob(y.unsqueeze(-1).expand_as(f), f)
    return torch.trapezoid(w * logp, t, dim=-1)


@pytest.mark.parametrize("whiten", [True, False])
@pytest.mark.parametrize("variational", ["cholesky", "meanfield", "natural"])
def test_gaussian_elbo_equals_dense_reference(whiten, variational):
    x, y = data()
    model = fg.SVGP(Scale(Matern(nu=2.5, ard_dims=D)), M, x=x, y=y, whiten=whiten, variational=variational,
                    num_data=500)
    randomize_q(model)
    value = model.elbo(x[:20], y[:20])
    mu, var, mean_q, s, kzz = reference_marginals(model, x[:20])
    noise = model.likelihood.noise.detach()
    ell = -0.5 * (math.log(2 * math.pi) + noise.log() + ((y[:20] - mu) ** 2 + var) / noise)
    expected = ell.mean() - reference_kl(model, mean_q, s, kzz) / 500
    torch.testing.assert_close(value.detach(), expected, rtol=1e-10, atol=1e-10)
    value.backward()  # every parameter receives a finite gradient
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("whiten", [True, False])
def test_bernoulli_elbo_and_predictions_equal_fine_grid_reference(whiten):
    x, y = data(classes=True)
    model = fg.SVGP(Scale(RBF()), M, likelihood=Bernoulli(points=40), x=x, y=y, whiten=whiten, num_data=N)
    randomize_q(model)
    value = model.elbo(x, y)
    mu, var, mean_q, s, kzz = reference_marginals(model, x)
    ell = grid_expected_log_prob(model.likelihood, y, mu, var)
    expected = ell.mean() - reference_kl(model, mean_q, s, kzz) / N
    torch.testing.assert_close(value.detach(), expected, rtol=1e-6, atol=1e-6)
    post = model.posterior(x[:9])
    torch.testing.assert_close(post.mean, mu[:9], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(post.variance, var[:9], rtol=1e-9, atol=1e-9)
    proba = model.predict_proba(x[:9])
    expected_p = torch.special.ndtr(mu[:9] / (1 + var[:9]).sqrt())
    torch.testing.assert_close(proba[:, 1], expected_p, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(proba.sum(-1), torch.ones(9, dtype=F64))


def test_one_full_natural_step_reaches_the_sgpr_bound_and_posterior():
    x, y = data(n=120)
    model = fg.SVGP(Scale(RBF(ard_dims=D)), 12, x=x, y=y, variational="natural")
    for p in [*model.kernel.parameters(), *model.likelihood.parameters(), *model.mean.parameters(),
              model.inducing_points]:
        p.requires_grad_(False)
    fg.fit(model, data=(x, y), batch_size=120, iters=1, natural_lr=1.0, progress=False)
    sgpr = fg.SGPR(x, y, model.kernel, inducing=model.inducing_points.detach(), likelihood=model.likelihood,
                   mean=model.mean)
    torch.testing.assert_close(model.elbo(x, y).detach(), sgpr.elbo().detach(), rtol=1e-10, atol=1e-10)
    a, b = model.posterior(x[:15]), sgpr.posterior(x[:15])
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(a.variance, b.variance, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(a.covariance.to_dense(), b.covariance.to_dense(), rtol=1e-8, atol=1e-10)


def test_minibatch_elbo_is_unbiased():
    x, y = data(n=60)
    model = fg.SVGP(Scale(RBF()), M, x=x, y=y, num_data=60)
    randomize_q(model)
    full = model.elbo(x, y).detach()
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    parts = [model.elbo(x[i], y[i]).detach() for i in perm.split(12)]  # one epoch: an equal partition
    torch.testing.assert_close(torch.stack(parts).mean(), full, rtol=1e-12, atol=1e-12)
    g = torch.Generator().manual_seed(4)  # random batches of 5: the mean over many draws
    draws = torch.stack([model.elbo(x[i], y[i]).detach() for i in
                         (torch.randperm(60, generator=g)[:5] for _ in range(3000))])
    assert abs(float(draws.mean() - full)) < 4 * float(draws.std()) / math.sqrt(3000)


def test_training_improves_fit_and_calibration():
    x, y = data(n=400)
    test_x, test_y = data(n=200, seed=5)
    model = fg.SVGP(Scale(Matern(nu=2.5, ard_dims=D)), 20, x=x, y=y)
    history = fg.fit(model, data=(x, y), batch_size=64, iters=300, lr=0.05, seed=0, progress=False)
    assert history.loss[-1] < history.loss[0] - 1
    pred = model.predict(test_x)
    rmse = float((pred.mean - test_y).pow(2).mean().sqrt())
    exact = fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=D)))
    fg.fit(exact, iters=100, progress=False)
    exact_rmse = float((exact.predict(test_x).mean - test_y).pow(2).mean().sqrt())
    assert rmse < 1.3 * exact_rmse, (rmse, exact_rmse)
    z = (pred.mean - test_y) / pred.variance.sqrt()
    assert 0.9 < float((z.abs() < 1.96).to(F64).mean()) <= 1.0


def test_classification_from_a_cpu_data_loader():
    x, y = data(n=300, classes=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    model = fg.SVGP(Scale(RBF()), 15, likelihood=Bernoulli(), x=x)
    history = fg.fit(model, data=loader, iters=120, lr=0.05, progress=False)
    assert model.num_data == 300 and history.loss[-1] < history.loss[0]
    accuracy = float(((model.predict_proba(x)[:, 1] > 0.5).to(F64) == y).to(F64).mean())
    assert accuracy > 0.85
    moments = model.predict(x[:5])
    torch.testing.assert_close(moments.mean, model.predict_proba(x[:5])[:, 1])


@pytest.mark.parametrize("variational,natural_lr", [("cholesky", None), ("natural", 0.2)])
def test_contract_config_save_load_and_resume_mid_epoch(variational, natural_lr, tmp_path):
    x, y = data()

    def make():
        return fg.SVGP(Scale(RBF(ard_dims=D)), M, x=x, y=y, variational=variational)

    fit_kwargs = dict(data=(x, y), batch_size=16, iters=9, natural_lr=natural_lr, lr=0.05)  # 4 batches an epoch
    model = check_resume(make, fit_kwargs, tmp_path, interrupt_after=5, checkpoint_every=3, label="SVGP")
    check_config(model, label="SVGP")
    check_save_load(model, x[:6], tmp_path / "svgp.fgp", label="SVGP", batch=(x[:10], y[:10]))
    unwhitened = fg.SVGP(Scale(RBF()), M, x=x, y=y, whiten=False, learn_inducing=False, num_data=N)
    check_save_load(unwhitened, x[:6], tmp_path / "u.fgp", label="SVGP(whiten=False)", batch=(x, y))


def test_float32_model_matches_float64():
    x, y = data()
    model = fg.SVGP(Scale(RBF()), M, likelihood=Gaussian(noise_floor=1e-6), x=x, y=y, num_data=N)
    randomize_q(model)
    low = fg.SVGP(Scale(RBF()), M, likelihood=Gaussian(noise_floor=1e-6), x=x.float(), y=y.float(), num_data=N)
    low.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(low.elbo(x.float(), y.float()).double(), model.elbo(x, y).detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(low.posterior(x[:5].float()).variance.double(), model.posterior(x[:5]).variance,
                               rtol=1e-3, atol=1e-5)


def test_independent_outputs_sum_their_elbos():
    x, y = data()
    y2 = torch.stack([y, -2 * y], -1)  # (n, 2)
    model = fg.SVGP(Scale(RBF(batch_shape=(2,))), M, likelihood=Gaussian(batch_shape=(2,)), num_outputs=2,
                    x=x, y=y2, num_data=N)
    randomize_q(model)
    both = model.elbo(x, y2)
    single = []
    for c in range(2):
        one = fg.SVGP(Scale(RBF()), M, x=x, y=y2[:, c], num_data=N, mean=fg.means.Constant())
        with torch.no_grad():
            one.kernel.base.lengthscale = model.kernel.base.lengthscale[c]
            one.kernel.outputscale = model.kernel.outputscale[c]
            one.likelihood.noise = model.likelihood.noise[c]
            one.mean.constant = model.mean.constant[c]
            one.inducing_points.copy_(model.inducing_points)
            one.variational.variational_mean.copy_(model.variational.variational_mean[c])
            one.variational.variational_root.copy_(model.variational.variational_root[c])
        single.append(one.elbo(x, y2[:, c]))
    torch.testing.assert_close(both.detach(), sum(single).detach(), rtol=1e-10, atol=1e-10)
    assert model.posterior(x[:4]).mean.shape == (2, 4)


def test_bad_inputs_name_the_argument():
    x, y = data()
    with pytest.raises(TypeError, match="FixedNoise"):
        fg.SVGP(RBF(), M, likelihood=FixedNoise(torch.ones(N)), x=x)
    with pytest.raises(ValueError, match="inducing: a number of inducing points needs x"):
        fg.SVGP(RBF(), M)
    with pytest.raises(ValueError, match="inducing: expected inducing inputs"):
        fg.SVGP(RBF(), torch.zeros(4, 3), x=x)
    with pytest.raises(ValueError, match="variational"):
        fg.SVGP(RBF(), M, x=x, variational="full")
    model = fg.SVGP(RBF(), M, x=x, y=y)
    with pytest.raises(ValueError, match="data: SVGP keeps no training data"):
        fg.fit(model, iters=1, progress=False)
    with pytest.raises(ValueError, match="optimizer: minibatch"):
        fg.fit(model, data=(x, y), optimizer="lbfgs", iters=1, progress=False)
    with pytest.raises(ValueError, match="natural_lr: the model has no natural"):
        fg.fit(model, data=(x, y), natural_lr=0.1, iters=1, progress=False)
    with pytest.raises(ValueError, match="natural_lr: the model's q"):
        fg.fit(fg.SVGP(RBF(), M, x=x, variational="natural"), data=(x, y), iters=1, progress=False)
    with pytest.raises(ValueError, match="y: expected targets of shape"):
        fg.fit(model, data=(x, y[:, None].expand(N, 2)), iters=1, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        fg.fit(model, data=(x, y), batch_size=0, iters=1, progress=False)
    with pytest.raises(ValueError, match="data: ExactGP trains on the data it holds"):
        fg.fit(fg.ExactGP(x, y, RBF()), data=(x, y), iters=1, progress=False)
    with pytest.raises(ValueError, match="y: Bernoulli labels"):
        fg.fit(fg.SVGP(RBF(), M, likelihood=Bernoulli(), x=x), data=(x, y), iters=1, progress=False)


def test_softmax_classes_train_predict_and_survive_a_file(tmp_path):
    from flashgp.likelihoods import Softmax
    g = torch.Generator().manual_seed(0)
    x = torch.randn(450, 2, generator=g, dtype=F64)
    y = (torch.atan2(x[:, 1], x[:, 0]) / (2 * math.pi / 3) + 1.5).floor().clamp(0, 2)  # three sectors
    model = fg.SVGP(Scale(RBF()), 20, likelihood=Softmax(3), x=x)
    assert model.num_outputs == 3 and model.variational.batch_shape == (3,)
    history = fg.fit(model, data=(x, y), batch_size=90, iters=150, lr=0.05, progress=False)
    assert history.loss[-1] < 0.5 * history.loss[0]
    proba = model.predict_proba(x)
    assert proba.shape == (450, 3)
    torch.testing.assert_close(proba.sum(-1), torch.ones(450, dtype=F64))
    assert float((proba.argmax(-1) == y).to(F64).mean()) > 0.93
    post = model.posterior(x[:4])
    torch.testing.assert_close(proba[:4], model.likelihood.probabilities(post.mean, post.variance).T)
    check_save_load(model, x[:6], tmp_path / "softmax.fgp", label="SVGP(Softmax)", batch=(x[:20], y[:20]))
    with pytest.raises(ValueError, match="num_outputs"):
        fg.SVGP(RBF(), 5, likelihood=Softmax(3), num_outputs=2, x=x)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli", "softmax", "student_t", "poisson"])
def test_unchecked_loss_equals_the_checked_one(likelihood):
    from flashgp.likelihoods import Poisson, Softmax, StudentT
    x, y = data()
    make = {"gaussian": (None, y), "bernoulli": (Bernoulli(), (y > 0).to(F64)),
            "softmax": (Softmax(3), (y * 1.4 + 1.5).clamp(0, 2.9).floor()), "student_t": (StudentT(), y),
            "poisson": (Poisson(), (y > 0).to(F64) * 3)}
    lik, targets = make[likelihood]
    model = fg.SVGP(Scale(RBF()), M, likelihood=lik, x=x, num_data=N, jitter=1e-8)  # both add the same jitter
    randomize_q(model)
    loss, info = model.unchecked_loss(x[:30], targets[:30])
    torch.testing.assert_close(loss, model.loss(batch=(x[:30], targets[:30])), rtol=1e-12, atol=1e-12)
    assert int(info.sum()) == 0
    model.check_data(x, targets)  # the whole data, as batches are checked
    with pytest.raises(ValueError):
        model.check_data(x, torch.full_like(targets, float("nan")))


def test_cuda_graph_option_is_refused_where_it_cannot_apply():
    x, y = data()
    model = fg.SVGP(RBF(), M, x=x, y=y)
    with pytest.raises(ValueError, match="cuda_graph: needs"):
        fg.fit(model, data=(x, y), iters=1, progress=False, cuda_graph=True)  # on the CPU
    with pytest.raises(ValueError, match="cuda_graph: expected True or False"):
        fg.fit(model, data=(x, y), iters=1, progress=False, cuda_graph="yes")
    history = fg.fit(model, data=(x, y), iters=2, progress=False, cuda_graph=False)
    assert not any(d.get("graph") for d in history.diagnostics)
