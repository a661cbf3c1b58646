# Helpers of the bad-input suite: the three kinds of expected outcome (an exception, a command-line
# exit, a correct result), the finiteness check every result must pass, small data, models and files.
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

import flashgp as fg
from flashgp.distributions import Posterior
from flashgp.kernels import RBF, Scale
from flashgp.likelihoods import FixedNoise

F64 = torch.float64
OBSCURE = (IndexError, KeyError, AttributeError, RuntimeError, NotImplementedError, ZeroDivisionError)


# ----- expected outcomes ------------------------------------------------------------------------

@dataclass(frozen=True)
class Raises:
    """The call raises ``exc`` (ValueError/TypeError or a subclass) with a message matching ``match``."""

    exc: type
    match: str


@dataclass(frozen=True)
class Exits:
    """``flashgp.cli.main`` returns ``code`` with one stderr line 'flashgp: error: ...' matching ``match``."""

    code: int
    match: str


@dataclass(frozen=True)
class Returns:
    """The call returns a result: it must be finite (``assert_finite``) and pass ``check``."""

    check: Callable[[object], None]


@dataclass(frozen=True)
class Case:
    """One bad input: ``trigger(tmp_path)`` runs it; ``expect`` says how it must end."""

    id: str
    trigger: Callable
    expect: Raises | Exits | Returns


# ----- results must be finite -----------------------------------------------------------------------

def assert_finite(result, where: str = "result") -> None:
    """Fail if ``result`` (tensors, arrays, numbers, posteriors, histories, and containers of
    them) holds a NaN or infinity anywhere: a bad input must never turn into a silent NaN."""
    if isinstance(result, torch.Tensor):
        assert bool(torch.isfinite(result).all()), f"{where}: non-finite values {result}"
    elif isinstance(result, np.ndarray):
        assert np.isfinite(result).all(), f"{where}: non-finite values {result}"
    elif isinstance(result, (float, np.floating)):
        assert math.isfinite(result), f"{where}: {result}"
    elif isinstance(result, Posterior):
        assert_finite(result.mean, f"{where}.mean")
        assert_finite(result.variance, f"{where}.variance")
    elif isinstance(result, fg.History):
        assert_finite(np.asarray(result.loss, dtype=float), f"{where}.loss")
    elif isinstance(result, dict):
        for key, value in result.items():
            assert_finite(value, f"{where}[{key!r}]")
    elif isinstance(result, (list, tuple)):
        for i, value in enumerate(result):
            assert_finite(value, f"{where}[{i}]")


def same(rtol: float = 0.0, dtype=None) -> Callable:
    """Check for triggers returning (got, want): equal within ``rtol`` (and dtype ``dtype`` if given).

    Tensors and Posteriors (mean and variance) are compared elementwise; arrays likewise.
    """
    def check(pair):
        got, want = pair
        if isinstance(got, Posterior):
            got, want = (got.mean, got.variance), (want.mean, want.variance)
        for g, w in zip(got, want) if isinstance(got, tuple) else [(got, want)]:
            g = g.detach() if isinstance(g, torch.Tensor) else torch.as_tensor(np.asarray(g))
            w = w.detach() if isinstance(w, torch.Tensor) else torch.as_tensor(np.asarray(w))
            if dtype is not None:
                assert g.dtype == dtype, f"dtype {g.dtype}, expected {dtype}"
            torch.testing.assert_close(g, w.to(g.dtype), rtol=rtol, atol=rtol * float(w.abs().max()))
    return check


# ----- running the command line -------------------------------------------------------------------

