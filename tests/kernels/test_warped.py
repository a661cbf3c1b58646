# Deep kernels: Warped(base, network) against float64 references written out here (the network's
# layers by hand, then the RBF formula), the exact GP's mll gradient into the network on the
# Cholesky and CG paths, SGPR / SVGP training, files, checkpoints and bad arguments.
import math
import warnings

import pytest
import torch
from torch import nn

import flashgp as fg
from flashgp.linalg import inv_quad_logdet
from flashgp.operators import AddedDiag, KernelOperator, kernel_operator
from flashgp.serialize import FEATURE_EXTRACTORS, ConfigError, kernel_from_config, kernel_to_config, \
    register_feature_extractor
from flashgp.testing import check_model

K = fg.kernels
F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def data(n=40, d=4, seed=0, dtype=F64):
    g = gen(seed)
    x = torch.rand(n, d, generator=g, dtype=F64) * 2 - 1
    y = torch.sin(3 * x[:, 0]) * torch.cos(2 * x[:, 1:].sum(-1)) + 0.05 * torch.randn(n, generator=g, dtype=F64)
    return x.to(dtype), y.to(dtype)


def warped(d=4, out=2, hidden=(8,), activation="tanh", seed=0, ard=True, outputscale=None, lengthscale=None):
    torch.manual_seed(seed)
    net = K.MLP(d, hidden=hidden, out_dims=out, activation=activation)
    base = K.RBF(ard_dims=out if ard else None, lengthscale=lengthscale)
    return K.Warped(K.Scale(base, outputscale=outputscale), net).double()


# ----- references: the network's layers and the kernel formula by hand, in float64 -------------------

ACT = {"relu": torch.relu, "tanh": torch.tanh, "silu": lambda v: v * torch.sigmoid(v)}


def ref_features(net, x):
    h = x.double()
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        h = h @ lin.weight.double().T + lin.bias.double()
        if i < len(linears) - 1:
            h = ACT[net.activation](h)
    return h


def ref_kernel(kernel, x1, x2):
    """outputscale * exp(-|f1 - f2|^2 / (2 l^2)), pair by pair in float64."""
    f1, f2 = ref_features(kernel.feature_extractor, x1), ref_features(kernel.feature_extractor, x2)
    ls = kernel.base.base.lengthscale.double().reshape(-1)
    diff = (f1.unsqueeze(-2) - f2.unsqueeze(-3)) / ls
    return kernel.base.outputscale.double() * torch.exp(-0.5 * diff.pow(2).sum(-1))


def ref_loss(model):
    """-log N(y; c, K + s I) / n, dense float64, differentiable in every parameter."""
    x, y = model.train_x.double(), model.train_y.double()
    n = x.shape[-2]
    k_hat = ref_kernel(model.kernel, x, x) + model.likelihood.noise.double() * torch.eye(n, dtype=F64)
    r = y - model.mean.constant.double()
    chol = torch.linalg.cholesky(k_hat)
    alpha = torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)
    return (0.5 * (r * alpha).sum() + chol.diagonal().log().sum() + 0.5 * n * math.log(2 * math.pi)) / n


def net_grads(model, loss):
    params = list(model.kernel.feature_extractor.parameters())
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def rel(a, b):
    return float((a - b).norm() / b.norm())


