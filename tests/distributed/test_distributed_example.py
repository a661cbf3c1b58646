# examples/distributed_fit.py launched by torchrun on CPU processes (gloo, one thread each): a fit on
# 2 processes saves an ordinary ExactGP file of all rows; a fit stopped at step 3 on 2 processes and
# resumed from its checkpoint on 1 process ends where the uninterrupted 2-process fit of 6 steps does.
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import flashgp as fg

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "distributed_fit.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1"}
N_TRAIN, N_TEST, ITERS, SEED = 300, 40, 6, 3
# CG re-orthogonalized to round-off, so that 1 and 2 processes (other summation orders) agree closely
COMMON = ["--n-train", str(N_TRAIN), "--n-test", str(N_TEST), "--dims", "2", "--seed", str(SEED), "--lr", "0.05",
          "--precond-rank", "15", "--reorthogonalize", "--cg-tol", "1e-9", "--eval-tol", "1e-10", "--timeout", "60"]


def _has_torchrun() -> bool:
    return (dist.is_available() and dist.is_gloo_available()
            and importlib.util.find_spec("torch.distributed.run") is not None)


pytestmark = pytest.mark.skipif(not _has_torchrun(), reason="torch.distributed (gloo) or torchrun is not available")


def torchrun(nproc: int, *args, cwd: Path) -> str:
    """Run the example on ``nproc`` processes; returns its output (rank 0 prints)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(SCRIPT), *COMMON, *map(str, args)]
    proc = subprocess.run(command, check=False, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def example_module():
    spec = importlib.util.spec_from_file_location("distributed_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return float(found.group(1))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """6 steps on 2 processes, saved: (output, path of the model file)."""
    tmp = tmp_path_factory.mktemp("distributed_example")
    path = tmp / "full.fgp"
    return torchrun(2, "--iters", ITERS, "--save", path, cwd=tmp), path


def test_two_processes_fit_predict_and_save(uninterrupted):
    out, path = uninterrupted
    assert f"synthetic (noise std 0.1): n={N_TRAIN}, d=2, test {N_TEST}; 2 processes (gloo, CPU, torch.float64), " \
           f"{N_TRAIN // 2} rows on rank 0" in out, out
    assert f"fit: {ITERS} steps" in out and "resumed" not in out, out
    assert number(r"test: RMSE ([0-9.]+)", out) < 0.3, out  # noise std 0.1, the signal's std about 0.7
    noise = number(r"noise ([0-9.e-]+)", out)
    assert 1e-3 < noise < 0.5, out

    # the file: an ordinary ExactGP holding all 300 rows in rank order, the fitted hyperparameters
    model = fg.load(path)
    assert type(model) is fg.ExactGP and model.num_train == N_TRAIN
    x, y = example_module().synthetic(N_TRAIN + N_TEST, 2, 0.1, SEED)
    assert torch.equal(model.train_x, x[:N_TRAIN]) and torch.equal(model.train_y, y[:N_TRAIN])
    with torch.no_grad():
        assert abs(float(model.likelihood.noise) - noise) <= 2e-5 * noise + 1e-9
    # on one process it predicts what the 2 processes printed (printed to 4 decimals)
    pred = model.predict(x[N_TRAIN:])
    rmse = float((pred.mean - y[N_TRAIN:]).square().mean().sqrt())
    assert abs(rmse - number(r"test: RMSE ([0-9.]+)", out)) < 6e-5, (rmse, out)


def test_checkpoint_resumed_on_one_process(uninterrupted, tmp_path):
    full_out, full_path = uninterrupted
    checkpoint, path = tmp_path / "fit.ckpt", tmp_path / "resumed.fgp"
    first = torchrun(2, "--iters", 3, "--checkpoint", checkpoint, "--checkpoint-every", 2, cwd=tmp_path)
    assert "fit: 3 steps" in first and "resumed" not in first and checkpoint.is_file(), first
    second = torchrun(1, "--iters", ITERS, "--checkpoint", checkpoint, "--resume", "--save", path, cwd=tmp_path)
    assert "1 process (gloo" in second and f"{N_TRAIN} rows on rank 0" in second, second
    assert f"resumed at step 3 from {checkpoint}" in second and f"fit: {ITERS - 3} steps" in second, second

    # the resumed fit ends where the uninterrupted one did (round-off: other summation orders)
    full, resumed = fg.load(full_path), fg.load(path)
    assert torch.equal(full.train_x, resumed.train_x) and torch.equal(full.train_y, resumed.train_y)
    mine, theirs = dict(resumed.named_parameters()), dict(full.named_parameters())
    assert sorted(mine) == sorted(theirs)
    for name, value in theirs.items():
        assert relative(mine[name].detach(), value.detach()) < 1e-9, (name, mine[name], value)
    assert number(r"final loss ([0-9.e-]+)", second) == pytest.approx(number(r"final loss ([0-9.e-]+)", full_out),
                                                                      rel=1e-5, abs=2e-6)
    assert number(r"test: RMSE ([0-9.]+)", second) == pytest.approx(number(r"test: RMSE ([0-9.]+)", full_out),
                                                                     abs=1.01e-4)


def test_saved_model_loaded_on_three_processes_predicts_the_same(uninterrupted, tmp_path):
    """--load: every process reads the 2-process run's file and keeps its block (100 rows each)."""
    full_out, path = uninterrupted
    out = torchrun(3, "--load", path, "--iters", 0, cwd=tmp_path)
    assert f"n={N_TRAIN}, d=2, test {N_TEST}; 3 processes (gloo" in out and "100 rows on rank 0" in out, out
    assert "fit:" not in out, out  # no steps
    hyper = re.search(r"hyperparameters: .*", full_out).group(0)
    assert hyper in out, (hyper, out)
    for what in ("RMSE", "NLL"):
        pattern = rf"test: .*{what} (-?[0-9.]+)"
        assert number(pattern, out) == pytest.approx(number(pattern, full_out), abs=1.01e-4), (out, full_out)
