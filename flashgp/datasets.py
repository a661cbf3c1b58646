# Loaders for UCI-style regression data sets: a folder with data.csv.gz (last column the target)
# and test_mask.csv.gz (one 0/1 column per split), standardized with training statistics.
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["DATA_DIR", "Dataset", "available_datasets", "load_uci"]

DATA_DIR = Path(__file__).resolve().parent / "data"
"""The folder of data sets shipped with the package (currently ``concrete``)."""

DATA_FILE = "data.csv.gz"
MASK_FILE = "test_mask.csv.gz"


@dataclass
class Dataset:
    """One train/test split of a regression data set, as torch tensors.

    Attributes:
        x_train: (n_train, d) inputs of the training split.
        y_train: (n_train,) targets of the training split.
        x_test: (n_test, d) inputs of the test split.
        y_test: (n_test,) targets of the test split.
        y_mean, y_std: the statistics used to standardize the target (0 and 1 when
            ``standardize=False``); original units are ``y * y_std + y_mean``.
        name: the data set's name (its folder name).
        x_mean, x_std: (d,) the statistics used to standardize the inputs, float64 whatever the
            dtype of the data (like y_mean and y_std: float16 could not hold them).
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    y_mean: float
    y_std: float
    name: str
    x_mean: Tensor | None = None
    x_std: Tensor | None = None

    @property
    def n_train(self) -> int:
        """Number of training rows."""
        return self.x_train.shape[0]

    @property
    def n_test(self) -> int:
        """Number of test rows."""
        return self.x_test.shape[0]

    @property
    def d(self) -> int:
        """Number of input columns."""
        return self.x_train.shape[1]

    def to_original_units(self, y: Tensor) -> Tensor:
        """Map standardized targets (any shape) back to the data's units."""
        return y * self.y_std + self.y_mean

    def to(self, device=None, dtype=None) -> "Dataset":
        """Return a copy with every tensor moved to ``device`` and/or cast to ``dtype``."""
        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        def stats(t):  # the statistics stay float64
            return None if t is None else t.to(device=device)

        return Dataset(move(self.x_train), move(self.y_train), move(self.x_test), move(self.y_test),
                       self.y_mean, self.y_std, self.name, stats(self.x_mean), stats(self.x_std))


def _is_dataset_dir(path: Path) -> bool:
    return (path / DATA_FILE).is_file() and (path / MASK_FILE).is_file()


def _root_dir(root) -> Path:
    if root is None:
        return DATA_DIR
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"root={str(root)!r} is not a directory")
    return path


def available_datasets(root=None) -> list[str]:
    """Names of the data sets under ``root`` (default: the packaged ``flashgp/data``).

    A data set is a sub-folder holding both ``data.csv.gz`` and ``test_mask.csv.gz``.
    Returns the names sorted alphabetically.
    """
    base = _root_dir(root)
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _is_dataset_dir(p))


def _resolve(name_or_path, root) -> Path:
    """Find the folder of a data set given by name (under root) or by path.

    PathLike objects and strings with a path separator are paths. A plain name is looked up
    under ``root`` (or the packaged data); with no ``root``, a data-set folder of that name in
    the working directory is accepted too.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or "/" in text or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_dir():
            raise ValueError(f"name_or_path={text!r} is not a directory")
        return _check_files(path, text)
    base = _root_dir(root)
    if text and (base / text).is_dir():
        return _check_files(base / text, text)
    if root is None and text and _is_dataset_dir(Path(text)):
        return Path(text)
    names = ", ".join(available_datasets(root)) or "none"
    where = f"root={os.fspath(root)!r}" if root is not None else f"the packaged data ({DATA_DIR})"
    raise ValueError(f"name_or_path={text!r}: unknown data set in {where}; available: {names}")


def _check_files(folder: Path, name_or_path) -> Path:
    missing = [f for f in (DATA_FILE, MASK_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"name_or_path={str(name_or_path)!r}: folder {folder} lacks "
                                f"{' and '.join(missing)}")
    return folder


def _read_matrix(path: Path) -> np.ndarray:
    """Parse a (gzipped) comma-separated numeric file into a 2-D float64 array (rows, cols)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns on empty input
            arr = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"malformed data file {path}: {err}") from err
    if arr.size == 0:
        raise ValueError(f"malformed data file {path}: no rows")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"malformed data file {path}: contains NaN or inf")
    return arr


