# Tests for checkpoints of fg.fit: the file format, resume == uninterrupted, Ctrl-C (also inside a
# step), SIGKILL of a fit running in a subprocess, argument checks and the CLI's --checkpoint/--resume.
import csv
import functools
import io
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import flashgp as fg
from flashgp import cli
from flashgp.checkpoint import (load_checkpoint_model, read_checkpoint, take_snapshot,
                                write_checkpoint)
from flashgp.errors import FitInterrupted
from flashgp.io import model_config
from flashgp.kernels import RBF, Matern, Scale

from checkpoint_worker import FIT, build_model

F64 = torch.float64
REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "checkpoint_worker.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1"}
CG = fg.CG(tol=0.01, probes=5, precond=fg.PivotedCholesky(10))
SETUPS = {  # name -> (model solver, fit arguments)
    "adam-cg-seeded": (CG, dict(optimizer="adam", lr=0.1, seed=7)),
    "adam-cholesky": (fg.Cholesky(), dict(optimizer="adam", lr=0.1)),
    "adam-cg-global-rng": (CG, dict(optimizer="adam", lr=0.1)),  # probes from torch's CPU RNG
    "lbfgs-cholesky": (fg.Cholesky(), dict(optimizer="lbfgs", lr=1.0)),
    # the preconditioner's rank grows 2 -> 4 -> 8 in the first steps (PivotedCholesky.max_rank):
    # a resumed run must pick up the grown rank, not start again from 2
    "adam-cg-growing-rank": (fg.CG(tol=1e-4, probes=5, lanczos_iters=5,
                                   precond=fg.PivotedCholesky(2, refresh_every=3, max_rank=16)),
                             dict(optimizer="adam", lr=0.1, seed=7)),
}


def small_model(solver=CG, n=100, seed=0, kernel=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=F64)
    return fg.ExactGP(x, y, kernel or Scale(RBF(ard_dims=2)), solver=solver)


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same_params(model, reference, rtol=1e-6):
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), reference[name], rtol=rtol, atol=1e-12, msg=name)


def reference_run(solver, kwargs, iters):
    """(parameters, loss history) of an uninterrupted fit without checkpoints."""
    torch.manual_seed(1)
    model = small_model(solver)
    history = fg.fit(model, iters=iters, progress=False, **kwargs)
    return params_of(model), history.loss


# ----- the file format ---------------------------------------------------------------------------

