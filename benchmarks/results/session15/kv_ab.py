# Times triton_kernels.kv_matmul (whichever flashgp is first on sys.path) at d = 3, t = 11.
import sys, json, torch
from flashgp.backends import triton_kernels as tk
label, ns, configs = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], sys.argv[3].split(";")
def timed(fn, reps):
    fn(); torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e) / 1000)
    return sorted(ts)[len(ts) // 2]
g = torch.Generator().manual_seed(1)
for n in ns:
    z = (torch.rand(1, n, 3, generator=g) / 0.12).cuda(); v = torch.randn(1, n, 11, generator=g).cuda()
    for profile in ("rbf", "matern52"):
        for cfg in configs:
            kw = {} if cfg == "default" else dict(zip(("block_m", "block_n", "num_warps", "num_stages"), (int(c) for c in cfg.split(","))))
            try:
                sec = timed(lambda: tk.kv_matmul(z, z, v, profile, precision="fp16x3", **kw), 7 if n <= 200_000 else 3)
                o = tk.kv_matmul(z, z, v, profile, precision="fp16x3", **kw)
                row = dict(code=label, n=n, profile=profile, config=cfg, seconds=sec, entries_per_s=n * n / sec, finite=bool(torch.isfinite(o).all()), checksum=float(o[0, :1000].double().sum()))
            except Exception as err:
                row = dict(code=label, n=n, profile=profile, config=cfg, error=repr(err)[:200])
            print(json.dumps(row), flush=True)
