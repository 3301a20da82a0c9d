"""GGUF files → ModelSpec with exact per-tensor GGML types and bytes; extra [gguf].

The GGUF's `<arch>.*` metadata is rewritten as the equivalent Hugging Face config.json, which goes through
the family registry like any other config, so a GGUF and its source checkpoint get the same shapes. The
tensors are attached as a `CheckpointInfo(format="gguf")`: GGML type names ("Q4_K", "F16") and exact byte
sizes, with shapes in PyTorch order (GGUF stores `ne` innermost first). Only the header is read, by our
own bounded parser (`_read_header`) over a read-only map of a regular file: every count and length is
checked against the file's size and a named limit before it is used, arrays are skipped, not decoded
(gguf-py's GGUFReader builds a numpy view per array item: 10 s and 730 MB for a Llama 3 vocabulary, and
unbounded for a 148-byte file claiming 10^7 items). The gguf package gives the GGML type table.
Source: the GGUF spec, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md; key names from
gguf-py's `gguf.constants.Keys`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memfit.core.errors import ConfigError, MissingExtra, UnsupportedArchitecture
from memfit.core.limits import field_bound, shown
from memfit.core.spec import CheckpointInfo, ModelSource, ModelSpec, TensorInfo
from memfit.sources._config import build_spec, regular_file_size

QUANTIZED_GGUF_TORCH_DTYPE = "float16"
"""Checkpoint dtype given to quantized GGUFs: llama.cpp computes activations and its default K/V cache in
F16. Source: llama.cpp common/arg.cpp (--cache-type-k/-v default f16)."""

GEMMA3_SLIDING_WINDOW_PATTERN = 6
"""Gemma 3: every 6th layer is global, the others slide; GGUF does not store it.
Source: llama.cpp src/llama-model.cpp, LLM_ARCH_GEMMA3 (hparams.set_swa_pattern(6))."""

_SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
"""A split GGUF's shard names, `<stem>-00001-of-00003.gguf`. Source: gguf-py's SHARD_NAME_FORMAT."""

_TORCH_DTYPE_BY_FILE_TYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

GGUF_VERSIONS = (2, 3)
"""GGUF versions read (v1 had 32-bit counts). Source: gguf-py READER_SUPPORTED_VERSIONS."""

MAX_GGUF_KV_PAIRS = 65_536
"""Most metadata keys: llama.cpp conversions write 25-60. Source: convert_hf_to_gguf.py outputs."""

MAX_GGUF_TENSORS = 131_072
"""Most tensors in one GGUF: llama.cpp merges experts into one tensor per layer, so even DeepSeek-V3 has
about 1,100; 131,072 also admits per-expert layouts (DeepSeek-V3 unmerged: about 47,000)."""

MAX_GGUF_ARRAY_ITEMS = 4_194_304
"""Most items in one metadata array: the largest are vocabularies (Gemma 3: 262,144 tokens) and BPE merge
lists (Llama 3: 280,147): 15× the largest."""

MAX_GGUF_STRING_ITEMS = 2_097_152
"""Most strings in all metadata arrays together, each walked for its length (about 0.1 µs each): a Llama 3
GGUF has 408,403 (128,256 tokens + 280,147 merges), Gemma 3 262,144: 5× the most."""

MAX_GGUF_KEY_BYTES = 65_535
"""Longest key or tensor name. Source: the GGUF spec (keys are ASCII, at most 2^16 - 1 bytes)."""

MAX_GGUF_DIMS = 4
"""Most dimensions of a tensor. Source: the GGUF spec (n_dimensions; GGML_MAX_DIMS = 4 in ggml.h)."""

MAX_DECODED_ARRAY_ITEMS = 4_096
"""Numeric arrays up to this length are decoded (per-layer values); longer arrays are only counted."""

MAX_DECODED_STRING_BYTES = 1_048_576
"""Scalar strings up to this length are decoded (architecture, names, chat templates); longer ones (an
embedded tokenizer.json) are only skipped: memfit reads no long string."""

_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
"""GGUF value type → struct format of a scalar. Source: the GGUF spec, enum gguf_metadata_value_type."""

_STRING, _ARRAY = 8, 9
_STRING_LENGTH_BYTES = 8
_MIN_FIELD_BYTES = 8 + 4 + 1
"""Smallest metadata entry: an empty key's length, the value type, a one-byte value."""
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
"""Smallest tensor info: an empty name's length, n_dimensions, the GGML type, the data offset."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Skipped:
    """A metadata value read past, not decoded: an array (`count` items, `values` when short and
    numeric) or a string too long or not UTF-8."""

    what: str
    count: int = 0
    values: tuple[Any, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Header:
    """A GGUF file's metadata (scalars decoded; arrays and long strings as `_Skipped`) and tensors."""

    fields: dict[str, Any]
    tensors: tuple[TensorInfo, ...]


