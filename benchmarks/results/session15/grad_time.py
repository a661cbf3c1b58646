# Seconds of the symmetric gradient pass (sym_param_grad) at n = 1M, d = 3, t = 11.
import json, torch
from flashgp.backends import triton_symmetric as ts
g = torch.Generator().manual_seed(1)
n = 1_000_000
z = (torch.rand(1, n, 3, generator=g) / 0.12).cuda()
u, v = torch.randn(1, n, 11, generator=g).cuda(), torch.randn(1, n, 11, generator=g).cuda()
for profile in ("rbf", "matern52"):
    ts.sym_param_grad(z, u, v, profile, precision="fp16x3"); torch.cuda.synchronize()
    s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
    s.record(); ts.sym_param_grad(z, u, v, profile, precision="fp16x3"); e.record(); torch.cuda.synchronize()
    print(json.dumps(dict(op="sym_param_grad", n=n, t=11, profile=profile, seconds=s.elapsed_time(e) / 1000)), flush=True)
