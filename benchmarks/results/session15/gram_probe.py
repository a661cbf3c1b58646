import sys, time, torch
from flashgp.backends import triton_gram as tg, triton_kernels as tk
n1, n2, cfg, ordering, profile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
bm, bn, nw, ns = (int(c) for c in cfg.split(","))
g = torch.Generator().manual_seed(1)
z1 = (torch.rand(1, n1, 3, generator=g) / 0.12).cuda(); z2 = z1 if n1 == n2 else (torch.rand(1, n2, 3, generator=g) / 0.12).cuda()
v = torch.randn(1, n2, 11, generator=g).cuda()
order = tg.spatial_order(z1) if ordering == "spatial" else torch.arange(n1, device="cuda")[None]
try:
    o = tg.gram_kv_matmul(z1, z2, v, profile, order=order, block_m=bm, block_n=bn, num_warps=nw, num_stages=ns)
    torch.cuda.synchronize()
    ts = []
    for _ in range(3):
        s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
        s.record(); tg.gram_kv_matmul(z1, z2, v, profile, order=order, block_m=bm, block_n=bn, num_warps=nw, num_stages=ns); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1000)
    sec = sorted(ts)[1]
    print(f"OK n1={n1} n2={n2} {cfg} {ordering} {profile} {sec:.5f} s {n1*n2/sec:.3e}/s finite={bool(torch.isfinite(o).all())}", flush=True)
except Exception as err:
    print(f"FAIL n1={n1} n2={n2} {cfg} {ordering} {profile} {repr(err)[:200]}", flush=True)