class _Metadata:
    """The GGUF key/value fields, read by their short `<arch>.` names."""

    def __init__(self, fields: dict[str, Any], *, arch: str, origin: str) -> None:
        self._fields, self.arch, self.origin = fields, arch, origin

    def get(self, key: str) -> Any:
        value = self._fields.get(f"{self.arch}.{key}", self._fields.get(key))
        if isinstance(value, _Skipped):
            if value.values is not None:
                return list(value.values)
            raise ConfigError(f"{self.origin}: GGUF metadata {key} is {value.what}, not a single value")
        return value

    def integer(self, key: str, *, field: str | None = None) -> int:
        """A required integer field; within the bound of config field `field` when one is named."""
        value = self.require(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.origin}: GGUF metadata {self.arch}.{key} must be an integer, "
                              f"got {shown(value)}")
        bound = field_bound(field) if field is not None else None
        if bound is not None and not bound.admits(value):
            raise ConfigError(
                f"{self.origin}: GGUF metadata {self.arch}.{key}={shown(value)} ({field}) is out of range "
                f"{bound.minimum}..{bound.maximum:,} ({bound.limit}); a corrupt file?"
            )
        return value

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise ConfigError(
                f"{self.origin}: GGUF metadata lacks {self.arch}.{key}; a corrupt or partial file?"
            )
        return value

    def count(self, key: str) -> int | None:
        """The number of elements of an array field (token lists: counted, not decoded)."""
        value = self._fields.get(key)
        return value.count if isinstance(value, _Skipped) else None


def load_gguf(path: Path | str) -> ModelSpec:
    """The ModelSpec of a .gguf file, with its tensors as stored (GGML type, exact bytes).

    Raises:
        MissingExtra: the gguf package is not installed.
        ConfigError: the file is truncated or corrupt, or lacks a required `<arch>.*` key.
        UnsupportedArchitecture: its general.architecture has no Hugging Face mapping here.
    """
    path = Path(path)
    config, checkpoint = read_gguf(path)
    source = ModelSource(kind="gguf", ref=str(path), config_json=json.dumps(config, indent=2))
    split = _SPLIT_NAME.match(path.name)
    spec = build_spec(config, name=split["stem"] if split else path.stem, source=source, origin=str(path))
    return dataclasses.replace(spec, checkpoint=checkpoint)


def read_gguf(path: Path) -> tuple[dict[str, Any], CheckpointInfo]:
    """The HF-style config dict equivalent to a GGUF's metadata, and its stored tensors.

    A split GGUF (`<stem>-00001-of-00003.gguf`, any shard given) takes its metadata from the first shard
    and its tensors from every shard.

    Raises:
        MissingExtra, ConfigError, UnsupportedArchitecture: as `load_gguf`.
    """
    shards = _shard_paths(path)
    header = _read_header(shards[0])
    arch = header.fields.get("general.architecture")
    if arch is None:
        raise ConfigError(f"{path}: GGUF metadata lacks general.architecture; a corrupt or partial file?")
    if not isinstance(arch, str):
        raise ConfigError(f"{path}: GGUF general.architecture is {shown(arch)}, not a name; corrupt?")
    metadata = _Metadata(header.fields, arch=arch, origin=str(path))
    tensors = header.tensors + tuple(tensor for shard in shards[1:] for tensor in _read_header(shard).tensors)
    expected = metadata.get("split.tensors.count")
    if expected is not None and expected != len(tensors):
        raise ConfigError(f"{path}: split GGUF declares {expected} tensors, its shards hold {len(tensors)}")
    file_type = _file_type_name(metadata.get("general.file_type"), origin=str(path))
    try:
        config = _config_from_gguf(metadata, tensors=tensors, file_type=file_type)
    except (TypeError, ValueError, ArithmeticError) as err:  # a value of the wrong type where one is combined
        raise ConfigError(f"{path}: GGUF metadata has a value of the wrong type ({str(err)[:80]})") from err
    return config, CheckpointInfo(format="gguf", tensors=tensors, file_type=file_type)


