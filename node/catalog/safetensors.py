"""Strict safetensors header validation, run before a model file is accepted.

A safetensors file is an 8-byte little-endian length ``N``, ``N`` bytes of UTF-8 JSON
(optionally padded at its end with spaces), then the tensor data. The header is the only
part a node interprets, so it is checked strictly: every rule broken has its own error
class and stable code, and the tensors must tile the data section exactly (no overlap, no
gap, no trailing bytes), so that nothing can hide in a file we seed. Everything here is a
pure function over bytes except :func:`read_header`, which reads the ``8 + N`` header
bytes and nothing more. Pickle files are refused outright: unpickling runs code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from node.errors import CivitasError

# Header work is bounded by size, below what any real checkpoint needs. An SDXL checkpoint
# has ~2,500 tensors in a header of ~300 KiB; Flux dev ~1,000; SD3 or Flux with their text
# encoders a few thousand; kohya metadata adds at most a few MiB. The safetensors library
# allows 100 MB headers: a 70 MB header of 1M tensors took ~1 GB and 20 s to parse here.
HEADER_LIMIT = 16 * 1024 * 1024  # bytes of header JSON
MAX_TENSORS = 20_000  # 8x the largest real single-file checkpoint
# Commas bound the JSON values, hence the Python objects a parse builds (~260 bytes a
# value at worst, so ~50 MiB at this cap): 10 a tensor at MAX_TENSORS, metadata included.
MAX_HEADER_COMMAS = 200_000
MAX_RANK = 8
U64_MAX = 2**64 - 1  # the reference parser reads dims and offsets as u64 (usize)
METADATA_KEY = "__metadata__"
ENTRY_FIELDS = frozenset({"dtype", "shape", "data_offsets"})

# Bits per element of every dtype the safetensors 0.8 format defines. F4 and F6 are
# sub-byte: a tensor of them must still fill a whole number of bytes.
_DTYPES_BY_BITS = {
    4: "F4",
    6: "F6_E2M3 F6_E3M2",
    8: "BOOL U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ",
    16: "I16 U16 F16 BF16",
    32: "I32 U32 F32",
    64: "I64 U64 F64 C64",
}
DTYPE_BITS = {name: bits for bits, names in _DTYPES_BY_BITS.items() for name in names.split()}

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
ZIP_MAGIC = b"PK\x03\x04"

_FIX = "Re-export the model with the safetensors library (safetensors.torch.save_file)."


# --- errors ----------------------------------------------------------------------------


class SafetensorsError(CivitasError):
    """The file is not a well-formed safetensors file. Subclasses say which rule broke."""

    code = "safetensors_invalid"

    def __init__(self, message: str) -> None:
        super().__init__(f"not a valid safetensors file: {message}. {_FIX}")


class FileTooShort(SafetensorsError):
    code = "safetensors_file_too_short"


class HeaderEmpty(SafetensorsError):
    code = "safetensors_header_empty"


class HeaderTooLarge(SafetensorsError):
    code = "safetensors_header_too_large"


class HeaderBeyondFile(SafetensorsError):
    code = "safetensors_header_beyond_file"


class HeaderNotUtf8(SafetensorsError):
    code = "safetensors_header_not_utf8"


class HeaderNotJson(SafetensorsError):
    code = "safetensors_header_not_json"


class HeaderNotObject(SafetensorsError):
    code = "safetensors_header_not_object"


class HeaderBadPadding(SafetensorsError):
    code = "safetensors_header_bad_padding"


class HeaderTooComplex(SafetensorsError):
    code = "safetensors_header_too_complex"


class DuplicateKey(SafetensorsError):
    code = "safetensors_duplicate_key"


class MetadataInvalid(SafetensorsError):
    code = "safetensors_metadata_invalid"


class TooManyTensors(SafetensorsError):
    code = "safetensors_too_many_tensors"


class TensorEntryInvalid(SafetensorsError):
    code = "safetensors_tensor_entry_invalid"


class UnknownDtype(SafetensorsError):
    code = "safetensors_unknown_dtype"


class ShapeInvalid(SafetensorsError):
    code = "safetensors_shape_invalid"


class ShapeRankTooHigh(SafetensorsError):
    code = "safetensors_shape_rank_too_high"


class ShapeOverflow(SafetensorsError):
    code = "safetensors_shape_overflow"


class OffsetsInvalid(SafetensorsError):
    code = "safetensors_offsets_invalid"


class TensorSizeMismatch(SafetensorsError):
    code = "safetensors_tensor_size_mismatch"


class OffsetsOutOfBounds(SafetensorsError):
    code = "safetensors_offsets_out_of_bounds"


class TensorsOverlap(SafetensorsError):
    code = "safetensors_tensors_overlap"


class TensorsGap(SafetensorsError):
    code = "safetensors_tensors_gap"


class TrailingData(SafetensorsError):
    code = "safetensors_trailing_data"


class PickleRefused(CivitasError):
    """A pickle checkpoint: never loaded, because unpickling runs arbitrary code."""

    code = "pickle_refused"
    status = 415


# --- the header ------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor; ``start``/``end`` are byte offsets relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header; ``tensors`` is in data order (by offset)."""

    header_size: int
    data_start: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json hook: JSON allows repeated keys and keeps the last; two readers could then
    disagree about which tensor a name means, so a repeat is refused."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _no_constants(name: str) -> NoReturn:
    raise HeaderNotJson(f"the header contains {name}, which is not JSON")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(text: str, where: str) -> None:
    """JSON escapes can spell lone surrogates, which no UTF-8 consumer can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HeaderNotUtf8(f"{where} contains an unpaired surrogate escape") from None


def header_length(first8: bytes, file_size: int) -> int:
    """The declared header length ``N``, checked against the limit and the file size.

    Checked before anything is read past the first 8 bytes, so a forged length cannot
    make a node allocate or read more than ``HEADER_LIMIT``.
    """
    if len(first8) < 8 or file_size < 8:
        raise FileTooShort(
            f"the file is {min(len(first8), file_size)} bytes long, shorter than the "
            "8-byte header length"
        )
    n = int.from_bytes(first8[:8], "little")
    if n == 0:
        raise HeaderEmpty("the declared header length is 0")
    if n > HEADER_LIMIT:
        raise HeaderTooLarge(
            f"the declared header length {n} exceeds this node's {HEADER_LIMIT}-byte limit "
            "(real checkpoints' headers are under a few MiB)"
        )
    if 8 + n > file_size:
        raise HeaderBeyondFile(
            f"the declared header length {n} runs past the end of the {file_size}-byte file"
        )
    return n


def _decode_json(header_bytes: bytes) -> dict[str, Any]:
    try:
        text = header_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderNotUtf8(f"the header is not UTF-8 (bad byte at offset {exc.start})") from exc
    # The format pads the header to an 8-byte boundary with spaces; nothing else may follow.
    body = text.rstrip(" ")
    decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    try:
        value, end = decoder.raw_decode(body)
    except _Duplicate as exc:
        raise DuplicateKey(f"the header has the key {exc.key!r} more than once") from None
    except json.JSONDecodeError as exc:
        raise HeaderNotJson(f"the header is not JSON ({exc.msg} at character {exc.pos})") from exc
    except RecursionError:
        raise HeaderNotJson("the header JSON is nested too deeply") from None
    if end != len(body):
        raise HeaderBadPadding(
            f"unexpected {body[end : end + 16]!r} after the header JSON at character {end} "
            "(only trailing spaces are allowed)"
        )
    if not isinstance(value, dict):
        raise HeaderNotObject(f"the header is a JSON {type(value).__name__}, not an object")
    return value


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise MetadataInvalid(f"{METADATA_KEY} must be an object, not {type(value).__name__}")
    for key, item in value.items():
        _check_text(key, f"{METADATA_KEY} key {key!r}")
        if not isinstance(item, str):
            raise MetadataInvalid(
                f"{METADATA_KEY}[{key!r}] must be a string, not {type(item).__name__}"
            )
        _check_text(item, f"{METADATA_KEY}[{key!r}]")
    return dict(value)


def _data_bits(shape: list[int], dtype: str) -> int | None:
    """Bits of a tensor's data, or None where the safetensors library overflows: it
    multiplies the dims left to right in u64 (so ``[2**62, 2**62, 0]`` overflows before
    the 0), then by the dtype's bits, and refuses any step past ``U64_MAX``."""
    count = 1
    for dim in shape:
        count *= dim
        if count > U64_MAX:
            return None
    bits = count * DTYPE_BITS[dtype]
    return bits if bits <= U64_MAX else None


