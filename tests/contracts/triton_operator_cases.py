# The operator contract on the fused Triton backend, run by test_contract_triton.py in a child
# process with TRITON_INTERPRET=1 (on CPU) or directly on CUDA. Not collected by pytest by name.
import sys
import warnings

import torch

from flashgp.backends import fused
from flashgp.kernels import RQ, RBF, Matern, Scale
from flashgp.operators import KernelOperator
from flashgp.testing import check_operator

from references import dense_kernel, inputs, randomized

KERNELS = {"rbf": lambda: Scale(RBF(ard_dims=3)), "matern25": lambda: Scale(Matern(nu=2.5)),
           "rq": lambda: Scale(RQ(ard_dims=3))}
# float32 arithmetic inside the fused kernels whatever the precision mode: float32 tolerances
RTOL, GRAD_RTOL = 1e-5, 5e-5


def main(device: str) -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # Triton 3.6's interpreter
    for name, make in KERNELS.items():
        kernel = randomized(make(), dtype=torch.float32).to(device)
        x1, x2 = inputs(37, dtype=torch.float32).to(device), inputs(21, seed=3, dtype=torch.float32).to(device)
        for args, what in [((x1,), "symmetric"), ((x1, x2), "cross")]:
            def make_op(args=args):
                op = KernelOperator(kernel, *args, backend="triton")
                assert op.backend == "triton", f"backend resolved to {op.backend}"
                return op
            check_operator(make_op, lambda op: dense_kernel(op.kernel, op.x1, op.x2), rtol=RTOL,
                           grad_rtol=GRAD_RTOL, name=f"KernelOperator({name}, {what}, triton)")
            print(f"ok {name} {what}", flush=True)
    return 0


if __name__ == "__main__":
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not fused.fused_available(device):
        print("fused kernels cannot run here", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(device))
