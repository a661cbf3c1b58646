# SVGP against GPyTorch 1.15's ApproximateGP (whitened VariationalStrategy, Cholesky q(u),
# VariationalELBO) at identical parameters and inducing points, float64: ELBO, gradients, predictions.
import pytest
import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale
from flashgp.likelihoods import Bernoulli, Gaussian

gpytorch = pytest.importorskip("gpytorch")
F64 = torch.float64
JITTER = 1e-10  # both add it to K_zz (GPyTorch by default 1e-6 in float64; flashgp only when needed)


class PeerSVGP(gpytorch.models.ApproximateGP):
    def __init__(self, z):
        q = gpytorch.variational.CholeskyVariationalDistribution(z.shape[0], dtype=F64)
        strategy = gpytorch.variational.VariationalStrategy(self, z.clone(), q, learn_inducing_locations=True,
                                                            jitter_val=JITTER)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=2))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_elbo_gradients_and_predictions_equal_gpytorch(likelihood, monkeypatch):
    # GPyTorch's Bernoulli takes log Phi from gpytorch.functions.log_normal_cdf, an approximation
    # off by up to 1.9e-3 (near z = -1) from the exact torch.special.log_ndtr flashgp uses (checked
    # against a fine grid in test_svgp.py): the peer gets the exact one here
    module = __import__("gpytorch.likelihoods.bernoulli_likelihood", fromlist=["log_normal_cdf"])
    monkeypatch.setattr(module, "log_normal_cdf", torch.special.log_ndtr)
    g = torch.Generator().manual_seed(0)
    n, m = 150, 12
    x = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    f = torch.sin(2 * x[:, 0]) * x[:, 1]
    y = f + 0.1 * torch.randn(n, generator=g, dtype=F64)
    ours_lik, peer_lik = Gaussian(noise=0.05, noise_floor=1e-6), gpytorch.likelihoods.GaussianLikelihood()
    if likelihood == "bernoulli":
        y = (f > 0).to(F64)
        ours_lik, peer_lik = Bernoulli(points=20), gpytorch.likelihoods.BernoulliLikelihood()
    z = x[torch.randperm(n, generator=g)[:m]].clone()
    ours = fg.SVGP(Scale(Matern(nu=2.5, ard_dims=2, lengthscale=[0.7, 1.3]), outputscale=1.0), z.clone(),
                   likelihood=ours_lik, mean=fg.means.Constant(0.2), jitter=JITTER, num_data=n).double()
    root = torch.randn(m, m, generator=g, dtype=F64) * 0.2 + torch.eye(m, dtype=F64)
    mean_q = torch.randn(m, generator=g, dtype=F64) * 0.5
    with torch.no_grad():
        ours.variational.variational_mean.copy_(mean_q)
        ours.variational.variational_root.copy_(root)
    peer = PeerSVGP(z).double()
    peer_lik = peer_lik.double()
    with torch.no_grad():
        peer.covar_module.base_kernel.lengthscale = torch.tensor([[0.7, 1.3]], dtype=F64)
        peer.covar_module.outputscale = 1.0
        peer.mean_module.constant.fill_(0.2)
        peer.variational_strategy._variational_distribution.variational_mean.copy_(mean_q)
        peer.variational_strategy._variational_distribution.chol_variational_covar.copy_(root)
        if likelihood == "gaussian":
            peer_lik.noise = 0.05
    peer.variational_strategy.variational_params_initialized.fill_(1)  # else the first call resets q
    peer.train(), peer_lik.train()
    mll = gpytorch.mlls.VariationalELBO(peer_lik, peer, num_data=n)
    with gpytorch.settings.num_likelihood_samples(1), gpytorch.settings.cholesky_jitter(double_value=JITTER):
        theirs = mll(peer(x), y)
    mine = ours.elbo(x, y)
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=0)
    mine.backward(), theirs.backward()
    pairs = [(ours.inducing_points.grad, peer.variational_strategy.inducing_points.grad),
             (ours.variational.variational_mean.grad,
              peer.variational_strategy._variational_distribution.variational_mean.grad),
             (ours.variational.variational_root.grad.tril(),
              peer.variational_strategy._variational_distribution.chol_variational_covar.grad.tril())]
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)
    test_x = torch.rand(9, 2, generator=g, dtype=F64) * 4 - 2
    peer.eval()
    with torch.no_grad():
        theirs = peer(test_x)
    post = ours.posterior(test_x)
    torch.testing.assert_close(post.mean, theirs.mean, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(post.variance, theirs.variance, rtol=1e-6, atol=1e-8)
