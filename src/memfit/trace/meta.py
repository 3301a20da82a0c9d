"""Parameter counts of the real transformers model, built on the meta device (no memory, no weights).

`count_params_on_meta(config)` builds `AutoModelForCausalLM.from_config` under `torch.device("meta")` and
maps `named_parameters()` (tied weights once) onto the same tree `core.params.count_params` returns:
top-level `embeddings`, `position_embeddings`, `embedding_norm`, `layers`, `final_norm`, `lm_head`, then
any other top-level module under its own name; `layers` split into `attention`, `mlp`, `moe` and `norms`.
It serves two purposes: the cross-check of every family module, and exact counts for a `model_type` with
no family module (`spec_on_meta`), used by sources when transformers is installed.

torch and transformers are imported inside functions only: importing this module costs nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from memfit.core.errors import ConfigError, MissingExtra, UnsupportedArchitecture
from memfit.core.families._config import opt_int
from memfit.core.families._decoder import decoder_spec, read_dims
from memfit.core.params import TOP_LEVEL, count_params, layer_linears, norm_params
from memfit.core.result import ParamNode
from memfit.core.spec import MlpSpec, ModelSource, ModelSpec

_BASES = ("model.language_model.", "model.decoder.", "model.", "transformer.", "gpt_neox.", "language_model.")
"""Module prefixes of the base model inside a *ForCausalLM wrapper, longest first."""

_TOP = {
    "embed_tokens": "embeddings", "wte": "embeddings", "word_embeddings": "embeddings",
    "embed_in": "embeddings", "embeddings": "embeddings",
    "wpe": "position_embeddings", "embed_positions": "position_embeddings",
    "word_embeddings_layernorm": "embedding_norm",
    "layers": "layers", "h": "layers", "blocks": "layers",
    "norm": "final_norm", "ln_f": "final_norm", "final_layer_norm": "final_norm",
    "final_layernorm": "final_norm", "norm_f": "final_norm",
    "lm_head": "lm_head", "embed_out": "lm_head",
}
"""First module name below the base model → top-level component."""

_LAYER_ATTENTION = {"self_attn", "attn", "self_attention", "attention"}
_LAYER_MLP = {"mlp", "feed_forward", "block_sparse_moe", "shared_mlp"}
_LAYER_MAMBA = {"mamba", "linear_attn"}   # linear_attn: Qwen3NextGatedDeltaNet
_MAMBA_LEAVES = {"in_proj", "out_proj", "conv1d", "dt_bias", "A_log", "D", "norm"}
"""Parameters of a Mamba-2 mixer (GraniteMoeHybridMambaLayer `mamba`, NemotronHMamba2Mixer `mixer`)."""
_ATTENTION_LEAVES = {"q_proj", "k_proj", "v_proj", "o_proj"}
_LAYER_INDEX = re.compile(r"^(\d+)\.(.*)$")


def _component(name: str) -> tuple[str, ...]:
    """The ParamNode path of one parameter name (e.g. 'model.layers.3.self_attn.q_proj.weight')."""
    rest = name
    for base in _BASES:
        if name.startswith(base):
            rest = name[len(base):]
            break
    head, _, tail = rest.partition(".")
    top = _TOP.get(head)
    if top is None:
        return (head if rest != name else name.split(".")[0],)
    if top != "layers":
        return (top,)
    match = _LAYER_INDEX.match(tail)
    if match is None:
        return ("layers",)
    inner = match.group(2)
    module, _, leaf = inner.partition(".")
    if module in _LAYER_ATTENTION:
        return ("layers", "attention", leaf.split(".")[0])
    if module in _LAYER_MAMBA:
        return ("layers", "mamba", leaf.split(".")[0])
    if module == "mixer":  # Nemotron-H: one `mixer` per block, Mamba-2, attention, MLP or MoE
        first = leaf.split(".")[0]
        if first in _MAMBA_LEAVES:
            return ("layers", "mamba", first)
        if first in _ATTENTION_LEAVES:
            return ("layers", "attention", first)
        return _mlp_component(leaf)
    if module in {"fc1", "fc2"}:  # OPT keeps its MLP Linears directly in the layer
        return ("layers", "mlp", module)
    if module in _LAYER_MLP:
        return _mlp_component(leaf)
    return ("layers", "norms")


def _mlp_component(leaf: str) -> tuple[str, ...]:
    """The path of a parameter below a layer's MLP or MoE module ('experts.gate_up_proj', 'up_proj.bias')."""
    first, _, rest = leaf.partition(".")
    if first == "experts":
        return ("layers", "moe", "experts", rest.split(".")[0].removesuffix("_bias"))
    if first in {"gate", "router"}:
        return ("layers", "moe", "router")
    if first in {"shared_experts", "shared_expert"}:
        return ("layers", "moe", "shared_experts", rest.split(".")[0])
    if first == "shared_expert_gate":
        return ("layers", "moe", "shared_expert_gate")
    return ("layers", "mlp", first)


