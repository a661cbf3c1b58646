"""MkDocs hook: runs the documentation's examples while the site is built.

A page asks for a run with a line of its own:

    {{ run("examples/regression_1d.py --n 200 --plot regression_1d.png") }}

The hook runs that command (``python`` is the interpreter running mkdocs) in a fresh temporary
folder with the repository on ``PYTHONPATH``, on the CPU, and puts on the page: the command, its
output (stdout and stderr, repository paths shortened), every image file the run wrote (PNG or
SVG, shown in the order of their names) and, for a script, its source in a collapsed block.
``{{ run("...", source=False) }}`` leaves the source out; ``source="above"`` shows it in full
before the output instead (short snippets, such as the first models of Getting started).

All runs of a build happen in ``on_files``, two at a time, through ``run_server.py``: one process
that imports torch, flashgp and matplotlib once and forks a child per run (where ``os.fork`` is
missing, each run is its own interpreter). Their images become files of the site beside the
page that asked for them. A run that fails or takes longer than ``TIMEOUT`` seconds stops the
build with its output, so every example on the site ran, as shown, during the build that made it.

``FLASHGP_DOCS_SKIP_RUNS=1`` (for a quick ``mkdocs serve`` while writing) shows a note instead
of each run's output; CI never sets it.
"""
from __future__ import annotations

import ast
import contextlib
import json
import logging
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

log = logging.getLogger("mkdocs.hooks.examples")

REPO = Path(__file__).resolve().parents[2]
DIRECTIVE = re.compile(r'^\{\{ run\((?P<args>.*)\) \}\}[ \t]*$', re.MULTILINE)
TIMEOUT = 120  # seconds per run
WORKERS = 2
IMAGES = (".png", ".svg")
FIGURE_FOLDER = "_generated"


@dataclass
class Run:
    command: str
    source: bool | str = True  # True: collapsed after the output; "above": in full before it
    output: str = ""
    images: list[str] = field(default_factory=list)  # site paths, relative to the docs folder
    seconds: float = 0.0


_runs: dict[tuple[str, str], Run] = {}  # (page src_uri, directive text) -> its run


def _parse(text: str, page: str) -> tuple[str, bool | str]:
    """(command, source) from the inside of ``run(...)``: one string, then ``source=...``."""
    try:
        call = ast.parse(f"run({text})", mode="eval").body
        command = ast.literal_eval(call.args[0])
        options = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError, IndexError) as err:
        raise PluginError(f"{page}: cannot read run({text}): {err}") from None
    source = options.get("source", True)
    if (not isinstance(command, str) or len(call.args) != 1 or set(options) - {"source"}
            or source not in (True, False, "above")):
        raise PluginError(f"{page}: expected run(\"COMMAND\"[, source=False or \"above\"]), "
                          f"got run({text})")
    return command, source


def _environment() -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default", "COLUMNS": "88",
            "PYTHONHASHSEED": "0"}


def _argv(page: str, command: str) -> list[str]:
    """The command's arguments after ``python``, a script's path made absolute."""
    argv = shlex.split(command)
    if not argv:
        raise PluginError(f"{page}: empty command")
    if argv[0].endswith(".py"):
        argv[0] = str(REPO / argv[0])
    return argv


def _finish(page: str, run: Run, folder: str, output: str, returncode: int, timed_out: bool) -> dict:
    """Check a finished run, keep its output in ``run``; {image name: bytes} it wrote."""
    output = output.replace(str(REPO) + os.sep, "").replace(folder + os.sep, "")
    if timed_out:
        raise PluginError(f"{page}: `python {run.command}` ran longer than {TIMEOUT} s:\n{output}")
    if returncode != 0:
        raise PluginError(f"{page}: `python {run.command}` failed (exit {returncode}):\n{output}")
    run.output = output.rstrip() or "(no output)"
    return {p.name: p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.suffix.lower() in IMAGES and p.is_file()}


