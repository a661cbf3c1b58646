# Builds and loads the fused CPU kernels (cpu_kernels.c): compiled once per machine with the C
# compiler found at first use, cached under the user's cache folder, loaded through ctypes.
"""The compiled library behind the fused CPU backend (``backends.cpu_fused``).

``library()`` returns the loaded ``ctypes.CDLL``, compiling ``cpu_kernels.c`` on the first call
of a process when no build for this source, compiler and CPU is cached yet (a few seconds with
gcc). The build goes to ``$XDG_CACHE_HOME/flashgp`` (default ``~/.cache/flashgp``), written under
a temporary name and renamed, so concurrent processes never load half a file. Without a working
C compiler ``library()`` returns None and ``unavailable_reason()`` says why; the operators then
use the blocked torch backend. The compiler is ``$CC`` if set, else the first of cc, gcc, clang.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ("cpu_kernels.c", "cpu_kernels_body.h", "cpu_kernels_sym.h")
# -O3 with the host's vector units; reassociation lets the column sums vectorize (the kernels
# neither produce nor test NaN or signed zeros); errno-free math lets sqrt and log vectorize
FLAGS = ["-O3", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-fno-trapping-math",
         "-fassociative-math", "-fno-signed-zeros", "-ffp-contract=fast"]
NATIVE_FLAGS = ["-march=native"]
ABI = 6  # = flashgp_cpu_abi() in cpu_kernels.c
COMPILE_TIMEOUT = 120  # seconds

_lock = threading.Lock()
_failure: list[str] = []  # why the last build failed (read by unavailable_reason)


def _compiler() -> str | None:
    given = os.environ.get("CC")
    if given:
        return shutil.which(given.split()[0]) and given
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else platform."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    lines = [ln for ln in text.splitlines() if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(sorted(set(lines)))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flashgp"


def _build(compiler: str, target: Path) -> str | None:
    """Compile into ``target``; returns None on success, else the compiler's complaint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in (NATIVE_FLAGS, []):  # without -march=native where the compiler refuses it
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [*compiler.split(), *FLAGS, *extra, "-I", str(HERE), "-o", tmp,
               str(HERE / SOURCES[0]), "-lm"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as err:
            done, message = None, str(err)
        if done is not None and done.returncode == 0:
            os.replace(tmp, target)
            return None
        os.unlink(tmp)
        errors.append(message if done is None else (done.stderr or done.stdout).strip()[-2000:])
    return " | ".join(errors)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, n, i = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for suffix in ("_f", "_d"):
        getattr(lib, "flashgp_kv" + suffix).argtypes = [p] * 5 + [n] * 5 + [i, i]
        getattr(lib, "flashgp_tile" + suffix).argtypes = [p] * 4 + [n] * 5 + [i, i]
        getattr(lib, "flashgp_grad" + suffix).argtypes = [p] * 9 + [n] * 5 + [i, i]
        getattr(lib, "flashgp_sym_kv" + suffix).argtypes = [p] * 7 + [i] + [n] * 4 + [i, i]
        getattr(lib, "flashgp_sym_grad" + suffix).argtypes = [p] * 10 + [i] + [n] * 4 + [i, i]
        for name in ("flashgp_kv", "flashgp_tile", "flashgp_grad", "flashgp_sym_kv", "flashgp_sym_grad"):
            getattr(lib, name + suffix).restype = ctypes.c_int  # 0, or 1 when scratch memory ran out
    return lib


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The fused CPU kernels as a loaded library, or None when they cannot be built here."""
    compiler = _compiler()
    if compiler is None:
        _failure.append("no C compiler found (set CC, or install gcc or clang)")
        return None
    try:
        version = subprocess.run([*compiler.split(), "--version"], capture_output=True, text=True,
                                 timeout=COMPILE_TIMEOUT).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        _failure.append(f"the C compiler {compiler!r} does not run: {err}")
        return None
    key = hashlib.sha256()
    for part in [*(HERE / s for s in SOURCES)]:
        key.update(part.read_bytes())
    for part in (compiler, version, " ".join(FLAGS), _cpu_signature(), str(ABI)):
        key.update(part.encode())
    target = cache_dir() / f"cpu_kernels_{key.hexdigest()[:16]}.so"
    with _lock:
        if not target.exists():
            try:
                failure = _build(compiler, target)
            except OSError as err:  # cache folder not writable
                failure = str(err)
            if failure is not None:
                _failure.append(f"compiling {SOURCES[0]} with {compiler} failed: {failure}")
                return None
    try:
        lib = _declare(ctypes.CDLL(str(target)))
    except (OSError, AttributeError) as err:
        _failure.append(f"loading {target} failed: {err}")
        return None
    if lib.flashgp_cpu_abi() != ABI:
        _failure.append(f"{target} reports ABI {lib.flashgp_cpu_abi()}, expected {ABI}")
        return None
    return lib


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere (other C libraries return freed memory themselves)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim(0)``; a no-op elsewhere).

    Products at large n allocate and free tensors of several MB each call; glibc serves such
    sizes from its heap once they have been freed once (its mmap threshold adapts upward), and
    the heap's free pages then count as resident memory: at n = 200,000 the forward pass of a
    training step grew from 0.36 GB (3 CG iterations) to 1.1 GB (50), and to 0.32 GB instead
    of 0.54 GB (12 iterations) with the threshold fixed (``benchmarks/cpu_engine.py --parts
    phases``). Trimming after such products keeps the resident memory at what is live."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def unavailable_reason() -> str | None:
    """Why ``library()`` returned None (None when it loaded or was not asked yet)."""
    return _failure[-1] if _failure else None