def _shard_paths(path: Path) -> list[Path]:
    """Every shard of a split GGUF, first shard first; `[path]` for a single file."""
    split = _SPLIT_NAME.match(path.name)
    if split is None or int(split["count"]) == 1:
        return [path]
    count = int(split["count"])
    shards = [path.with_name(f"{split['stem']}-{no:05d}-of-{count:05d}.gguf") for no in range(1, count + 1)]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ConfigError(f"{path}: split GGUF shard {missing[0]} is missing; download all {count} shards")
    return shards


def _read_header(path: Path) -> _Header:
    """Parse a GGUF file's metadata and tensor infos, every count checked before it is used.

    Raises:
        MissingExtra: the gguf package (its GGML type table) is not installed.
        ConfigError: not a regular file, not GGUF, truncated, or beyond a limit.
    """
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError as err:
        raise MissingExtra("reading .gguf files needs the gguf package: pip install 'memfit[gguf]'") from err
    file_bytes = regular_file_size(path)
    if file_bytes is None:
        raise ConfigError(f"{path}: missing")
    if file_bytes < 4 + 4 + 8 + 8:
        raise _corrupt(path, f"{file_bytes} bytes is too short")
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            cursor = _Cursor(buffer, path=path)
            fields = cursor.metadata()
            alignment = fields.get("general.alignment", 32)
            if not (isinstance(alignment, int) and alignment > 0 and alignment & (alignment - 1) == 0):
                raise _corrupt(path, f"general.alignment {shown(alignment)} is not a power of two")
            infos = cursor.tensor_infos()
            data_start = -(-cursor.position // alignment) * alignment
    except (OSError, ValueError) as err:
        raise _corrupt(path, str(err) or type(err).__name__) from err
    tensors = []
    for name, dims, type_id, offset in infos:
        try:
            ggml_type = GGMLQuantizationType(type_id)
        except ValueError as err:
            raise _corrupt(path, f"tensor {shown(name)} has unknown GGML type {type_id}") from err
        block_size, type_bytes = GGML_QUANT_SIZES[ggml_type]
        numel = 1
        for dim in dims:
            numel *= dim
        nbytes = numel * type_bytes // block_size
        if data_start + offset + nbytes > file_bytes:
            raise _corrupt(path, f"tensor {shown(name)} ends at byte {data_start + offset + nbytes:,}, "
                                 f"the file has {file_bytes:,}")
        # GGUF lists dims innermost first (ne0 = columns); PyTorch order is the reverse
        shape = tuple(reversed(dims))
        tensors.append(TensorInfo(name=name, dtype=ggml_type.name, shape=shape, nbytes=nbytes))
    return _Header(fields=fields, tensors=tuple(tensors))


def _corrupt(path: Path, reason: str) -> ConfigError:
    return ConfigError(f"{path}: not a readable GGUF file, truncated or corrupt ({reason}); re-download it")


class _Cursor:
    """Reads GGUF values from a byte buffer, refusing any length past the buffer or a named limit."""

    def __init__(self, buffer: mmap.mmap, *, path: Path) -> None:
        self.buffer, self.path, self.position, self.order = buffer, path, 0, "<"
        self.num_string_items = 0

    def _unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(self.order + fmt, self.buffer, self.position)
        except struct.error as err:
            raise _corrupt(self.path, f"ends inside its header at byte {self.position:,}") from err
        self.position += struct.calcsize(fmt)
        return value

    def _count(self, fmt: str, *, limit: int, what: str, item_bytes: int) -> int:
        count = int(self._unpack(fmt))
        if count > limit:
            raise _corrupt(self.path, f"{count:,} {what}, past the limit of {limit:,}")
        if count * item_bytes > len(self.buffer) - self.position:
            raise _corrupt(self.path, f"{count:,} {what} do not fit in the file")
        return count

    def _raw_string(self, *, limit: int) -> bytes | None:
        """The next string's bytes; None (skipped, never copied) when longer than `limit`."""
        length = self._count("Q", limit=2**64, what="bytes of a string", item_bytes=1)  # then: does it fit?
        self.position += length
        return self.buffer[self.position - length:self.position] if length <= limit else None

    def _name(self, *, what: str) -> str:
        """A key or tensor name: UTF-8 of at most MAX_GGUF_KEY_BYTES."""
        raw = self._raw_string(limit=MAX_GGUF_KEY_BYTES)
        if raw is None:
            raise _corrupt(self.path, f"{what} longer than {MAX_GGUF_KEY_BYTES:,} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _corrupt(self.path, f"{what} is not UTF-8") from err

    def metadata(self) -> dict[str, Any]:
        if self.buffer[:4] != b"GGUF":
            raise _corrupt(self.path, "no GGUF magic")
        self.position = 4
        version = self._unpack("I")
        if version & 0xFFFF == 0:  # written on a machine of the other byte order
            self.order, self.position = ">", 4
            version = self._unpack("I")
        if version not in GGUF_VERSIONS:
            raise _corrupt(self.path, f"GGUF version {version}; memfit reads versions 2 and 3")
        self.num_tensors = self._count("Q", limit=MAX_GGUF_TENSORS, what="tensors",
                                       item_bytes=_MIN_TENSOR_INFO_BYTES)
        num_fields = self._count("Q", limit=MAX_GGUF_KV_PAIRS, what="metadata keys",
                                 item_bytes=_MIN_FIELD_BYTES)
        fields: dict[str, Any] = {}
        for _ in range(num_fields):
            key = self._name(what="a key")
            if key in fields:
                raise _corrupt(self.path, f"duplicate metadata key {shown(key)}")
            fields[key] = self._value(self._unpack("I"))
        return fields

    def _value(self, type_id: int) -> Any:
        if type_id in _SCALAR_FORMATS:
            return self._unpack(_SCALAR_FORMATS[type_id])
        if type_id == _STRING:
            raw = self._raw_string(limit=MAX_DECODED_STRING_BYTES)
            if raw is None:
                return _Skipped(f"a string longer than {MAX_DECODED_STRING_BYTES:,} bytes")
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return _Skipped("a string that is not UTF-8")
        if type_id == _ARRAY:
            return self._array(self._unpack("I"))
        raise _corrupt(self.path, f"unknown metadata value type {type_id}")

    def _array(self, item_type: int) -> _Skipped:
        if item_type == _STRING:
            count = self._count("Q", limit=MAX_GGUF_ARRAY_ITEMS, what="array items",
                                item_bytes=_STRING_LENGTH_BYTES)
            self.num_string_items += count
            if self.num_string_items > MAX_GGUF_STRING_ITEMS:
                raise _corrupt(self.path, f"more than {MAX_GGUF_STRING_ITEMS:,} strings in metadata arrays")
            self._skip_strings(count)
            return _Skipped(f"an array of {count:,} strings", count=count)
        if item_type not in _SCALAR_FORMATS:
            raise _corrupt(self.path, f"an array of value type {item_type}; memfit reads arrays of scalars")
        fmt = _SCALAR_FORMATS[item_type]
        count = self._count("Q", limit=MAX_GGUF_ARRAY_ITEMS, what="array items",
                            item_bytes=struct.calcsize(fmt))
        values = None
        if count <= MAX_DECODED_ARRAY_ITEMS:
            values = struct.unpack_from(f"{self.order}{count}{fmt}", self.buffer, self.position)
        self.position += count * struct.calcsize(fmt)
        return _Skipped(f"an array of {count:,} numbers", count=count, values=values)

    def _skip_strings(self, count: int) -> None:
        length_format, buffer, position = struct.Struct(self.order + "Q"), self.buffer, self.position
        try:
            for _ in range(count):
                position += _STRING_LENGTH_BYTES + length_format.unpack_from(buffer, position)[0]
        except struct.error as err:
            raise _corrupt(self.path, "a string array runs past the end of the file") from err
        if position > len(buffer):
            raise _corrupt(self.path, "a string array runs past the end of the file")
        self.position = position

    def tensor_infos(self) -> list[tuple[str, tuple[int, ...], int, int]]:
        """(name, dims in GGUF order, GGML type id, data offset) of every tensor."""
        infos, names = [], set()
        for _ in range(self.num_tensors):
            name = self._name(what="a tensor name")
            if name in names:
                raise _corrupt(self.path, f"duplicate tensor {shown(name)}")
            names.add(name)
            num_dims = self._count("I", limit=MAX_GGUF_DIMS, what="dimensions", item_bytes=8)
            dims = tuple(self._unpack("Q") for _ in range(num_dims))
            infos.append((name, dims, self._unpack("I"), self._unpack("Q")))
        return infos


def _file_type_name(value: Any, *, origin: str) -> str | None:
    """'Q4_K_M' for general.file_type 15 (LlamaFileType.MOSTLY_Q4_K_M); None when absent."""
    if value is None:
        return None
    from gguf import LlamaFileType

    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{origin}: GGUF general.file_type is {shown(value)}, not a file type number")
    try:
        member = LlamaFileType(value)
    except ValueError:
        return f"file_type {value}"
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _config_from_gguf(
    metadata: _Metadata, *, tensors: tuple[TensorInfo, ...], file_type: str | None
) -> dict[str, Any]:
    """The Hugging Face config.json equivalent to a GGUF's metadata (only keys memfit reads)."""
    builder = _CONFIG_BUILDERS.get(metadata.arch)
    if builder is None:
        raise UnsupportedArchitecture(
            f"GGUF architecture {metadata.arch!r} has no mapping to a transformers config; "
            f"supported: {', '.join(sorted(_CONFIG_BUILDERS))}"
        )
    by_name = {t.name: t for t in tensors}
    config = _common_config(metadata, by_name=by_name, file_type=file_type)
    config.update(builder(metadata))
    for key, value in config.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{metadata.origin}: GGUF metadata gives {key}={value}; not a finite number")
    return {key: value for key, value in config.items() if value is not None}


def _common_config(
    metadata: _Metadata, *, by_name: dict[str, TensorInfo], file_type: str | None
) -> dict[str, Any]:
    num_heads = metadata.integer("attention.head_count", field="num_attention_heads")
    num_kv_heads = metadata.get("attention.head_count_kv")
    embedding = by_name.get("token_embd.weight")
    vocab_size = embedding.shape[0] if embedding is not None else (
        metadata.get("vocab_size") or metadata.count("tokenizer.ggml.tokens")
    )
    if vocab_size is None:
        raise ConfigError(f"{metadata.origin}: GGUF has neither token_embd.weight nor tokenizer.ggml.tokens")
    return {
        "num_hidden_layers": metadata.integer("block_count", field="num_hidden_layers"),
        "hidden_size": metadata.integer("embedding_length", field="hidden_size"),
        "intermediate_size": metadata.get("feed_forward_length"),
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads if num_kv_heads is None else num_kv_heads,
        "head_dim": metadata.get("attention.key_length"),
        "max_position_embeddings": metadata.integer("context_length", field="max_position_embeddings"),
        "vocab_size": vocab_size,
        "tie_word_embeddings": "output.weight" not in by_name,
        "rms_norm_eps": metadata.get("attention.layer_norm_rms_epsilon"),
        "rope_theta": metadata.get("rope.freq_base"),
        "sliding_window": metadata.get("attention.sliding_window"),
        "torch_dtype": _TORCH_DTYPE_BY_FILE_TYPE.get(file_type or "", QUANTIZED_GGUF_TORCH_DTYPE),
    }


def _llama(metadata: _Metadata) -> dict[str, Any]:
    num_experts = metadata.get("expert_count")
    if not num_experts:
        return {"model_type": "llama"}
    # llama.cpp stores Mixtral as llama with experts
    return {"model_type": "mixtral", "num_local_experts": num_experts,
            "num_experts_per_tok": metadata.require("expert_used_count")}


def _qwen_moe(model_type: str) -> Callable[[_Metadata], dict[str, Any]]:
    def build(metadata: _Metadata) -> dict[str, Any]:
        return {
            "model_type": model_type,
            "num_experts": metadata.require("expert_count"),
            "num_experts_per_tok": metadata.require("expert_used_count"),
            "moe_intermediate_size": metadata.require("expert_feed_forward_length"),
            "shared_expert_intermediate_size": metadata.get("expert_shared_feed_forward_length"),
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        }
    return build


def _gemma2(metadata: _Metadata) -> dict[str, Any]:
    return {
        "model_type": "gemma2",
        "attn_logit_softcapping": metadata.get("attn_logit_softcapping"),
        "final_logit_softcapping": metadata.get("final_logit_softcapping"),
        "query_pre_attn_scalar": metadata.get("attention.key_length"),
    }


def _gemma3(metadata: _Metadata) -> dict[str, Any]:
    return {"model_type": "gemma3_text", "sliding_window_pattern": GEMMA3_SLIDING_WINDOW_PATTERN,
            "final_logit_softcapping": metadata.get("final_logit_softcapping")}


def _deepseek2(metadata: _Metadata) -> dict[str, Any]:
    """DeepSeek-V2/V3 (llama.cpp's `deepseek2`): MLA dims and the dense-then-MoE stack.

    Newer conversions store the absorbed MLA form (key_length = kv_lora_rank + rope dims) and keep the
    original per-head dims in `attention.key_length_mla` / `value_length_mla`.
    """
    rope_dim = metadata.integer("rope.dimension_count")
    key_dim = metadata.get("attention.key_length_mla") or metadata.integer("attention.key_length")
    value_dim = metadata.get("attention.value_length_mla") or metadata.require("attention.value_length")
    sigmoid_gating = metadata.get("expert_gating_func") == 2  # ExpertGatingFuncType.SIGMOID: V3
    return {
        "model_type": "deepseek_v3" if sigmoid_gating else "deepseek_v2",
        "num_key_value_heads": metadata.require("attention.head_count"),
        "head_dim": None,
        "q_lora_rank": metadata.get("attention.q_lora_rank"),
        "kv_lora_rank": metadata.require("attention.kv_lora_rank"),
        "qk_rope_head_dim": rope_dim,
        "qk_nope_head_dim": key_dim - rope_dim,
        "v_head_dim": value_dim,
        "n_routed_experts": metadata.require("expert_count"),
        "num_experts_per_tok": metadata.require("expert_used_count"),
        "n_shared_experts": metadata.get("expert_shared_count") or 0,
        "moe_intermediate_size": metadata.require("expert_feed_forward_length"),
        "first_k_dense_replace": metadata.get("leading_dense_block_count") or 0,
        "n_group": metadata.get("expert_group_count"),
        "topk_group": metadata.get("expert_group_used_count"),
        "routed_scaling_factor": metadata.get("expert_weights_scale"),
    }


def _gpt2(metadata: _Metadata) -> dict[str, Any]:
    return {
        "model_type": "gpt2", "n_embd": metadata.require("embedding_length"),
        "n_layer": metadata.require("block_count"), "n_head": metadata.require("attention.head_count"),
        "n_positions": metadata.require("context_length"), "n_inner": metadata.get("feed_forward_length"),
        "layer_norm_epsilon": metadata.get("attention.layer_norm_epsilon"),
    }


def _plain(model_type: str) -> Callable[[_Metadata], dict[str, Any]]:
    return lambda metadata: {"model_type": model_type}


_CONFIG_BUILDERS: dict[str, Callable[[_Metadata], dict[str, Any]]] = {
    "llama": _llama,
    "qwen2": _plain("qwen2"),
    "qwen3": _plain("qwen3"),
    "qwen2moe": _qwen_moe("qwen2_moe"),
    "qwen3moe": _qwen_moe("qwen3_moe"),
    "gemma": _plain("gemma"),
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "phi3": _plain("phi3"),
    "olmo2": _plain("olmo2"),
    "deepseek2": _deepseek2,
    "gpt2": _gpt2,
}
"""GGUF general.architecture → the HF config keys that differ from the common llama-style ones."""
