"""Llama 4 text decoder (Llama4ForCausalLM): GQA attention with chunked local attention on RoPE layers and
global NoPE layers, MoE layers with one shared expert interleaved with dense MLP layers.

Source: transformers 5.17.0 models/llama4 (Llama4TextConfig.__post_init__, Llama4TextAttention,
Llama4TextDecoderLayer, Llama4TextMoe, Llama4TextExperts, Llama4Router):
- `no_rope_layers[i]` 1: layer i rotates q and k and is a "chunked_attention" layer (a query sees the keys
  of its own attention_chunk_size block); 0: a NoPE "full_attention" layer. Without the list, every
  no_rope_layer_interval-th layer is NoPE; an explicit `layer_types` wins;
- `use_qk_norm`: a weightless L2 norm of q and k on the RoPE layers only;
- `moe_layers` (default every interleave_moe_layer_step-th layer, from step − 1) hold Llama4TextMoe:
  a router nn.Linear(h, E), experts as fused (E, h, 2I) and (E, I, h) Parameters of intermediate_size,
  and a shared SwiGLU expert of intermediate_size; the other layers a SwiGLU MLP of intermediate_size_mlp;
- the experts run densely: every token is repeated to every expert and scaled by a sigmoid score that is
  zero off its top-k (MoeSpec.dense_dispatch).
The cache keeps chunked layers in DynamicSlidingWindowLayer with sliding_window = attention_chunk_size
(cache_utils.get_layer_types_and_kwargs): memfit sizes them as sliding-window layers of the chunk size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memfit.core.choices import QkNorm
from memfit.core.errors import ConfigError
from memfit.core.families._config import opt_bool, opt_int, opt_list, req_int
from memfit.core.families._decoder import decoder_spec, dense_mlp, read_dims
from memfit.core.families._moe import moe_block
from memfit.core.limits import MAX_NUM_LAYERS
from memfit.core.spec import AttentionSpec, MlpSpec, ModelSource, ModelSpec, ModuleNames, MoeSpec

CHUNKED = "chunked_attention"
FULL = "full_attention"
LLAMA4 = ModuleNames(router="router")
"""Llama4TextMoe names its router `router` (an nn.Linear); experts gate_up_proj / down_proj as elsewhere."""


def _layer_list(config: Mapping[str, Any], key: str, *, name: str, num_layers: int,
                allowed: range) -> list[int] | None:
    """An integer list field (moe_layers, no_rope_layers) with every entry in `allowed`; None when absent."""
    values = opt_list(config, key, name=name)
    if values is None:
        return None
    if len(values) > MAX_NUM_LAYERS or any(
            isinstance(v, bool) or not isinstance(v, int) or v not in allowed for v in values):
        raise ConfigError(f"{name}: config field {key!r} must list integers in {allowed.start}.."
                          f"{allowed.stop - 1} (one per layer at most, {num_layers} layers)")
    return values


def layer_types(config: Mapping[str, Any], *, name: str, num_layers: int) -> list[str]:
    """Each layer's attention kind: `layer_types` when given, else chunked on RoPE layers, full on NoPE ones.

    Source: transformers 5.17.0 Llama4TextConfig.__post_init__ (an empty no_rope_layers list means absent).
    """
    rope = _rope_flags(config, name=name, num_layers=num_layers)
    types = opt_list(config, "layer_types", name=name)
    if types is None:
        types = [CHUNKED if flag else FULL for flag in rope]
    if len(types) != num_layers or any(t not in (CHUNKED, FULL) for t in types):
        raise ConfigError(f"{name}: config field 'layer_types' must give {CHUNKED!r} or {FULL!r} for each "
                          f"of the {num_layers} layers")
    return list(types)


def _rope_flags(config: Mapping[str, Any], *, name: str, num_layers: int) -> list[int]:
    flags = _layer_list(config, "no_rope_layers", name=name, num_layers=num_layers, allowed=range(2))
    if not flags:
        interval = opt_int(config, "no_rope_layer_interval", default=4, name=name) or 4
        flags = [int((i + 1) % interval != 0) for i in range(num_layers)]
    if len(flags) < num_layers:
        raise ConfigError(f"{name}: config field 'no_rope_layers' has {len(flags)} entries for "
                          f"num_hidden_layers={num_layers}")
    return flags[:num_layers]


def moe_layers(config: Mapping[str, Any], *, name: str, num_layers: int) -> frozenset[int]:
    """Indices of the MoE layers: `moe_layers`, else every interleave_moe_layer_step-th from step − 1."""
    listed = _layer_list(config, "moe_layers", name=name, num_layers=num_layers,
                         allowed=range(MAX_NUM_LAYERS + 1))
    if listed is not None:
        return frozenset(listed)
    step = opt_int(config, "interleave_moe_layer_step", default=1, name=name) or 1
    return frozenset(range(step - 1, num_layers, step))


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource,
                     family: str = "llama4_text") -> ModelSpec:
    """A Llama 4 text ModelSpec from its config.json (or a llama4 checkpoint's text_config)."""
    num_layers = read_dims(config, name=name).num_layers
    types = layer_types(config, name=name, num_layers=num_layers)
    rope = _rope_flags(config, name=name, num_layers=num_layers)
    chunk = opt_int(config, "attention_chunk_size", default=None, name=name)
    if chunk is None and CHUNKED in types:
        raise ConfigError(f"{name}: config field 'attention_chunk_size' is missing but layers are chunked")
    sparse = moe_layers(config, name=name, num_layers=num_layers)
    width = req_int(config, "intermediate_size", name=name)
    activation = str(config.get("hidden_act") or "silu")
    moe: MoeSpec = moe_block(config, name=name, expert_width=width, num_shared=1,
                             shared=MlpSpec(intermediate_size=width, gated=True, activation=activation),
                             dense_dispatch=True, router_is_linear=True)
    dense = dense_mlp(config, name=name, key="intermediate_size_mlp")
    qk_norm = QkNorm.L2 if opt_bool(config, "use_qk_norm", default=True, name=name) else QkNorm.NONE

    def attention(index: int, att: AttentionSpec) -> AttentionSpec:
        chunked = types[index] == CHUNKED
        return dataclasses.replace(att, sliding_window=chunk if chunked else None, chunked=chunked,
                                   rotary=bool(rope[index]),
                                   qk_norm=qk_norm if rope[index] else QkNorm.NONE)

    return decoder_spec(config, name=name, source=source, family=family, modules=LLAMA4,
                        attention_for_layer=attention, keeps_attention_output=True,
                        mlp_for_layer=lambda i: moe if i in sparse else dense)