def _tensor(name: str, entry: object, data_size: int) -> TensorInfo:
    """Check one header entry against the format and the size of the data section."""
    _check_text(name, f"tensor name {name!r}")
    if not isinstance(entry, dict):
        raise TensorEntryInvalid(
            f"tensor {name!r}: entry is a {type(entry).__name__}, not an object"
        )
    if set(entry) != ENTRY_FIELDS:
        missing = sorted(ENTRY_FIELDS - set(entry))
        extra = sorted(set(entry) - ENTRY_FIELDS)
        raise TensorEntryInvalid(
            f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets "
            f"(missing {missing}, unexpected {extra})"
        )
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise UnknownDtype(f"tensor {name!r}: unknown dtype {dtype!r}")
    shape = entry["shape"]
    if isinstance(shape, list) and len(shape) > MAX_RANK:
        raise ShapeRankTooHigh(f"tensor {name!r}: shape has rank {len(shape)}, over {MAX_RANK}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ShapeInvalid(f"tensor {name!r}: shape {shape!r} is not a list of non-negative ints")
    bits = _data_bits(shape, dtype)
    if bits is None or any(d > U64_MAX for d in shape):
        raise ShapeOverflow(
            f"tensor {name!r}: {dtype} {shape} overflows 64 bits (the safetensors library "
            "refuses it)"
        )
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and 0 <= o <= U64_MAX for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise OffsetsInvalid(
            f"tensor {name!r}: data_offsets {offsets!r} must be two ints [start, end] "
            "with 0 <= start <= end < 2**64"
        )
    start, end = offsets
    if bits % 8 or bits // 8 != end - start:
        raise TensorSizeMismatch(
            f"tensor {name!r}: {dtype} {shape} needs {bits / 8:g} bytes, "
            f"data_offsets span {end - start}"
        )
    if end > data_size:
        raise OffsetsOutOfBounds(
            f"tensor {name!r}: data_offsets [{start}, {end}] run past the "
            f"{data_size}-byte data section"
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), start=start, end=end)


