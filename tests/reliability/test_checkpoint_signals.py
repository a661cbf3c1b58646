# SIGTERM is handled like Ctrl-C by fg.fit(..., checkpoint=PATH): the last completed step is saved
# and FitInterrupted raised; the handler lives only for the fit, only in the main thread, and gives
# the signal on to a previous Python handler. A run stopped by SIGTERM or SIGKILL and resumed ends
# where the uninterrupted seeded run ends, for every preconditioner.
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import flashgp as fg
from flashgp.checkpoint import read_checkpoint
from flashgp.errors import FitInterrupted
from flashgp.fit_signals import Terminated

from signal_worker import FIT, PRECONDITIONERS, build_model

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "signal_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
KINDS = list(PRECONDITIONERS)
ITERS, EVERY = 10, 4


def params_of(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same_params(model, reference: dict) -> None:
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), reference[name], rtol=1e-6, atol=1e-12, msg=name)


@pytest.fixture(scope="module")
def references() -> dict:
    """kind -> (parameters, losses) of the uninterrupted seeded run without checkpoints."""
    out = {}
    for kind in KINDS:
        model = build_model(kind)
        history = fg.fit(model, iters=ITERS, progress=False, **FIT)
        out[kind] = params_of(model), history.loss
    return out


def assert_resume_matches(path: Path, kind: str, references: dict, start: int) -> None:
    torch.manual_seed(12345)  # another process's RNG state: the checkpoint must restore its own
    model = build_model(kind)
    history = fg.fit(model, iters=ITERS, progress=False, checkpoint=path, resume=True, **FIT)
    reference, losses = references[kind]
    assert history.start_step == start and len(history) == ITERS
    assert history.loss == pytest.approx(losses, rel=1e-6), kind
    assert_same_params(model, reference)


def start_worker(tmp_path: Path, kinds: list, pause: float) -> tuple[subprocess.Popen, Path]:
    progress = tmp_path / "progress"
    worker = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), str(progress), str(ITERS),
                               str(EVERY), str(pause), ",".join(kinds)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return worker, progress


def wait_for(worker: subprocess.Popen, ready, what: str, timeout: float = 60.0):
    """Poll ``ready()`` until it returns a value; fail naming ``what`` if the worker ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value is not None:
            return value
        if worker.poll() is not None:
            pytest.fail(f"the worker ended (status {worker.returncode}) before {what}: {worker.stderr.read()}")
        time.sleep(0.005)
    worker.kill()
    pytest.fail(f"timed out waiting for {what}")


def progress_of(progress: Path, kind: str, at_least: int):
    try:
        name, steps = progress.read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return int(steps) if name == kind and int(steps) >= at_least else None


# ----- in subprocesses: SIGTERM and SIGKILL ------------------------------------------------------

def test_sigterm_saves_the_last_step_sigkill_the_periodic_one_and_resumed_runs_equal_uninterrupted_ones(
        tmp_path, references):
    """One worker process: a fit per preconditioner stopped by SIGTERM between its periodic
    checkpoints (steps 4, 8), then a Vecchia fit killed with SIGKILL after its first one."""
    worker, progress = start_worker(tmp_path, [*KINDS, "vecchia@kill"], pause=0.1)
    stops = {}
    for i, kind in enumerate(KINDS):
        reached = wait_for(worker, lambda: progress_of(progress, kind, 2 + i), f"{kind} reached step {2 + i}")
        worker.send_signal(signal.SIGTERM)
        report = tmp_path / f"{kind}.json"
        result = wait_for(worker, lambda: json.loads(report.read_text()) if report.exists() else None,
                          f"{kind}'s fit ended")
        assert result["interrupted"], f"{kind}: the fit ended before SIGTERM came"
        assert result["cause"] == "Terminated" and result["message"] == "received SIGTERM"
        assert result["handler_restored"], kind
        saved = read_checkpoint(tmp_path / f"{kind}.ckpt").step
        assert saved == result["step"] and reached <= saved < ITERS, (kind, reached, saved)  # nothing lost
        stops[kind] = saved
    reached = wait_for(worker, lambda: progress_of(progress, "vecchia@kill", EVERY + 1), "a periodic checkpoint")
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL
    killed = read_checkpoint(tmp_path / "vecchia@kill.ckpt").step  # the atomic write left a whole file
    assert killed % EVERY == 0 and 0 < killed <= reached
    for kind, saved in stops.items():
        assert_resume_matches(tmp_path / f"{kind}.ckpt", kind, references, saved)
    assert_resume_matches(tmp_path / "vecchia@kill.ckpt", "vecchia", references, killed)


@pytest.mark.parametrize("kind", KINDS)
def test_every_preconditioner_resumes_from_a_periodic_file_as_if_uninterrupted(kind, tmp_path, references):
    path, copy = tmp_path / "run.ckpt", tmp_path / "as_sigkill_leaves_it.ckpt"

    def keep(step, loss, model):
        if step == EVERY + 1:  # EVERY + 2 steps done; the file holds step EVERY
            shutil.copyfile(path, copy)

    fg.fit(build_model(kind), iters=ITERS, progress=False, checkpoint=path, checkpoint_every=EVERY,
           callback=keep, **FIT)
    assert read_checkpoint(copy).step == EVERY
    assert_resume_matches(copy, kind, references, EVERY)


# ----- in this process: the handler's lifetime -----------------------------------------------------

def send_sigterm_at(step_to_stop: int):
    def callback(step, loss, model):
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises during the sleep
    return callback


def test_a_previous_python_handler_gets_the_signal_after_the_checkpoint_is_written(tmp_path):
    seen = []

    def previous(signum, frame):
        seen.append((signum, read_checkpoint(tmp_path / "c.ckpt").step))

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(FitInterrupted) as caught:
            fg.fit(build_model("pivoted_cholesky", n=30), iters=6, progress=False, checkpoint=tmp_path / "c.ckpt",
                   callback=send_sigterm_at(2), **FIT)
        assert signal.getsignal(signal.SIGTERM) is previous  # put back
    finally:
        signal.signal(signal.SIGTERM, old)
    assert caught.value.step == 3 and isinstance(caught.value.__cause__, Terminated)
    assert seen == [(signal.SIGTERM, 3)]  # once, with the file already holding step 3


def test_no_handler_without_a_checkpoint_outside_the_main_thread_or_when_ignored(tmp_path):
    installed = []

    def record(step, loss, model):
        installed.append(signal.getsignal(signal.SIGTERM))

    def marker(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, marker)
    try:
        fg.fit(build_model("nystrom", n=30), iters=1, progress=False, callback=record, **FIT)
        errors = []
        thread = threading.Thread(target=lambda: errors.extend(_fit_quietly(tmp_path / "t.ckpt", record)))
        thread.start()
        thread.join(60)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fg.fit(build_model("nystrom", n=30), iters=1, progress=False, callback=record,
               checkpoint=tmp_path / "i.ckpt", **FIT)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)
    assert errors == [] and installed == [marker, marker, signal.SIG_IGN]


def _fit_quietly(path, callback) -> list:
    try:
        fg.fit(build_model("nystrom", n=30), iters=1, progress=False, callback=callback, checkpoint=path, **FIT)
    except Exception as err:  # reported to the main thread
        return [err]
    return []
