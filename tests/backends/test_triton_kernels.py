# Tests of the fused Triton backend. The kernel cases live in triton_cases.py and run in a fresh
# pytest process: with TRITON_INTERPRET=1 (Triton's CPU interpreter) here, on the GPU where CUDA is.
"""Why a subprocess: Triton decides interpreter or GPU when a kernel is decorated (at import of
flashgp.backends.triton_kernels), from TRITON_INTERPRET. Setting it inside this process would
depend on import order and leak into every later test; a child process gets a clean environment
and this process never imports the kernels. Selection flags are passed through (-k ...) via
FLASHGP_TRITON_CASES_ARGS. The tests below the subprocess one need no triton at all.
"""
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flashgp.backends import BACKENDS, choose_backend, fused_supported
from flashgp.kernels import RBF, RQ, Linear, Matern, Periodic, Polynomial, Scale
from flashgp.operators import KernelOperator

CASES = [Path(__file__).with_name(name) for name in ("triton_cases.py", "triton_symmetric_cases.py")]
REPO = Path(__file__).resolve().parents[2]
HAS_TRITON = importlib.util.find_spec("triton") is not None


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install 'flashgp[gpu]')")
def test_triton_cases():
    """Every case of triton_cases.py and triton_symmetric_cases.py passes (interpreted on CPU,
    compiled on CUDA)."""
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    extra = shlex.split(env.get("FLASHGP_TRITON_CASES_ARGS", ""))
    cmd = [sys.executable, "-m", "pytest", *map(str, CASES), "-q", "-p", "no:cacheprovider", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{output[-8000:]}"
    assert " passed" in output and "skipped" not in output.splitlines()[-1], output[-2000:]


# ----- no triton needed -----------------------------------------------------------------------

@pytest.mark.parametrize("kernel,expected", [
    (RBF(), True), (Scale(RBF(ard_dims=3)), True), (Matern(nu=0.5), True),
    (Scale(Matern(nu=1.5, active_dims=[0, 2])), True), (Scale(Matern(nu=2.5)), True),
    (RQ(ard_dims=2, batch_shape=(3,)), True), (Scale(RQ()), True),
    (Scale(RBF()) + Scale(RBF()), False), (Scale(RBF()) * Periodic(), False), (Periodic(), False),
    (Linear(), False), (Polynomial(power=2), False), (Scale(Scale(RBF())), False),
    (Scale(Periodic()), False),
])
def test_fused_supported(kernel, expected):
    assert fused_supported(kernel) is expected


def test_choose_backend_with_triton():
    assert "triton" in BACKENDS
    big, f32 = 200_000, torch.float32
    assert choose_backend("triton", 10, 10, f32, fused=True) == "triton"
    assert choose_backend("triton", 10, 10, f32, fused=False) == "blocked"
    assert choose_backend("auto", 10, 10, f32, fused=True, device="cuda") == "dense"
    assert choose_backend("auto", big, big, f32, fused=True, device="cuda") == "triton"
    assert choose_backend("auto", big, big, f32, fused=False, device="cuda") == "blocked"
    assert choose_backend("auto", big, big, f32, fused=True, device="cpu") == "blocked"
    assert choose_backend("auto", big, big, torch.float64, fused=True, device="cuda") == "blocked"
    with pytest.raises(ValueError, match="backend"):
        choose_backend("keops", 10, 10, f32)


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="fused kernels can run in this process")
def test_triton_backend_falls_back_to_blocked_without_cuda():
    kernel = Scale(RBF(ard_dims=2)).double()
    x = torch.randn(30, 2, dtype=torch.float64)
    op = KernelOperator(kernel, x, backend="triton")
    assert op.backend == "blocked"
    v = torch.randn(30, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matmul(v), kernel(x).detach() @ v)
    with pytest.raises(ValueError, match="precision"):
        KernelOperator(kernel, x, backend="triton", precision="half")


def test_import_and_cpu_operators_do_not_import_triton():
    code = ("import sys, torch\n"
            "before = 'triton' in sys.modules  # torch itself may import it on some installs\n"
            "import flashgp as fg\n"
            "k = fg.kernels.Scale(fg.kernels.RBF())\n"
            "op = fg.operators.KernelOperator(k, torch.randn(50, 2), backend='auto', memory_budget=0)\n"
            "assert op.backend in ('cpu', 'blocked'), op.backend\n"
            "assert ('triton' in sys.modules) == before\n"
            "assert 'flashgp.backends.triton_kernels' not in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
