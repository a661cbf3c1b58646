# Run as a script by tests/reliability/test_files_limits.py: read each file it is given the way a
# user would (fg.load, or fg.fit(..., resume=True) from a checkpoint) and report what was raised
# and the process's peak resident memory above its level before the first read (ru_maxrss: a
# high-water mark, so the final peak bounds every read). A control allocation afterwards shows
# the measurement would have seen a large one.
import json
import resource
import sys

import torch

import flashgp as fg
from file_attacks import small_model

CONTROL_BYTES = 320 << 20


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


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
    files = spec["files"]
    base = peak_bytes()
    results = {path: read(path, mode) for path, mode in files}
    peak = peak_bytes() - base
    control = torch.ones(CONTROL_BYTES // 8, dtype=torch.float64)
    seen = peak_bytes() - base
    del control
    print(json.dumps({"results": results, "peak_bytes": peak, "control_peak_bytes": seen}))


if __name__ == "__main__":
    main(sys.argv[1])
