# Times the block preconditioner's parts at n points (d = 3, Scale(Matern 5/2) at the 1M fit's
# hyperparameters): spatial order, greedy pivoted Cholesky, Nystrom rebuild, block build, one solve
# with 11 columns, 10 samples; and the plain LowRankPlusDiag solve for comparison.
import json, os, sys, time, torch
sys.path.insert(0, "examples")
import flashgp as fg
from flashgp.linalg import pivoted_cholesky_with_pivots, nystrom_factor
from flashgp.linalg.block_preconditioner import block_preconditioner
from flashgp.linalg.spatial import block_index
from flashgp.operators import KernelOperator, LowRankPlusDiag
from large_gpu_fit import synthetic, load_raw_parameters
n = int(sys.argv[1]); ranks = [int(r) for r in sys.argv[2].split(",")]; blocks = [int(b) for b in sys.argv[3].split(",")]
dev = torch.device(os.environ.get("DEV", "cuda")); backend = "triton" if dev.type == "cuda" else "blocked"
x, y = synthetic(n, 3, 0.1, dev, torch.float32, 0)
model = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=3)), solver=fg.CG(backend=backend))
load_raw_parameters(model, "benchmarks/results/session8/million_fit_history_h200.json")
def t(fn, reps=1):
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync(); s = time.perf_counter()
    for _ in range(reps): out = fn()
    sync(); return out, (time.perf_counter() - s) / reps
with torch.no_grad():
    op = KernelOperator(model.kernel, x, backend=backend)
    noise = model.likelihood.noise_diag(n).detach()
    for b in blocks:
        idx, sec = t(lambda: block_index(op.locality_inputs(), b))
        print(json.dumps(dict(what="block_index", n=n, block=b, seconds=sec)), flush=True)
    v = torch.randn(n, 11, device=dev)
    for rank in ranks:
        (factor, piv, cnt), sec = t(lambda: pivoted_cholesky_with_pivots(op, rank))
        print(json.dumps(dict(what="greedy", rank=rank, seconds=sec)), flush=True)
        f2, sec = t(lambda: nystrom_factor(op, piv, cnt))
        print(json.dumps(dict(what="nystrom", rank=rank, seconds=sec)), flush=True)
        plain = LowRankPlusDiag(factor, noise)
        _, sec1 = t(lambda: plain.solve(v)); _, sec = t(lambda: plain.solve(v), 5)
        print(json.dumps(dict(what="plain_solve", rank=rank, first=sec1, seconds=sec)), flush=True)
        del plain
        for b in blocks:
            cuda = dev.type == 'cuda'
            if cuda: torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if cuda else 0
            info = {}
            p, sec = t(lambda: block_preconditioner(op, noise, factor, b, info=info))
            peak = torch.cuda.max_memory_allocated() - base if cuda else 0
            _, s1 = t(lambda: p.solve(v)); _, s5 = t(lambda: p.solve(v), 5)
            _, ss = t(lambda: p.sample(10))
            _, sl = t(lambda: p.logdet())
            print(json.dumps(dict(what="blocks", rank=rank, block=b, build=sec, solve_first=s1, solve=s5, sample=ss,
                                  logdet=sl, build_peak_gib=peak / 2**30, info=info,
                                  kept_gib=(p.whitener.numel() + p.inner.factor.numel()) * 4 / 2**30)), flush=True)
            del p
        del factor, f2