def test_round_trip_of_the_checkpoint_format(tmp_path):
    model = small_model()
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(list(model.parameters()), lr=1.0, max_iter=3, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -model.mll(generator=torch.Generator().manual_seed(0))
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    generator = torch.Generator().manual_seed(5)
    torch.randn(3, generator=generator)
    snap = take_snapshot(2, model, opt, generator, names)
    snap.optimizer_state[names[0]]["prev_loss"] = math.inf  # a non-finite number survives too
    history = fg.History(loss=[1.5, 1.25], step_seconds=[0.1, 0.2],
                         diagnostics=[{"path": "cg", "residual": 0.01}, {"path": "cg", "residual": math.nan}])
    path = tmp_path / "run.ckpt"
    write_checkpoint(path, model, snap, {"optimizer": "lbfgs", "lr": 1.0, "seed": 0}, history)

    with zipfile.ZipFile(path) as archive:  # the flashgp.io layout: JSON + weights-only tensors
        assert set(archive.namelist()) == {"config.json", "tensors.pt"}
        tensors = torch.load(io.BytesIO(archive.read("tensors.pt")), weights_only=True)
        assert set(tensors) == {"model", "optimizer", "rng", "precond"}
        assert "pivots" in tensors["precond"]  # the CG preconditioner's pivots, for exact resumes
    ckpt = read_checkpoint(path)
    assert ckpt.step == 2 and ckpt.settings == {"optimizer": "lbfgs", "lr": 1.0, "seed": 0}
    assert ckpt.config["model"] == model_config(model)
    back = ckpt.history()
    assert back["loss"] == history.loss and back["step_seconds"] == history.step_seconds
    assert back["diagnostics"][0] == history.diagnostics[0] and math.isnan(back["diagnostics"][1]["residual"])
    again = ckpt.snapshot()
    for name, value in snap.parameters.items():
        assert torch.equal(again.parameters[name], value)
    assert set(again.optimizer_state) == set(snap.optimizer_state) == {names[0]}  # L-BFGS: one entry
    for key, value in snap.optimizer_state[names[0]].items():
        restored = again.optimizer_state[names[0]][key]
        if isinstance(value, list):
            assert len(restored) == len(value) and all(
                (a is None and b is None) or torch.equal(a, b) for a, b in zip(restored, value))
        elif isinstance(value, torch.Tensor):
            assert torch.equal(restored, value), key
        else:
            assert restored == value, key
    assert len(snap.optimizer_state[names[0]]["old_dirs"]) > 0  # the L-BFGS history is in there
    assert set(again.rng) == set(snap.rng) == {"torch", "generator"}
    assert all(torch.equal(again.rng[k], snap.rng[k]) for k in snap.rng)
    assert set(again.pivots) == set(snap.pivots) and all(torch.equal(again.pivots[k], v) for k, v in snap.pivots.items())
    # the model inside, as fg.load would give it
    loaded = load_checkpoint_model(path)
    x_test = torch.linspace(-2, 2, 7, dtype=F64).unsqueeze(-1).expand(7, 2)
    torch.testing.assert_close(loaded.predict(x_test).mean, model.predict(x_test).mean, rtol=1e-8, atol=0)


def test_foreign_damaged_and_unsafe_files_are_refused(tmp_path):
    model = small_model(n=20)
    fg.save(model, tmp_path / "m.fgp")
    with pytest.raises(fg.ModelFileError, match="not a flashgp checkpoint"):
        read_checkpoint(tmp_path / "m.fgp")
    fg.fit(model, iters=2, progress=False, checkpoint=tmp_path / "c.ckpt")
    with pytest.raises(fg.ModelFileError, match="not a flashgp model file"):
        fg.load(tmp_path / "c.ckpt")  # a checkpoint is not a model file
    raw = (tmp_path / "c.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(fg.ModelFileError, match="truncated or damaged"):
        read_checkpoint(tmp_path / "cut.ckpt")
    with zipfile.ZipFile(tmp_path / "c.ckpt") as archive:
        config = archive.read("config.json")
    with zipfile.ZipFile(tmp_path / "evil.ckpt", "w") as archive:  # a pickle that runs code on load
        archive.writestr("config.json", config)
        archive.writestr("tensors.pt", pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(fg.ModelFileError, match="refusing pickled"):
        read_checkpoint(tmp_path / "evil.ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        read_checkpoint(tmp_path / "none.ckpt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_format_1_checkpoint_without_pivots_resumes_with_fresh_ones(tmp_path):
    path, old = tmp_path / "run.ckpt", tmp_path / "old.ckpt"
    fg.fit(small_model(), iters=3, progress=False, seed=7, checkpoint=path)
    assert read_checkpoint(path).snapshot().pivots["pivots"].shape == (10,)  # format 2 holds them
    with zipfile.ZipFile(path) as archive:  # rewrite it as format 1 wrote it: no "precond" tensors
        config = json.loads(archive.read("config.json"))
        tensors = torch.load(io.BytesIO(archive.read("tensors.pt")), weights_only=True)
    config["format_version"] = 1
    del config["model"]["solver"]["args"]["precond"]["args"]["refresh_every"]  # not a field yet
    del tensors["precond"]
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    with zipfile.ZipFile(old, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("tensors.pt", buffer.getvalue())
    assert read_checkpoint(old).snapshot().pivots == {}
    model = small_model()
    history = fg.fit(model, iters=5, progress=False, seed=7, checkpoint=old, resume=True)
    assert history.start_step == 3 and len(history) == 5
    assert history.diagnostics[3]["precond_pivots"] == "greedy"
    assert history.diagnostics[4]["precond_pivots"] == "reused"


# ----- resume == uninterrupted -------------------------------------------------------------------

@pytest.mark.parametrize("setup", list(SETUPS))
def test_resume_from_a_periodic_checkpoint_equals_the_uninterrupted_run(setup, tmp_path):
    solver, kwargs = SETUPS[setup]
    iters, every = (12, 5) if kwargs["optimizer"] == "adam" else (5, 2)
    reference, reference_loss = reference_run(solver, kwargs, iters)
    path, copy = tmp_path / "run.ckpt", tmp_path / "copy.ckpt"

    def keep_a_copy(step, loss, model):  # the file as a crash at this step would leave it
        if step == every:  # every + 1 steps done: the file holds step `every`
            shutil.copyfile(path, copy)

    torch.manual_seed(1)
    model = small_model(solver)
    history = fg.fit(model, iters=iters, progress=False, checkpoint=path, checkpoint_every=every,
                     callback=keep_a_copy, **kwargs)
    assert_same_params(model, reference)  # checkpointing does not perturb the run
    assert read_checkpoint(path).step == iters and history.loss == pytest.approx(reference_loss, rel=1e-9)
    assert read_checkpoint(copy).step == every

    torch.manual_seed(123)  # a new process would have another RNG state; the checkpoint restores it
    resumed = small_model(solver)
    history = fg.fit(resumed, iters=iters, progress=False, checkpoint=copy, resume=True, **kwargs)
    assert history.start_step == every and len(history) == iters
    assert history.loss == pytest.approx(reference_loss, rel=1e-6)
    assert_same_params(resumed, reference)


def test_ctrl_c_saves_the_last_completed_step_and_resumes(tmp_path):
    solver, kwargs = SETUPS["adam-cg-seeded"]
    reference, reference_loss = reference_run(solver, kwargs, 12)
    path = tmp_path / "run.ckpt"

    def ctrl_c(step, loss, model):
        if step == 6:
            raise KeyboardInterrupt

    torch.manual_seed(1)
    model = small_model(solver)
    with pytest.raises(KeyboardInterrupt) as caught:  # FitInterrupted is a KeyboardInterrupt
        fg.fit(model, iters=12, progress=False, checkpoint=path, checkpoint_every=5, callback=ctrl_c, **kwargs)
    stop = caught.value
    assert isinstance(stop, FitInterrupted) and stop.step == 7 and stop.checkpoint == str(path)
    assert len(stop.history) == 7 and read_checkpoint(path).step == 7  # not 5: nothing lost
    torch.manual_seed(5)
    resumed = small_model(solver)
    history = fg.fit(resumed, iters=12, progress=False, checkpoint=path, resume=True, **kwargs)
    assert history.start_step == 7 and history.loss == pytest.approx(reference_loss, rel=1e-6)
    assert_same_params(resumed, reference)


def slow_lbfgs_model():
    """A start far from the optimum, where L-BFGS needs several evaluations in steps 0 and 1."""
    model = small_model(fg.Cholesky(), kernel=Scale(Matern(nu=0.5, ard_dims=2)))
    model.kernel.base.lengthscale = 0.05
    return model


def count_evaluations(model) -> list:
    """Wrap model.mll so that each call appends to the returned list."""
    calls, inner = [], model.mll
    model.mll = lambda *a, **k: (calls.append(1), inner(*a, **k))[1]
    return calls


def test_ctrl_c_inside_an_lbfgs_step_goes_back_to_the_last_completed_step(tmp_path):
    kwargs, path = dict(optimizer="lbfgs", lr=1.0), tmp_path / "run.ckpt"
    reference = slow_lbfgs_model()
    fg.fit(reference, iters=3, progress=False, **kwargs)
    probe = slow_lbfgs_model()
    calls = count_evaluations(probe)
    fg.fit(probe, iters=1, progress=False, **kwargs)
    in_step_1 = len(calls) + 4  # a few line-search evaluations into step 1: parameters have moved
    model, after_step_1 = slow_lbfgs_model(), {}
    inner, calls = model.mll, []

    def mll(*args, **kw):
        calls.append(1)
        if len(calls) == in_step_1:
            moved.update(params_of(model))
            raise KeyboardInterrupt
        return inner(*args, **kw)

    moved = {}
    model.mll = mll
    with pytest.raises(FitInterrupted) as caught:
        fg.fit(model, iters=3, progress=False, checkpoint=path, checkpoint_every=10, **kwargs,
               callback=lambda step, loss, m: after_step_1.update(params_of(m)) if step == 0 else None)
    assert caught.value.step == 1 and read_checkpoint(path).step == 1 and len(caught.value.history) == 1
    assert any(not torch.equal(moved[k], after_step_1[k]) for k in moved)  # interrupted mid-step
    assert_same_params(model, after_step_1, rtol=0)  # the half-done line search was undone
    resumed = slow_lbfgs_model()
    history = fg.fit(resumed, iters=3, progress=False, checkpoint=path, resume=True, **kwargs)
    assert history.start_step == 1
    assert_same_params(resumed, params_of(reference))


def test_checkpoints_every_k_steps_at_the_end_and_at_an_early_stop(tmp_path):
    path = tmp_path / "run.ckpt"
    seen = []
    fg.fit(small_model(), iters=10, progress=False, checkpoint=path, checkpoint_every=4, seed=0,
           callback=lambda step, loss, m: seen.append(read_checkpoint(path).step if path.exists() else None))
    assert seen == [None, None, None, 4, 4, 4, 4, 8, 8, 10]
    # a non-finite loss at step 3 stops the fit; the file holds the 3 completed steps
    model, early = small_model(), tmp_path / "early.ckpt"
    inner = model.mll
    calls = []
    model.mll = lambda *a, **k: (calls.append(1), inner(*a, **k) * (math.nan if len(calls) == 4 else 1))[1]
    with pytest.warns(fg.NumericalWarning, match="not finite"):
        history = fg.fit(model, iters=10, progress=False, checkpoint=early, checkpoint_every=10)
    assert len(history) == 3 and read_checkpoint(early).step == 3


def test_resume_without_a_file_starts_afresh(tmp_path):
    solver, kwargs = SETUPS["adam-cg-seeded"]
    reference, _ = reference_run(solver, kwargs, 6)
    path = tmp_path / "new.ckpt"
    torch.manual_seed(1)
    model = small_model(solver)
    history = fg.fit(model, iters=6, progress=False, checkpoint=path, resume=True, **kwargs)
    assert history.start_step == 0 and len(history) == 6 and read_checkpoint(path).step == 6
    assert_same_params(model, reference)
    again = fg.fit(model, iters=6, progress=False, checkpoint=path, resume=True, **kwargs)  # done already
    assert again.start_step == 6 and again.loss == history.loss
    assert_same_params(model, reference)


@pytest.fixture(scope="module")
def adam_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "adam.ckpt"
    fg.fit(small_model(), iters=4, progress=False, checkpoint=path, seed=7, lr=0.1)
    return path


@pytest.mark.parametrize("change,match", [
    (dict(model=lambda: small_model(kernel=Scale(Matern(nu=2.5, ard_dims=2)))), r"^model: .*kernel"),
    (dict(model=lambda: small_model(solver=fg.Cholesky())), r"^model: .*solver"),
    (dict(model=lambda: small_model(seed=1)), r"^model: .*training data"),
    (dict(optimizer="lbfgs"), r"^optimizer: .*optimizer='adam'"),
    (dict(lr=0.05), r"^lr: "),
    (dict(seed=8), r"^seed: "),
    (dict(iters=3), r"^iters: .*step 4"),
], ids=["kernel", "solver", "data", "optimizer", "lr", "seed", "iters"])
def test_resume_refuses_a_checkpoint_of_another_run(adam_checkpoint, change, match):
    model = change.pop("model", small_model)()
    before = params_of(model)
    kwargs = {"iters": 6, "seed": 7, "lr": 0.1, **change}
    with pytest.raises(ValueError, match=match):
        fg.fit(model, progress=False, checkpoint=adam_checkpoint, resume=True, **kwargs)
    assert_same_params(model, before, rtol=0)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(checkpoint="{d}/c", checkpoint_every=0), ValueError, "checkpoint_every"),
    (dict(checkpoint="{d}/c", checkpoint_every=2.5), ValueError, "checkpoint_every"),
    (dict(checkpoint="{d}/c", checkpoint_every=True), ValueError, "checkpoint_every"),
    (dict(checkpoint_every=5), ValueError, "checkpoint_every"),
    (dict(resume=True), ValueError, "resume"),
    (dict(checkpoint="{d}/c", resume="yes"), ValueError, "resume"),
    (dict(checkpoint=7), TypeError, "checkpoint"),
    (dict(checkpoint="{d}/missing/c"), ValueError, "checkpoint"),
    (dict(checkpoint="{d}"), ValueError, "checkpoint"),
])
def test_bad_checkpoint_arguments(kwargs, exc, match, tmp_path):
    kwargs = {k: (v.format(d=tmp_path) if isinstance(v, str) else v) for k, v in kwargs.items()}
    with pytest.raises(exc, match=rf"^{match}\b"):
        fg.fit(small_model(n=20), iters=2, progress=False, **kwargs)
    assert not (tmp_path / "c").exists()


# ----- a real process killed with SIGKILL; the CLI ----------------------------------------------

KILL_ITERS, KILL_EVERY = 30, 3


def write_table(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (n, 2))
    y = 5 + np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + rng.normal(0, 0.1, n)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "y"])
        writer.writerows(np.column_stack([x, y]).round(6).tolist())
    return path


