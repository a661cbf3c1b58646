"""Vecchia preconditioner at n points on the GPU: build parts, apply, and one mll at several
Lanczos minimums (same probes) at the 1M fit's final hyperparameters.
usage: python .calls/vecchia_parts.py N NEIGHBORS_LIST LANCZOS_LIST [precision]"""
import sys, time, json, math
sys.path.insert(0, "examples")
import torch
import flashgp as fg
from large_gpu_fit import synthetic, load_raw_parameters
from flashgp.operators import KernelOperator
from flashgp.linalg.vecchia import vecchia_index, vecchia_preconditioner, random_order
from flashgp.linalg.inv_quad_logdet import inv_quad_logdet
from flashgp.operators import AddedDiag

n = int(sys.argv[1]); ms = [int(v) for v in sys.argv[2].split(",")]; lis = [int(v) for v in sys.argv[3].split(",")]
precision = sys.argv[4] if len(sys.argv) > 4 else "fp16x3"
import os
dev = torch.device(os.environ.get("DEV", "cuda"))
BACKEND = os.environ.get("BACKEND", "triton")
x, y = synthetic(n, 3, 0.1, dev, torch.float32, 0)
kernel = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=3, lengthscale=0.3))
model = fg.ExactGP(x, y, kernel, solver=fg.CG())
model.to(dev)
load_raw_parameters(model, "benchmarks/results/session8/million_fit_history_h200.json")
def sync():
    if dev.type == "cuda": torch.cuda.synchronize()
def timed(f):
    sync(); t = time.perf_counter(); r = f(); sync(); return r, time.perf_counter() - t
op = KernelOperator(model.kernel, x, backend=BACKEND, precision=precision)
noise = model.likelihood.noise_diag(n).detach()
z = op.locality_inputs()
for m in ms:
    idx, ts = timed(lambda: vecchia_index(z, m))
    idx, ts2 = timed(lambda: vecchia_index(z, m))
    dev.type == "cuda" and torch.cuda.reset_peak_memory_stats()
    P, tb = timed(lambda: vecchia_preconditioner(op, noise, m, index=idx))
    peak = (torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0)
    v = torch.randn(n, 11, device=dev)
    _, tm = timed(lambda: P.mul(v)); _, tm = timed(lambda: P.mul(v))
    _, tt = timed(lambda: P.mul_t(v)); _, tt = timed(lambda: P.mul_t(v))
    print(json.dumps(dict(n=n, m=m, search_s=round(ts, 3), search_again_s=round(ts2, 3), weights_s=round(tb, 3),
                          build_peak_gib=round(peak, 2), mul_ms=round(tm * 1e3, 2), mul_t_ms=round(tt * 1e3, 2),
                          info=P.build_info, logdet_P=float(P.logdet()))), flush=True)
    resid = (y - model.mean(x)).detach()
    Kh = AddedDiag(op, noise)
    for li in lis:
        for tol in (1.0,):
            g = torch.Generator(device=dev).manual_seed(7)
            info = {}
            dev.type == "cuda" and torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                (iq, ld), t = timed(lambda: inv_quad_logdet(Kh, resid, P, probes=10, tol=tol, max_iters=1000,
                                                             lanczos_iters=li, generator=g, info=info))
            mll = -0.5 * (float(iq) + float(ld) + n * math.log(2 * math.pi)) / n
            print(json.dumps(dict(m=m, lanczos_iters=li, tol=tol, seconds=round(t, 2), iterations=info["iterations"],
                                  residual=info["residual"], mean_residual=info["mean_residual"],
                                  inv_quad_per_n=float(iq) / n, logdet_per_n=float(ld) / n, mll=mll,
                                  tail=info["logdet_tail_change"], peak_gib=round((torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0), 2))), flush=True)
