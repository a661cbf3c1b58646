# The bad-input suite's cases for files, checkpoints and fg.fit's arguments (issue 27): each ends
# as the suite's cases do (bad_input_helpers: Raises / Returns), never in an obscure exception or a
# silent NaN. One per class of fix: zip entries, JSON, declared shapes, tensors, checkpoint
# contents, numpy scalars, save errors naming the target path.
import io
import json
import tempfile
import zipfile
from unittest import mock

import numpy as np
import pytest
import torch

import flashgp as fg
from flashgp.checkpoint import read_checkpoint
from flashgp.kernels import RBF, Scale
from bad_input_helpers import (Case, Raises, Returns, run_case, same)

import file_attacks as fa

M = fg.ModelFileError
V = ValueError


def good(tmp):
    """(config dict, tensors.pt bytes, state dict) of a saved 20-point FixedNoise model."""
    fg.save(fa.small_model(fixed_noise=True), tmp / "good.fgp")
    config, tensors = fa.parts(tmp / "good.fgp")
    return config, tensors, torch.load(io.BytesIO(tensors), weights_only=True)


def load_edited(tmp, config_edit=None, state_edit=None, entries=None, raw_config=None):
    """fg.load of the good model after edits of its config, its tensors or its zip entries."""
    config, tensors, state = good(tmp)
    if config_edit is not None:
        config_edit(config)
    if state_edit is not None:
        state_edit(state)
        tensors = fa.torch_bytes(state)
    raw = raw_config if raw_config is not None else json.dumps(config).encode()
    if entries is None:
        entries = [fa.stored("config.json", raw), fa.stored("tensors.pt", tensors)]
    else:
        entries = entries(raw, tensors)
    (tmp / "bad.fgp").write_bytes(fa.zip_bytes(entries))
    return fg.load(tmp / "bad.fgp")


def kernel_args(config):
    return config["kernel"]["children"][0]["args"]


def legacy(state):
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


# ----- checkpoints -------------------------------------------------------------------------------

def resume_edited(tmp, tensor_edit=None, kwargs=None):
    """Resume a seeded Adam fit from its 2-step checkpoint after ``tensor_edit(state)``."""
    kwargs = kwargs or dict(seed=0, lr=0.1)
    solver = fg.CG(tol=0.01, probes=4, precond=fg.PivotedCholesky(5))
    path = tmp / "c.ckpt"

    def fresh():
        base = fa.small_model()
        return fg.ExactGP(base.train_x, base.train_y, Scale(RBF()), solver=solver)

    fg.fit(fresh(), iters=2, progress=False, checkpoint=path, **kwargs)
    with zipfile.ZipFile(path) as archive:
        config, state = archive.read("config.json"), torch.load(io.BytesIO(archive.read("tensors.pt")),
                                                                weights_only=True)
    tensor_edit(state)
    path.write_bytes(fa.zip_with(config, fa.torch_bytes(state)))
    return fg.fit(fresh(), iters=4, progress=False, checkpoint=path, resume=True, **kwargs)


def nan_moments(state):
    for name in state["optimizer"]:
        if name.endswith("/exp_avg"):
            state["optimizer"][name] = torch.full_like(state["optimizer"][name], float("nan"))


def vecchia_state(state):
    state["precond"] = {"index": torch.zeros(20, 3, dtype=torch.long), "n": torch.tensor(20),
                        "neighbors": torch.tensor(2), "seed": torch.tensor(0), "builds": torch.tensor(1)}


# ----- fg.fit's arguments and save errors -----------------------------------------------------------

def fit_pair(**numpy_kwargs):
    """(History of a fit with numpy scalar arguments, History with the same plain values)."""
    plain = {k: v.item() for k, v in numpy_kwargs.items()}
    return tuple(fg.fit(fa.small_model(), progress=False, **kwargs).loss
                 for kwargs in ({"iters": np.int64(3), **numpy_kwargs}, {"iters": 3, **plain}))


def fit_numpy_checkpoint_every(tmp):
    history = fg.fit(fa.small_model(), iters=np.int32(4), progress=False, checkpoint=tmp / "c.ckpt",
                     checkpoint_every=np.int64(2), seed=np.uint8(1), resume=np.bool_(True))
    return history.loss, fg.fit(fa.small_model(), iters=4, progress=False, seed=1).loss, \
        read_checkpoint(tmp / "c.ckpt").step


def check_numpy_checkpoint(result):
    got, want, step = result
    assert step == 4
    same(0.0)((torch.tensor(got), torch.tensor(want)))


def save_into_read_only_folder(tmp):
    """What mkstemp raises in a folder the user cannot write (simulated: tests may run as root)."""
    def denied(dir=None, prefix="", suffix=""):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}x1y2z3{suffix}")

    with mock.patch.object(tempfile, "mkstemp", denied):
        fg.save(fa.small_model(), tmp / "model.fgp")


