# The README is the project's front page: every ```python block in it runs as written, at the
# sizes written, in a fresh interpreter in an empty folder. A block whose first lines say
# "# needs a CUDA GPU" is skipped where no CUDA device is present. The page stays short (under
# 200 lines), names no development history, and states the test command CI runs.
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
GPU_MARK = "# needs a CUDA GPU"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of the README."""
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text[:match.start()].count("\n") + 1, match.group(1)))
    return blocks


def needs_gpu(code: str) -> bool:
    return any(line.strip().startswith(GPU_MARK) for line in code.splitlines()[:3])


def test_readme_has_python_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 2, "the README's quickstarts are missing"
    assert sum(not needs_gpu(code) for _, code in blocks) >= 2, "no quickstart runs on a CPU"


@pytest.mark.parametrize("line, code", python_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_python_block_runs(line, code, tmp_path):
    if needs_gpu(code) and not torch.cuda.is_available():
        pytest.skip(f"README line {line}: the block needs a CUDA GPU")
    if "sklearn" in code:
        pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"README block at line {line} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def test_readme_is_a_front_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; keep it under 200"
    assert "session" not in text.lower(), "README.md names development history ('session')"
    assert "python -m pytest -q" in text, "README.md must state the test command CI runs"
    # the set-up command that runs the demo installs matplotlib, so the demo draws its figure
    demo = [ln for ln in lines if ln.strip().endswith("python -m flashgp")]
    assert demo and all('".[plot]"' in ln or "[plot" in ln for ln in demo), demo
