# Run as a script by tests/reliability/test_files_limits.py: read each file it is given the way a
# user would (fg.load, or fg.fit(..., resume=True) from a checkpoint) and report what was raised
# and the most resident memory each read added above the level it started at (the kernel's
# high-water mark VmHWM, reset before each read). A control allocation afterwards shows the
# measurement sees a large one.
import json
import sys

import torch

import flashgp as fg
from file_attacks import small_model

CONTROL_BYTES = 320 << 20


def status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status ("VmRSS", "VmHWM"), in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_above_now(action) -> tuple[int, object]:
    """(the most resident memory ``action()`` added above the level it started at, its result):
    the high-water mark is reset first (/proc/self/clear_refs), so each action is measured alone."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    start = status_bytes("VmRSS")
    result = action()
    return status_bytes("VmHWM") - start, result


def read(path: str, mode: str) -> str:
    try:
        if mode == "load":
            fg.load(path)
        else:
            fg.fit(small_model(), iters=4, progress=False, checkpoint=path, resume=True, seed=0)
    except BaseException as err:  # reported, whatever it is
        return f"{type(err).__name__}: {err}"
    return "no error"


def main(spec: str) -> None:
    torch.set_num_threads(1)
    spec = json.loads(spec)  # {"good_model": path, "files": [[path, "load" | "resume"], ...]}
    fg.fit(small_model(), iters=1, progress=False)  # warm up what a first fit imports and allocates
    fg.load(spec["good_model"])  # and a first load
    results, peaks = {}, {}
    for path, mode in spec["files"]:
        peaks[path], results[path] = peak_above_now(lambda: read(path, mode))
    control, _ = peak_above_now(lambda: torch.ones(CONTROL_BYTES // 8, dtype=torch.float64).sum())
    print(json.dumps({"results": results, "peaks": peaks, "control_peak_bytes": control}))


if __name__ == "__main__":
    main(sys.argv[1])