def _read_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check data (n, d+1) and test mask (n, splits) of one folder."""
    data = _read_matrix(folder / DATA_FILE)
    mask = _read_matrix(folder / MASK_FILE)
    if data.shape[1] < 2:
        raise ValueError(f"malformed data file {folder / DATA_FILE}: needs at least one input "
                         f"column and the target, got {data.shape[1]} column(s)")
    if mask.shape[0] != data.shape[0]:
        raise ValueError(f"malformed data set {folder}: {MASK_FILE} has {mask.shape[0]} rows, "
                         f"{DATA_FILE} has {data.shape[0]}")
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"malformed data file {folder / MASK_FILE}: values must be 0 or 1")
    return data, mask.astype(bool)


def _check_args(split, n_splits: int, max_train, dtype) -> None:
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)):
        raise TypeError(f"split must be an int, got {type(split).__name__}")
    if not 0 <= split < n_splits:
        raise ValueError(f"split={split} is out of range: this data set has splits "
                         f"0..{n_splits - 1}")
    if max_train is not None:
        if isinstance(max_train, bool) or not isinstance(max_train, (int, np.integer)):
            raise TypeError(f"max_train must be an int or None, got {type(max_train).__name__}")
        if max_train < 1:
            raise ValueError(f"max_train must be positive, got {max_train}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")


def _mean_std(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means (d,) and (population) standard deviations (d,) of a (n, d); a column that
    is constant up to rounding gets 1 (``flashgp.tables.spread``: no overflow for values near
    the float64 range, no tiny-unit column taken for a constant)."""
    from .tables import spread
    return a.mean(axis=0), spread(a)


def _tensor(a: np.ndarray, dtype: torch.dtype, what: str, folder: Path) -> Tensor:
    """``a`` as a tensor of ``dtype``; ValueError when its values overflow that dtype (they would
    turn into inf silently: 1e5 in float16, 1e39 in float32)."""
    limit = torch.finfo(dtype).max
    peak = float(np.abs(a).max()) if a.size else 0.0
    if peak > limit:
        raise ValueError(f"dtype: {what} of {folder} reach {peak:.3g}, beyond {dtype}'s largest value "
                         f"{limit:.3g}; use standardize=True or a wider dtype")
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)


def load_uci(name_or_path, split: int = 0, root=None, standardize: bool = True,
             dtype: torch.dtype = torch.float64, max_train: int | None = None,
             seed: int = 0) -> Dataset:
    """Load one train/test split of a UCI-format regression data set.

    Args:
        name_or_path: a folder holding ``data.csv.gz`` and ``test_mask.csv.gz``, or the name of
            such a folder under ``root`` (if given) or else under the packaged ``flashgp/data``.
        split: which column of the test mask defines the test rows (0-based).
        root: folder to look names up in; see :func:`available_datasets`.
        standardize: shift and scale inputs (per column) and target to zero mean and unit
            standard deviation using the training rows' statistics (constant columns keep scale 1).
        dtype: floating dtype of the returned tensors.
        max_train: if set and smaller than the training split, keep a random subset of this many
            training rows (drawn with ``seed``; kept in their original order). The test split is
            unchanged; statistics come from the kept rows.
        seed: seed of the subsampling.

    Returns:
        A :class:`Dataset` with x_train (n, d), y_train (n,), x_test (m, d), y_test (m,).
    """
    folder = _resolve(name_or_path, root)
    data, mask = _read_folder(folder)
    _check_args(split, mask.shape[1], max_train, dtype)
    test = mask[:, split]
    x, y = data[:, :-1], data[:, -1]
    x_train, y_train, x_test, y_test = x[~test], y[~test], x[test], y[test]
    if x_train.shape[0] == 0:
        raise ValueError(f"split={split} leaves no training rows in {folder}")
    if max_train is not None and max_train < x_train.shape[0]:
        keep = np.sort(np.random.default_rng(seed).choice(x_train.shape[0], max_train,
                                                          replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    x_mean, x_std = np.zeros(x.shape[1]), np.ones(x.shape[1])
    y_mean, y_std = 0.0, 1.0
    if standardize:
        x_mean, x_std = _mean_std(x_train)
        y_mean, y_std = (float(v) for v in _mean_std(y_train))
        x_train, x_test = (x_train - x_mean) / x_std, (x_test - x_mean) / x_std
        y_train, y_test = (y_train - y_mean) / y_std, (y_test - y_mean) / y_std

    parts = {"training inputs": x_train, "training targets": y_train, "test inputs": x_test,
             "test targets": y_test}
    t = {what: _tensor(a, dtype, f"the {what}", folder) for what, a in parts.items()}
    return Dataset(t["training inputs"], t["training targets"], t["test inputs"], t["test targets"],
                   y_mean, y_std, folder.name, torch.as_tensor(x_mean), torch.as_tensor(x_std))
