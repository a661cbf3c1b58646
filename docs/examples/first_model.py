import torch
import flashgp as fg

# 500 noisy observations of a function of 3 inputs
g = torch.Generator().manual_seed(0)
x = torch.rand(500, 3, generator=g, dtype=torch.float64)
noise = 0.1 * torch.randn(500, generator=g, dtype=torch.float64)
y = torch.sin(6 * x).sum(-1) + noise

# one lengthscale per input, times an output scale
kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=3))
model = fg.ExactGP(x, y, kernel)  # Gaussian noise, constant mean by default
history = fg.fit(model, lr=0.1, iters=50, progress=False)  # Adam on -mll / n

x_test = torch.rand(5, 3, generator=g, dtype=torch.float64)
post = model.posterior(x_test)             # the latent function f at x_test
pred = model.predict(x_test)               # a new observation y* (noise included)
lower, upper = pred.confidence_region()    # 95% interval

print("loss after 50 steps:", round(history.loss[-1], 4))
print("lengthscales:", model.kernel.base.lengthscale.detach().flatten())
print("noise variance:", model.likelihood.noise.detach())
print("mean of f:", post.mean)
print("std of y*:", pred.stddev)
print("solver path:", model.diagnostics["path"])