def run_main(argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``flashgp.cli.main(argv)`` run in-process."""
    from flashgp.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def check_exit(result, expect: Exits) -> None:
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == expect.code, f"exit status {code}, expected {expect.code}; stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("flashgp: error: "), err
    assert re.search(expect.match, lines[0]), lines[0]
    assert out == ""


def run_case(case: Case, tmp_path) -> None:
    """Run one bad-input ``Case`` and check its outcome: ``Raises`` (that exception, its message
    matching, never one of the OBSCURE kinds), ``Exits`` (a command's status and message) or
    ``Returns`` (a finite result that passes the case's check)."""
    import pytest  # late: only the test modules that run cases need it

    expect = case.expect
    if isinstance(expect, Raises):
        try:
            case.trigger(tmp_path)
        except OBSCURE as err:
            pytest.fail(f"obscure {type(err).__name__}: {err}")
        except expect.exc as err:
            assert re.search(expect.match, str(err)), f"message {str(err)!r} does not match {expect.match!r}"
        else:
            pytest.fail(f"no {expect.exc.__name__} raised")
    elif isinstance(expect, Exits):
        check_exit(case.trigger(tmp_path), expect)
    else:
        result = case.trigger(tmp_path)
        assert_finite(result)
        expect.check(result)


def write(path, text: str):
    """Write ``text`` to ``path`` and return the path (for CSV files and sidecars)."""
    path.write_text(text)
    return path


def csv_rows(n: int = 20, seed: int = 0) -> str:
    """A CSV table with numeric columns a, b and target y (n rows)."""
    rng = np.random.default_rng(seed)
    ab = rng.uniform(-2, 2, (n, 2))
    return "a,b,y\n" + "".join(f"{a:.5f},{b:.5f},{np.sin(a) + b:.5f}\n" for a, b in ab)


# ----- small data and models ---------------------------------------------------------------------

def data(n: int = 20, d: int = 2, seed: int = 0, dtype=F64, batch=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, n, d, generator=g, dtype=dtype) * 4 - 2
    return x, torch.sin(x).sum(-1) + 0.1 * torch.randn(*batch, n, generator=g, dtype=dtype)


X, Y = data()
XT = data(n=5, seed=1)[0]


def gp(x=X, y=Y, kernel=None, **kwargs) -> fg.ExactGP:
    """An exact GP with the float64 Cholesky solver (unless ``solver`` is given)."""
    kwargs.setdefault("solver", fg.Cholesky())
    return fg.ExactGP(x, y, Scale(RBF()) if kernel is None else kernel, **kwargs)


@lru_cache(maxsize=None)
def model() -> fg.ExactGP:
    """One shared default model (20 points, d = 2): cases only query it."""
    return gp()


def fixed_noise_model() -> fg.ExactGP:
    return gp(likelihood=FixedNoise(torch.full((20,), 0.1, dtype=F64)))


def batched(kernel=None, **kwargs) -> fg.ExactGP:
    """A batch of 2 GPs (data (2, 20, 2))."""
    x, y = data(batch=(2,))
    return gp(x, y, kernel, **kwargs)


# ----- the command line and model files --------------------------------------------------------------

def cli_fit_ok(tmp, text):
    """The JSON result of a successful ``flashgp fit`` (2 steps) on the CSV ``text``."""
    code, out, err = run_main(["fit", write(tmp / "d.csv", text), "--target", "y", "--iters", 2, "--json"])
    assert code == 0, err
    return json.loads(out)


def check_cli_numbers(result):
    """--json writes non-finite numbers as null: every fitted number must be a real float."""
    hp = result["hyperparameters"]
    values = [result["log_marginal_likelihood"], hp["outputscale"], hp["noise"], hp["mean"],
              *hp["lengthscale"].values()]
    assert all(isinstance(v, float) for v in values), values


def save_nan_model(tmp):
    """Save a model whose lengthscale is NaN."""
    m = gp()
    with torch.no_grad():
        m.kernel.base.raw_lengthscale.fill_(float("nan"))
    fg.save(m, tmp / "m.fgp")


def fit_bytes(tmp, content: bytes):
    (tmp / "b.csv").write_bytes(content)
    return run_main(["fit", tmp / "b.csv", "--target", "y"])


def load_bytes(tmp, content: bytes):
    (tmp / "p.fgp").write_bytes(content)
    return fg.load(tmp / "p.fgp")


def saved_model(tmp, saved=None):
    """(config dict, tensors.pt bytes) of a freshly saved model (``saved``, default ``model()``)."""
    fg.save(model() if saved is None else saved, tmp / "m.fgp")
    with zipfile.ZipFile(tmp / "m.fgp") as archive:
        return json.loads(archive.read("config.json")), archive.read("tensors.pt")


def archive(tmp, entries, name="bad.fgp"):
    """A zip at tmp/name with ``entries`` (name -> str, bytes, or JSON-able value)."""
    with zipfile.ZipFile(tmp / name, "w") as out:
        for key, value in entries.items():
            out.writestr(key, value if isinstance(value, (str, bytes)) else json.dumps(value))
    return tmp / name


def with_tensors(tmp, change, saved=None):
    """Load a saved model (``saved``, default ``model()``) after ``change(state)`` edited its tensors."""
    config, raw = saved_model(tmp, saved)
    state = torch.load(io.BytesIO(raw), weights_only=True)
    change(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return fg.load(archive(tmp, {"config.json": config, "tensors.pt": buffer.getvalue()}))


def with_config(tmp, change):
    """Load a saved model after ``change(config)`` edited its config.json."""
    config, raw = saved_model(tmp)
    change(config)
    return fg.load(archive(tmp, {"config.json": config, "tensors.pt": raw}))


def set_nan(state, key):
    state[key] = torch.full_like(state[key], float("nan"))


def cli_predict(tmp, sidecar, model_bytes=None, data_text=None):
    """``flashgp predict`` with a model file (a real one unless ``model_bytes``) and a sidecar."""
    path = tmp / "m.fgp"
    if model_bytes is None:
        fg.save(model(), path)
    else:
        path.write_bytes(model_bytes)
    write(tmp / "m.fgp.json", sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    data_path = write(tmp / "x.csv", data_text or csv_rows(5))
    return run_main(["predict", path, data_path, "--out", tmp / "out.csv", "-q"])


META = {"format": "flashgp-cli-standardization/1", "target": "y", "features": ["a", "b"],
        "x_mean": [0, 0], "x_std": [1, 1], "y_mean": 0, "y_std": 1}
GOOD_CSV = csv_rows()


def fit_cli(tmp, text, *args):
    """``flashgp fit`` on the CSV ``text`` with target y and extra ``args``."""
    return run_main(["fit", write(tmp / "d.csv", text), "--target", "y", *args])
