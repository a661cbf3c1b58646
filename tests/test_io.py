# fg.save / fg.load: round trips of kernels, likelihoods, means, solvers, dtypes and batches with
# identical predictions; refusal of unsafe, damaged, foreign and too-new files; atomic writes.
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

import flashgp as fg
from flashgp import io as fgio
from flashgp.kernels import RBF, RQ, Linear, Matern, Periodic, Polynomial, Scale
from flashgp.likelihoods import FixedNoise, Gaussian
from flashgp.means import Constant, Zero
from flashgp.means import Linear as LinearMean

F64 = torch.float64


def data(n=40, d=3, batch=(), dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, n, d, generator=g, dtype=dtype) * 4
    y = torch.sin(x).sum(-1) + 0.1 * torch.randn(*batch, n, generator=g, dtype=dtype)
    return x, y


def perturb(model, seed=1):
    """Move every parameter away from its initial value, so a lost parameter shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.rand(p.shape, generator=g, dtype=p.dtype))
    return model


def round_trip(model, tmp_path, name="m.fgp"):
    path = tmp_path / name
    fg.save(model, path)
    return fg.load(path)


def assert_same_predictions(a, b, x, exact=True):
    pa, pb = a.predict(x), b.predict(x)
    if exact:
        assert torch.equal(pa.mean, pb.mean) and torch.equal(pa.variance, pb.variance)
    else:
        torch.testing.assert_close(pa.mean, pb.mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(pa.variance, pb.variance, rtol=1e-10, atol=1e-10)


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


KERNELS = {
    "rbf_ard": lambda: Scale(RBF(ard_dims=3)),
    "matern12": lambda: Matern(nu=0.5),
    "matern32_ard": lambda: Scale(Matern(nu=1.5, ard_dims=3)),
    "matern52": lambda: Scale(Matern(nu=2.5)),
    "rq": lambda: Scale(RQ(ard_dims=3)),
    "periodic": lambda: Scale(Periodic(ard_dims=3)),
    "linear": lambda: Linear(),
    "polynomial": lambda: Polynomial(power=3, offset=2.0),
    "sum": lambda: Scale(RBF()) + Scale(Periodic()) + Linear(),
    "product": lambda: Scale(Matern(nu=1.5)) * Periodic(),
    "active_dims": lambda: Scale(RBF(ard_dims=2, active_dims=[0, 2])) + Scale(Linear(active_dims=[1])),
    "nested": lambda: Scale(RBF(active_dims=[0]) * (Matern(active_dims=[1, 2]) + RQ())) + Scale(Linear()),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_round_trip(name, tmp_path):
    x, y = data()
    model = perturb(fg.ExactGP(x, y, KERNELS[name](), solver=fg.Cholesky()))
    loaded = round_trip(model, tmp_path)
    assert type(loaded.kernel) is type(model.kernel)
    assert fgio.model_config(loaded) == fgio.model_config(model)
    assert_same_state(model, loaded)
    assert_same_predictions(model, loaded, data(n=9, seed=5)[0])


@pytest.mark.parametrize("likelihood,mean", [
    (lambda n: Gaussian(noise=0.05, noise_floor=1e-6), lambda: Zero()),
    (lambda n: FixedNoise(torch.linspace(0.01, 0.1, n, dtype=F64)), lambda: Constant(2.0)),
    (lambda n: Gaussian(), lambda: LinearMean(3)),
    (lambda n: Gaussian(), lambda: LinearMean(3, bias=False)),
])
def test_likelihoods_and_means(likelihood, mean, tmp_path):
    x, y = data()
    model = perturb(fg.ExactGP(x, y, Scale(RBF()), likelihood=likelihood(40), mean=mean()))
    loaded = round_trip(model, tmp_path)
    assert type(loaded.likelihood) is type(model.likelihood) and type(loaded.mean) is type(model.mean)
    if isinstance(model.likelihood, Gaussian):
        assert loaded.likelihood._constraints["noise"].lower == model.likelihood._constraints["noise"].lower
    assert_same_state(model, loaded)
    assert_same_predictions(model, loaded, data(n=9, seed=5)[0])


@pytest.mark.parametrize("solver,exact", [
    (fg.Cholesky(jitter=1e-7, max_tries=3), True),
    (fg.Auto(), True),
    (fg.CG(tol=0.5, eval_tol=1e-6, probes=4, precond=fg.PivotedCholesky(7), root_rank=30), False),
    (fg.CG(precond=None, backend="blocked", exact_var_max=0), False),
    (fg.Auto(max_cholesky_n=10, cg=fg.CG(eval_tol=1e-6, precond=fg.PivotedCholesky(5))), False),
])
def test_solvers(solver, exact, tmp_path):
    x, y = data(n=60)
    model = perturb(fg.ExactGP(x, y, Scale(Matern(ard_dims=3)), solver=solver))
    fg.fit(model, iters=2, progress=False, seed=0)
    loaded = round_trip(model, tmp_path)
    assert loaded.solver == solver
    assert_same_predictions(model, loaded, data(n=11, seed=5)[0], exact=exact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype, tmp_path):
    x, y = data(dtype=dtype)
    model = perturb(fg.ExactGP(x, y, Scale(RBF(ard_dims=3)) + Linear()))
    loaded = round_trip(model, tmp_path)
    assert all(p.dtype == dtype for p in loaded.parameters()) and loaded.train_x.dtype == dtype
    assert_same_predictions(model, loaded, data(n=9, seed=5, dtype=dtype)[0])


def test_batched_model(tmp_path):
    x, y = data(batch=(2,))
    kernel = Scale(RBF(ard_dims=3, batch_shape=(2,))) + Periodic(batch_shape=(2,))
    model = perturb(fg.ExactGP(x, y, kernel, likelihood=Gaussian(batch_shape=(2,)),
                               mean=Constant(batch_shape=(2,))))
    loaded = round_trip(model, tmp_path)
    assert loaded.kernel.batch_shape == (2,) and loaded.likelihood.noise.shape == (2,)
    assert_same_state(model, loaded)
    assert_same_predictions(model, loaded, data(n=9, batch=(2,), seed=5)[0])


def test_frozen_parameters_path_types_and_further_training(tmp_path):
    x, y = data()
    model = fg.ExactGP(x, y, Scale(RBF()))
    model.likelihood.raw_noise.requires_grad_(False)
    fg.save(model, str(tmp_path / "a.fgp"))
    loaded = fg.load(str(tmp_path / "a.fgp"), device="cpu")
    assert not loaded.likelihood.raw_noise.requires_grad and loaded.kernel.raw_outputscale.requires_grad
    fg.fit(loaded, iters=3, progress=False)  # a loaded model trains on
    assert torch.equal(loaded.likelihood.noise, model.likelihood.noise)
    fg.save(loaded, Path(tmp_path) / "a.fgp")  # overwrite in place, Path argument
    assert_same_state(fg.load(Path(tmp_path) / "a.fgp"), loaded)


def test_sklearn_model_round_trip(tmp_path):
    pytest.importorskip("sklearn")
    from flashgp.sklearn import GPRegressor
    x, y = data()
    est = GPRegressor(iters=5).fit(x.numpy(), y.numpy())
    assert_same_predictions(est.model_, round_trip(est.model_, tmp_path), x[:5])


# ----- what save refuses ----------------------------------------------------------------------

class MyRBF(RBF):
    pass


def test_save_refuses_unknown_objects(tmp_path):
    x, y = data()
    with pytest.raises(TypeError, match="kernel"):
        fg.save(fg.ExactGP(x, y, Scale(MyRBF())), tmp_path / "m.fgp")
    with pytest.raises(TypeError, match="model"):
        fg.save(Scale(RBF()), tmp_path / "m.fgp")
    with pytest.raises(TypeError, match="path"):
        fg.save(fg.ExactGP(x, y, RBF()), 3)
    assert list(tmp_path.iterdir()) == []


# ----- what load refuses ----------------------------------------------------------------------

CALLED = []


def _payload_ran():
    CALLED.append(True)
    return "ran"


class Payload:
    """An object whose unpickling runs code: what a safe loader must refuse."""

    def __reduce__(self):
        return (_payload_ran, ())


def saved(tmp_path):
    x, y = data()
    path = tmp_path / "good.fgp"
    fg.save(fg.ExactGP(x, y, Scale(RBF())), path)
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json")), archive.read("tensors.pt")


def write_archive(path, config, tensors: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", config if isinstance(config, (str, bytes)) else json.dumps(config))
        archive.writestr("tensors.pt", tensors)
    return path


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def expect_refused(path, match):
    with pytest.raises(fg.ModelFileError, match=match) as info:
        fg.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_refuses_pickled_code(tmp_path):
    config, tensors = saved(tmp_path)
    state = torch.load(io.BytesIO(tensors), weights_only=True)
    evil = write_archive(tmp_path / "evil.fgp", config, torch_bytes({**state, "extra": Payload()}))
    expect_refused(evil, "pickle")
    raw = write_archive(tmp_path / "raw.fgp", config, pickle.dumps(Payload()))
    expect_refused(raw, "pickle")
    whole = tmp_path / "whole.fgp"  # torch.save of an arbitrary object at the path
    whole.write_bytes(torch_bytes({"model": Payload()}))
    expect_refused(whole, "not a flashgp model")
    assert CALLED == []


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"PK\x03\x04 not really a zip",
                                     json.dumps({"a": 1}).encode()])
def test_refuses_foreign_files(content, tmp_path):
    path = tmp_path / "foreign.fgp"
    path.write_bytes(content)
    expect_refused(path, "not a flashgp model")


def test_refuses_zip_with_other_entries(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    expect_refused(path, "not a flashgp model")


def test_refuses_truncated_file(tmp_path):
    x, y = data()
    path = tmp_path / "m.fgp"
    fg.save(fg.ExactGP(x, y, Scale(RBF())), path)
    content = path.read_bytes()
    for cut in (len(content) // 2, len(content) - 10, 30):
        path.write_bytes(content[:cut])
        expect_refused(path, "truncated or damaged")


def test_refuses_corrupted_tensor_entry(tmp_path):
    config, tensors = saved(tmp_path)
    expect_refused(write_archive(tmp_path / "c.fgp", config, tensors[: len(tensors) // 2]), "tensors.pt")


@pytest.mark.parametrize("version,match", [(2, "newer"), (99, "newer"), ("1", "format_version"),
                                           (0, "format_version"), (None, "format_version")])
def test_refuses_wrong_format_version(version, match, tmp_path):
    config, tensors = saved(tmp_path)
    expect_refused(write_archive(tmp_path / "v.fgp", {**config, "format_version": version}, tensors), match)


@pytest.mark.parametrize("change,match", [
    (lambda c: c.update(format="other"), "not a flashgp model"),
    (lambda c: c.update(model="NoSuchModel"), "model type"),
    (lambda c: c.update(extra=1), "keys"),
    (lambda c: c["kernel"].update(type="os.system"), "not one of"),
    (lambda c: c["kernel"]["children"][0]["args"].update(lengthscale=3.0), "round-trip"),
    (lambda c: c["kernel"]["children"][0]["args"].update(ard_dims=2), "rebuilt"),
    (lambda c: c["kernel"]["children"][0]["args"].update(nu=2.5), "rebuilt"),
    (lambda c: c["likelihood"].update(type="NoSuchLikelihood"), "not one of"),
    (lambda c: c["likelihood"].update(type="Bernoulli", args={"points": 20}), "conjugate"),
    (lambda c: c["mean"]["args"].update(batch_shape=[3]), "rebuilt"),
    (lambda c: c["solver"]["args"].update(tol=-1.0), "rebuilt"),
    (lambda c: c["solver"]["args"]["cg"].update(type="Evil"), "not one of"),
    (lambda c: c.update(dtype="complex64"), "dtype"),
    (lambda c: c.update(dtype="float32"), "dtype"),
    (lambda c: c.update(frozen=["no.such.parameter"]), "frozen"),
])
def test_refuses_bad_configs(change, match, tmp_path):
    config, tensors = saved(tmp_path)
    change(config)
    expect_refused(write_archive(tmp_path / "bad.fgp", config, tensors), match)


def test_refuses_bad_json_and_state(tmp_path):
    config, tensors = saved(tmp_path)
    expect_refused(write_archive(tmp_path / "j.fgp", "{not json", tensors), "JSON")
    state = torch.load(io.BytesIO(tensors), weights_only=True)
    missing = {k: v for k, v in state.items() if k != "kernel.raw_outputscale"}
    expect_refused(write_archive(tmp_path / "m.fgp", config, torch_bytes(missing)), "rebuilt")
    extra = {**state, "kernel.raw_other": torch.zeros(())}
    expect_refused(write_archive(tmp_path / "e.fgp", config, torch_bytes(extra)), "rebuilt")
    expect_refused(write_archive(tmp_path / "l.fgp", config, torch_bytes([1, 2])), "dict of named tensors")
    no_data = {k: v for k, v in state.items() if k != "train_x"}
    expect_refused(write_archive(tmp_path / "d.fgp", config, torch_bytes(no_data)), "train_x")


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        fg.load(tmp_path / "nothing.fgp")
    with pytest.raises(TypeError, match="path"):
        fg.load(None)
    with pytest.raises(ValueError, match="device"):
        fg.load(tmp_path / "nothing.fgp", device="no-such-device")


# ----- atomic writes --------------------------------------------------------------------------

def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    x, y = data()
    model = fg.ExactGP(x, y, Scale(RBF()))
    path = tmp_path / "m.fgp"
    real = zipfile.ZipFile.writestr

    def failing(self, name, data, *args, **kwargs):
        if name == "tensors.pt":
            real(self, name, data[: len(data) // 2])
            raise OSError("disk full")
        return real(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing)
    with pytest.raises(OSError, match="disk full"):
        fg.save(model, path)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one

    monkeypatch.setattr(zipfile.ZipFile, "writestr", real)
    fg.save(model, path)
    before = path.read_bytes()
    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing)
    perturb(model)
    with pytest.raises(OSError):
        fg.save(model, path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.fgp"]  # old file intact


def test_failed_rename_cleans_up(tmp_path, monkeypatch):
    x, y = data()

    def no_replace(src, dst):
        raise PermissionError("read-only")

    monkeypatch.setattr(fgio.os, "replace", no_replace)
    with pytest.raises(PermissionError):
        fg.save(fg.ExactGP(x, y, RBF()), tmp_path / "m.fgp")
    assert list(tmp_path.iterdir()) == []
