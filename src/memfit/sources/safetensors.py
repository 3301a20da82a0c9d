"""safetensors headers → CheckpointInfo: each stored tensor's dtype, shape and exact bytes, weights unread.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the data, whose
offsets count from the end of the header. Only the first 8 + N bytes are read, and only from a regular
file whose N is within MAX_HEADER_BYTES and whose header declares at most MAX_HEADER_TENSORS tensors, both
checked before the JSON is parsed. Pre-quantized checkpoints (GPTQ, AWQ, FP8, compressed-tensors) are thus
counted as stored, packed integers and scales included.
Source: https://github.com/huggingface/safetensors (format section of the README).
"""

from __future__ import annotations

import contextlib
import gc
import json
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from memfit.core.errors import ConfigError, ModelNotFound
from memfit.core.limits import shown
from memfit.core.spec import CheckpointInfo, TensorInfo
from memfit.sources._config import load_json, read_regular_file, regular_file_size

HEADER_LENGTH_BYTES = 8
"""Bytes of the little-endian u64 header length that opens every safetensors file. Source: format README."""

SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
"""Largest header the safetensors library itself reads (bytes): past it, not a safetensors file.
Source: safetensors/src/tensor.rs MAX_HEADER_SIZE."""

MAX_HEADER_BYTES = 16 * 2**20
"""Largest header memfit parses (bytes): 16 MiB. A header entry is about 130 B of JSON per tensor, and
shards hold hundreds to a few thousand tensors (DeepSeek-V3: 91,991 tensors over 163 shards, about 75 KB of
header each); even all of DeepSeek-V3 in one file (about 12 MB) fits. huggingface_hub stops at 25 MB
(constants.SAFETENSORS_MAX_HEADER_LENGTH). A 16 MiB header of 131,000 tensors costs `memfit params` about
0.8 s and 132 MiB max RSS (benchmarks/results/hostile-2026-12-04.md, header-16mib)."""

MAX_HEADER_TENSORS = 131_072
"""Most tensors one header may declare, counted before parsing: DeepSeek-V3's 91,991 tensors in one file
would fit; a header of tiny entries past it is refused before it costs seconds (about 4 µs of CPU each)."""

MAX_INDEX_BYTES = 32 * 2**20
"""Largest model.safetensors.index.json read (bytes): 32 MiB. An entry is about 100 B, and the largest
published indexes list 92k (DeepSeek-V3, about 9 MB) to 140k tensors (Kimi K2, about 15 MB): twice that."""

MAX_STORED_COUNT = 2**64
"""Shapes and offsets are u64 in safetensors (usize in its Rust reader): a larger number is corrupt.
Source: safetensors/src/tensor.rs TensorInfo (shape: Vec<usize>, data_offsets: (usize, usize))."""

MAX_TENSOR_RANK = 16
"""Most dimensions a stored tensor may have: checkpoints hold at most 5 (Conv3d weights); 16 keeps the
element count a product of at most 16 u64s."""

ELEMENT_BYTES: dict[str, int] = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}
"""Bytes per element of the whole-byte safetensors dtypes, to check data_offsets against shapes
(sub-byte types such as F4 are not checked). Source: safetensors/src/tensor.rs Dtype::bitsize."""


def read_safetensors_header(path: Path) -> tuple[TensorInfo, ...]:
    """The tensors stored in one .safetensors file, in storage order, read from its header only.

    Raises:
        ConfigError: not a regular file (a FIFO, a device: refused unopened), a header longer than
            MAX_HEADER_BYTES or declaring more than MAX_HEADER_TENSORS tensors, a file shorter than its
            header says, a header that is not valid JSON, or a tensor entry that is malformed or points past
            the end of the file.
    """
    file_bytes = regular_file_size(path)
    if file_bytes is None:
        raise ConfigError(f"{path}: missing; download the checkpoint again or point at config.json")
    try:
        with path.open("rb") as file:
            prefix = file.read(HEADER_LENGTH_BYTES)
            if len(prefix) < HEADER_LENGTH_BYTES:
                raise ConfigError(f"{path}: {len(prefix)} bytes is too short for a safetensors file")
            (header_bytes,) = struct.unpack("<Q", prefix)
            _check_header_length(path, header_bytes)
            raw = file.read(header_bytes)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror})") from err
    if len(raw) < header_bytes:
        raise ConfigError(
            f"{path}: truncated: its header needs {header_bytes:,} B, the file has {len(raw):,}"
        )
    num_tensors = raw.count(b'"data_offsets"')
    if num_tensors > MAX_HEADER_TENSORS:
        raise ConfigError(f"{path}: the header declares {num_tensors:,} tensors, more than any checkpoint "
                          f"file (limit {MAX_HEADER_TENSORS:,}); corrupt or not a model?")
    data_bytes = file_bytes - HEADER_LENGTH_BYTES - header_bytes
    with _collector_paused():
        header = _parse_header(raw, path=path)
        del raw
        return tensors_from_header(header, origin=str(path), data_bytes=data_bytes)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a header's acyclic dicts and TensorInfos are built:
    allocating 131,072 entries otherwise triggers collections that scan the growing heap again and again
    (1.24 s of CPU with it, 0.47 s without, for a 16 MiB header). Reference counting still frees them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse_header(raw: bytes, *, path: Path) -> Any:
    """The header's JSON. The C parser's fast path, unlike config.json's `load_json`: every number that
    matters is checked per tensor (`_are_counts`), nesting past Python's limit is a ConfigError, and
    NaN/Infinity, which no entry may hold, parse as strings that fail those checks."""
    try:
        return json.loads(raw, parse_constant=str)
    except RecursionError as err:
        raise ConfigError(f"{path}: the safetensors header nests too deeply; corrupt?") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an int past 4,300 digits
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise ConfigError(f"{path}: the safetensors header is not valid JSON ({reason}); corrupt?") from err


