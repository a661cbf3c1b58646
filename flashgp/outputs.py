# Output files of the command line and the estimator: an output never names the same file as an
# input (or as another output), and every output is written atomically (a temporary file in the
# same folder, fsync, os.replace), so a failed write leaves the previous file whole.
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


class OutputPathError(ValueError):
    """An output path that would overwrite an input, or another output, of the same command.

    Attributes: ``arg`` (the output's argument name, e.g. "--out") and ``other`` (the argument
    name of the file it collides with, e.g. "DATA").
    """

    def __init__(self, arg: str, path, other: str, other_path, output: bool = False):
        same = "" if os.fspath(path) == os.fspath(other_path) else f" ({other_path})"
        harm = (f"the two outputs would overwrite each other" if output
                else f"writing it would destroy the input {other}")
        super().__init__(f"{arg}: {path} is the same file as {other}{same}; {harm}: "
                         f"choose another path for {arg}")
        self.arg, self.other = arg, other


def same_file(a, b) -> bool:
    """Whether the paths ``a`` and ``b`` (str or os.PathLike) name one file.

    ``os.path.samefile`` when both exist (symbolic links, hard links, ``./x`` against ``x``,
    case-insensitive file systems); else whether their resolved absolute paths are equal (an
    output not written yet, possibly through a symbolic link).
    """
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them does not exist (yet), or an unusable name
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def check_outputs(outputs: dict, inputs: dict) -> None:
    """Refuse outputs that would overwrite an input or another output.

    Args:
        outputs: argument name -> path of each file the command will write (None: not written).
        inputs: argument name -> path of each file the command reads (None, or a path where
            nothing exists: skipped, as there is nothing to destroy; reading it fails later).

    Raises ``OutputPathError`` (a ValueError) naming both arguments for the first collision.
    Call it before any work, so a refused command has changed nothing.
    """
    outs = [(arg, path) for arg, path in outputs.items() if path is not None]
    ins = [(arg, path) for arg, path in inputs.items() if path is not None and os.path.exists(path)]
    for i, (arg, path) in enumerate(outs):
        for j, (other, other_path) in enumerate(ins + outs[:i]):
            if same_file(path, other_path):
                raise OutputPathError(arg, path, other, other_path, output=j >= len(ins))


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the process umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def renamed_error(err: OSError, path) -> OSError:
    """``err`` naming ``path`` instead of the hidden temporary file it was raised for."""
    if err.errno is None:
        return err
    return type(err)(err.errno, err.strerror, os.fspath(path))


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable where the platform allows (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path, mode: str = "w", **open_args) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on a normal exit it is flushed,
    fsync'ed and renamed over ``path`` (os.replace), on an exception removed.

    A symbolic link at ``path`` is followed (its target is replaced, the link stays). ``path``
    keeps the mode of the file it replaces (a new file gets 0o666 less the umask). OSErrors name
    ``path``, not the temporary file. Yields the open file (text mode "w" or binary "wb";
    ``open_args`` such as newline and encoding go to ``open``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise IsADirectoryError(21, "Is a directory", os.fspath(path))
    folder, name = os.path.split(target)
    try:
        mode_bits = os.stat(target).st_mode & 0o7777 if os.path.exists(target) else _new_file_mode()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    except OSError as err:
        raise renamed_error(err, path) from None
    try:
        os.chmod(tmp, mode_bits)
        with os.fdopen(fd, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise renamed_error(err, path) from None
        raise
    _fsync_folder(folder)


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_output``)."""
    with atomic_output(path, "wb") as handle:
        handle.write(data)


def output_target(path) -> Path:
    """The file a write to ``path`` replaces: ``path`` with symbolic links resolved."""
    return Path(os.path.realpath(path))
