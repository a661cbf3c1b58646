import time, torch, numpy as np
import flashgp as fg
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
n = 200
X = torch.rand(n, 4, generator=g); y = torch.sin(6 * X[:, 0]) + 0.1 * torch.randn(n, generator=g)
m = fg.ExactGP(X, y, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=4)), solver=fg.CG(precond=fg.PivotedCholesky(20), lanczos_iters=20, max_iters=20))
opt = torch.optim.Adam(m.parameters(), lr=0.05)
gen = torch.Generator().manual_seed(1)
ts = []
for i in range(80):
    t = time.perf_counter(); opt.zero_grad(); l = -m.mll(generator=gen).sum(); l.backward(); opt.step(); ts.append(time.perf_counter() - t)
print(round(1000 * np.median(ts[10:]), 2))
