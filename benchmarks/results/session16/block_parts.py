# Times the parts of one block-preconditioner build and solve at UCI sizes (float32 CUDA, rank 100).
import json, sys, time, torch
import flashgp as fg
from flashgp.datasets import load_uci
from flashgp.operators import KernelOperator
from flashgp.linalg import pivoted_cholesky
from flashgp.linalg import block_preconditioner as bp
from flashgp.linalg.spatial import block_index
dev = torch.device("cuda")
def t(fn, reps=5):
    fn(); torch.cuda.synchronize(); s = time.perf_counter()
    for _ in range(reps): out = fn()
    torch.cuda.synchronize(); return out, (time.perf_counter() - s) / reps
for name in sys.argv[1].split(","):
    ds = load_uci(name, root=".uci", dtype=torch.float32)
    x = ds.x_train.to(dev); n, d = x.shape
    k = fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=d, lengthscale=1.0)).to(dev)
    with torch.no_grad():
        op = KernelOperator(k, x, backend="auto")
        noise = torch.full((n,), 0.1, device=dev)
        L = pivoted_cholesky(op, 100)
        row = dict(data=name, n=n, d=d, backend=op.backend)
        idx, row["order"] = t(lambda: block_index(op.locality_inputs(), 256))
        i2 = idx.clamp_max(n - 1)
        kb, row["diagonal_blocks"] = t(lambda: op.diagonal_blocks(i2))
        spd = kb + 0.1 * torch.eye(256, dtype=torch.float64, device=dev)
        c, row["cholesky_ex"] = t(lambda: torch.linalg.cholesky_ex(spd)[0])
        eye = torch.eye(256, dtype=torch.float64, device=dev)
        _, row["solve_triangular"] = t(lambda: torch.linalg.solve_triangular(c, eye.expand_as(c), upper=False))
        p, row["build"] = t(lambda: bp.block_preconditioner(op, noise, L, 256))
        v = torch.randn(n, 11, device=dev)
        _, row["solve_blocks"] = t(lambda: p.solve(v), 20)
        plain = fg.operators.LowRankPlusDiag(L, noise)
        _, row["solve_plain"] = t(lambda: plain.solve(v), 20)
        _, row["product"] = t(lambda: op.matmul(v), 20)
    print(json.dumps(row), flush=True)
