"""count_params equals the real transformers model built on the meta device, per component, for every config.

Configs: the bundled catalog (src/memfit/catalog/models/*.json, whatever exists) and tests/data/configs/
(published configs and small per-family ones). Each is built with AutoModelForCausalLM.from_config under
torch.device("meta"); named_parameters() prefixes are mapped onto ParamNode paths by memfit.trace.meta.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import requires_transformers

from memfit.core.errors import ConfigError
from memfit.core.families import FAMILIES, spec_from_config
from memfit.core.families._defaults import CONFIG_DEFAULTS, REQUIRED
from memfit.core.params import count_params, layer_linears
from memfit.core.spec import ModelSource, ModelSpec

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "src" / "memfit" / "catalog" / "models").glob("*.json")) + sorted(
    (ROOT / "tests" / "data" / "configs").glob("*.json")
)


def _spec(path: Path) -> tuple[dict[str, Any], ModelSpec]:
    config = json.loads(path.read_text())
    return config, spec_from_config(config, name=path.stem, source=ModelSource(kind="config", ref=str(path)))


def _decoder_layers(model: Any) -> Any:
    """The ModuleList of decoder layers of a *ForCausalLM built by transformers."""
    import torch

    from memfit.trace.meta import param_tree

    for name, module in model.named_modules():
        probe = param_tree([(f"{name}.0.x.weight", 1)], name="probe") if name else None
        if isinstance(module, torch.nn.ModuleList) and probe and probe.children[0].name == "layers":
            return module
    raise LookupError("no decoder layers found")


def _real_linears(layer: Any) -> list[tuple[str, int, int, bool]]:
    """(leaf name, fan_in, fan_out, bias) of every nn.Linear and Conv1D module of one decoder layer."""
    import torch
    from transformers.pytorch_utils import Conv1D

    found = []
    for name, module in layer.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear):
            found.append((leaf, module.in_features, module.out_features, module.bias is not None))
        elif isinstance(module, Conv1D):
            found.append((leaf, module.weight.shape[0], module.nf, module.bias is not None))
    return sorted(found)


@requires_transformers
@pytest.mark.parametrize("path", CONFIG_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIG_FILES])
def test_counts_match_meta_device(path: Path) -> None:
    """Every component path (layers/attention/q_proj, ...) has the meta model's exact count, and every
    layer's nn.Linear/Conv1D modules are exactly layer_linears' modules (names, shapes, biases)."""
    from memfit.trace.meta import build_on_meta, param_tree

    config, spec = _spec(path)
    model = build_on_meta(config)
    ours = count_params(spec)
    theirs = param_tree(((n, p.numel()) for n, p in model.named_parameters()), name=spec.name)
    assert {n.name: n.num_params for n in ours.children} == {n.name: n.num_params for n in theirs.children}
    assert ours.flat() == theirs.flat()
    assert ours.num_params == theirs.num_params
    real_layers = _decoder_layers(model)
    for index in sorted({0, spec.num_layers - 1}):
        modules = sorted((lin.name, lin.fan_in, lin.fan_out, lin.bias)
                         for lin in layer_linears(spec, spec.layers[index]) if lin.is_module)
        assert modules == _real_linears(real_layers[index]), f"layer {index}"


UNMAPPED_BASE = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "vocab_size": 96,
                 "max_position_embeddings": 128, "intermediate_size": 80, "bos_token_id": 0,
                 "eos_token_id": 0, "pad_token_id": 0}


@requires_transformers
@pytest.mark.parametrize("model_type", ["olmo", "stablelm", "smollm3", "persimmon"])
def test_spec_on_meta_total_is_exact(model_type: str) -> None:
    """A model_type with no family module gets a spec whose total equals the meta-device count."""
    from memfit.trace.meta import count_params_on_meta, spec_on_meta

    config = {**UNMAPPED_BASE, "model_type": model_type}
    spec, assumptions = spec_on_meta(config, name=model_type, source=ModelSource(kind="config", ref="x"))
    assert count_params(spec).num_params == count_params_on_meta(config).num_params
    assert spec.source.kind == "meta"
    assert "counted exactly on the meta device" in assumptions[0]


@requires_transformers
def test_unknown_to_transformers_is_unsupported() -> None:
    """A model_type transformers does not know raises UnsupportedArchitecture, not a transformers error."""
    from memfit.core.errors import UnsupportedArchitecture
    from memfit.trace.meta import count_params_on_meta

    with pytest.raises(UnsupportedArchitecture, match="does not know model_type 'no-such-model'"):
        count_params_on_meta({**UNMAPPED_BASE, "model_type": "no-such-model"})


@requires_transformers
@pytest.mark.parametrize("model_type", [
    pytest.param(model_type, marks=pytest.mark.xfail(
        strict=True, raises=ConfigError,
        reason="DeepseekV2Config defaults num_experts_per_tok to None; a top-k is required to size MoE work"))
    if model_type == "deepseek_v2" else model_type
    # gemma3: its text_config defaults are tested above; qwen2_5_vl, llava, llama4, mistral3, qwen3_vl(_moe):
    # their sub-configs' below
    for model_type in sorted(set(FAMILIES) - {"gemma3", "qwen2_5_vl", "llava", "llama4", "mistral3",
                                              "qwen3_vl", "qwen3_vl_moe"})
])
def test_class_defaults_match_meta_device(model_type: str) -> None:
    """A config stating only the required fields maps to transformers' default model, exactly."""
    from memfit.trace.meta import count_params_on_meta

    defaults = CONFIG_DEFAULTS[model_type]
    required = {k: v for k, v in defaults.items() if k in ("n_layer", "n_head", "n_embd") or k in REQUIRED}
    config = {"model_type": model_type, **required}
    spec = spec_from_config(config, name=model_type, source=ModelSource(kind="config", ref="defaults"))
    assert count_params(spec).flat() == count_params_on_meta(config, name=model_type).flat()


@requires_transformers
@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "llava", "llama4", "mistral3", "qwen3_vl",
                                        "qwen3_vl_moe"])
def test_vision_language_sub_config_defaults_match_meta_device(model_type: str) -> None:
    """A bare config takes its sub-configs' defaults (Qwen2.5-VL: an 80-layer 8,192-wide decoder and a
    32-block tower; LLaVA: LlamaConfig's 7B decoder and LlavaConfig's CLIP ViT-L/14-336; Llama 4:
    Llama4TextConfig's 48-layer 16-expert decoder, its tower not built; Mistral 3: Mistral-Small's decoder,
    tied, and a 24-layer Pixtral tower; Qwen3-VL: a 32-layer 4,096-wide Qwen3 decoder and a 27-block
    tower with three deepstack mergers, Qwen3-VL-MoE: a 24-layer 60-expert decoder and that tower): the
    same model, component by component."""
    from memfit.trace.meta import count_params_on_meta

    config = {"model_type": model_type}
    spec = spec_from_config(config, name=model_type, source=ModelSource(kind="config", ref="defaults"))
    assert count_params(spec).flat() == count_params_on_meta(config, name=model_type).flat()
