# No stale answers: a model owns its training data, and its predictions follow every change of its
# parameters, parts and data however it was made (the prediction cache, models/state.py).
import numpy as np
import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Matern, Scale
from flashgp.likelihoods import FixedNoise
from flashgp.means import Zero

F64 = torch.float64
RNG = np.random.RandomState(3)
XN = RNG.uniform(-2, 2, (40, 2))
YN = np.sin(XN[:, 0]) + XN[:, 1] + 0.05 * RNG.randn(40)
XT = torch.as_tensor(RNG.uniform(-2, 2, (6, 2)))
SOLVERS = {"cholesky": fg.Cholesky(), "cg": fg.CG(tol=1e-6, eval_tol=1e-8, variance_tol=1e-6)}


def gp(x=XN, y=YN, solver="cholesky", **kwargs):
    return fg.ExactGP(x, y, Scale(RBF(ard_dims=2)), solver=SOLVERS[solver], **kwargs)


def same_predictions(model, reference, rtol=1e-9):
    got, want = model.predict(XT), reference.predict(XT)
    torch.testing.assert_close(got.mean, want.mean, rtol=rtol, atol=rtol)
    torch.testing.assert_close(got.variance, want.variance, rtol=rtol, atol=rtol)
    torch.testing.assert_close(model.mll().detach(), reference.mll().detach(), rtol=rtol, atol=rtol)


def copy_of(model):
    """A fresh model with model's data and parameters (no cache)."""
    other = gp(model.train_x.clone(), model.train_y.clone(), solver="cholesky" if isinstance(
        model.solver, fg.Cholesky) else "cg", likelihood=type(model.likelihood)(model.likelihood.noise.detach().clone())
        if isinstance(model.likelihood, FixedNoise) else None)
    other.load_state_dict(model.state_dict())
    return other


# ----- the model owns its training data -------------------------------------------------------------

@pytest.mark.parametrize("edit", ["y-numpy", "x-numpy", "y-tensor", "x-tensor", "set_train_data"])
def test_caller_edits_after_construction_do_not_reach_the_model(edit):
    x, y = XN.copy(), YN.copy()
    if edit in ("y-tensor", "x-tensor"):
        x, y = torch.tensor(x), torch.tensor(y)
    model = gp(x, y)
    if edit == "set_train_data":
        x, y = XN[:30].copy(), YN[:30].copy()
        model.set_train_data(x, y)
    before = model.predict(XT)
    reference = gp(x.copy() if isinstance(x, np.ndarray) else x.clone(), y.copy() if isinstance(y, np.ndarray) else y.clone())
    reference.load_state_dict(model.state_dict())
    if edit.startswith("y") or edit == "set_train_data":
        y[:] = -y  # the edit: predict used the old y while mll used the new one
    else:
        x[:] = x * 3
    torch.testing.assert_close(model.predict(XT).mean, before.mean, rtol=0, atol=0)
    same_predictions(model, reference)


def test_owned_data_is_not_copied_twice_when_the_cast_already_copied():
    x32 = XN.astype(np.float32)
    model = fg.ExactGP(torch.as_tensor(x32), torch.as_tensor(YN.astype(np.float32)), Scale(RBF()),
                       solver=fg.Cholesky())
    assert model.train_x.dtype == torch.float32 and model.train_x.is_contiguous()
    x64 = torch.as_tensor(XN)
    model64 = gp(x64, YN)
    assert model64.train_x.data_ptr() != x64.data_ptr()  # same dtype: copied


# ----- predictions follow parameter changes --------------------------------------------------------

def data_edit(model):
    model.likelihood.raw_noise.data.fill_(-1.0)  # no version bump


def no_grad_edit(model):
    with torch.no_grad():
        model.kernel.base.raw_lengthscale.add_(0.3)


def assign(model):
    model.kernel.outputscale = 2.5


def data_assign(model):
    model.kernel.base.raw_lengthscale.data = torch.full_like(model.kernel.base.raw_lengthscale, 0.4)


def state_dict_load(model):
    other = gp()
    other.kernel.base.lengthscale = torch.tensor([[0.3, 0.9]], dtype=F64)
    model.load_state_dict(other.state_dict())


def replace_part(model):
    model.mean = Zero()


