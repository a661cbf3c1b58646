import cProfile, pstats, io, torch
import flashgp as fg
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
pr = cProfile.Profile(); pr.enable()
for _ in range(10): step()
pr.disable()
s = io.StringIO(); st = pstats.Stats(pr, stream=s); print('calls per step', st.total_calls / 10)
st.sort_stats('tottime').print_stats(12); print(s.getvalue()[:3000])
