# Untrusted model files and checkpoints cannot exhaust memory: crafted files of at most 1 MB
# (compression bombs, bzip2 entries, repeated entries, a 100 MB JSON, shapes declared beyond the
# stored tensors, zero-stride tensors) are refused with ModelFileError before anything large is
# allocated, measured in a subprocess; what the limits allow still loads; MemoryError and
# allocator errors never escape fg.load.
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flashgp as fg
from flashgp import file_limits
from flashgp import io as fgio
from flashgp.checkpoint import read_checkpoint, take_snapshot, write_checkpoint

import file_attacks as fa

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parents[1]), str(HERE), os.environ.get("PYTHONPATH")]))}
LIMIT = 256 << 20  # the target: no file of at most 1 MB makes a reader allocate more than this
EXPECTED = {  # attack -> what the refusal says
    "bzip2-entry": r"compressed with bzip2",
    "deflate-bomb": r"declare \d+ bytes uncompressed.*zip bomb",
    "deflate-bomb-declared-small": r"truncated or damaged .*CRC",
    "duplicate-config": r"'config.json' appears 2 times",
    "fixed-noise-14000x14000": r"likelihood.shape: .*196000000 elements.*refusing to allocate",
    "linear-mean-1e9-inputs": r"mean: input_dims 1000000000 .*refusing to allocate",
    "kernel-batch-1e9": r"batch_shape \[100000, 10000\].*refusing to allocate",
    "zero-stride-tensor": r"'train_x' is an expanded \(zero-stride\) view",
    "inner-deflate-record": r"not stored uncompressed",
    "config-100MB-json": r"config.json is larger than 1048576 bytes",
    "checkpoint-config-100MB-json": r"zip bomb",
    "checkpoint-deflate-bomb": r"zip bomb",
    "checkpoint-zero-stride": r"'model/train_y' is an expanded \(zero-stride\) view",
    "checkpoint-duplicate-tensors": r"'tensors.pt' appears 2 times",
}


@pytest.fixture(scope="module")
def attacks(tmp_path_factory) -> dict:
    """attack name -> (path, "load" or "resume"), every file at most 1 MiB."""
    folder = tmp_path_factory.mktemp("attacks")
    files = {}
    for mode, build in (("load", fa.model_attacks), ("resume", fa.checkpoint_attacks)):
        for name, data in build(folder).items():
            path = folder / f"{name}.bin"
            path.write_bytes(data)
            files[name] = (path, mode)
    assert set(files) == set(EXPECTED)
    assert max(path.stat().st_size for path, _ in files.values()) <= 1 << 20
    return files


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux memory accounting")
def test_crafted_files_are_refused_before_256_mb_are_allocated(attacks, tmp_path):
    fg.save(fa.small_model(), tmp_path / "good.fgp")
    spec = {"good_model": str(tmp_path / "good.fgp"),
            "files": [[str(path), mode] for path, mode in attacks.values()]}
    done = subprocess.run([sys.executable, str(HERE / "memory_probe.py"), json.dumps(spec)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (path, _) in attacks.items():
        outcome = report["results"][str(path)]
        assert outcome.startswith(f"ModelFileError: {path}: "), (name, outcome)
        assert re.search(EXPECTED[name], outcome), (name, outcome)
    peaks = {name: report["peaks"][str(path)] for name, (path, _) in attacks.items()}
    assert max(peaks.values()) < LIMIT, {name: f"{peak / 2**20:.0f} MB" for name, peak in peaks.items()}
    assert report["control_peak_bytes"] >= LIMIT  # the probe does see a large allocation


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "deflate-bomb-declared-small"])
def test_each_attack_is_refused_in_process(name, attacks):
    path, mode = attacks[name]
    with pytest.raises(fg.ModelFileError, match=EXPECTED[name]) as caught:
        if mode == "load":
            fg.load(path)
        else:
            fg.fit(fa.small_model(), iters=3, progress=False, checkpoint=path, resume=True, seed=0)
    assert caught.value.path == path


# ----- what the limits allow ------------------------------------------------------------------------

def test_an_honestly_deflated_model_file_loads(tmp_path):
    model = fa.small_model(fixed_noise=True)
    fg.save(model, tmp_path / "m.fgp")
    config, tensors = fa.parts(tmp_path / "m.fgp")
    (tmp_path / "d.fgp").write_bytes(fa.zip_bytes([fa.deflated("config.json", json.dumps(config).encode()),
                                                   fa.deflated("tensors.pt", tensors)]))
    loaded = fg.load(tmp_path / "d.fgp")
    x = torch.linspace(-1, 1, 5, dtype=fa.F64).unsqueeze(-1).expand(5, 2)
    assert torch.equal(loaded.predict(x).mean, model.predict(x).mean)


def test_the_budget_grows_with_the_file():
    assert file_limits.memory_budget(0) == file_limits.MIN_BUDGET
    assert file_limits.memory_budget(100 << 20) == 32 * (100 << 20)


