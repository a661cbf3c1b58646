import torch, collections
import flashgp as fg
from torch.profiler import profile, ProfilerActivity
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
n = 600
X = torch.rand(n, 4, generator=g); y = torch.sin(6 * X[:, 0]) + 0.1 * torch.randn(n, generator=g)
m = fg.ExactGP(X, y, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=4)), solver=fg.CG(precond=fg.PivotedCholesky(50), lanczos_iters=20, max_iters=20))
opt = torch.optim.Adam(m.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(1)
def step():
    opt.zero_grad(); l = -m.mll(generator=gen).sum(); l.backward(); opt.step()
for _ in range(3): step()
with profile(activities=[ProfilerActivity.CPU]) as p:
    for _ in range(5): step()
c = collections.Counter()
for e in p.events():
    if e.name.startswith('aten::') and e.cpu_parent is None or (e.cpu_parent is not None and not e.cpu_parent.name.startswith('aten::') and e.name.startswith('aten::')):
        c[e.name] += 1
print('top-level aten ops per step', sum(c.values()) / 5)
import json; json.dump({k: v / 5 for k, v in c.items()}, open(__import__('sys').argv[1], 'w'))
