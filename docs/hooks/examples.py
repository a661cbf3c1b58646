"""MkDocs hook: runs the documentation's examples while the site is built.

A page asks for a run with a line of its own:

    {{ run("examples/regression_1d.py --n 200 --plot regression_1d.png") }}

The hook runs that command (``python`` is the interpreter running mkdocs) in a fresh temporary
folder with the repository on ``PYTHONPATH``, on the CPU, and puts on the page: the command, its
output (stdout and stderr, repository paths shortened), every image file the run wrote (PNG or
SVG, shown in the order of their names) and, for a script, its source in a collapsed block.
``{{ run("...", source=False) }}`` leaves the source out (e.g. for ``-m flashgp fit --help``).

All runs of a build start together in ``on_files`` (two at a time: each is its own process) and
their images become files of the site beside the page that asked for them. A run that fails or
takes longer than ``TIMEOUT`` seconds stops the build with its output, so every example on the
site ran, as shown, during the build that made it.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[2]
DIRECTIVE = re.compile(r'^\{\{ run\((?P<args>.*)\) \}\}[ \t]*$', re.MULTILINE)
TIMEOUT = 120  # seconds per run
WORKERS = 2
IMAGES = (".png", ".svg")
FIGURE_FOLDER = "_generated"


@dataclass
class Run:
    command: str
    source: bool = True
    output: str = ""
    images: list[str] = field(default_factory=list)  # site paths, relative to the docs folder
    seconds: float = 0.0


_runs: dict[tuple[str, str], Run] = {}  # (page src_uri, directive text) -> its run


def _parse(text: str, page: str) -> tuple[str, bool]:
    """(command, source) from the inside of ``run(...)``: one string, then ``source=True/False``."""
    try:
        call = ast.parse(f"run({text})", mode="eval").body
        command = ast.literal_eval(call.args[0])
        options = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError, IndexError) as err:
        raise PluginError(f"{page}: cannot read run({text}): {err}") from None
    if not isinstance(command, str) or len(call.args) != 1 or set(options) - {"source"}:
        raise PluginError(f"{page}: expected run(\"COMMAND\"[, source=False]), got run({text})")
    return command, bool(options.get("source", True))


def _environment() -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default", "COLUMNS": "88",
            "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0"}


def _execute(page: str, run: Run) -> tuple[Run, dict[str, bytes]]:
    """Run one command in a temporary folder; (run with its output, {image name: bytes})."""
    argv = shlex.split(run.command)
    if not argv:
        raise PluginError(f"{page}: empty command")
    if argv[0].endswith(".py"):
        argv[0] = str(REPO / argv[0])
    with tempfile.TemporaryDirectory(prefix="flashgp-docs-") as folder:
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, *argv], cwd=folder, env=_environment(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=TIMEOUT)
        except subprocess.TimeoutExpired as err:
            raise PluginError(f"{page}: `python {run.command}` ran longer than {TIMEOUT} s:\n"
                              f"{err.output or ''}") from None
        run.seconds = time.perf_counter() - start
        output = proc.stdout.replace(str(REPO) + os.sep, "").replace(folder + os.sep, "")
        if proc.returncode != 0:
            raise PluginError(f"{page}: `python {run.command}` failed (exit {proc.returncode}):\n{output}")
        run.output = output.rstrip() or "(no output)"
        images = {p.name: p.read_bytes() for p in sorted(Path(folder).rglob("*"))
                  if p.suffix.lower() in IMAGES and p.is_file()}
    return run, images


def on_files(files, config):
    """Find every run(...) on the site's pages, run them, and add their images to the site."""
    todo = []
    for file in files.documentation_pages():
        text = Path(file.abs_src_path).read_text(encoding="utf-8")
        for match in DIRECTIVE.finditer(text):
            command, source = _parse(match.group("args"), file.src_uri)
            todo.append((file.src_uri, match.group(0).strip(), Run(command, source)))
    _runs.clear()
    if not todo:
        return files
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda item: _execute(item[0], item[2]), todo))
    for (page, directive, _), (run, images) in zip(todo, results):
        folder = Path(page).parent / FIGURE_FOLDER
        stem = Path(page).stem
        for name, content in images.items():
            uri = (folder / f"{stem}-{name}").as_posix()
            files.append(File.generated(config, uri, content=content))
            run.images.append(uri)
        _runs[(page, directive)] = run
    print(f"INFO    -  examples: {len(todo)} runs in {time.perf_counter() - start:.1f} s "
          f"({', '.join(f'{r.seconds:.1f}' for r, _ in results)} s each)", file=sys.stderr)
    return files


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _fence(text: str, language: str) -> str:
    """A code fence long enough not to be closed by backticks in ``text``."""
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{ticks}{language}\n{text}\n{ticks}"


def _render(page_uri: str, run: Run) -> str:
    parts = [f"Run while this page was built ({run.seconds:.1f} s on the build machine's CPU):",
             _fence(f"python {run.command}", "bash"), _fence(run.output, "text")]
    page_folder = Path(page_uri).parent
    for uri in run.images:
        relative = os.path.relpath(uri, page_folder).replace(os.sep, "/")
        parts.append(f"![Figure written by the run]({relative})")
    script = shlex.split(run.command)[0]
    if run.source and script.endswith(".py"):
        code = (REPO / script).read_text(encoding="utf-8").rstrip()
        parts.append(f'??? example "Source: `{script}`"\n\n' + _indent(_fence(code, "python")))
    return "\n\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    """Replace each run(...) line of the page with what its run produced."""
    def replace(match):
        run = _runs.get((page.file.src_uri, match.group(0).strip()))
        if run is None:
            raise PluginError(f"{page.file.src_uri}: {match.group(0).strip()} did not run")
        return _render(page.file.src_uri, run)
    return DIRECTIVE.sub(replace, markdown)