C = Case
CASES = [
    # ----- zip entries ------------------------------------------------------------------------------
    C("files/zip-bzip2-entry", lambda t: load_edited(t, entries=lambda c, x: [
        fa.stored("config.json", c), ("tensors.pt", b"BZh9", zipfile.ZIP_BZIP2, 3 << 30, 0)]),
      Raises(M, r"tensors.pt is compressed with bzip2; only stored or deflate")),
    C("files/zip-lzma-config", lambda t: load_edited(t, entries=lambda c, x: [
        ("config.json", c, zipfile.ZIP_LZMA, len(c), 0), fa.stored("tensors.pt", x)]), Raises(M, r"lzma")),
    C("files/zip-declares-2GB-deflated", lambda t: load_edited(t, entries=lambda c, x: [
        fa.stored("config.json", c), ("tensors.pt", b"\x03\x00", zipfile.ZIP_DEFLATED, 2 << 30, 0)]),
      Raises(M, r"entries declare \d+ bytes uncompressed, more than 33554432")),
    C("files/zip-duplicate-config", lambda t: load_edited(t, entries=lambda c, x: [
        fa.stored("config.json", c), fa.stored("tensors.pt", x), fa.stored("config.json", b"{}")]),
      Raises(M, r"'config.json' appears 2 times")),
    # ----- the JSON config --------------------------------------------------------------------------
    C("files/json-duplicate-key", lambda t: load_edited(t, raw_config=b'{"model": "ExactGP", "model": "Evil"}'),
      Raises(M, r"the key 'model' appears more than once")),
    C("files/json-nan-literal", lambda t: load_edited(t, raw_config=b'{"format": NaN}'), Raises(M, r"NaN is not a JSON")),
    C("files/json-5000-digit-int", lambda t: load_edited(t, raw_config=b'{"a": ' + b"9" * 5000 + b"}"),
      Raises(M, r"config.json is not valid JSON")),
    # ----- shapes declared in the config ---------------------------------------------------------------
    C("files/fixed-noise-shape-14000x14000", lambda t: load_edited(
        t, config_edit=lambda c: c["likelihood"]["args"].update(shape=[14000, 14000])),
      Raises(M, r"likelihood.shape: the shape \[14000, 14000\] declares a tensor of 196000000")),
    C("files/kernel-ard-dims-1e9", lambda t: load_edited(t, config_edit=lambda c: kernel_args(c).update(ard_dims=10**9)),
      Raises(M, r"ard_dims 1000000000 declares a tensor of 1000000000 elements")),
    C("files/kernel-batch-shape-1e8", lambda t: load_edited(
        t, config_edit=lambda c: kernel_args(c).update(batch_shape=[10**4, 10**4])), Raises(M, r"refusing to allocate")),
    C("files/mean-linear-input-dims-1e9", lambda t: load_edited(t, config_edit=lambda c: c.update(
        mean={"type": "Linear", "args": {"input_dims": 10**9, "bias": True, "batch_shape": []}})),
      Raises(M, r"mean: input_dims 1000000000")),
    C("files/gaussian-batch-shape-1e9", lambda t: load_edited(t, config_edit=lambda c: c.update(
        likelihood={"type": "Gaussian", "args": {"noise_floor": 1e-6, "batch_shape": [10**9]}})),
      Raises(M, r"likelihood.batch_shape: .*refusing to allocate")),
    # ----- tensors.pt -------------------------------------------------------------------------------
    C("files/zero-stride-tensor", lambda t: load_edited(
        t, state_edit=lambda s: s.update(train_y=torch.zeros(1, dtype=fa.F64).expand(10**8))),
      Raises(M, r"'train_y' is an expanded \(zero-stride\) view of shape \(100000000,\)")),
    C("files/meta-tensor", lambda t: load_edited(
        t, state_edit=lambda s: s.update(train_y=torch.empty(10**12, device="meta"))),
      Raises(M, r"imports torch._utils._rebuild_meta_tensor_no_storage")),
    C("files/legacy-torch-format", lambda t: load_edited(t, entries=lambda c, x: [
        fa.stored("config.json", c), fa.stored("tensors.pt", legacy(torch.load(io.BytesIO(x), weights_only=True)))]),
      Raises(M, r"not torch's zip format")),
    C("files/inner-record-deflated", lambda t: load_edited(t, entries=lambda c, x: [
        fa.stored("config.json", c), fa.stored("tensors.pt", fa.inner_deflated(x))]), Raises(M, r"not stored uncompressed")),
    # ----- checkpoints ------------------------------------------------------------------------------
    C("checkpoint/adam-moments-nan", lambda t: resume_edited(t, nan_moments), Raises(M, r"NaN or infinity in the optimizer")),
    C("checkpoint/generator-state-missing", lambda t: resume_edited(t, lambda s: s["rng"].pop("generator")),
      Raises(M, r"random state of the probe generator is missing")),
    C("checkpoint/solver-state-of-another-kind", lambda t: resume_edited(t, vecchia_state),
      Raises(M, r"solver state .* is not one this model's solver can use")),
    C("checkpoint/parameter-missing", lambda t: resume_edited(t, lambda s: s["model"].pop("likelihood.raw_noise")),
      Raises(M, r"the parameter 'likelihood.raw_noise' is missing")),
    # ----- fg.fit's arguments; save errors ------------------------------------------------------------
    C("ok/fit-numpy-int-iters", lambda t: fit_pair(), Returns(same())),
    C("ok/fit-numpy-float32-lr-and-int-seed", lambda t: fit_pair(lr=np.float32(0.05), seed=np.int16(3)),
      Returns(same())),
    C("ok/fit-numpy-checkpoint-every-and-resume", fit_numpy_checkpoint_every, Returns(check_numpy_checkpoint)),
    C("fit/numpy-bool-iters", lambda t: fg.fit(fa.small_model(), iters=np.bool_(True), progress=False),
      Raises(V, r"^iters: expected an int >= 0")),
    C("fit/numpy-float-iters", lambda t: fg.fit(fa.small_model(), iters=np.float64(3), progress=False),
      Raises(V, r"^iters: expected an int >= 0")),
    C("save/permission-error-names-the-target", save_into_read_only_folder,
      Raises(PermissionError, r"Permission denied \(writing via a temporary file in its folder\): '.*/model\.fgp'$")),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_file_input(case, tmp_path):
    run_case(case, tmp_path)


def test_case_ids_are_distinct():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids)
