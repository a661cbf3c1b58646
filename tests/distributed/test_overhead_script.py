# benchmarks/distributed_overhead.py as a smoke run on the CPU (gloo, world size 1, tiny n): it
# writes its record, and the float64 agreement part finds the sharded and single-process models equal.
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "distributed_overhead.py"

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")


def run(tmp_path, *extra, processes: int = 1):
    """Run the script on the CPU with tiny settings in its own process (it joins a process group of
    its own), or under torchrun with ``processes`` ranks; (the record printed, the one written, stderr)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "overhead"
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "--"]
    done = subprocess.run([*launcher, str(SCRIPT), "--device", "cpu", "--n", "600", "--agree-n", "300",
                           "--repeats", "1", "--warmup", "0", "--predict-m", "40", "--out", str(out), *extra],
                          check=False, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    printed = json.loads(done.stdout)
    record = json.loads(out.with_name(out.name + ".json").read_text())
    return printed, record, done.stderr


def check_agreement(agree: dict) -> None:
    """The float64 part: a real bug in the sharded path moves these far above round-off."""
    assert agree["n"] == 300 and agree["initial_values_bitwise_equal"]
    assert agree["mll_rel_diff"] < 1e-8, agree
    assert set(agree["gradient_rel_diff"]) == {"kernel.raw_outputscale", "kernel.base.raw_lengthscale",
                                               "likelihood.raw_noise", "mean.raw_constant"}
    assert agree["max_gradient_rel_diff"] < 1e-8, agree["gradient_rel_diff"]
    assert agree["cg_iterations"]["single"] == agree["cg_iterations"]["sharded"] > 0
    post = agree["posterior"]
    assert post["mean_rel_diff"] < 1e-8 and post["variance_rel_diff"] < 1e-8, post
    assert max(post["sharded_vs_cholesky"].values()) < 1e-7, post


def test_cpu_smoke_run(tmp_path):
    printed, record, log = run(tmp_path)
    for rec in (printed, record):
        assert rec["world_size"] == 1 and rec["dist_backend"] == "gloo" and rec["torchrun"] is False
        assert rec["sharded_mll_takes_precision"] is True
        assert set(rec) >= {"agree", "step", "predict", "versions", "args", "device_name", "target_overhead"}
    assert record["rows"] == record["step"] and "torch" in record["versions"]

    check_agreement(record["agree"])

    # the timed float32 step: both models, one repeat, the overhead ratio
    (step,) = record["step"]
    assert step["n"] == 600 and step["d"] == 3 and step["repeats"] == 1
    for name in ("single", "sharded"):
        assert len(step[name]["seconds"]) == 1 and step[name]["median_seconds"] > 0
        assert step[name]["cg_iterations"][0] > 0
    assert step["overhead"] == pytest.approx(step["sharded"]["median_seconds"] / step["single"]["median_seconds"])
    assert step["loss_rel_diff"] < 1e-4 and step["max_gradient_rel_diff"] < 1e-2, step
    assert max(step["initial_values_rel_diff"].values()) == 0.0

    (predict,) = record["predict"]
    assert predict["m"] == 40 and predict["single"]["seconds"] > 0 and predict["sharded"]["seconds"] > 0
    assert predict["mean_rel_diff"] < 1e-2, predict
    assert "overhead" in log and "agree" in log  # the progress lines went to stderr


def test_two_processes_under_torchrun(tmp_path):
    printed, record, _ = run(tmp_path, "--parts", "agree", processes=2)
    assert record["world_size"] == 2 and record["torchrun"] is True and printed["world_size"] == 2
    assert record["step"] == [] and record["predict"] == []
    check_agreement(record["agree"])


def test_defaults():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import distributed_overhead as script
    finally:
        sys.path.remove(str(SCRIPT.parent))
    args = script.parse(["--device", "cpu"])
    assert (args.n, args.backend, args.predict_m, args.d, args.repeats, args.warmup) == (4000, "auto", 500, [3], 3, 1)
    assert args.parts == ["agree", "step", "predict"] and args.precision == "tf32x3" and args.out is None