def _check_tiling(tensors: list[TensorInfo], data_size: int) -> None:
    """The tensors, in offset order, must cover the data section exactly once."""
    position = 0
    previous = "the start of the data section"
    for tensor in tensors:
        if tensor.start < position:
            raise TensorsOverlap(
                f"tensor {tensor.name!r} at byte {tensor.start} overlaps {previous}, "
                f"which ends at byte {position}"
            )
        if tensor.start > position:
            raise TensorsGap(
                f"{tensor.start - position} unused bytes between {previous} and "
                f"tensor {tensor.name!r}"
            )
        position = tensor.end
        previous = f"tensor {tensor.name!r}"
    if position != data_size:
        what = f"after {previous}" if tensors else "in a file with no tensors"
        raise TrailingData(f"{data_size - position} trailing bytes {what}")


def _prescan(header_bytes: bytes) -> None:
    """Count before parsing, at C speed and without allocating: how many tensors the
    header declares and how many values it holds, so a header built to cost memory and
    time is refused before a single object is made. (An escaped ``\\"data_offsets\\"``
    inside a metadata string does not match, a comma inside one counts: conservative.)"""
    tensors = header_bytes.count(b'"data_offsets"')
    if tensors > MAX_TENSORS:
        raise TooManyTensors(
            f"the header declares {tensors} tensors, over this node's limit of {MAX_TENSORS}"
        )
    commas = header_bytes.count(b",")
    if commas > MAX_HEADER_COMMAS:
        raise HeaderTooComplex(
            f"the header holds {commas} JSON values, over this node's limit of {MAX_HEADER_COMMAS}"
        )


