"""GGUF files → ModelSpec with exact per-tensor GGML types and bytes; extra [gguf].

The GGUF's `<arch>.*` metadata is rewritten as the equivalent Hugging Face config.json, which goes through
the family registry like any other config, so a GGUF and its source checkpoint get the same shapes. The
tensors are attached as a `CheckpointInfo(format="gguf")`: GGML type names ("Q4_K", "F16") and exact byte
sizes, with shapes in PyTorch order (GGUF stores `ne` innermost first). Only metadata is read: `GGUFReader`
maps the file and never touches tensor data here.
Source: the GGUF spec, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md; key names from
gguf-py's `gguf.constants.Keys`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memfit.core.errors import ConfigError, MissingExtra, UnsupportedArchitecture
from memfit.core.spec import CheckpointInfo, ModelSource, ModelSpec, TensorInfo
from memfit.sources._config import build_spec

QUANTIZED_GGUF_TORCH_DTYPE = "float16"
"""Checkpoint dtype given to quantized GGUFs: llama.cpp computes activations and its default K/V cache in
F16. Source: llama.cpp common/arg.cpp (--cache-type-k/-v default f16)."""

GEMMA3_SLIDING_WINDOW_PATTERN = 6
"""Gemma 3: every 6th layer is global, the others slide; GGUF does not store it.
Source: llama.cpp src/llama-model.cpp, LLM_ARCH_GEMMA3 (hparams.set_swa_pattern(6))."""

_SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
"""A split GGUF's shard names, `<stem>-00001-of-00003.gguf`. Source: gguf-py's SHARD_NAME_FORMAT."""

_TORCH_DTYPE_BY_FILE_TYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


class _Metadata:
    """The GGUF key/value fields, read by their short `<arch>.` names."""

    def __init__(self, fields: dict[str, Any], *, arch: str, origin: str) -> None:
        self._fields, self.arch, self._origin = fields, arch, origin

    def get(self, key: str) -> Any:
        field = self._fields.get(f"{self.arch}.{key}", self._fields.get(key))
        return field.contents() if field is not None else None

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise ConfigError(
                f"{self._origin}: GGUF metadata lacks {self.arch}.{key}; a corrupt or partial file?"
            )
        return value

    def count(self, key: str) -> int | None:
        """The number of elements of an array field (token lists: counted, not decoded)."""
        field = self._fields.get(key)
        return len(field.data) if field is not None else None


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
    spec = build_spec(config, name=split["stem"] if split else path.stem, source=source)
    return dataclasses.replace(spec, checkpoint=checkpoint)


def read_gguf(path: Path) -> tuple[dict[str, Any], CheckpointInfo]:
    """The HF-style config dict equivalent to a GGUF's metadata, and its stored tensors.

    A split GGUF (`<stem>-00001-of-00003.gguf`, any shard given) takes its metadata from the first shard
    and its tensors from every shard.

    Raises:
        MissingExtra, ConfigError, UnsupportedArchitecture: as `load_gguf`.
    """
    shards = _shard_paths(path)
    reader = _open_reader(shards[0])
    fields = dict(reader.fields)
    arch_field = fields.get("general.architecture")
    if arch_field is None:
        raise ConfigError(f"{path}: GGUF metadata lacks general.architecture; a corrupt or partial file?")
    metadata = _Metadata(fields, arch=str(arch_field.contents()), origin=str(path))
    tensors = tuple(_tensor_info(tensor) for tensor in reader.tensors) + tuple(
        _tensor_info(tensor) for shard in shards[1:] for tensor in _open_reader(shard).tensors
    )
    expected = metadata.get("split.tensors.count")
    if expected is not None and expected != len(tensors):
        raise ConfigError(f"{path}: split GGUF declares {expected} tensors, its shards hold {len(tensors)}")
    file_type = _file_type_name(metadata.get("general.file_type"))
    config = _config_from_gguf(metadata, tensors=tensors, file_type=file_type)
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


def _open_reader(path: Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError as err:
        raise MissingExtra("reading .gguf files needs the gguf package: pip install 'memfit[gguf]'") from err
    try:
        return GGUFReader(path)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: missing") from err
    except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ConfigError(
            f"{path}: not a readable GGUF file, truncated or corrupt ({reason}); re-download it"
        ) from err


def _tensor_info(tensor: Any) -> TensorInfo:
    # GGUF lists dims innermost first (ne0 = columns); PyTorch order is the reverse
    shape = tuple(int(dim) for dim in reversed(list(tensor.shape)))
    return TensorInfo(
        name=str(tensor.name), dtype=tensor.tensor_type.name, shape=shape, nbytes=int(tensor.n_bytes)
    )


def _file_type_name(value: Any) -> str | None:
    """'Q4_K_M' for general.file_type 15 (LlamaFileType.MOSTLY_Q4_K_M); None when absent."""
    if value is None:
        return None
    from gguf import LlamaFileType

    try:
        member = LlamaFileType(int(value))
    except ValueError:
        return f"file_type {int(value)}"
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
    return {key: value for key, value in config.items() if value is not None}


def _common_config(
    metadata: _Metadata, *, by_name: dict[str, TensorInfo], file_type: str | None
) -> dict[str, Any]:
    num_heads = metadata.require("attention.head_count")
    embedding = by_name.get("token_embd.weight")
    vocab_size = embedding.shape[0] if embedding is not None else (
        metadata.get("vocab_size") or metadata.count("tokenizer.ggml.tokens")
    )
    if vocab_size is None:
        raise ConfigError(f"{metadata.arch}: GGUF has neither token_embd.weight nor tokenizer.ggml.tokens")
    return {
        "num_hidden_layers": metadata.require("block_count"),
        "hidden_size": metadata.require("embedding_length"),
        "intermediate_size": metadata.get("feed_forward_length"),
        "num_attention_heads": num_heads,
        "num_key_value_heads": metadata.get("attention.head_count_kv") or num_heads,
        "head_dim": metadata.get("attention.key_length"),
        "max_position_embeddings": metadata.require("context_length"),
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
    rope_dim = metadata.require("rope.dimension_count")
    key_dim = metadata.get("attention.key_length_mla") or metadata.require("attention.key_length")
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