# ----- the kernel -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "tanh", "silu"])
def test_kernel_matrix_against_reference(activation):
    k = warped(activation=activation, hidden=(8, 5), out=3, lengthscale=0.7, outputscale=1.3)
    x1, _ = data(15, seed=1)
    x2, _ = data(9, seed=2)
    torch.testing.assert_close(k(x1, x2), ref_kernel(k, x1, x2), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(k(x1), ref_kernel(k, x1, x1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(k(x1, diag=True), ref_kernel(k, x1, x1).diagonal(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(k.diag(x2), torch.full((9,), 1.3, dtype=F64))
    xb = torch.stack([x1, x1.flip(0)])  # a batch of inputs: the network maps every row
    torch.testing.assert_close(k(xb)[1], ref_kernel(k, x1.flip(0), x1.flip(0)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["dense", "blocked"])
def test_operator_is_the_base_kernels_on_the_features(backend):
    k = warped(lengthscale=0.6)
    x, _ = data(30)
    with torch.no_grad():
        op = kernel_operator(k, x, backend=backend)
        assert isinstance(op, KernelOperator) and op.kernel is k.base and op.backend == backend
        v = torch.randn(30, 3, generator=gen(0), dtype=F64)
        dense = ref_kernel(k, x, x)
        torch.testing.assert_close(op.matmul(v), dense @ v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(op.diagonal(), dense.diagonal())
        cross = kernel_operator(k, x[:7], x, backend=backend)
        torch.testing.assert_close(cross.to_dense(), dense[:7], rtol=1e-12, atol=1e-14)


def test_operator_contract():
    # flashgp.testing's operator contract on the kernel's operator, its features requiring grad
    from flashgp.testing import check_operator
    k = warped(lengthscale=0.6)
    x, _ = data(25)

    def reference(op):  # the base kernel by hand on the operator's own features
        ls = k.base.base.lengthscale.double().reshape(-1)
        f = op.x1.double()
        diff = (f.unsqueeze(-2) - f.unsqueeze(-3)) / ls
        return k.base.outputscale.double() * torch.exp(-0.5 * diff.pow(2).sum(-1))

    check_operator(lambda: k.operator(x, backend="blocked"), reference)
    check_operator(lambda: k.operator(x, backend="dense"), reference)


# ----- the exact GP: gradients into the network -------------------------------------------------------------

def exact_model(solver, n=40, seed=0, dtype=F64):
    x, y = data(n, dtype=dtype)
    return fg.ExactGP(x, y, warped(seed=seed), solver=solver)


def test_cholesky_mll_gradient_into_the_network():
    model = exact_model(fg.Cholesky())
    got = net_grads(model, model.loss())
    ref = net_grads(model, ref_loss(model))
    assert rel(got, ref) < 1e-8
    torch.testing.assert_close(model.loss().detach(), ref_loss(model).detach(), rtol=1e-10, atol=0)
    # and the hyperparameters alongside
    hyper = [model.kernel.base.raw_outputscale, model.kernel.base.base.raw_lengthscale]
    for a, b in zip(torch.autograd.grad(model.loss(), hyper), torch.autograd.grad(ref_loss(model), hyper)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("backend", ["dense", "blocked"])
def test_cg_solve_gradient_into_the_network_is_exact(backend):
    # the inverse quadratic term's gradient is a solve (no probes): exact to the CG tolerance
    model = exact_model(fg.CG())
    k, x, y = model.kernel, model.train_x, model.train_y
    noise = model.likelihood.noise_diag(40).detach()
    r = y - y.mean()
    op = AddedDiag(k.operator(x, backend=backend), noise)
    inv_quad, _ = inv_quad_logdet(op, r, None, probes=4, tol=1e-12, max_iters=200, generator=gen(0))
    got = net_grads(model, inv_quad)
    k_hat = ref_kernel(k, x, x) + torch.diag(noise)
    ref = net_grads(model, r @ torch.linalg.solve(k_hat, r))
    assert rel(got, ref) < 1e-6


@pytest.mark.parametrize("backend", ["dense", "blocked"])
def test_cg_mll_gradient_is_the_chain_rule_through_the_features(backend):
    # the model's CG gradient into the network = J_g^T (the engine's gradient w.r.t. the features),
    # with the same probes: nothing is lost between the operator and the network
    solver = fg.CG(tol=1e-12, max_iters=300, backend=backend, precond=fg.PivotedCholesky(rank=5))
    model = exact_model(solver)
    got = net_grads(model, model.loss(generator=gen(3)))
    k, x = model.kernel, model.train_x
    feats = k.features(x)
    leaf = feats.detach().requires_grad_(True)
    engine = solver.engine()
    noise = model.likelihood.noise_diag(40)
    resid = model.train_y - model.mean(x)
    from flashgp.linalg import PivotCache
    orig = k.operator

    def fixed_operator(x1, x2=None, **options):  # the same engine on leaf features
        return KernelOperator(k.base, leaf, None, **options)

    k.operator = fixed_operator
    try:
        inv_quad, logdet, _ = engine.inv_quad_logdet(k, x, noise, resid, state=PivotCache(), generator=gen(3))
    finally:
        k.operator = orig
    n = 40
    loss = (0.5 * inv_quad + 0.5 * logdet + 0.5 * n * math.log(2 * math.pi)) / n
    (d_feats,) = torch.autograd.grad(loss, leaf)
    params = list(k.feature_extractor.parameters())
    ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(feats, params, d_feats)])
    assert rel(got, ref) < 1e-10


def test_cg_mll_gradient_matches_the_reference():
    # the log det's gradient is a stochastic trace estimate: many probes bring it near the exact one
    solver = fg.CG(tol=1e-12, max_iters=300, probes=2000, precond=fg.PivotedCholesky(rank=10))
    model = exact_model(solver, n=30)
    got = net_grads(model, model.loss(generator=gen(1)))
    ref = net_grads(model, ref_loss(model))
    assert rel(got, ref) < 0.05
    torch.testing.assert_close(model.loss(generator=gen(1)).detach(), ref_loss(model).detach(), rtol=1e-2, atol=0)


@pytest.mark.parametrize("solver", [fg.Cholesky(), fg.CG(tol=1e-6, probes=8)], ids=["cholesky", "cg"])
def test_fit_trains_the_network(solver):
    model = exact_model(solver, n=60)
    before = [p.detach().clone() for p in model.kernel.feature_extractor.parameters()]
    hist = fg.fit(model, lr=0.05, iters=15, progress=False, seed=0)
    assert hist.loss[-1] < hist.loss[0]
    for a, p in zip(before, model.kernel.feature_extractor.parameters()):
        assert not torch.equal(a, p.detach())


def test_float32_model_on_both_paths():
    for solver in (fg.Cholesky(), fg.CG(probes=4)):
        model = exact_model(solver, dtype=torch.float32)
        assert model.kernel.feature_extractor.layers[0].weight.dtype == torch.float32
        loss = model.loss(generator=gen(0))
        assert loss.dtype == torch.float32
        grads = net_grads(model, loss)
        assert bool(torch.isfinite(grads).all()) and float(grads.norm()) > 0
        post = model.posterior(data(5, seed=4, dtype=torch.float32)[0])
        assert post.mean.dtype == torch.float32


def test_lengthscales_start_from_the_features():
    # ARD over D = 3 features of d = 4 inputs: half the features' standard deviations
    x, y = data(50)
    model = fg.ExactGP(x, y, warped(out=3), solver=fg.Cholesky())
    with torch.no_grad():
        feats = model.kernel.features(x)
    expected = 0.5 * feats.var(0, unbiased=False).sqrt()
    torch.testing.assert_close(model.kernel.base.base.lengthscale.reshape(-1), expected)


def test_posterior_differentiable_in_test_inputs():
    model = exact_model(fg.Cholesky())
    xt = data(4, seed=9)[0].requires_grad_(True)
    post = model.posterior(xt)
    (g,) = torch.autograd.grad(post.mean.sum(), xt)
    # reference: the posterior mean by hand
    with torch.no_grad():
        x, y = model.train_x, model.train_y
        k_hat = ref_kernel(model.kernel, x, x) + model.likelihood.noise * torch.eye(40, dtype=F64)
        alpha = torch.linalg.solve(k_hat, y - model.mean.constant)
    xr = xt.detach().clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((ref_kernel(model.kernel, xr, x) @ alpha).sum(), xr)
    torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-9)


# ----- inducing-point models ---------------------------------------------------------------------------------

def test_sgpr_trains_the_network():
    x, y = data(80)
    model = fg.SGPR(x, y, warped(), inducing=10)
    loss = model.loss()
    grads = net_grads(model, loss)
    assert float(grads.norm()) > 0
    hist = fg.fit(model, lr=0.05, iters=20, progress=False, seed=0)
    assert hist.loss[-1] < hist.loss[0]
    assert model.inducing_points.shape == (10, 4)  # inducing inputs live in input space


def test_svgp_trains_the_network():
    x, y = data(80)
    model = fg.SVGP(warped(), inducing=10, x=x, y=y, num_data=80)
    before = [p.detach().clone() for p in model.kernel.feature_extractor.parameters()]
    # (at the start q(u) is the prior, whose marginals at x do not depend on the network: its
    # gradient is 0 there; the fit moves q(u) and then the network)
    hist = fg.fit(model, lr=0.05, iters=30, progress=False, seed=0, data=(x, y), batch_size=40)
    assert hist.loss[-1] < hist.loss[0]
    grads = net_grads(model, model.loss(batch=(x, y)))
    assert float(grads.norm()) > 0
    for a, p in zip(before, model.kernel.feature_extractor.parameters()):
        assert not torch.equal(a, p.detach())
    assert model.inducing_points.shape[-1] == 4


# ----- files, checkpoints ---------------------------------------------------------------------------------------

def test_contract_with_mlp(tmp_path):
    # loss and gradients, posterior, prior, config, save/load, checkpoint + resume
    x, y = data(30)
    test_x = data(6, seed=5)[0]

    def make():
        return fg.ExactGP(x, y, warped(seed=4), solver=fg.Cholesky())

    check_model(make, test_x, loss_reference=ref_loss, posterior_reference=fg.testing.exact_gp_posterior_reference,
                grad_rtol=1e-8, tmp_dir=tmp_path)


def test_save_load_same_predictions(tmp_path):
    model = exact_model(fg.Cholesky())
    fg.fit(model, lr=0.05, iters=5, progress=False, seed=0)
    fg.save(model, tmp_path / "m.fgp")
    loaded = fg.load(tmp_path / "m.fgp")
    assert isinstance(loaded.kernel, K.Warped) and isinstance(loaded.kernel.feature_extractor, K.MLP)
    xt = data(7, seed=3)[0]
    a, b = model.posterior(xt), loaded.posterior(xt)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.variance, b.variance, rtol=1e-12, atol=1e-12)
    config = kernel_to_config(model.kernel)
    assert config["args"] == {"feature_extractor": {"type": "MLP", "args": {
        "in_dims": 4, "hidden": [8], "out_dims": 2, "activation": "tanh"}}}


class Custom(nn.Module):
    def __init__(self, d, width=3):
        super().__init__()
        self.d, self.width = d, width
        self.lin = nn.Linear(d, width)

    def forward(self, x):
        return torch.sin(self.lin(x))


def test_unregistered_network_refused_at_save(tmp_path):
    x, y = data(20)
    model = fg.ExactGP(x, y, K.Warped(K.Scale(K.RBF()), Custom(4)), solver=fg.Cholesky())
    model.loss().backward()  # it trains like any network
    with pytest.raises(TypeError, match="register_feature_extractor"):
        fg.save(model, tmp_path / "m.fgp")
    assert not (tmp_path / "m.fgp").exists()


def test_registered_network_round_trip(tmp_path):
    register_feature_extractor("Custom", Custom, args=lambda m: {"d": m.d, "width": m.width})
    try:
        x, y = data(20)
        model = fg.ExactGP(x, y, K.Warped(K.Scale(K.RBF()), Custom(4, width=5)), solver=fg.Cholesky())
        fg.save(model, tmp_path / "m.fgp")
        loaded = fg.load(tmp_path / "m.fgp")
        assert isinstance(loaded.kernel.feature_extractor, Custom) and loaded.kernel.feature_extractor.width == 5
        torch.testing.assert_close(loaded.posterior(x[:3]).mean, model.posterior(x[:3]).mean)
        with pytest.raises(ValueError, match="taken"):
            register_feature_extractor("MLP", Custom)
    finally:
        FEATURE_EXTRACTORS.pop("Custom", None)
    with pytest.raises(fg.errors.ModelFileError, match="not registered"):
        fg.load(tmp_path / "m.fgp")


def test_config_errors():
    good = kernel_to_config(warped())
    assert type(kernel_from_config(good)) is K.Warped
    bad = {**good, "args": {"feature_extractor": {"type": "MLP", "args": {"in_dims": 4, "hidden": [8],
                                                                           "out_dims": 2, "activation": "gelu"}}}}
    with pytest.raises(ConfigError, match="activation"):
        kernel_from_config(bad)
    with pytest.raises(ConfigError, match="feature_extractor"):
        kernel_from_config({**good, "args": {}})
    with pytest.raises(ConfigError, match="not registered"):
        kernel_from_config({**good, "args": {"feature_extractor": {"type": "os.system", "args": {}}}})
    huge = {"type": "MLP", "args": {"in_dims": 10**6, "hidden": [10**6], "out_dims": 2, "activation": "relu"}}
    from flashgp.serialize import declared_size_limit
    with declared_size_limit(1000), pytest.raises(ConfigError, match="refusing to allocate"):
        kernel_from_config({**good, "args": {"feature_extractor": huge}})


def test_fit_checkpoint_resume_cg(tmp_path):
    # a checkpointed CG fit interrupted and resumed ends where an uninterrupted one does
    def make():
        return exact_model(fg.CG(tol=1e-8, probes=4, precond=fg.PivotedCholesky(rank=5)), seed=2)

    fg.testing.check_resume(make, dict(optimizer="adam", lr=0.05, iters=6, seed=0), tmp_path)


# ----- bad arguments -----------------------------------------------------------------------------------------------

def test_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module"):
        K.Warped(K.RBF(), lambda x: x)
    with pytest.raises(TypeError, match="nn.Module"):
        K.Warped(K.RBF(), K.RBF())
    with pytest.raises(TypeError, match="flashgp kernel"):
        K.Warped(nn.Linear(2, 2), K.MLP(2))
    with pytest.raises(TypeError, match="structured operator"):
        K.Warped(K.Interpolated(K.RBF(), grid_size=10), K.MLP(2, out_dims=1))
    with pytest.raises(ValueError, match="activation"):
        K.MLP(3, activation="gelu")
    with pytest.raises(ValueError, match="out_dims"):
        K.MLP(3, out_dims=0)
    with pytest.raises(ValueError, match="hidden"):
        K.MLP(3, hidden=(4, -1))
    with pytest.raises(TypeError, match="hidden"):
        K.MLP(3, hidden=4)
    x, y = data(10)
    with pytest.raises(ValueError, match="4 columns"):
        K.Warped(K.RBF(), K.MLP(3))(x)

    class Flatten(nn.Module):
        def forward(self, x):
            return x.sum(-1)

    with pytest.raises(ValueError, match="leading shape"):
        K.Warped(K.RBF(), Flatten())(x)

    class NotTensor(nn.Module):
        def forward(self, x):
            return [x]

    with pytest.raises(TypeError, match="tensor"):
        K.Warped(K.RBF(), NotTensor())(x)
    with pytest.raises(ValueError, match="columns"):
        fg.ExactGP(x[:, :3], y, K.Warped(K.RBF(), K.MLP(4)))


def test_scale_around_warped_is_refused_with_a_hint():
    x, y = data(10)
    model = fg.ExactGP(x, y, K.Scale(K.Warped(K.RBF(), K.MLP(4))), solver=fg.CG())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match="outermost"):
            model.loss()
