# The documentation site builds with `mkdocs build --strict`: broken links, missing pages and API
# references that do not resolve fail it, and every example on the site runs during the build
# (docs/hooks/examples.py). Skipped where the docs extra is not installed (pip install -e ".[docs]";
# .ci/run installs it, so CI builds the site).
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings_handlers.python",
                        reason="mkdocstrings-python is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    for page in ("index.html", "getting-started/index.html", "guide/solvers/index.html",
                 "api/models/index.html", "examples/preconditioners/index.html", "benchmarks/index.html"):
        assert (site / page).is_file(), page
    assert "flashgp.models.exact_gp.ExactGP" in (site / "api/models/index.html").read_text()
    example = (site / "examples/preconditioners/index.html").read_text()
    assert "fewest iterations" in example  # the script's output, from its run during the build
    assert list((site / "examples/_generated").glob("*.png")), "the examples' figures are missing"
    unrun = [str(p.relative_to(site)) for p in site.rglob("*.html") if "{{ run(" in p.read_text()]
    assert not unrun, f"run(...) lines the hook did not recognize (check their spelling): {unrun}"
