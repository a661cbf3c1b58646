# Resource limits for reading model files and checkpoints, checked before anything large is
# allocated: the zip entries (names, compression methods, declared sizes against the file's size),
# the JSON config (an estimate of what parsing it costs), torch's own archive inside tensors.pt
# (stored records, allowlisted pickle globals) and the tensors torch.load gave (plain CPU tensors
# whose elements fit in their storage: no zero-stride expansions, no meta or sparse tensors).
from __future__ import annotations

import io
import pickletools
import zipfile

import torch

from .errors import ModelFileError

#: every file may expand to this many bytes whatever its size (small models, small checkpoints)
MIN_BUDGET = 32 << 20
#: beyond that, entries may declare at most this many times the file's own size uncompressed
#: (flashgp writes entries uncompressed; deflated floats shrink by far less than this)
EXPANSION = 32
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
          torch.int32, torch.int64, torch.uint8, torch.bool)
# what torch.save writes for dicts of plain tensors (protocol 2 pickles); anything else is refused
# before torch.load runs (which has its own allowlist: this one also keeps out meta, sparse,
# nested, quantized and subclass tensors)
_STORAGES = ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
ALLOWED_GLOBALS = frozenset(
    {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
     ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
     ("torch", "Size")}
    | {("torch", f"{name}Storage") for name in _STORAGES}
    | {("torch", str(dtype).removeprefix("torch.")) for dtype in DTYPES})
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}
# bytes that parsing one JSON container / element can cost (a dict of a few keys is ~230 bytes,
# a float or string object 24-60 bytes plus its pointer), and the decoded text (up to 4 bytes a
# character)
_JSON_CONTAINER_BYTES, _JSON_ITEM_BYTES, _JSON_TEXT_FACTOR = 256, 64, 5


def memory_budget(file_bytes: int) -> int:
    """The bytes a file of ``file_bytes`` may make a reader hold at each stage (its entries
    uncompressed, its parsed config, its tensors): max(MIN_BUDGET, EXPANSION * file_bytes)."""
    return max(MIN_BUDGET, EXPANSION * int(file_bytes))


def _refuse(path, kind: str, problem: str) -> ModelFileError:
    return ModelFileError(path, f"refusing this {kind}: {problem}")


# ----- the zip archive -------------------------------------------------------------------------

