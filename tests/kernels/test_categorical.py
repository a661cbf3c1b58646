# fg.kernels.Categorical: level covariances on a column of codes, against dense references, in
# products with continuous kernels, in an ExactGP (fit, save/load), and its errors.
import pytest
import torch

import flashgp as fg
from flashgp import kernels as K

F64 = torch.float64


def mixed_data(n=60, levels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=F64)
    codes = torch.randint(0, levels, (n, 1), generator=g).to(F64)
    offsets = torch.tensor([0.0, 1.5, -1.0, 0.5][:levels], dtype=F64)
    y = torch.sin(6 * x[:, 0]) + offsets[codes[:, 0].long()] + 0.05 * torch.randn(n, generator=g, dtype=F64)
    return torch.cat([x, codes], -1), y


def test_onehot_is_the_identity_and_follows_the_dtype():
    k = K.Categorical(3, kind="onehot", active_dims=[1]).double()
    x = torch.tensor([[0.5, 0.0], [0.1, 2.0], [0.3, 0.0], [0.9, 1.0]], dtype=F64)
    expected = (x[:, 1:] == x[:, 1]).to(F64)
    torch.testing.assert_close(k(x), expected)
    assert k(x).dtype == F64 and list(k.parameters()) == [] and "identity" not in k.state_dict()


@pytest.mark.parametrize("kind", ["exchangeable", "lowrank"])
def test_matrix_diagonal_and_psd_against_the_level_covariance(kind):
    k = K.Categorical(4, kind=kind, rank=2).double()
    if kind == "exchangeable":
        k.decay = 0.7
        c = torch.exp(torch.tensor(-0.7, dtype=F64))
        expected = c + (1 - c) * torch.eye(4, dtype=F64)
        torch.testing.assert_close(k.covariance(), expected)
    else:
        with torch.no_grad():
            k.factor.copy_(torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64))
    b = k.covariance()
    a = torch.tensor([[0.0], [3.0], [1.0], [3.0]], dtype=F64)
    c = torch.tensor([[2.0], [0.0], [3.0]], dtype=F64)
    idx_a, idx_c = a[:, 0].long(), c[:, 0].long()
    torch.testing.assert_close(k(a, c), b[idx_a][:, idx_c], rtol=0, atol=0)
    torch.testing.assert_close(k.diag(a), b.diagonal()[idx_a], rtol=0, atol=0)
    assert float(torch.linalg.eigvalsh(k(a).detach()).min()) > -1e-12


def test_batched_hyperparameters_and_inputs():
    k = K.Categorical(3, kind="lowrank", rank=1, batch_shape=(2,)).double()
    x = torch.tensor([[0.0], [2.0], [1.0]], dtype=F64)
    out = k(x)
    assert out.shape == (2, 3, 3)
    for i in range(2):
        b = k.covariance()[i]
        torch.testing.assert_close(out[i], b[[0, 2, 1]][:, [0, 2, 1]])
    assert k.diag(x).shape == (2, 3)


def test_product_with_a_continuous_kernel_fits_and_round_trips(tmp_path):
    x, y = mixed_data()
    kernel = K.Scale(K.RBF(active_dims=[0]) * K.Categorical(3, active_dims=[1]))
    model = fg.ExactGP(x, y, kernel, solver=fg.Cholesky())
    before = float(model.loss())
    fg.fit(model, lr=0.05, iters=30, progress=False)
    assert float(model.loss()) < before
    assert abs(float(model.kernel.base.kernels[1].decay) - 1.0) > 1e-3  # the level correlation trained
    model.eval()
    test = torch.tensor([[0.3, 0.0], [0.3, 1.0], [0.7, 2.0]], dtype=F64)
    fg.save(model, tmp_path / "mixed.fgp")
    loaded = fg.load(tmp_path / "mixed.fgp").eval()
    torch.testing.assert_close(loaded.posterior(test).mean, model.posterior(test).mean, rtol=1e-12, atol=1e-12)
    # a level-aware model beats the continuous kernel alone on data with level offsets
    plain = fg.ExactGP(x[:, :1], y, K.Scale(K.RBF()), solver=fg.Cholesky())
    fg.fit(plain, lr=0.05, iters=30, progress=False)
    assert float(model.loss()) < float(plain.loss())


