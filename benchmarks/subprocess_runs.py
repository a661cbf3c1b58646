# One measurement per subprocess (a clean process: peak memory and warm-up belong to one run),
# and the .md / .json pair a side-by-side benchmark writes. Shared by sgpr_compare.py and
# ski_compare.py.
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker_options(args, names) -> list[str]:
    """``--name=value`` for each attribute of ``args`` in ``names`` that is not None."""
    return [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in names if getattr(args, name) is not None]


def run_in_subprocess(script: str, worker_args: list[str], timeout: float, failed: dict) -> dict:
    """Run ``python script --worker *worker_args --result FILE`` and return the JSON record it
    wrote, or ``failed`` with an "error" (its stderr tail, or the timeout); "wall_seconds" added."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, script, "--worker", *worker_args, "--result", str(result)]
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
            row = json.loads(result.read_text()) if result.exists() else {
                **failed, "error": (proc.stderr or proc.stdout)[-300:]}
        except subprocess.TimeoutExpired:
            row = {**failed, "error": f"timeout {timeout} s"}
    row["wall_seconds"] = time.perf_counter() - start
    return row


def write_report(out, header: str, table: str, payload: dict) -> None:
    """OUT.md (``header``, then ``table``) and OUT.json (``payload``), creating the folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(header + table + "\n")
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))


def record_run(result: dict, run, device, path) -> None:
    """In a worker: ``run()`` (a dict with "step_times") measured for peak memory (CUDA's max
    allocated bytes since the last reset, else the resident-set increase), its record, the peak
    and the median step added to ``result``, which is written to ``path`` as JSON. An exception
    is recorded as "error", so one failure does not lose the other runs."""
    import statistics

    import torch
    from uci import PeakRSS

    try:
        with PeakRSS() as rss:
            result.update(run())
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.increase
        result["step_seconds"] = statistics.median(result["step_times"])
    except Exception as err:
        result["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    Path(path).write_text(json.dumps(result))