def _run_forked(todo: list, folders: list[str]) -> list[dict]:
    """Every run through one ``run_server.py`` process (imports once, forks per run)."""
    jobs = "".join(json.dumps({"id": i, "argv": _argv(page, run.command), "cwd": folder,
                               "timeout": TIMEOUT}) + "\n"
                   for i, ((page, _, run), folder) in enumerate(zip(todo, folders)))
    server = subprocess.run([sys.executable, str(Path(__file__).with_name("run_server.py"))],
                            input=jobs, capture_output=True, text=True, env=_environment(),
                            cwd=folders[0] if folders else None)
    done = {}
    for line in server.stdout.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            done[item["id"]] = item
    images = []
    for i, ((page, _, run), folder) in enumerate(zip(todo, folders)):
        if i not in done:
            raise PluginError(f"{page}: `python {run.command}` did not report (the runner exited "
                              f"with {server.returncode}):\n{server.stderr[-3000:]}")
        output_file = Path(folder) / ".output"
        output = output_file.read_text(encoding="utf-8", errors="replace") if output_file.exists() else ""
        output_file.unlink(missing_ok=True)
        run.seconds = done[i]["seconds"]
        images.append(_finish(page, run, folder, output, done[i]["returncode"], done[i]["timed_out"]))
    return images


def _run_subprocesses(todo: list, folders: list[str]) -> list[dict]:
    """Every run in its own interpreter (where ``os.fork`` does not exist)."""
    def one(item):
        (page, _, run), folder = item
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, *_argv(page, run.command)], cwd=folder,
                                  env=_environment(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as err:
            return _finish(page, run, folder, str(err.output or ""), -9, True)
        run.seconds = time.perf_counter() - start
        return _finish(page, run, folder, proc.stdout, proc.returncode, False)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(one, zip(todo, folders)))


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
    if os.environ.get("FLASHGP_DOCS_SKIP_RUNS"):
        for page, directive, run in todo:
            run.output = "(not run: FLASHGP_DOCS_SKIP_RUNS is set)"
            _runs[(page, directive)] = run
        log.warning("examples: %d runs skipped (FLASHGP_DOCS_SKIP_RUNS)", len(todo))
        return files
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        folders = [stack.enter_context(tempfile.TemporaryDirectory(prefix="flashgp-docs-"))
                   for _ in todo]
        runner = _run_forked if hasattr(os, "fork") else _run_subprocesses
        results = runner(todo, folders)
    for (page, directive, run), images in zip(todo, results):
        folder = Path(page).parent / FIGURE_FOLDER
        stem = Path(page).stem
        for name, content in images.items():
            uri = (folder / f"{stem}-{name}").as_posix()
            files.append(File.generated(config, uri, content=content))
            run.images.append(uri)
        _runs[(page, directive)] = run
    log.info("examples: %d runs in %.1f s (%s)", len(todo), time.perf_counter() - start,
             ", ".join(f"{Path(shlex.split(run.command)[0]).name} {run.seconds:.1f} s"
                       for _, _, run in todo))
    return files


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _fence(text: str, language: str) -> str:
    """A code fence long enough not to be closed by backticks in ``text``."""
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{ticks}{language}\n{text}\n{ticks}"


def _render(page_uri: str, run: Run) -> str:
    script = shlex.split(run.command)[0]
    code = (REPO / script).read_text(encoding="utf-8").rstrip() if script.endswith(".py") else None
    parts = []
    if code is not None and run.source == "above":
        parts += [f"`{script}`:", _fence(code, "python"), "Its output, from a run while this page was built:"]
    else:
        parts += ["Run while this page was built:", _fence(f"python {run.command}", "bash")]
    parts.append(_fence(run.output, "text"))
    page_folder = Path(page_uri).parent
    for uri in run.images:
        relative = os.path.relpath(uri, page_folder).replace(os.sep, "/")
        parts.append(f"![Figure written by the run]({relative})")
    if code is not None and run.source is True:
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