def test_cg_path_agrees_with_cholesky():
    x, y = mixed_data(n=80)
    kernel = K.Scale(K.Matern(nu=2.5, active_dims=[0]) + K.Categorical(3, kind="lowrank", active_dims=[1]))
    exact = fg.ExactGP(x, y, kernel, solver=fg.Cholesky()).eval()
    cg = fg.ExactGP(x, y, K.Scale(K.Matern(nu=2.5, active_dims=[0]) + K.Categorical(3, kind="lowrank",
                                                                                    active_dims=[1])),
                    solver=fg.CG(eval_tol=1e-10, variance_tol=None)).eval()
    cg.load_state_dict(exact.state_dict())
    test = torch.tensor([[0.2, 1.0], [0.9, 0.0]], dtype=F64)
    torch.testing.assert_close(cg.posterior(test).mean, exact.posterior(test).mean, rtol=1e-6, atol=1e-6)


def test_bad_arguments_and_unknown_levels():
    with pytest.raises(ValueError, match="num_levels: expected an int >= 2"):
        K.Categorical(1)
    with pytest.raises(ValueError, match="kind: expected one of"):
        K.Categorical(3, kind="dummy")
    with pytest.raises(ValueError, match="active_dims: a categorical kernel reads one column"):
        K.Categorical(3, active_dims=[0, 1])
    with pytest.raises(ValueError, match="rank: expected at most num_levels"):
        K.Categorical(3, kind="lowrank", rank=4)
    k = K.Categorical(3, active_dims=[1])
    with pytest.raises(ValueError, match="column 1 holds 3, not a level code 0..2"):
        k(torch.tensor([[0.5, 3.0]]))
    with pytest.raises(ValueError, match="holds 0.5"):
        K.Categorical(3)(torch.tensor([[0.5]]))
    x, y = mixed_data()
    model = fg.ExactGP(x, y, K.Scale(K.RBF(active_dims=[0]) * K.Categorical(3, active_dims=[1])),
                       solver=fg.Cholesky()).eval()
    with pytest.raises(ValueError, match="not a level code"):
        model.posterior(torch.tensor([[0.2, 5.0]], dtype=F64))


def test_exchangeable_matches_botorch_categorical_kernel():
    """BoTorch's CategoricalKernel is exp(-mean_i 1[a_i != b_i] / l_i) over the categorical columns:
    the product of exchangeable kernels with decay_i = 1 / (k l_i) for k columns. The same matrix
    at identical parameters, and the same exact mll of a mixed model Scale(Matern(x) * categorical)
    against a GPyTorch ExactGP with BoTorch's kernel."""
    categorical = pytest.importorskip("botorch.models.kernels.categorical")
    gpytorch = pytest.importorskip("gpytorch")
    g = torch.Generator().manual_seed(3)
    n = 40
    cont = torch.rand(n, 1, generator=g, dtype=F64) * 4 - 2
    codes = torch.stack([torch.randint(0, 3, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)], -1).to(F64)
    x = torch.cat([cont, codes], -1)
    y = torch.sin(2 * cont[:, 0]) + 0.3 * codes[:, 0] + 0.1 * torch.randn(n, generator=g, dtype=F64)
    ls = torch.tensor([0.7, 1.9], dtype=F64)
    theirs_cat = categorical.CategoricalKernel(ard_num_dims=2, active_dims=torch.tensor([1, 2])).double()
    theirs_cat.lengthscale = ls.unsqueeze(0)
    ours_cat = K.Categorical(3, active_dims=[1]) * K.Categorical(4, active_dims=[2])
    for member, length in zip(ours_cat.kernels, ls):
        member.decay = float(1 / (2 * length))
    ours_cat = ours_cat.double()
    with torch.no_grad():
        torch.testing.assert_close(ours_cat(x), theirs_cat(x).to_dense(), rtol=1e-12, atol=1e-14)

    kernel = K.Scale(K.Matern(nu=2.5, active_dims=[0]) * ours_cat, outputscale=1.3)
    model = fg.ExactGP(x, y, kernel, solver=fg.Cholesky())
    model.kernel.base.kernels[0].lengthscale = 0.6
    model.likelihood.noise = 0.05
    model.mean.constant = 0.2

    class Reference(gpytorch.models.ExactGP):
        def __init__(self, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.MaternKernel(nu=2.5, active_dims=torch.tensor([0])) * theirs_cat)

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    reference = Reference(likelihood).double()
    reference.covar_module.outputscale = 1.3
    reference.covar_module.base_kernel.kernels[0].lengthscale = 0.6
    likelihood.noise = 0.05
    reference.mean_module.constant = 0.2
    reference.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, reference)
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6):
        expected = mll(reference(x), y)
        ours = model.mll()
    # GPyTorch's Matern distances (sqrt of the expanded square) differ from flashgp's by ~2e-8 at
    # nearby points, which sets the agreement of the mll
    torch.testing.assert_close(ours, expected, rtol=1e-7, atol=0)
