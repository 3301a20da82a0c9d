"""The generic llama-like mapping: config.json → ModelSpec for pre-norm decoders with RMSNorm and GQA.

Llama, Mistral, Qwen2/3, Granite, Starcoder2, Phi-3, OLMo 2, Cohere and the MoE families call
`decoder_spec` with a few keyword flags; the MoE families pass `mlp_for_layer`. Field names and defaults
follow transformers 5.17.0 `LlamaConfig` (head_dim defaults to hidden_size // num_attention_heads,
num_key_value_heads to num_attention_heads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memfit.core.choices import AttnImpl, EagerScores, NormKind, QkNorm, SoftmaxDtype
from memfit.core.dtypes import DType
from memfit.core.errors import ConfigError
from memfit.core.families._config import checkpoint_dtype, opt_bool, opt_int, opt_list, req_int
from memfit.core.families._moe import PEFT_FUSED_EXPERT_FAMILIES
from memfit.core.spec import AttentionSpec, LayerSpec, MlpSpec, ModelSource, ModelSpec, ModuleNames, MoeSpec

SLIDING = "sliding_attention"
FULL = "full_attention"
HIDDEN_DROPOUT_KEYS = ("resid_pdrop", "hidden_dropout", "hidden_dropout_prob", "dropout")
"""config.json keys of dropout on the residual branches (GPT-2, Falcon, BERT-style, OPT)."""
ATTN_DROPOUT_KEYS = ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob")
"""config.json keys of dropout on the attention probabilities."""
CONFIG_ATTENTION_KEYS = ("attn_implementation", "_attn_implementation")
"""config.json keys transformers reads as the model's attention implementation when the caller passes none
(gemma-2-27b's published config carries `"_attn_implementation": "eager"`). Source: transformers 5.17
PretrainedConfig; checked on the meta device."""


def config_dropouts(config: Mapping[str, Any]) -> tuple[bool, bool]:
    """(hidden dropout > 0, attention dropout > 0) as the config sets them."""
    def positive(keys: tuple[str, ...]) -> bool:
        return any(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                   for v in (config.get(k) for k in keys))

    return positive(HIDDEN_DROPOUT_KEYS), positive(ATTN_DROPOUT_KEYS)


def default_attention(config: Mapping[str, Any], *, sdpa_supported: bool) -> AttnImpl:
    """What transformers runs when no attn_implementation is passed: SDPA unless the family's classes do not
    support it or the config itself asks for another implementation."""
    asked = next((config[k] for k in CONFIG_ATTENTION_KEYS if isinstance(config.get(k), str)), None)
    return AttnImpl.SDPA if sdpa_supported and asked in (None, "sdpa") else AttnImpl.EAGER


@dataclass(frozen=True, slots=True, kw_only=True)
class Dims:
    """The shape fields nearly every decoder config carries, under their HF names."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int


def read_dims(config: Mapping[str, Any], *, name: str, max_positions_default: int | None = None) -> Dims:
    """Hidden size, layers, heads, KV heads, head_dim, vocabulary and context length from `config`."""
    hidden = req_int(config, "hidden_size", "n_embd", "n_embed", "d_model", name=name)
    heads = req_int(config, "num_attention_heads", "n_head", name=name)
    kv_heads = opt_int(config, "num_key_value_heads", default=heads, name=name) or heads
    head_dim = opt_int(config, "head_dim", default=None, name=name)
    if head_dim is None:
        if hidden % heads:
            raise ConfigError(f"{name}: hidden_size={hidden} is not divisible by "
                              f"num_attention_heads={heads}; set head_dim")
        head_dim = hidden // heads
    positions = opt_int(config, "max_position_embeddings", "n_positions", "seq_length",
                        default=max_positions_default, name=name)
    if positions is None:
        raise ConfigError(f"{name}: config field 'max_position_embeddings' is missing")
    return Dims(
        hidden_size=hidden,
        num_layers=req_int(config, "num_hidden_layers", "n_layer", name=name),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=req_int(config, "vocab_size", name=name),
        max_position_embeddings=positions,
    )


def layer_windows(config: Mapping[str, Any], *, name: str, num_layers: int,
                  default_types: Callable[[int], list[str]] | None = None) -> tuple[int | None, ...]:
    """The sliding window of each layer (None: global attention).

    `layer_types` ("sliding_attention"/"full_attention" per layer) wins when present; otherwise the family's
    `default_types(num_layers)` (the rule its transformers config class applies); otherwise every layer
    slides when `sliding_window` is set (Mistral) and none does when it is null.
    """
    window = opt_int(config, "sliding_window", default=None, name=name)
    types = opt_list(config, "layer_types", name=name)
    if types is None and default_types is not None:
        types = default_types(num_layers)
    if types is None:
        return (window,) * num_layers
    if len(types) != num_layers:
        raise ConfigError(f"{name}: config field 'layer_types' has {len(types)} entries for "
                          f"num_hidden_layers={num_layers}")
    if window is None and SLIDING in types:
        raise ConfigError(f"{name}: config field 'sliding_window' is missing but layer_types has "
                          "sliding layers")
    return tuple(window if kind == SLIDING else None for kind in types)


def qwen_windows(config: Mapping[str, Any], *, name: str) -> tuple[int | None, ...]:
    """Qwen2/Qwen3 rule: only with use_sliding_window, layers from max_window_layers on slide.

    Source: transformers 5.17.0 Qwen2Config.__post_init__ (sliding_window is dropped unless
    use_sliding_window; layer_types default to sliding for i >= max_window_layers).
    """
    num_layers = read_dims(config, name=name).num_layers
    if not opt_bool(config, "use_sliding_window", default=False, name=name):
        return (None,) * num_layers
    first = opt_int(config, "max_window_layers", default=28, name=name) or 0
    return layer_windows(config, name=name, num_layers=num_layers,
                         default_types=lambda n: [SLIDING if i >= first else FULL for i in range(n)])


def qwen_moe_windows(config: Mapping[str, Any], *, name: str, every_other: bool) -> tuple[int | None, ...]:
    """Qwen MoE rules, only with use_sliding_window: Qwen2-MoE slides on even layers below max_window_layers
    (every_other), Qwen3-MoE on every layer.

    Source: transformers 5.17.0 Qwen2MoeConfig.__post_init__ and Qwen3MoeAttention (config.sliding_window).
    """
    num_layers = read_dims(config, name=name).num_layers
    if not opt_bool(config, "use_sliding_window", default=False, name=name):
        return (None,) * num_layers
    if not every_other:
        return layer_windows({k: v for k, v in config.items() if k != "layer_types"}, name=name,
                             num_layers=num_layers)
    last = opt_int(config, "max_window_layers", default=28, name=name) or 0
    return layer_windows(config, name=name, num_layers=num_layers,
                         default_types=lambda n: [SLIDING if (i + 1) % 2 and i < last else FULL
                                                  for i in range(n)])


def dense_mlp(config: Mapping[str, Any], *, name: str, bias: bool = False, key: str = "intermediate_size",
              gated: bool = True, default: int | None = None) -> MlpSpec:
    """The dense feed-forward block: gated (gate, up, down) unless `gated=False`.

    `default` is the width when `key` is absent or null (GPT-2's n_inner: 4 × hidden_size).
    """
    width = opt_int(config, key, default=default, name=name)
    if width is None:
        raise ConfigError(f"{name}: config field {key!r} is missing")
    keys = ("hidden_act", "hidden_activation", "activation_function", "activation")
    activation = next((config[k] for k in keys if config.get(k)), "silu")
    return MlpSpec(intermediate_size=width, gated=gated, bias=bias, activation=str(activation))


def decoder_spec(
    config: Mapping[str, Any],
    *,
    name: str,
    source: ModelSource,
    family: str,
    tie_default: bool = False,
    qkv_bias: bool | None = None,
    out_bias: bool | None = None,
    mlp_bias: bool | None = None,
    qk_norm: QkNorm = QkNorm.NONE,
    qk_norm_kind: NormKind = NormKind.RMS,
    fused_qkv: bool = False,
    norm: NormKind = NormKind.RMS,
    norms_per_layer: int = 2,
    parallel_block: bool = False,
    final_norm: NormKind | None = NormKind.RMS,
    windows: tuple[int | None, ...] | None = None,
    window_on_every_layer: bool = False,
    mlp_for_layer: Callable[[int], MlpSpec | MoeSpec] | None = None,
    attention_for_layer: Callable[[int, AttentionSpec], AttentionSpec] | None = None,
    default_dtype: DType = DType.FP32,
    num_kv_heads: int | None = None,
    max_positions_default: int | None = None,
    modules: ModuleNames = ModuleNames(),
    sdpa_supported: bool = True,
    alibi: bool = False,
    eager_scores: EagerScores = EagerScores.SOFTMAX_FP32,
    qkv_copies: bool = False,
    rotary: bool = True,
    sdpa_gqa: bool = True,
    softmax_dtype: SoftmaxDtype = SoftmaxDtype.FP32,
    **spec_fields: Any,
) -> ModelSpec:
    """A ModelSpec for a llama-like decoder; flags default to Llama's and to the config's own fields.

    qkv_bias/out_bias/mlp_bias default to the config's `attention_bias`/`mlp_bias` (False when absent).
    Windows: `windows` when given; else, with `window_on_every_layer` (Mistral, Mixtral, Phi-3, StarCoder2),
    the config's `sliding_window` on every layer; else none (Llama-like code ignores `sliding_window`).
    extra keyword arguments go to `ModelSpec` unchanged (learned_positions, lm_head_bias, ...).
    How the family's code runs (module names, SDPA support, ALiBi, eager score buffers, qkv copies, norm
    upcasts) comes from the family's keyword flags; what the config decides (dropouts, soft-capping, an
    attn_implementation it names) is read here, so no formula reads config.json again.
    """
    dims = read_dims(config, name=name, max_positions_default=max_positions_default)
    kv_heads = dims.num_kv_heads if num_kv_heads is None else num_kv_heads
    attention_bias = opt_bool(config, "attention_bias", default=False, name=name)
    if mlp_for_layer is None:
        bias = opt_bool(config, "mlp_bias", default=False, name=name) if mlp_bias is None else mlp_bias
        dense = dense_mlp(config, name=name, bias=bias)
        mlp_for_layer = lambda _index: dense  # noqa: E731
    if windows is None and window_on_every_layer:
        windows = layer_windows(config, name=name, num_layers=dims.num_layers)
    elif windows is None:
        windows = (None,) * dims.num_layers
    hidden_dropout, attention_dropout = config_dropouts(config)
    shared: dict[LayerSpec, LayerSpec] = {}
    layers = []
    for index, window in enumerate(windows):
        attention = AttentionSpec(
            num_heads=dims.num_heads, num_kv_heads=kv_heads, head_dim=dims.head_dim,
            qkv_bias=attention_bias if qkv_bias is None else qkv_bias,
            out_bias=attention_bias if out_bias is None else out_bias,
            qk_norm=qk_norm, qk_norm_kind=qk_norm_kind, sliding_window=window, fused_qkv=fused_qkv,
            alibi=alibi, softcap=config.get("attn_logit_softcapping") is not None, qkv_copies=qkv_copies,
            rotary=rotary, sdpa_gqa=sdpa_gqa, softmax_dtype=softmax_dtype,
            eager_scores=eager_scores,
        )
        if attention_for_layer is not None:
            attention = attention_for_layer(index, attention)
        mlp = mlp_for_layer(index)
        if isinstance(mlp, MoeSpec) and family in PEFT_FUSED_EXPERT_FAMILIES:
            mlp = dataclasses.replace(mlp, peft_wraps_experts=True)
        layer = LayerSpec(attention=attention, mlp=mlp, norm=norm, norms_per_layer=norms_per_layer,
                          parallel_block=parallel_block)
        layers.append(shared.setdefault(layer, layer))
    return ModelSpec(
        name=name,
        family=family,
        vocab_size=dims.vocab_size,
        hidden_size=dims.hidden_size,
        max_position_embeddings=dims.max_position_embeddings,
        tie_word_embeddings=opt_bool(config, "tie_word_embeddings", default=tie_default, name=name),
        layers=tuple(layers),
        source=source,
        checkpoint_dtype=checkpoint_dtype(config, name=name, default=default_dtype),
        final_norm=final_norm,
        modules=modules,
        default_attention=default_attention(config, sdpa_supported=sdpa_supported),
        hidden_dropout=hidden_dropout,
        attention_dropout=attention_dropout,
        **spec_fields,
    )
