# Crafted model files and checkpoints for the file-limit tests (tests/reliability/test_files_*.py):
# a zip writer that declares whatever sizes and methods it is told (no data needs to exist for a
# declared size), compression bombs built from repeated full-flush deflate blocks (cheap to make),
# and edits of a real model file's config and tensors.
from __future__ import annotations

import bz2
import io
import json
import struct
import zipfile
import zlib

import torch

import flashgp as fg
from flashgp.kernels import RBF, Scale
from flashgp.likelihoods import FixedNoise

F64 = torch.float64
MB = 1 << 20


# ----- zip archives with declared sizes ---------------------------------------------------------

def zip_bytes(entries) -> bytes:
    """A zip of ``entries``: (name, payload, method, declared uncompressed size, crc) each, the
    payload written as is (already compressed for deflate/bzip2). Names may repeat."""
    out, central = io.BytesIO(), []
    for name, payload, method, size, crc in entries:
        offset, raw_name = out.tell(), name.encode()
        out.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 46 if method == zipfile.ZIP_BZIP2 else 20, 0,
                              method, 0, 0, crc, len(payload), size, len(raw_name), 0))
        out.write(raw_name + payload)
        central.append(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc,
                                   len(payload), size, len(raw_name), 0, 0, 0, 0, 0, offset) + raw_name)
    start = out.tell()
    for record in central:
        out.write(record)
    out.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(central), len(central),
                          out.tell() - start, start, 0))
    return out.getvalue()


def stored(name: str, data: bytes):
    """An honest stored entry."""
    return name, data, zipfile.ZIP_STORED, len(data), zlib.crc32(data)


def deflated(name: str, data: bytes):
    """An honest deflated entry."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return name, c.compress(data) + c.flush(), zipfile.ZIP_DEFLATED, len(data), zlib.crc32(data)


def deflate_repeated(prefix: bytes, unit: bytes, copies: int, suffix: bytes) -> tuple[bytes, int, int]:
    """(raw deflate stream, size, crc) of prefix + unit * copies + suffix, built from one
    compression of ``unit`` ended by a full flush (which resets the window, so the block repeats
    byte for byte): a gigabyte of zeros costs one compression of ``unit``."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = body.compress(unit) + body.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = tail.compress(suffix) + tail.flush()
    crc = zlib.crc32(prefix)
    for _ in range(copies):
        crc = zlib.crc32(unit, crc)
    crc = zlib.crc32(suffix, crc)
    return first + block * copies + last, len(prefix) + len(unit) * copies + len(suffix), crc


def zip_with(config, tensors: bytes, entries=()) -> bytes:
    """A model file (config dict or bytes, tensors.pt bytes) with ``entries`` appended."""
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    return zip_bytes([stored("config.json", raw), stored("tensors.pt", tensors), *entries])


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# ----- a real model file and checkpoint ------------------------------------------------------------

def small_model(n: int = 20, fixed_noise: bool = False) -> fg.ExactGP:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(x).sum(-1) + 0.1 * torch.randn(n, generator=g, dtype=F64)
    likelihood = FixedNoise(torch.full((n,), 0.1, dtype=F64)) if fixed_noise else None
    return fg.ExactGP(x, y, Scale(RBF()), likelihood=likelihood, solver=fg.Cholesky())