def replace_kernel_same_values(model):  # equal parameter values, another kernel: a new part
    base = Matern(nu=2.5, ard_dims=2).double()
    base.lengthscale = model.kernel.base.lengthscale.detach()
    model.kernel.base = base


def train_y_in_place(model):
    with torch.no_grad():
        model.train_y.mul_(-1)


EDITS = [data_edit, no_grad_edit, assign, data_assign, state_dict_load, replace_part,
         replace_kernel_same_values, train_y_in_place]


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__ for e in EDITS])
def test_predictions_follow_every_kind_of_edit(edit, solver):
    model = gp(solver=solver)
    model.predict(XT)  # cached
    edit(model)
    fresh = copy_of(model) if edit not in (replace_part, replace_kernel_same_values) else None
    if fresh is None:  # a changed structure: compare with a model built that way
        fresh = gp(solver=solver, mean=model.mean) if edit is replace_part else gp(solver=solver)
        if edit is replace_kernel_same_values:
            fresh.kernel.base = model.kernel.base
        fresh.load_state_dict(model.state_dict())
    same_predictions(model, fresh, rtol=1e-7 if solver == "cg" else 1e-10)


def test_fixed_noise_edits_are_seen():
    model = gp(likelihood=FixedNoise(torch.full((40,), 0.05, dtype=F64)))
    first = model.posterior(XT).variance
    model.likelihood.noise.data.mul_(4)  # through .data
    want = gp(likelihood=FixedNoise(torch.full((40,), 0.2, dtype=F64)))
    want.load_state_dict(model.state_dict())
    torch.testing.assert_close(model.posterior(XT).variance, want.posterior(XT).variance, rtol=1e-12, atol=0)
    model.likelihood.noise = torch.full((40,), 0.05, dtype=F64)  # assignment
    torch.testing.assert_close(model.posterior(XT).variance, first, rtol=1e-12, atol=0)


def test_unchanged_model_reuses_its_cache():
    model = gp()
    model.predict(XT)
    cache = model._prediction
    model.predict(XT[:2])
    model.posterior(XT)
    model.eval()
    model.posterior(XT)
    assert model._prediction is cache


def test_train_mode_drops_the_cache_for_data_edits_it_cannot_see():
    # edits of the training data through .data bypass the version counter (documented in
    # models/state.py): GPyTorch's habit, model.train(), drops the cache
    model = gp()
    model.predict(XT)
    model.train_y.data.mul_(-1)
    model.train()
    model.eval()
    reference = gp(XN, -YN)
    reference.load_state_dict(model.state_dict())
    same_predictions(model, reference)


# ----- posteriors never mix two states ------------------------------------------------------------

def test_a_posterior_refuses_its_lazy_covariance_after_the_model_changed():
    model = gp()
    post = model.posterior(XT)
    dense = post.covariance.to_dense()
    mean, var = post.mean.clone(), post.variance.clone()
    assign(model)
    with pytest.raises(ValueError, match=r"^covariance: the model changed after this posterior"):
        post.covariance.to_dense()
    with pytest.raises(ValueError, match="model.posterior"):
        post.covariance.rows(torch.tensor([0, 1]))
    torch.testing.assert_close(post.mean, mean, rtol=0, atol=0)  # eager values are kept
    torch.testing.assert_close(post.variance, var, rtol=0, atol=0)
    model.kernel.outputscale = copy_of(gp()).kernel.outputscale.detach()  # back to where it was
    torch.testing.assert_close(post.covariance.to_dense(), dense, rtol=1e-12, atol=0)


def test_test_inputs_edited_after_the_call_do_not_change_the_posterior():
    model = gp()
    x = XT.clone()
    post = model.posterior(x)
    dense = post.covariance.to_dense().clone()
    x.mul_(5)
    torch.testing.assert_close(post.covariance.to_dense(), dense, rtol=0, atol=0)


def test_batched_test_sets_guard_their_stacked_covariance():
    model = gp()
    post = model.posterior(torch.stack([XT, XT + 0.1]))
    post.covariance.to_dense()
    model.likelihood.noise = 0.3
    with pytest.raises(ValueError, match="covariance: the model changed"):
        post.covariance.to_dense()
