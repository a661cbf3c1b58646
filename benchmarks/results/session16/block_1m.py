# One training mll (+ backward) and a capped posterior-mean-style solve at n points, with and
# without diagonal blocks, at the 1M fit's hyperparameters (Scale(Matern 5/2), fp16x3).
import json, sys, time, warnings, torch
sys.path.insert(0, "examples")
import flashgp as fg
from flashgp.linalg import cg_solve
from large_gpu_fit import synthetic, load_raw_parameters
warnings.simplefilter("ignore")
n = int(sys.argv[1]); settings = [tuple(int(v) for v in s.split(",")) for s in sys.argv[2].split(";")]
mode = sys.argv[3]; cap = int(sys.argv[4])
dev = torch.device("cuda")
x, y = synthetic(n, 3, 0.1, dev, torch.float32, 0)
def sync(): torch.cuda.synchronize()
for rank, block in settings:
    solver = fg.CG(precond=fg.PivotedCholesky(rank, block_size=block), backend="triton", precision="fp16x3",
                   max_iters=cap, lanczos_iters=20)
    m = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=3)), solver=solver)
    load_raw_parameters(m, "benchmarks/results/session8/million_fit_history_h200.json")
    torch.cuda.reset_peak_memory_stats()
    if mode == "mll":
        sync(); t = time.perf_counter()
        l = m.mll(generator=torch.Generator(device=dev).manual_seed(0)); l.backward(); sync()
        d = m.diagnostics
        row = dict(what="mll", n=n, rank=rank, block=block, seconds=time.perf_counter() - t, mll=float(l.detach()),
                   iterations=d["cg_iterations"], y_residual=d["residual"], mean_residual=d["mean_residual"],
                   precond_seconds=d["precond_seconds"], grad=[float(p.grad.flatten()[0]) for p in m.parameters()])
    else:
        with torch.no_grad():
            # (session 19: the engine's "predict" build; PivotedCholesky.eval_rank stands in for the
            # rank argument cg_operator took in session 16)
            system = solver.engine().system(m.kernel, x, m.likelihood.noise_diag(n))
            op, pre = system.op, system.precond
            resid = (y - m.mean(x)).unsqueeze(-1)
            info = {}
            sync(); t = time.perf_counter()
            cg_solve(op, resid, pre, 0.01, cap, info); sync()
        row = dict(what="solve", n=n, rank=rank, block=block, seconds=time.perf_counter() - t, **info)
    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(row), flush=True)
