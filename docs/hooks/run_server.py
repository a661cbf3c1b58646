"""Runs the documentation's example commands for docs/hooks/examples.py, two at a time.

Started once per build. It imports torch, flashgp, numpy, matplotlib and scikit-learn once,
then forks one child per command, so each run starts from the state of a fresh interpreter that
has just imported them (the imports take a few seconds per process, more than many examples).
A child runs ``python SCRIPT ARGS`` (``runpy.run_path``) or ``python -m MODULE ARGS``
(``runpy.run_module``) in its own folder, with its stdout and stderr in that folder's
``.output`` file.

Protocol: one JSON object per line on stdin, {"id", "argv", "cwd", "timeout"}; after stdin
closes, one JSON line per finished job on stdout, {"id", "returncode", "seconds", "timed_out"}.
POSIX only (``os.fork``).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import signal
import sys
import time
import traceback

PRELOAD = ("numpy", "torch", "flashgp", "flashgp.plot", "matplotlib.figure", "matplotlib.pyplot",
           "sklearn.pipeline", "sklearn.preprocessing", "flashgp.sklearn", "flashgp.cli")
WORKERS = 2
OUTPUT = ".output"


def child(argv: list[str], cwd: str) -> int:
    """In the forked child: run ``argv`` (as ``python ARGV``) in ``cwd``; the exit status."""
    os.chdir(cwd)
    fd = os.open(OUTPUT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = cwd
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - the output shows it, the status says it failed
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def main() -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    jobs = [json.loads(line) for line in sys.stdin if line.strip()]
    running: dict[int, tuple[dict, float]] = {}
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < WORKERS:
            job = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    status = child(job["argv"], job["cwd"])
                finally:
                    os._exit(status)
            running[pid] = (job, time.perf_counter())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.perf_counter()
            for other, (job, start) in list(running.items()):
                if now - start > job["timeout"]:
                    os.kill(other, signal.SIGKILL)
                    os.waitpid(other, 0)
                    del running[other]
                    report(job, -9, now - start, True)
            time.sleep(0.05)
            continue
        job, start = running.pop(pid)
        report(job, os.waitstatus_to_exitcode(status), time.perf_counter() - start, False)


def report(job: dict, returncode: int, seconds: float, timed_out: bool) -> None:
    print(json.dumps({"id": job["id"], "returncode": returncode, "seconds": seconds,
                      "timed_out": timed_out}), flush=True)


if __name__ == "__main__":
    main()