def test_sigkill_loses_at_most_k_steps_and_the_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    path, progress = tmp_path / "kill.ckpt", tmp_path / "progress"
    worker = subprocess.Popen([sys.executable, str(WORKER), str(path), str(progress), str(KILL_ITERS),
                               str(KILL_EVERY), "0.1"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while worker.poll() is None and time.monotonic() < deadline:  # kill once 2 checkpoints are written
        if progress.exists() and int(progress.read_text()) >= 2 * KILL_EVERY + 1:
            break
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    stderr = worker.communicate(timeout=60)[1]
    assert worker.returncode == -signal.SIGKILL, f"not killed mid-run (status {worker.returncode}): {stderr}"
    reached = int(progress.read_text())  # completed steps before the kill
    saved = read_checkpoint(path).step  # the atomic write left a whole file
    assert 2 * KILL_EVERY <= saved < KILL_ITERS and saved % KILL_EVERY == 0
    assert -1 <= reached - saved < KILL_EVERY  # at most K steps of work lost
    reference = build_model()
    reference_history = fg.fit(reference, iters=KILL_ITERS, progress=False, **FIT)
    resumed = build_model()
    history = fg.fit(resumed, iters=KILL_ITERS, progress=False, checkpoint=path, resume=True, **FIT)
    assert history.start_step == saved and history.loss == pytest.approx(reference_history.loss, rel=1e-6)
    assert_same_params(resumed, params_of(reference))


def test_cli_checkpoint_interrupt_and_resume(tmp_path, monkeypatch, capsys):
    data, path = write_table(tmp_path / "train.csv"), tmp_path / "out" / "fit.ckpt"
    argv = ["fit", str(data), "--target", "y", "--iters", "12", "--json"]
    assert cli.main(argv) == 0
    uninterrupted = json.loads(capsys.readouterr().out)

    def ctrl_c(step, loss, model):
        if step == 4:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(cli, "fit", functools.partial(fg.fit, callback=ctrl_c))
        assert cli.main([*argv, "--checkpoint", str(path), "--checkpoint-every", "3"]) == 130
    assert capsys.readouterr().err.strip() == (f"flashgp: error: interrupted at step 5; checkpoint saved to "
                                               f"{path}; resume with --resume")
    assert cli.main([*argv, "--checkpoint", str(path), "--resume", "--lr", "0.05"]) == 1  # another run
    assert "--checkpoint: lr: " in capsys.readouterr().err
    assert cli.main([*argv, "--checkpoint", str(path), "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["resumed_from_step"] == 5 and resumed["iters"] == 12 and resumed["checkpoint"] == str(path)
    assert resumed["final_loss"] == pytest.approx(uninterrupted["final_loss"], rel=1e-6)
    hp, ref = resumed["hyperparameters"], uninterrupted["hyperparameters"]
    assert hp["noise"] == pytest.approx(ref["noise"], rel=1e-6)
    assert hp["lengthscale"] == pytest.approx(ref["lengthscale"], rel=1e-6)


@pytest.mark.parametrize("extra,flag", [(["--resume"], "--resume"), (["--checkpoint-every", "3"], "--checkpoint-every"),
                                        (["--checkpoint", "x", "--checkpoint-every", "0"], "--checkpoint-every")])
def test_cli_checkpoint_usage_errors(extra, flag, tmp_path, capsys):
    data = write_table(tmp_path / "train.csv", n=10)
    assert cli.main(["fit", str(data), "--target", "y", "--iters", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"flashgp: error: argument {flag}") or err.startswith(f"flashgp: error: {flag}: ")