def parse_header(header_bytes: bytes, file_size: int) -> SafetensorsHeader:
    """Validate the ``N`` JSON bytes that follow the length, for a file of ``file_size``."""
    header_size = len(header_bytes)
    if header_size == 0:
        raise HeaderEmpty("the header is empty")
    if header_size > HEADER_LIMIT:
        raise HeaderTooLarge(f"the header is {header_size} bytes, over the {HEADER_LIMIT} limit")
    data_size = file_size - 8 - header_size
    if data_size < 0:
        raise HeaderBeyondFile(
            f"a {header_size}-byte header does not fit in a {file_size}-byte file"
        )
    _prescan(header_bytes)
    raw = _decode_json(header_bytes)
    metadata = _metadata(raw.pop(METADATA_KEY)) if METADATA_KEY in raw else {}
    if len(raw) > MAX_TENSORS:
        raise TooManyTensors(f"the header lists {len(raw)} tensors, over {MAX_TENSORS}")
    infos = [_tensor(name, entry, data_size) for name, entry in raw.items()]
    infos.sort(key=lambda t: (t.start, t.end))
    _check_tiling(infos, data_size)
    return SafetensorsHeader(
        header_size=header_size,
        data_start=8 + header_size,
        file_size=file_size,
        tensors={t.name: t for t in infos},
        metadata=metadata,
    )


def read_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of the file at ``path``; reads ``8 + N`` bytes only."""
    with path.open("rb") as file:
        file_size = os.fstat(file.fileno()).st_size
        n = header_length(file.read(8), file_size)
        header_bytes = file.read(n)
    if len(header_bytes) != n:
        raise HeaderBeyondFile(f"the file ended {n - len(header_bytes)} bytes into its header")
    return parse_header(header_bytes, file_size)


# --- pickle ----------------------------------------------------------------------------


def _looks_like_safetensors(first_bytes: bytes) -> bool:
    """A safetensors length whose low bytes happen to spell a magic (N = 640 is
    ``80 02 00 ...``) is followed, at byte 8, by the header's opening brace."""
    return (
        len(first_bytes) >= 9
        and int.from_bytes(first_bytes[:8], "little") <= HEADER_LIMIT
        and first_bytes[8:9] == b"{"
    )


def refuse_pickle(first_bytes: bytes, filename: str) -> None:
    """Refuse pickle checkpoints by name or by magic bytes, explaining how to convert."""
    suffix = Path(filename).suffix.lower()
    why = None
    if suffix in PICKLE_SUFFIXES:
        why = f"its {suffix} name marks a PyTorch pickle checkpoint"
    elif not _looks_like_safetensors(first_bytes):
        if first_bytes.startswith(ZIP_MAGIC):
            why = "it is a zip archive, the container torch.save writes pickles into"
        elif len(first_bytes) >= 2 and first_bytes[0] == 0x80 and 2 <= first_bytes[1] <= 5:
            why = f"it starts with the pickle protocol {first_bytes[1]} marker"
    if why is None:
        return
    raise PickleRefused(
        f"{filename!r} is refused: {why}. Pickle files can run arbitrary code when they are "
        "unpickled, so this node never loads them and accepts only .safetensors files. "
        "Convert it where you trust it: state_dict = torch.load(path, weights_only=True) "
        "(take its 'state_dict' entry if it has one), then "
        "safetensors.torch.save_file(state_dict, 'model.safetensors'), and upload that."
    )
