# The README quickstart (n = 5,000, fg.CG(tol=1.0, precond=fg.PivotedCholesky(100)), 50 Adam
# steps), then its CG posterior variances at 100 test points against float64 Cholesky at the same
# hyperparameters. Usage: python benchmarks/results/session18/quickstart_variances.py
import torch

import flashgp as fg

torch.manual_seed(0)
x = torch.rand(5000, 3, dtype=torch.float64)
y = torch.sin(6 * x).sum(-1) + 0.1 * torch.randn(5000, dtype=torch.float64)
kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=3))
model = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(), mean=fg.means.Constant(),
                   solver=fg.CG(tol=1.0, precond=fg.PivotedCholesky(100)))
fg.fit(model, optimizer="adam", lr=0.1, iters=50, progress=False)
xt = torch.rand(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
cg = model.posterior(xt).variance
print({k: model.diagnostics.get(k) for k in ("variance_method", "variance_cg_iterations", "variance_error_bound")})
model.solver = fg.Cholesky()
ratio = cg / model.posterior(xt).variance
print(f"CG / Cholesky latent variance: median {float(ratio.median()):.4f}, "
      f"min {float(ratio.min()):.4f}, max {float(ratio.max()):.4f}")