def check_entries(path, archive: zipfile.ZipFile, file_bytes: int, names: tuple, kind: str,
                  caps: dict) -> dict:
    """The entries of ``archive`` (the zip at ``path``, ``file_bytes`` long) by name, after
    checking, from the central directory alone (nothing is decompressed):

    * exactly the entries ``names``, each once (a second ``config.json`` is refused: readers
      would disagree on which one counts);
    * compression stored or deflate (bzip2, lzma and the rest are refused), not encrypted;
    * declared sizes: compressed at most the file, uncompressed at most ``caps[name]`` where
      given, and all entries together at most ``memory_budget(file_bytes)``.

    Returns {name: ZipInfo}; raises ModelFileError naming ``path`` and the problem.
    """
    infos = archive.infolist()
    found = [info.filename for info in infos]
    repeated = sorted({name for name in found if found.count(name) > 1})
    if repeated:
        raise _refuse(path, kind, f"the entry {repeated[0]!r:.80} appears {found.count(repeated[0])} "
                                  "times (an ambiguous archive: each entry must appear once)")
    if set(found) != set(names):
        raise ModelFileError(path, f"not a {kind} (expected the entries {', '.join(names)}, found "
                                   f"{sorted(found)[:5]})")
    budget, total = memory_budget(file_bytes), 0
    for info in infos:
        name = info.filename
        if info.compress_type not in METHODS:
            method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise _refuse(path, kind, f"{name} is compressed with {method}; only stored or deflate "
                                      "entries are read")
        if info.flag_bits & 0x1:
            raise _refuse(path, kind, f"{name} is encrypted")
        if info.compress_size > file_bytes:
            raise _refuse(path, kind, f"{name} declares {info.compress_size} compressed bytes in a "
                                      f"file of {file_bytes}")
        cap = caps.get(name)
        if cap is not None and info.file_size > cap:
            raise _refuse(path, kind, f"{name} is larger than {cap} bytes ({info.file_size} declared)")
        total += info.file_size
    if total > budget:
        raise _refuse(path, kind, f"its entries declare {total} bytes uncompressed, more than "
                                  f"{budget} (max({MIN_BUDGET}, {EXPANSION} x the file's {file_bytes} "
                                  "bytes)): a zip bomb, or a model recompressed beyond what flashgp reads")
    return {info.filename: info for info in infos}


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The bytes of one entry, never more than its declared size (checked by ``check_entries``);
    zipfile.BadZipFile when the data is not what the directory declares (bad CRC, short)."""
    with archive.open(info) as handle:
        data = handle.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise zipfile.BadZipFile(f"{info.filename} holds {len(data)} bytes, not the declared {info.file_size}")
    return data


# ----- the JSON config -------------------------------------------------------------------------

def json_cost(raw: bytes) -> int:
    """An upper estimate of the bytes ``json.loads(raw)`` allocates: per container (``{``, ``[``)
    and per element (``,``, ``:``) what a Python object costs, plus the decoded text. Counted
    without allocating (brackets or commas inside strings only make it larger)."""
    containers = raw.count(b"{") + raw.count(b"[")
    items = raw.count(b",") + raw.count(b":") + containers
    return _JSON_CONTAINER_BYTES * containers + _JSON_ITEM_BYTES * items + _JSON_TEXT_FACTOR * len(raw)


def check_json_cost(path, raw: bytes, budget: int, kind: str, name: str) -> None:
    """ModelFileError when parsing ``raw`` (the entry ``name``) could cost more than ``budget``."""
    cost = json_cost(raw)
    if cost > budget:
        raise _refuse(path, kind, f"{name} ({len(raw)} bytes) would take about {cost} bytes to parse, "
                                  f"more than {budget}")


# ----- tensors.pt: torch's archive and the tensors in it ------------------------------------------

def check_torch_archive(path, raw: bytes, name: str) -> None:
    """Before ``torch.load``: ``raw`` (the entry ``name``) must be torch's zip format (the legacy
    format declares storage sizes torch would allocate unchecked) with each record once, stored
    uncompressed within ``raw``, and a pickle whose globals are all in ALLOWED_GLOBALS.
    ModelFileError naming ``path`` otherwise."""
    prefix = f"{name} is not a plain dict of tensors (refusing pickled objects)"
    if not raw.startswith(b"PK\x03\x04"):
        raise ModelFileError(path, f"{prefix}: not torch's zip format")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as inner:
            infos = inner.infolist()
            found = [info.filename for info in infos]
            if len(set(found)) != len(found):
                raise ModelFileError(path, f"{prefix}: a record appears twice")
            for info in infos:
                if (info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1
                        or info.file_size != info.compress_size or info.file_size > len(raw)):
                    raise ModelFileError(path, f"{prefix}: the record {info.filename!r:.80} is not "
                                               "stored uncompressed as torch writes it")
            pickles = [info for info in infos if info.filename.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ModelFileError(path, f"{prefix}: expected one data.pkl record")
            check_pickle_globals(path, read_entry(inner, pickles[0]), prefix)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(path, f"{prefix}: a damaged archive ({str(err)[:200]})") from None


def check_pickle_globals(path, data: bytes, prefix: str) -> None:
    """Scan the opcodes of a pickle (nothing is built): every global it imports must be in
    ALLOWED_GLOBALS; object-building opcodes of protocols 0-1 and extension codes are refused."""
    strings: list = []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
        elif op.name == "STACK_GLOBAL":
            if len(strings) < 2:
                raise ModelFileError(path, f"{prefix}: a global that cannot be checked")
            module, attr = strings[-2], strings[-1]
        elif op.name in ("OBJ", "EXT1", "EXT2", "EXT4"):
            raise ModelFileError(path, f"{prefix}: the pickle opcode {op.name}")
        else:
            if op.name in _STRING_OPS:
                strings = (strings + [str(arg)])[-2:]
            elif op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                strings = []
            continue
        strings = []
        if op.name == "INST" or (module, attr) not in ALLOWED_GLOBALS:
            raise ModelFileError(path, f"{prefix}: it imports {module}.{attr}"[:300])


def check_loaded_tensors(path, tree, budget: int, name: str) -> None:
    """After ``torch.load``: every tensor in ``tree`` (dicts and lists of tensors and other
    values) is a plain strided CPU tensor of a real dtype whose elements fit in its storage (no
    zero-stride expansions), and all of them together hold at most ``budget`` bytes.
    ModelFileError naming ``path`` and the tensor otherwise."""
    total, stack = 0, [("", tree)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}/{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, torch.Tensor):
            total += _tensor_bytes(path, value, f"{name}: the tensor {where!r:.100}")
            if total > budget:
                raise _refuse(path, "file", f"{name} holds more than {budget} bytes of tensors")


def _tensor_bytes(path, t: torch.Tensor, what: str) -> int:
    """The bytes of ``t``'s elements, after checking it is a plain tensor that its storage holds."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter) or t.layout != torch.strided or t.is_quantized:
        raise ModelFileError(path, f"{what} is not a plain dense tensor ({type(t).__name__}, {t.layout})")
    if t.device.type != "cpu":
        raise ModelFileError(path, f"{what} is on the {t.device.type!r} device, not stored data")
    if t.dtype not in DTYPES:
        raise ModelFileError(path, f"{what} has the unsupported dtype {t.dtype}")
    nbytes = t.numel() * t.element_size()
    if t.numel() == 0:
        return 0
    if any(stride == 0 and size > 1 for size, stride in zip(t.shape, t.stride())):
        raise ModelFileError(path, f"{what} is an expanded (zero-stride) view of shape {tuple(t.shape)}")
    extent = t.storage_offset() + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) + 1
    storage = t.untyped_storage().nbytes()
    if nbytes > storage or extent * t.element_size() > storage:
        raise ModelFileError(path, f"{what} of shape {tuple(t.shape)} claims {nbytes} bytes from a "
                                   f"storage of {storage}")
    return nbytes


def largest_numel(tree) -> int:
    """The most elements of any tensor in ``tree`` (dicts and lists of tensors), at least 1: the
    bound on what a config may declare (``flashgp.serialize.declared_size_limit``)."""
    most, stack = 1, [tree]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, torch.Tensor):
            most = max(most, value.numel())
    return most