def param_tree(named: Iterable[tuple[str, int]], *, name: str) -> ParamNode:
    """A ParamNode tree from (parameter name, numel) pairs, in first-seen order of components."""
    counts: dict[tuple[str, ...], int] = {}
    for param_name, numel in named:
        path = _component(param_name)
        counts[path] = counts.get(path, 0) + numel
    return _tree(name, counts)


def _tree(name: str, counts: Mapping[tuple[str, ...], int]) -> ParamNode:
    heads: dict[str, dict[tuple[str, ...], int]] = {}
    for path, n in counts.items():
        if path:
            heads.setdefault(path[0], {})[path[1:]] = n
    if not heads:
        return ParamNode(name=name, num_params=counts.get((), 0))
    own = counts.get((), 0)
    children = [_tree(child, sub) for child, sub in heads.items()]
    if own:
        children.append(ParamNode(name="other", num_params=own))
    return ParamNode.group(name, children)


def auto_class(model_type: str) -> Any:
    """The Auto class that builds a model_type with its LM head: AutoModelForCausalLM, or for
    vision-language types it does not map (Qwen2.5-VL, Qwen3-VL in transformers 5.17),
    AutoModelForImageTextToText, whose *ForConditionalGeneration class has the same head."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    if (model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES):
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


LEGACY_BOOL_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "llama4": (("text_config", "attn_temperature_tuning"),),
    "llama4_text": (("attn_temperature_tuning",),),
}
"""Boolean fields that configs saved by transformers 4.x hold as integers, which transformers 5.4+'s strict
config classes refuse: Llama 4's published configs (saved by 4.51) have `"attn_temperature_tuning": 4`, a
flag 4.51 read by truthiness (Llama4TextAttention: `if self.attn_temperature_tuning and not self.use_rope`).
`legacy_fields` turns such an integer into the bool 4.x meant, so trace and the meta count build the model
the checkpoint was saved for. Source: transformers 5.17 Llama4TextConfig (`attn_temperature_tuning: bool`,
@strict); Unsloth's import fix for the same configs (tests/test_llama4_legacy_config.py)."""