def test_checkpoints_are_written_dense_so_that_readers_accept_them(tmp_path):
    model = fa.small_model()
    model._buffers["train_y"] = torch.zeros(1, dtype=fa.F64).expand(20)  # a zero-stride buffer
    optimizer = torch.optim.Adam(model.parameters())
    snapshot = take_snapshot(0, model, optimizer, None, [name for name, _ in model.named_parameters()])
    write_checkpoint(tmp_path / "c.ckpt", model, snapshot, {"optimizer": "adam", "lr": 0.1, "seed": None},
                     fg.History())
    assert read_checkpoint(tmp_path / "c.ckpt").tensors["model"]["train_y"].stride() == (1,)


# ----- JSON and pickle details ----------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    (b'{"format": "flashgp.model", "format": "x"}', r"'format' appears more than once"),
    (b'{"format": NaN}', r"NaN is not a JSON number"),
    (b'{"format": ' + b"1" * 5000 + b"}", r"not valid JSON"),
])
def test_ambiguous_or_costly_json_is_refused(text, match, tmp_path):
    _, tensors = _good_parts(tmp_path)
    path = tmp_path / "j.fgp"
    path.write_bytes(fa.zip_with(text, tensors))
    with pytest.raises(fg.ModelFileError, match=match):
        fg.load(path)


def test_json_whose_parse_would_cost_more_than_the_budget_is_refused(tmp_path):
    fg.fit(fa.small_model(), iters=1, progress=False, checkpoint=tmp_path / "c.ckpt")
    _, tensors = fa.parts(tmp_path / "c.ckpt")
    raw = b"[" + b"[]," * (4 << 20) + b"[]]"  # 12 MB stored: ~0.5 GB as Python lists, unchecked
    (tmp_path / "lists.ckpt").write_bytes(fa.zip_with(raw, tensors))
    with pytest.raises(fg.ModelFileError, match=r"would take about \d+ bytes to parse"):
        read_checkpoint(tmp_path / "lists.ckpt")


def _good_parts(tmp_path):
    fg.save(fa.small_model(), tmp_path / "good.fgp")
    return fa.parts(tmp_path / "good.fgp")


@pytest.mark.parametrize("make,match", [
    (lambda s: {**s, "train_x": torch.empty(20, 2, dtype=fa.F64, device="meta")}, r"_rebuild_meta_tensor_no_storage"),
    (lambda s: {**s, "train_y": s["train_y"].to_sparse()}, r"_rebuild_sparse_tensor"),
    (lambda s: {**s, "train_y": torch.arange(40, dtype=fa.F64)[::2]}, None),  # a strided view: fine
])
def test_tensors_other_than_plain_dense_ones_are_refused_before_torch_load(make, match, tmp_path):
    config, tensors = _good_parts(tmp_path)
    state = torch.load(io.BytesIO(tensors), weights_only=True)
    path = tmp_path / "t.fgp"
    path.write_bytes(fa.zip_with(config, fa.torch_bytes(make(state))))
    if match is None:  # a view into a larger storage is held by it: loads
        assert torch.equal(fg.load(path).train_y, torch.arange(0, 40, 2, dtype=fa.F64))
        return
    with pytest.raises(fg.ModelFileError, match=match):
        fg.load(path)


def test_the_legacy_torch_format_and_encrypted_entries_are_refused(tmp_path):
    config, tensors = _good_parts(tmp_path)
    buffer = io.BytesIO()
    torch.save(torch.load(io.BytesIO(tensors), weights_only=True), buffer, _use_new_zipfile_serialization=False)
    (tmp_path / "legacy.fgp").write_bytes(fa.zip_with(config, buffer.getvalue()))
    with pytest.raises(fg.ModelFileError, match="not torch's zip format"):
        fg.load(tmp_path / "legacy.fgp")
    raw = bytearray(fa.zip_with(config, tensors))
    central = raw.rindex(b"PK\x01\x02")  # set the encryption bit of the last entry
    raw[central + 8] |= 1
    (tmp_path / "enc.fgp").write_bytes(bytes(raw))
    with pytest.raises(fg.ModelFileError, match="encrypted"):
        fg.load(tmp_path / "enc.fgp")


# ----- MemoryError and allocator errors are ModelFileErrors ---------------------------------------------

@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory")])
@pytest.mark.parametrize("where", ["torch.load", "from_config"])
def test_allocation_failures_while_loading_are_model_file_errors(error, where, tmp_path, monkeypatch):
    fg.save(fa.small_model(), tmp_path / "m.fgp")

    def fail(*args, **kwargs):
        raise error

    if where == "torch.load":
        monkeypatch.setattr(fgio.torch, "load", fail)
    else:
        monkeypatch.setattr(fg.ExactGP, "from_config", classmethod(lambda cls, *a: fail()))
    with pytest.raises(fg.ModelFileError) as caught:
        fg.load(tmp_path / "m.fgp")
    assert caught.value.path == tmp_path / "m.fgp"


def test_a_model_that_does_not_fit_on_the_device_is_a_model_file_error(tmp_path, monkeypatch):
    fg.save(fa.small_model(), tmp_path / "m.fgp")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    build = fgio.build_model

    def built_then_too_large(*args):
        model = build(*args)
        model.to = out_of_memory  # what moving it to a full GPU does
        return model

    monkeypatch.setattr(fgio, "build_model", built_then_too_large)
    with pytest.raises(fg.ModelFileError, match=r"does not fit on cpu .*out of memory"):
        fg.load(tmp_path / "m.fgp", device="cpu")
