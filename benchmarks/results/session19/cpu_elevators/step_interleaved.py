import sys, time, gzip
import numpy as np, torch
import flashgp as fg
print(fg.__file__)
torch.set_num_threads(2)
d = np.loadtxt(gzip.open('/work/main/.uci/elevators/data.csv.gz'), delimiter=',', skiprows=0) if False else None
import pandas as pd
df = pd.read_csv('/work/main/.uci/elevators/data.csv.gz', header=None).values.astype(np.float32)
rng = np.random.default_rng(0); idx = rng.choice(len(df), 8000, replace=False)
X = torch.tensor(df[idx, :-1]); y = torch.tensor(df[idx, -1])
X = (X - X.mean(0)) / X.std(0).clamp_min(1e-6); y = (y - y.mean()) / y.std()
k = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=X.shape[1]))
m = fg.ExactGP(X, y, k, solver=fg.CG(precond=fg.PivotedCholesky(100)))
g = torch.Generator().manual_seed(0)
ts = []
for i in range(6):
    t = time.perf_counter(); l = m.mll(generator=g); l.backward(); ts.append(time.perf_counter() - t)
    print(i, round(ts[-1], 3), m.diagnostics['cg_iterations'], m.diagnostics['precond_pivots'], round(m.diagnostics['precond_seconds'], 3), flush=True)
print('median', np.median(ts[1:]))
