"""safetensors headers → CheckpointInfo: each stored tensor's dtype, shape and exact bytes, weights unread.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the data, whose
offsets count from the end of the header. Only the first 8 + N bytes are read. Pre-quantized checkpoints
(GPTQ, AWQ, FP8, compressed-tensors) are thus counted as stored, packed integers and scales included.
Source: https://github.com/huggingface/safetensors (format section of the README).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.spec import CheckpointInfo, TensorInfo

HEADER_LENGTH_BYTES = 8
"""Bytes of the little-endian u64 header length that opens every safetensors file. Source: format README."""

MAX_HEADER_BYTES = 100_000_000
"""Largest header the safetensors library reads (bytes). Source: safetensors/src/tensor.rs MAX_HEADER_SIZE."""

ELEMENT_BYTES: dict[str, int] = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}
"""Bytes per element of the whole-byte safetensors dtypes, to check data_offsets against shapes
(sub-byte types such as F4 are not checked). Source: safetensors/src/tensor.rs Dtype::bitsize."""


def read_safetensors_header(path: Path) -> tuple[TensorInfo, ...]:
    """The tensors stored in one .safetensors file, in storage order, read from its header only.

    Raises:
        ConfigError: the file is shorter than its header says, the header is not valid JSON, or a tensor
            entry is malformed or points past the end of the file.
    """
    try:
        with path.open("rb") as file:
            prefix = file.read(HEADER_LENGTH_BYTES)
            if len(prefix) < HEADER_LENGTH_BYTES:
                raise ConfigError(f"{path}: {len(prefix)} bytes is too short for a safetensors file")
            (header_bytes,) = struct.unpack("<Q", prefix)
            if header_bytes > MAX_HEADER_BYTES:
                raise ConfigError(
                    f"{path}: header length {header_bytes:,} B exceeds {MAX_HEADER_BYTES:,} B; "
                    "not a safetensors file, or a corrupt one"
                )
            raw = file.read(header_bytes)
            file_bytes = path.stat().st_size
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: missing; download the checkpoint again or point at config.json") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror})") from err
    if len(raw) < header_bytes:
        raise ConfigError(
            f"{path}: truncated: its header needs {header_bytes:,} B, the file has {len(raw):,}"
        )
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: the safetensors header is not valid JSON ({err}); corrupt?") from err
    data_bytes = file_bytes - HEADER_LENGTH_BYTES - header_bytes
    return tensors_from_header(header, origin=str(path), data_bytes=data_bytes)


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
    return tuple(info for _, info in sorted(entries, key=lambda pair: pair[0]))


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
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{index_path}: missing") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
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
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise ConfigError(f"{origin}: tensor {name!r} has no valid data_offsets [begin, end]")
    return int(offsets[0])


def _tensor_info(name: str, entry: dict[str, Any], origin: str, data_bytes: int | None) -> TensorInfo:
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if not isinstance(dtype, str) or not dtype:
        raise ConfigError(f"{origin}: tensor {name!r} has no dtype")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ConfigError(f"{origin}: tensor {name!r} has shape {shape!r}; expected a list of sizes")
    begin, end = entry["data_offsets"]
    nbytes = end - begin
    if nbytes < 0:
        raise ConfigError(f"{origin}: tensor {name!r} ends (byte {end}) before it begins (byte {begin})")
    if data_bytes is not None and end > data_bytes:
        raise ConfigError(
            f"{origin}: truncated: tensor {name!r} ends at data byte {end:,}, the file holds {data_bytes:,}; "
            "re-download it"
        )
    numel = 1
    for dim in shape:
        numel *= dim
    if dtype in ELEMENT_BYTES and numel * ELEMENT_BYTES[dtype] != nbytes:
        raise ConfigError(
            f"{origin}: tensor {name!r} {dtype}{shape} needs {numel * ELEMENT_BYTES[dtype]:,} B "
            f"but its data_offsets span {nbytes:,} B"
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), nbytes=nbytes)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
