# The data-set loader behind `flashgp demo --dataset FOLDER` (flashgp.load_uci): values near the
# float64 range are standardized without overflow, tiny units are not taken for constants, and
# values that overflow the requested dtype are refused instead of turning into inf.
import numpy as np
import pytest
import torch

from flashgp.datasets import load_uci


def uci_folder(tmp, x: np.ndarray, y: np.ndarray):
    """A UCI-format folder (data.csv.gz, test_mask.csv.gz: every 5th row is a test row)."""
    folder = tmp / "set"
    folder.mkdir()
    np.savetxt(folder / "data.csv.gz", np.c_[x, y], delimiter=",")
    np.savetxt(folder / "test_mask.csv.gz", (np.arange(len(y)) % 5 == 0).astype(int)[:, None], fmt="%d")
    return folder


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    return rng.uniform(1, 2, (20, 2)), rng.normal(size=20)


@pytest.mark.parametrize("units", [1e200, 1e-200])
def test_extreme_units_standardize_like_ordinary_ones(tmp_path, xy, units):
    x, y = xy
    ref = load_uci(uci_folder(tmp_path, x, y))
    (tmp_path / "other").mkdir()
    scaled = load_uci(uci_folder(tmp_path / "other", x * units, y * units))
    for a, b in [(ref.x_train, scaled.x_train), (ref.y_test, scaled.y_test)]:
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    assert scaled.y_std == pytest.approx(ref.y_std * units, rel=1e-9)


@pytest.mark.parametrize("dtype, factor", [(torch.float16, 1e5), (torch.float32, 1e39)])
def test_values_that_overflow_the_dtype_are_refused(tmp_path, xy, dtype, factor):
    x, y = xy
    with pytest.raises(ValueError, match=rf"^dtype: the training inputs of .*set reach .* beyond {dtype}"):
        load_uci(uci_folder(tmp_path, x * factor, y), standardize=False, dtype=dtype)
    data = load_uci(tmp_path / "set", dtype=dtype)  # standardized: fine, statistics kept in float64
    assert data.x_train.dtype == dtype and data.x_train.isfinite().all()
    assert data.x_mean.dtype == torch.float64 and data.x_mean.min() > 1e4
