# The machine-readable result file of a benchmark script (its --out OUT): OUT.json with the
# command, arguments, date, versions, device and the rows the script printed.
"""``write_results(path, rows, args, extra=None, device=None)`` writes ``<path>.json``::

    {"script": "precond_rank.py", "command": "python benchmarks/precond_rank.py --n 2000 ...",
     "argv": [...], "args": vars(args), "date": "2025-...T...+00:00",
     "versions": {"python", "torch", "flashgp", "flashgp_commit", and "gpytorch", "triton",
                  "sklearn" where installed},
     "device": CUDA device name or CPU model, "threads": torch's CPU threads,
     "rows": [one dict per printed row / measurement], **extra}

Values are made JSON-safe: tensors and numpy values become numbers or lists, non-finite floats
null, anything else unknown its ``str``. The device name and package versions come from
``benchmarks/uci.py`` (``device_name``, ``version_of``).
"""
from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import math
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uci import device_name, version_of  # noqa: E402

OPTIONAL = {"gpytorch": "gpytorch", "triton": "triton", "sklearn": "scikit-learn"}  # module: distribution


def json_safe(value):
    """``value`` with tensors, numpy values, paths, dtypes and devices converted, non-finite floats
    as None, and dict keys as strings (so that ``json.dumps(..., allow_nan=False)`` accepts it)."""
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if torch.is_tensor(value):
        return json_safe(value.detach().cpu().tolist())
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars
        return json_safe(value.tolist())
    return str(value)


def _optional_version(module: str) -> str | None:
    """Version of an optional package: from the module if this process imported it, else from
    its installed metadata (without importing it); None if it cannot be imported."""
    if module in sys.modules:
        return version_of(module)
    with contextlib.suppress(ImportError, ValueError):
        if importlib.util.find_spec(module) is None:
            return None
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(OPTIONAL.get(module, module))
    return None


def _commit() -> str | None:
    """``git describe --always --dirty`` of the checkout this file is in (None outside git)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, check=False,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def versions() -> dict:
    """python, torch, flashgp (and its git commit), and the optional packages where installed."""
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "flashgp": version_of("flashgp"), "flashgp_commit": _commit()}
    for module in OPTIONAL:
        version = _optional_version(module)
        if version is not None:
            out[module] = version
    return out


def write_results(path, rows, args, extra: dict | None = None, device=None) -> Path:
    """Write ``<path>.json`` (``path`` itself if it ends in .json; folders made as needed) and
    return its path; ``device`` (a torch.device or name) defaults to ``args.device``, else the
    CPU. A note goes to stderr, so stdout stays the script's own output."""
    device = torch.device(device if device is not None else getattr(args, "device", None) or "cpu")
    out = Path(path)
    if out.suffix != ".json":
        out = out.with_name(out.name + ".json")
    record = {"script": Path(sys.argv[0]).name, "command": "python " + shlex.join(sys.argv),
              "argv": list(sys.argv), "args": dict(vars(args)),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "versions": versions(), "device": device_name(device),
              "threads": torch.get_num_threads(), "rows": list(rows)}
    record.update(extra or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(record), indent=1, allow_nan=False) + "\n")
    print(f"wrote {out}", file=sys.stderr, flush=True)
    return out
