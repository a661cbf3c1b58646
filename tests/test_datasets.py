# Tests for flashgp.datasets: the packaged concrete data, standardization, splits, subsampling
# and the errors raised for bad names, splits and malformed files.
import gzip
import shutil

import numpy as np
import pytest
import torch

from flashgp.datasets import DATA_DIR, Dataset, available_datasets, load_uci


def _write_gz(path, text):
    with gzip.open(path, "wt") as f:
        f.write(text)


def _copy_concrete(dst):
    dst.mkdir()
    for name in ("data.csv.gz", "test_mask.csv.gz"):
        shutil.copy(DATA_DIR / "concrete" / name, dst / name)
    return dst


def test_packaged_concrete_is_available():
    assert "concrete" in available_datasets()


def test_concrete_shapes_and_dtype():
    ds = load_uci("concrete")
    assert isinstance(ds, Dataset)
    assert ds.name == "concrete"
    assert ds.x_train.shape == (927, 8) and ds.y_train.shape == (927,)
    assert ds.x_test.shape == (103, 8) and ds.y_test.shape == (103,)
    assert ds.n_train + ds.n_test == 1030 and ds.d == 8
    assert ds.x_train.dtype == torch.float64
    assert load_uci("concrete", dtype=torch.float32).x_test.dtype == torch.float32


def test_standardized_train_has_zero_mean_unit_std():
    ds = load_uci("concrete")
    for a in (ds.x_train, ds.y_train):
        torch.testing.assert_close(a.mean(0), torch.zeros_like(a.mean(0)), atol=1e-12, rtol=0)
        torch.testing.assert_close(a.std(0, unbiased=False), torch.ones_like(a.mean(0)))
    assert ds.y_std > 1.0  # concrete strength is in MPa, spread well above 1


def test_unstandardized_targets_match_the_stats():
    raw = load_uci("concrete", standardize=False)
    ds = load_uci("concrete")
    assert raw.y_mean == 0.0 and raw.y_std == 1.0
    torch.testing.assert_close(ds.to_original_units(ds.y_test), raw.y_test)
    torch.testing.assert_close(raw.y_train.mean().item(), ds.y_mean)


def test_split_selection_changes_the_test_set():
    a, b = load_uci("concrete", split=0), load_uci("concrete", split=1)
    assert a.x_test.shape[0] > 0 and b.x_test.shape[0] > 0
    assert a.x_test.shape != b.x_test.shape or not torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.y_test, b.y_test)


def test_max_train_subsamples_reproducibly():
    full = load_uci("concrete", standardize=False)
    sub = load_uci("concrete", max_train=100, seed=3, standardize=False)
    assert sub.x_train.shape == (100, 8) and sub.y_train.shape == (100,)
    torch.testing.assert_close(sub.x_test, full.x_test)  # the test split is untouched
    rows = {tuple(r) for r in full.x_train.tolist()}
    assert all(tuple(r) in rows for r in sub.x_train.tolist())
    again = load_uci("concrete", max_train=100, seed=3, standardize=False)
    other = load_uci("concrete", max_train=100, seed=4, standardize=False)
    assert torch.equal(sub.x_train, again.x_train)
    assert not torch.equal(sub.x_train, other.x_train)
    assert load_uci("concrete", max_train=10_000).n_train == 927


def test_load_by_path_and_by_root(tmp_path):
    folder = _copy_concrete(tmp_path / "mydata")
    by_path = load_uci(folder)
    by_root = load_uci("mydata", root=tmp_path)
    assert by_path.name == by_root.name == "mydata"
    torch.testing.assert_close(by_path.x_train, load_uci("concrete").x_train)
    assert available_datasets(tmp_path) == ["mydata"]


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match=r"name_or_path.*available: .*concrete"):
        load_uci("no_such_data_set")


def test_bad_split_names_the_argument():
    with pytest.raises(ValueError, match="split"):
        load_uci("concrete", split=10)
    with pytest.raises(ValueError, match="split"):
        load_uci("concrete", split=-1)
    with pytest.raises(TypeError, match="split"):
        load_uci("concrete", split="0")


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(ValueError, match="max_train"):
        load_uci("concrete", max_train=0)
    with pytest.raises(TypeError, match="dtype"):
        load_uci("concrete", dtype=torch.int64)
    with pytest.raises(ValueError, match="root"):
        load_uci("concrete", root=tmp_path / "missing")
    with pytest.raises(ValueError, match="name_or_path"):
        load_uci(tmp_path / "missing")
    with pytest.raises(TypeError, match="name_or_path"):
        load_uci(3)


def test_missing_mask_file(tmp_path):
    folder = _copy_concrete(tmp_path / "partial")
    (folder / "test_mask.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="test_mask.csv.gz"):
        load_uci(folder)
    assert available_datasets(tmp_path) == []


@pytest.mark.parametrize("data, mask", [
    ("1,2,3\n4,five,6\n", "0\n1\n"),       # non-numeric entry
    ("1,2,3\n4,5\n", "0\n1\n"),            # ragged rows
    ("1,2,3\n4,5,6\n", "0\n1\n0\n"),       # mask rows differ from data rows
    ("1,2,3\n4,5,6\n", "0\n2\n"),          # mask not 0/1
    ("1\n2\n", "0\n1\n"),                  # no input column
    ("", "0\n1\n"),                        # empty file
    ("1,2,nan\n4,5,6\n", "0\n1\n"),        # NaN
])
def test_malformed_files_raise(tmp_path, data, mask):
    folder = tmp_path / "bad"
    folder.mkdir()
    _write_gz(folder / "data.csv.gz", data)
    _write_gz(folder / "test_mask.csv.gz", mask)
    with pytest.raises(ValueError, match="malformed"):
        load_uci(folder)


def test_not_gzip_raises(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "data.csv.gz").write_bytes(b"\x1f\x8bnot really gzip")
    _write_gz(folder / "test_mask.csv.gz", "0\n1\n")
    with pytest.raises(ValueError, match="malformed"):
        load_uci(folder)


def test_constant_column_is_guarded(tmp_path):
    folder = tmp_path / "const"
    folder.mkdir()
    rows = np.column_stack([np.full(6, 7.0), np.arange(6.0), np.arange(6.0) ** 2])
    _write_gz(folder / "data.csv.gz", "\n".join(",".join(map(str, r)) for r in rows))
    _write_gz(folder / "test_mask.csv.gz", "0\n0\n0\n0\n1\n1\n")
    ds = load_uci(folder)
    assert torch.isfinite(ds.x_train).all() and torch.isfinite(ds.x_test).all()
    assert torch.equal(ds.x_train[:, 0], torch.zeros(4, dtype=torch.float64))
    assert ds.n_train == 4 and ds.n_test == 2
