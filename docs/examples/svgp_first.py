import torch
import flashgp as fg

# 10,000 noisy observations of a function of 2 inputs, kept in CPU memory
g = torch.Generator().manual_seed(0)
x = torch.rand(10_000, 2, generator=g, dtype=torch.float64) * 4 - 2
y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1]) + 0.2 * torch.randn(10_000, generator=g, dtype=torch.float64)

kernel = fg.kernels.Scale(fg.kernels.RBF(ard_dims=2))
# 100 inducing inputs and the initial hyperparameters are chosen from x and y; the model keeps no data
model = fg.SVGP(kernel, 100, x=x, y=y)
history = fg.fit(model, data=(x, y), batch_size=500, iters=300, lr=0.05, seed=0, progress=False)

x_test = torch.rand(5, 2, generator=g, dtype=torch.float64) * 4 - 2
pred = model.predict(x_test)               # a Posterior: q(f*) plus the Gaussian noise
print("-ELBO per point, last batch:", round(history.loss[-1], 4), "(n =", model.num_data, ")")
print("noise std:", model.likelihood.noise.detach().sqrt())
print("mean:", pred.mean)
print("std: ", pred.stddev)
print("truth:", torch.sin(2 * x_test[:, 0]) * torch.cos(x_test[:, 1]))
