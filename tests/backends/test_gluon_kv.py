# Tests of the Gluon (asynchronous wgmma) K @ V against float64 references: on a Hopper GPU only
# (Gluon has no CPU interpreter); on other machines only the dispatch checks run.
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
gluon_kv = pytest.importorskip("flashgp.backends.gluon_kv")

from flashgp.backends import fused  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from gluon_kv_speed import reference  # noqa: E402  (float64 K V by the library's kernel modules)
from flashgp.kernels import RQ, Matern, Scale  # noqa: E402
from flashgp.operators import KernelOperator  # noqa: E402

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
gpu = pytest.mark.skipif(not HOPPER, reason="needs a CUDA device of compute capability 9.x")
PROFILES = ["rbf", "matern12", "matern32", "matern52", "rq"]
TOL = {"tf32x3": 2e-6, "tf32": 2e-3}   # ||K V - ref|| / ||ref||: float32-level and tf32-level


def test_not_supported_on_cpu():
    z = torch.rand(1, 10, 3)
    assert not gluon_kv.supported(z, 11, "tf32x3")
    assert fused._gluon_for(z, 11, "tf32x3") is None


@gpu
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("d", [1, 3, 8])
@pytest.mark.parametrize("t", [2, 11, 16, 40, 70])
@pytest.mark.parametrize("precision", ["tf32x3", "tf32"])
def test_matches_float64(profile, d, t, precision):
    """Partial row blocks and column tiles (n1 = 300, n2 = 1001), batches of 2, t over one launch."""
    gen = torch.Generator().manual_seed(d * 1000 + t)
    z1 = (torch.rand(2, 300, d, generator=gen) * 3).cuda()
    z2 = (torch.rand(2, 1001, d, generator=gen) * 3).cuda()
    v = torch.randn(2, 1001, t, generator=gen).cuda()
    alpha = (torch.rand(2, generator=gen) + 0.5).cuda() if profile == "rq" else None
    out = gluon_kv.gluon_kv_matmul(z1, z2, v, profile, alpha, precision)
    ref = reference(z1, z2, v, profile, alpha)
    assert torch.isfinite(out).all()
    assert ((out.double() - ref).norm() / ref.norm()).item() < TOL[precision]


@gpu
@pytest.mark.parametrize("config", [(128, 32, 4, True), (128, 32, 4, False), (64, 32, 4, True),
                                    (128, 16, 4, True), (64, 64, 4, True), (256, 16, 4, True)])
def test_launch_settings(config):
    """Every launch setting the benchmark times gives the same product; output fully written."""
    gen = torch.Generator().manual_seed(7)
    z1, z2 = (torch.rand(1, 517, 3, generator=gen) * 4).cuda(), (torch.rand(1, 777, 3, generator=gen) * 4).cuda()
    v = torch.randn(1, 777, 11, generator=gen).cuda()
    block_m, block_n, warps, keep = config
    out = gluon_kv.gluon_kv_matmul(z1, z2, v, "matern52", None, "tf32x3", block_m, block_n, warps, keep)
    ref = reference(z1, z2, v, "matern52", None)
    assert ((out.double() - ref).norm() / ref.norm()).item() < TOL["tf32x3"]


@gpu
def test_fused_matmul_uses_it():
    """fused_matmul on a Hopper GPU (t >= 2, d <= 8) matches the Triton kernel's product."""
    kernel = Scale(Matern(nu=2.5, ard_dims=3)).cuda()
    x = torch.rand(700, 3, device="cuda")
    v = torch.randn(700, 5, device="cuda")
    assert fused._gluon_for(x[None], 5, "tf32x3") is not None
    out = fused.fused_matmul(kernel, x, None, v)
    ref = KernelOperator(kernel.double(), x.double(), backend="blocked").matmul(v.double())
    assert ((out.double() - ref).norm() / ref.norm()).item() < TOL["tf32x3"]


@gpu
def test_rq_batched_alpha():
    kernel = RQ(batch_shape=(2,)).cuda()
    with torch.no_grad():
        kernel.alpha = torch.tensor([0.7, 3.0], device="cuda")
    x = torch.rand(2, 300, 2, device="cuda")
    v = torch.randn(2, 300, 4, device="cuda")
    out = fused.fused_matmul(kernel, x, None, v)
    parts = fused.fused_parts(kernel)
    z = parts.scaled_inputs(x)
    ref = reference(z, z, v, "rq", kernel.alpha.detach())
    assert ((out.double() - ref).norm() / ref.norm()).item() < TOL["tf32x3"]