def parts(path) -> tuple[dict, bytes]:
    """(config dict, tensors.pt bytes) of the model file or checkpoint at ``path``."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json")), archive.read("tensors.pt")


# ----- the attacks on model files (name -> bytes of a file of at most 1 MB) -----------------------

def model_attacks(tmp) -> dict:
    """Files of at most 1 MB that, unchecked, make a reader allocate gigabytes."""
    fg.save(small_model(fixed_noise=True), tmp / "good.fgp")
    config, tensors = parts(tmp / "good.fgp")
    raw_config = json.dumps(config).encode()
    state = torch.load(io.BytesIO(tensors), weights_only=True)
    bomb, size, crc = deflate_repeated(b"", b"\0" * (4 * MB), 256, b"")  # 1 GiB of zeros, ~1 MB
    bzip = bz2.compress(b"\0" * (4 * MB))
    huge_noise = json.loads(raw_config)
    huge_noise["likelihood"]["args"]["shape"] = [14000, 14000]
    wide_mean = json.loads(raw_config)
    wide_mean["mean"] = {"type": "Linear", "args": {"input_dims": 10**9, "bias": True, "batch_shape": []}}
    batch = json.loads(raw_config)
    batch["kernel"]["children"][0]["args"]["batch_shape"] = [100000, 10000]
    zero_stride = {**state, "train_x": torch.ones(1, dtype=F64).expand(150_000_000, 2)}
    other = json.loads(raw_config)
    other["model"] = "Evil"
    return {
        "bzip2-entry": zip_bytes([stored("config.json", raw_config),
                                  ("tensors.pt", bzip, zipfile.ZIP_BZIP2, 3 << 30, 0)]),
        "deflate-bomb": zip_bytes([stored("config.json", raw_config),
                                   ("tensors.pt", bomb, zipfile.ZIP_DEFLATED, size, crc)]),
        "deflate-bomb-declared-small": zip_bytes([stored("config.json", raw_config),
                                                  ("tensors.pt", bomb, zipfile.ZIP_DEFLATED, 1000, crc)]),
        "duplicate-config": zip_with(config, tensors, [stored("config.json", json.dumps(other).encode())]),
        "fixed-noise-14000x14000": zip_with(huge_noise, tensors),
        "linear-mean-1e9-inputs": zip_with(wide_mean, tensors),
        "kernel-batch-1e9": zip_with(batch, tensors),
        "zero-stride-tensor": zip_with(config, torch_bytes(zero_stride)),
        "inner-deflate-record": zip_with(config, inner_deflated(tensors)),
        "config-100MB-json": zip_bytes([deflated_json(config, 100 * MB), stored("tensors.pt", tensors)]),
    }


def inner_deflated(tensors: bytes) -> bytes:
    """tensors.pt rewritten with torch's own records deflated (and one declared 2 GB)."""
    with zipfile.ZipFile(io.BytesIO(tensors)) as inner:
        records = [(i.filename, inner.read(i)) for i in inner.infolist()]
    entries = []
    for name, data in records:
        entry = list(deflated(name, data))
        if name.endswith("/data/0"):
            entry[3] = 2 << 30
        entries.append(tuple(entry))
    return zip_bytes(entries)


def deflated_json(config: dict, size: int, name: str = "config.json"):
    """A config.json entry: ``config`` plus a "pad" list of zeros making ``size`` bytes, deflated."""
    head = json.dumps(config)[:-1].encode() + b', "pad": ['
    unit = b"0," * (MB // 2)
    copies = size // len(unit)
    data, total, crc = deflate_repeated(head, unit, copies, b"0]}")
    return name, data, zipfile.ZIP_DEFLATED, total, crc


def checkpoint_attacks(tmp) -> dict:
    """Checkpoint files of at most 1 MB that, unchecked, allocate gigabytes on resume."""
    fg.fit(small_model(), iters=2, progress=False, checkpoint=tmp / "good.ckpt", seed=0)
    config, tensors = parts(tmp / "good.ckpt")
    state = torch.load(io.BytesIO(tensors), weights_only=True)
    expanded = {**state, "model": {**state["model"], "train_y": torch.zeros(1, dtype=F64).expand(300_000_000)}}
    bomb, size, crc = deflate_repeated(b"", b"\0" * (4 * MB), 256, b"")
    return {
        "checkpoint-config-100MB-json": zip_bytes([deflated_json(config, 100 * MB), stored("tensors.pt", tensors)]),
        "checkpoint-deflate-bomb": zip_bytes([stored("config.json", json.dumps(config).encode()),
                                              ("tensors.pt", bomb, zipfile.ZIP_DEFLATED, size, crc)]),
        "checkpoint-zero-stride": zip_with(config, torch_bytes(expanded)),
        "checkpoint-duplicate-tensors": zip_with(config, tensors, [stored("tensors.pt", tensors)]),
    }
