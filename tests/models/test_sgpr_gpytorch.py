# SGPR against GPyTorch 1.15's InducingPointKernel (Titsias' bound through ExactMarginalLogLikelihood
# with its added trace term) at identical parameters and inducing points, float64.
import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Matern, Scale

gpytorch = pytest.importorskip("gpytorch")
F64 = torch.float64


class PeerSGPR(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, base, z):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.InducingPointKernel(
            gpytorch.kernels.ScaleKernel(base), inducing_points=z.clone(), likelihood=likelihood)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@pytest.mark.parametrize("nu", [None, 2.5])
def test_bound_gradients_and_predictions_equal_gpytorch(nu):
    g = torch.Generator().manual_seed(0)
    n, d, m = 200, 3, 25
    x = torch.rand(n, d, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) * x[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=F64)
    test_x = torch.rand(11, d, generator=g, dtype=F64) * 4 - 2
    inner = RBF(ard_dims=d, lengthscale=[0.7, 1.1, 1.6]) if nu is None else Matern(nu=nu, ard_dims=d,
                                                                                    lengthscale=[0.7, 1.1, 1.6])
    model = fg.SGPR(x, y, Scale(inner, outputscale=1.3), inducing=m, likelihood=fg.likelihoods.Gaussian(noise=0.05),
                    mean=fg.means.Constant(0.2))
    z = model.inducing_points.detach()

    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    base = (gpytorch.kernels.RBFKernel(ard_num_dims=d) if nu is None
            else gpytorch.kernels.MaternKernel(nu=nu, ard_num_dims=d)).double()
    peer = PeerSGPR(x, y, likelihood, base, z).double()
    peer.covar_module.base_kernel.outputscale = 1.3
    peer.covar_module.base_kernel.base_kernel.lengthscale = torch.tensor([[0.7, 1.1, 1.6]], dtype=F64)
    likelihood.noise = 0.05
    peer.mean_module.constant.data.fill_(0.2)
    # GPyTorch's setters round through float32 constants: take its values exactly
    model.likelihood.noise = float(likelihood.noise.detach())
    model.kernel.outputscale = float(peer.covar_module.base_kernel.outputscale.detach())
    model.kernel.base.lengthscale = peer.covar_module.base_kernel.base_kernel.lengthscale.detach().reshape(-1)
    for ours, theirs in ((model.likelihood.noise, likelihood.noise), (model.kernel.outputscale,
                         peer.covar_module.base_kernel.outputscale), (model.kernel.base.lengthscale,
                         peer.covar_module.base_kernel.base_kernel.lengthscale)):
        assert float((ours.detach().reshape(-1) - theirs.detach().reshape(-1)).abs().max()) < 1e-12

    peer.train()
    likelihood.train()
    peer_bound = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, peer)(peer(x), y)
    ours = model.elbo()
    assert abs(float(ours.detach()) - float(peer_bound.detach())) < 1e-5 * abs(float(peer_bound.detach()))

    # gradient with respect to the inducing inputs (the same tensor layout in both libraries)
    ours.backward()
    peer_bound.backward()
    grad, peer_grad = model.inducing_points.grad, peer.covar_module.inducing_points.grad
    assert float((grad - peer_grad).abs().max() / peer_grad.abs().max()) < 1e-5

    # GPyTorch's eval mode adds diag(K - Q) to the training covariance by default (FITC-like
    # predictions, settings.sgpr_diagonal_correction); without it its mean is the bound's
    # optimal one, and its variance Q** - ..., the DTC variance, which is Titsias' minus k** - q**
    peer.eval()
    likelihood.eval()
    with (torch.no_grad(), gpytorch.settings.fast_pred_var(False), gpytorch.settings.skip_posterior_variances(False),
          gpytorch.settings.sgpr_diagonal_correction(False)):
        peer_post = peer(test_x)
        peer_mean, peer_var = peer_post.mean, peer_post.variance
        kzz, ktz = model.kernel(z), model.kernel(test_x, z)
        nystrom_gap = model.kernel(test_x, diag=True) - (ktz * torch.linalg.solve(kzz, ktz.T).T).sum(-1)
    post = model.posterior(test_x)
    assert float((post.mean - peer_mean).abs().max()) < 1e-5 * float(peer_mean.abs().max())
    expected = peer_var + nystrom_gap
    assert float((post.variance - expected).abs().max()) < 1e-5 * float(expected.abs().max())
