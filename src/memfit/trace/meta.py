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

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from memfit.core.errors import ConfigError, MissingExtra, UnsupportedArchitecture
from memfit.core.result import ParamNode

_BASES = ("model.language_model.", "model.decoder.", "model.", "transformer.", "gpt_neox.", "language_model.")
"""Module prefixes of the base model inside a *ForCausalLM wrapper, longest first."""

_TOP = {
    "embed_tokens": "embeddings", "wte": "embeddings", "word_embeddings": "embeddings",
    "embed_in": "embeddings",
    "wpe": "position_embeddings", "embed_positions": "position_embeddings",
    "word_embeddings_layernorm": "embedding_norm",
    "layers": "layers", "h": "layers", "blocks": "layers",
    "norm": "final_norm", "ln_f": "final_norm", "final_layer_norm": "final_norm",
    "final_layernorm": "final_norm", "norm_f": "final_norm",
    "lm_head": "lm_head", "embed_out": "lm_head",
}
"""First module name below the base model → top-level component."""

_LAYER_ATTENTION = {"self_attn", "attn", "self_attention", "attention"}
_LAYER_MLP = {"mlp", "feed_forward", "block_sparse_moe"}
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


def build_on_meta(config: Mapping[str, Any], *, trust_remote_code: bool = False) -> Any:
    """`AutoModelForCausalLM.from_config(config)` on the meta device (the *ForCausalLM model)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as err:
        raise MissingExtra("counting on the meta device needs torch and transformers: "
                           "pip install 'memfit[trace]'") from err
    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ConfigError("config field 'model_type' is missing")
    try:
        hf_config = AutoConfig.for_model(model_type, **fields)
    except ValueError as err:
        raise UnsupportedArchitecture(f"transformers does not know model_type {model_type!r}: {err}") from err
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    except ValueError as err:
        raise UnsupportedArchitecture(f"model_type {model_type!r} has no causal LM class: {err}") from err


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