def _check_header_length(path: Path, header_bytes: int) -> None:
    if header_bytes > SAFETENSORS_MAX_HEADER_BYTES:
        raise ConfigError(
            f"{path}: header length {header_bytes:,} B exceeds {SAFETENSORS_MAX_HEADER_BYTES:,} B; "
            "not a safetensors file, or a corrupt one"
        )
    if header_bytes > MAX_HEADER_BYTES:
        raise ConfigError(
            f"{path}: header length {header_bytes:,} B exceeds memfit's limit of {MAX_HEADER_BYTES:,} B "
            "(real checkpoint headers are at most a few MB); corrupt or not a model?"
        )


def tensors_from_header(
    header: object, *, origin: str, data_bytes: int | None = None
) -> tuple[TensorInfo, ...]:
    """TensorInfos from a parsed safetensors header dict, sorted by data offset.

    `data_bytes` is the size of the data section when known: a tensor ending past it means a truncated file.

    Raises:
        ConfigError: a malformed entry, naming the tensor and the field.
    """
    if not isinstance(header, dict):
        raise ConfigError(f"{origin}: the safetensors header is not a JSON object")
    entries = [
        (_entry_begin(name, entry, origin), _tensor_info(name, entry, origin, data_bytes))
        for name, entry in header.items()
        if name != "__metadata__"
    ]
    entries.sort(key=_begin)
    return tuple(info for _, info in entries)


def _begin(entry: tuple[int, TensorInfo]) -> int:
    return entry[0]


def load_safetensors_checkpoint(files: Sequence[Path], *, quant_method: str | None = None) -> CheckpointInfo:
    """CheckpointInfo for a checkpoint stored as these .safetensors files (one, or every shard)."""
    tensors = [tensor for path in files for tensor in read_safetensors_header(path)]
    return CheckpointInfo(format="safetensors", tensors=tuple(tensors), quant_method=quant_method)


def load_safetensors_index(index_path: Path, *, quant_method: str | None = None) -> CheckpointInfo:
    """CheckpointInfo for a sharded checkpoint: every shard named by `model.safetensors.index.json`.

    Raises:
        ConfigError: the index is malformed, a shard is missing, or a tensor of the index is in no shard.
    """
    weight_map = read_weight_map(index_path)
    shards = [index_path.parent / shard for shard in _unique(weight_map.values())]
    checkpoint = load_safetensors_checkpoint(shards, quant_method=quant_method)
    stored = {tensor.name for tensor in checkpoint.tensors}
    missing = sorted(set(weight_map) - stored)
    if missing:
        raise ConfigError(
            f"{index_path}: {len(missing)} tensor(s) of the index are in no shard, e.g. {missing[0]!r}; "
            "re-download the checkpoint"
        )
    return checkpoint


def read_weight_map(index_path: Path) -> Mapping[str, str]:
    """Tensor name → shard file name, from a `model.safetensors.index.json`.

    Raises:
        ConfigError: the index is missing, not JSON, or has no weight_map of file names.
    """
    try:
        raw = read_regular_file(index_path, max_bytes=MAX_INDEX_BYTES, what="safetensors index")
    except ModelNotFound as err:
        raise ConfigError(f"{index_path}: missing") from err
    try:
        index = load_json(raw, origin=str(index_path))
    except ValueError as err:
        raise ConfigError(f"{index_path}: not valid JSON ({err})") from err
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ConfigError(f"{index_path}: no weight_map (tensor name → shard file); not an index?")
    for shard in weight_map.values():
        if Path(shard).name != shard:
            raise ConfigError(f"{index_path}: shard {shard!r} is not a file name beside the index")
    return weight_map


def _unique(names: Iterable[str]) -> list[str]:
    return sorted(set(names))


def _entry_begin(name: str, entry: Any, origin: str) -> int:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and _are_counts(offsets)):
        raise ConfigError(f"{origin}: tensor {shown(name)} has no valid data_offsets [begin, end]")
    return int(offsets[0])


def _tensor_info(name: str, entry: dict[str, Any], origin: str, data_bytes: int | None) -> TensorInfo:
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if not isinstance(dtype, str) or not dtype:
        raise ConfigError(f"{origin}: tensor {shown(name)} has no dtype")
    if not (isinstance(shape, list) and len(shape) <= MAX_TENSOR_RANK and _are_counts(shape)):
        raise ConfigError(
            f"{origin}: tensor {shown(name)} has shape {shown(shape)}; expected a list of at most "
            f"{MAX_TENSOR_RANK} sizes"
        )
    begin, end = entry["data_offsets"]
    nbytes = end - begin
    if nbytes < 0:
        raise ConfigError(f"{origin}: tensor {shown(name)} ends (byte {end}) before it begins (byte {begin})")
    if data_bytes is not None and end > data_bytes:
        raise ConfigError(
            f"{origin}: truncated: tensor {shown(name)} ends at data byte {end:,}, "
            f"the file holds {data_bytes:,}; re-download it"
        )
    numel = 1
    for dim in shape:
        numel *= dim
    if dtype in ELEMENT_BYTES and numel * ELEMENT_BYTES[dtype] != nbytes:
        raise ConfigError(
            f"{origin}: tensor {shown(name)} {dtype}{shape} needs {numel * ELEMENT_BYTES[dtype]:,} B "
            f"but its data_offsets span {nbytes:,} B"
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), nbytes=nbytes)


def _are_counts(values: list[Any]) -> bool:
    """Every value is an int (not a bool) in 0..MAX_STORED_COUNT - 1: a u64 as safetensors stores it."""
    return all(type(value) is int and 0 <= value < MAX_STORED_COUNT for value in values)
