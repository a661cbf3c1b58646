# Tests for batches of ExactGPs: batched data, kernels and likelihoods against separate GPs, on the
# Cholesky and CG paths.
import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Scale
from flashgp.likelihoods import Gaussian
from flashgp.means import Constant
from gp_reference import F64, data, gen, rbf_model, reference_posterior

# ----- batches ----------------------------------------------------------------------------------

def test_batched_gp_equals_separate_gps():
    x, y, x_test = data(n=120, seed=10, batch=(2,), m=15)
    hyper = [dict(ls=(0.6, 1.1), out=1.5, noise=0.05, c=0.3), dict(ls=(1.4, 0.9), out=0.7, noise=0.2, c=-0.4)]
    kernel = Scale(RBF(ard_dims=2, batch_shape=(2,)))
    model = fg.ExactGP(x, y, kernel, likelihood=Gaussian(batch_shape=(2,)), mean=Constant(batch_shape=(2,)),
                       solver=fg.Cholesky())
    kernel.base.lengthscale = torch.tensor([[h["ls"]] for h in hyper], dtype=F64)
    kernel.outputscale = torch.tensor([h["out"] for h in hyper], dtype=F64)
    model.likelihood.noise = torch.tensor([h["noise"] for h in hyper], dtype=F64)
    model.mean.constant = torch.tensor([h["c"] for h in hyper], dtype=F64)
    mll = model.mll()
    assert mll.shape == (2,)
    post, pred = model.posterior(x_test), model.predict(x_test)
    assert post.mean.shape == (2, 15) and post.covariance.to_dense().shape == (2, 15, 15)
    assert post.sample(3).shape == (3, 2, 15)
    for i, h in enumerate(hyper):
        single = rbf_model(x[i], y[i], lengthscale=h["ls"], outputscale=h["out"], noise=h["noise"], constant=h["c"])
        torch.testing.assert_close(mll[i].detach(), single.mll().detach(), rtol=1e-12, atol=0)
        sp = single.posterior(x_test[i])
        torch.testing.assert_close(post.mean[i], sp.mean, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(post.variance[i], sp.variance, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(pred.variance[i], single.predict(x_test[i]).variance, rtol=1e-7, atol=1e-10)
    # gradients of the summed mll go to each member's own hyperparameters
    mll.sum().backward()
    g = kernel.raw_outputscale.grad
    single = rbf_model(x[1], y[1], lengthscale=hyper[1]["ls"], outputscale=hyper[1]["out"],
                       noise=hyper[1]["noise"], constant=hyper[1]["c"])
    single.mll().backward()
    torch.testing.assert_close(g[1], single.kernel.raw_outputscale.grad, rtol=1e-9, atol=1e-12)


def test_batched_data_with_shared_hyperparameters():
    x, y, x_test = data(n=80, seed=11, batch=(3,), m=10)
    model = rbf_model(x, y)
    mll = model.mll()
    post = model.posterior(x_test)
    assert mll.shape == (3,)
    for i in range(3):
        single = rbf_model(x[i], y[i])
        torch.testing.assert_close(mll[i].detach(), single.mll().detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(post.mean[i], single.posterior(x_test[i]).mean, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("solver", [fg.Cholesky(), fg.CG(tol=0.01, precond=fg.PivotedCholesky(40))],
                         ids=["cholesky", "cg"])
def test_batched_model_with_shared_test_points(solver):
    # test x (m, d) broadcasts against a batched model: every member predicts at the same points
    x, y, _ = data(n=90, seed=30, batch=(2,))
    _, _, x_test = data(n=1, seed=31, m=12)
    model = rbf_model(x, y, solver=solver)
    post = model.posterior(x_test)
    assert post.mean.shape == (2, 12) and post.variance.shape == (2, 12)
    tol = 1e-9 if isinstance(solver, fg.Cholesky) else 1e-3  # CG: eval_tol 1e-3
    for i in range(2):
        mean, var = reference_posterior(x[i], y[i], x_test, [0.7, 1.3])
        torch.testing.assert_close(post.mean[i], mean, rtol=0, atol=tol)
        torch.testing.assert_close(post.variance[i], var, rtol=0, atol=tol)


def test_batch_from_kernel_only_accepts_batched_test_points():
    # kernel batch (2,), shared data: the model is a batch of 2, test x may be (m, d) or (2, m, d)
    x, y, x_test = data(n=70, seed=33, m=6)
    kernel = Scale(RBF(batch_shape=(2,)))
    model = fg.ExactGP(x, y, kernel, solver=fg.Cholesky())
    kernel.base.lengthscale = torch.tensor([[[0.5]], [[1.5]]], dtype=F64)
    shared = model.posterior(x_test)
    batched = model.posterior(x_test.expand(2, 6, 2))
    assert shared.mean.shape == batched.mean.shape == (2, 6)
    torch.testing.assert_close(batched.mean, shared.mean)
    for i, ls in enumerate([0.5, 1.5]):
        single = fg.ExactGP(x, y, Scale(RBF(lengthscale=ls)), solver=fg.Cholesky())
        torch.testing.assert_close(shared.mean[i], single.posterior(x_test).mean, rtol=1e-7, atol=1e-8)
    with pytest.raises(ValueError, match=r"\bx\b"):
        model.posterior(x_test.expand(3, 6, 2))


def _likelihood_batched_model(solver):
    # the batch comes from the likelihood alone: shared data and kernel, three noise levels
    x, y, x_test = data(n=80, seed=32, m=7)
    model = rbf_model(x, y, likelihood=Gaussian(batch_shape=(3,)), solver=solver)
    model.likelihood.noise = torch.tensor([0.05, 0.1, 0.5], dtype=F64)
    return model, x, y, x_test


def test_batch_from_likelihood_only_cholesky():
    model, x, y, x_test = _likelihood_batched_model(fg.Cholesky())
    mll = model.mll()
    post = model.posterior(x_test.expand(3, 7, 2))
    assert mll.shape == (3,) and post.mean.shape == (3, 7)
    for i, noise in enumerate([0.05, 0.1, 0.5]):
        single = rbf_model(x, y, noise=noise)
        torch.testing.assert_close(mll[i].detach(), single.mll().detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(post.mean[i], single.posterior(x_test).mean, rtol=1e-9, atol=1e-10)


def test_batch_from_likelihood_only_cg():
    model, _, _, _ = _likelihood_batched_model(fg.CG(tol=0.01, probes=30))
    ref = _likelihood_batched_model(fg.Cholesky())[0].mll().detach()
    mll = model.mll(generator=gen(0)).detach()
    assert float(((mll - ref) / ref).abs().max()) < 0.01


def test_batched_cg_close_to_batched_cholesky():
    x, y, x_test = data(n=300, seed=12, batch=(2,), m=20)
    model = rbf_model(x, y)
    ref_mll = model.mll().detach()
    ref_post = model.posterior(x_test)
    model.solver = fg.CG(tol=0.01, probes=30, precond=fg.PivotedCholesky(50))
    mll = model.mll(generator=gen(0))
    assert model.diagnostics["path"] == "cg" and mll.shape == (2,)
    assert float(((mll.detach() - ref_mll) / ref_mll).abs().max()) < 0.01
    post = model.posterior(x_test)
    torch.testing.assert_close(post.mean, ref_post.mean, rtol=0, atol=1e-2 * float(ref_post.mean.abs().max()))
    torch.testing.assert_close(post.variance, ref_post.variance, rtol=0.05, atol=1e-6)