def legacy_fields(model_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` (a config without model_type) with LEGACY_BOOL_FIELDS integers turned into bools."""
    out = dict(fields)
    for path in LEGACY_BOOL_FIELDS.get(model_type, ()):
        scope = out
        for key in path[:-1]:
            if not isinstance(scope.get(key), dict):
                break
            scope[key] = scope = dict(scope[key])
        else:
            value = scope.get(path[-1])
            if isinstance(value, int) and not isinstance(value, bool):
                scope[path[-1]] = bool(value)
    return out


def build_on_meta(config: Mapping[str, Any], *, trust_remote_code: bool = False) -> Any:
    """`AutoModelForCausalLM.from_config(config)` on the meta device (the *ForCausalLM model)."""
    try:
        import torch
        from transformers import AutoConfig
    except ImportError as err:
        raise MissingExtra("counting on the meta device needs torch and transformers: "
                           "pip install 'memfit[trace]'") from err
    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ConfigError("config field 'model_type' is missing")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        remote = " (its config names remote code in auto_map, which memfit does not download or run)"
        raise UnsupportedArchitecture(f"transformers {_version()} does not know model_type {model_type!r}"
                                      f"{remote if 'auto_map' in config else ''}")
    try:
        hf_config = AutoConfig.for_model(model_type, **legacy_fields(model_type, fields))
    except Exception as err:  # transformers validates configs with its own error types
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"transformers rejects this {model_type!r} config: {first_line}") from err
    try:
        with torch.device("meta"):
            return auto_class(model_type).from_config(hf_config, trust_remote_code=trust_remote_code)
    except ValueError as err:
        raise UnsupportedArchitecture(f"model_type {model_type!r} has no causal LM class: {err}") from err
    except (AssertionError, TypeError, AttributeError, RuntimeError) as err:
        raise ConfigError(f"transformers could not build model_type {model_type!r} from this config: "
                          f"{type(err).__name__}: {str(err).splitlines()[0]}") from err


def _version() -> str:
    import transformers

    return str(transformers.__version__)


def count_params_on_meta(config: Mapping[str, Any], *, name: str = "model",
                         trust_remote_code: bool = False) -> ParamNode:
    """Exact parameter counts of the transformers model for `config`, by component (tied weights once)."""
    model = build_on_meta(config, trust_remote_code=trust_remote_code)
    return param_tree(((n, p.numel()) for n, p in model.named_parameters()), name=name)


def config_from_json(text: str) -> dict[str, Any]:
    """A config.json's text as a dict (ConfigError when it is not a JSON object)."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"config.json is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ConfigError("config.json must be a JSON object")
    return config


META_ASSUMPTION = (
    "model_type {model_type!r} has no family module: parameters were counted exactly on the meta device "
    "(transformers {version}); attention shapes come from the standard config keys (num_attention_heads, "
    "num_key_value_heads, head_dim) and the MLP width was fitted to the counted layer parameters"
)


def spec_on_meta(config: Mapping[str, Any], *, name: str, source: ModelSource,
                 trust_remote_code: bool = False) -> tuple[ModelSpec, tuple[str, ...]]:
    """A best-effort ModelSpec for a model_type with no family module, and the assumptions it rests on.

    Attention comes from the standard keys, as for Llama. The parameter total is exact: the model is built on
    the meta device, the (gated, bias-free) MLP width is solved from the counted parameters per layer, and
    whatever is left over (odd biases, extra norms, top-level modules such as a vision tower) is kept as
    `extra_params`. A count that the standard-key guess already exceeds is reported in the assumptions.
    """
    counted = count_params_on_meta(config, name=name, trust_remote_code=trust_remote_code)
    model_type = str(config.get("model_type"))
    dims = read_dims(config, name=name, max_positions_default=2048)
    by_name = {node.name: node.num_params for node in counted.children}
    guess = _fitted_spec(config, name=name, source=source, model_type=model_type,
                         layers_params=by_name.get("layers", 0), num_layers=dims.num_layers)
    guess = dataclasses.replace(
        guess, tie_word_embeddings="lm_head" not in by_name,
        final_norm=guess.final_norm if "final_norm" in by_name else None,
        learned_positions=by_name.get("position_embeddings", 0) // dims.hidden_size,
    )
    extras = [(node, n) for node, n in by_name.items() if node not in TOP_LEVEL]
    ours = count_params(guess).num_params
    left = counted.num_params - ours - sum(n for _, n in extras)
    if left > 0:
        extras.append(("other", left))
    spec = dataclasses.replace(guess, extra_params=tuple(extras),
                               source=dataclasses.replace(source, kind="meta"))
    notes = [META_ASSUMPTION.format(model_type=model_type, version=_version())]
    if left < 0:
        notes.append(f"the standard-key guess for {model_type!r} has {-left:,} more parameters than the "
                     "model built on the meta device; weights may be over-estimated by that many")
    return spec, tuple(notes)


def _fitted_spec(config: Mapping[str, Any], *, name: str, source: ModelSource, model_type: str,
                 layers_params: int, num_layers: int) -> ModelSpec:
    """A llama-like spec whose gated MLP width makes each layer hold as close to the counted share as fits."""
    base = decoder_spec(config, name=name, source=source, family=model_type, max_positions_default=2048,
                        mlp_for_layer=lambda _i: MlpSpec(intermediate_size=1, gated=True))
    layer = base.layers[0]
    h = base.hidden_size
    fixed = sum(lin.num_params for lin in layer_linears(base, layer) if lin.role == "attention")
    fixed += layer.norms_per_layer * norm_params(layer.norm, h)
    per_layer = layers_params // num_layers - fixed
    declared = opt_int(config, "intermediate_size", default=None, name=name)
    if declared is not None and 3 * h * declared <= per_layer:
        width = declared
    else:
        width = max(1, per_layer // (3 * h))
    mlp = MlpSpec(intermediate_size=width, gated=True)
    return dataclasses.replace(base, layers=tuple(dataclasses.replace(layer, mlp=mlp) for _ in base.layers))
